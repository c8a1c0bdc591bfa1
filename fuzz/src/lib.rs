//! Helpers shared by the fuzz targets: the built-in registry, splitting one input into a
//! document and a patch, and the checks every target makes on what the server would answer.
//!
//! Each target calls the function the API server calls on request input, then, where the
//! server goes on with the result, the steps it takes next (typed round trip, defaulting,
//! validation), so a panic anywhere on the path from bytes to a stored object is found.

use std::sync::OnceLock;

use krust_machinery::{codec, ApiError, Registry, ResourceInfo};
use serde_json::Value;

/// The registry of built-in kinds, built once per process.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

/// The kind an object names (`apiVersion` and `kind`), else Pods: the richest kind, so
/// inputs without a kind still reach defaulting and validation.
pub fn kind_of(obj: &Value) -> &'static ResourceInfo {
    let reg = registry();
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    reg.by_kind(api_version, kind)
        .or_else(|| reg.lookup("", "v1", "pods"))
        .expect("the builtin registry serves pods")
}

/// Splits an input at its first NUL byte: the document before, the patch after. Without a
/// NUL the whole input is the patch and the document is empty.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[], data),
    }
}

/// A refusal of malformed input must be a client error: a 5xx is a bug.
pub fn assert_client_error(e: &ApiError, what: &str) {
    let code = e.code();
    assert!(
        (400..500).contains(&code),
        "{what}: malformed input answered with {code}: {e}"
    );
    // The Status object must always render.
    let _ = e.to_status();
}

/// What the server does with a decoded body on create: fill `apiVersion`/`kind`, round-trip
/// through the typed form (unknown fields, strict errors), then the strategy, defaulting
/// and validation. Returns the object as it would be stored, when it got that far.
pub fn create_pipeline(
    info: &ResourceInfo,
    mut obj: Value,
    duplicates: &[String],
) -> Option<Value> {
    let map = obj.as_object_mut()?;
    map.entry("apiVersion")
        .or_insert_with(|| info.api_version().into());
    map.entry("kind").or_insert_with(|| info.kind.into());
    let typed = info.ops.roundtrip(obj.clone()).ok()?;
    let unknown = codec::unknown_fields(&obj, &typed);
    let _ = codec::strict_error(&unknown, duplicates);
    let mut typed = typed;
    krust_apiserver::strategy::prepare_for_create(info, &mut typed);
    krust_apiserver::glue::apply_defaults(info, &mut typed);
    let _ = krust_apiserver::glue::validate_create(info, &typed);
    check_encoding(&typed);
    Some(typed)
}

/// The stored encoding (head first, resourceVersion spliced in) reads back as the object.
/// The server drops `metadata.resourceVersion` before it stores an object, and so does this.
pub fn check_encoding(obj: &Value) {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let obj = &obj;
    let encoded = codec::encode(obj);
    let spliced = codec::splice_resource_version(&encoded, 7);
    let back = codec::parse_json(&spliced).expect("a stored encoding is valid JSON");
    if obj.get("metadata").is_some_and(Value::is_object) {
        assert_eq!(back.value["metadata"]["resourceVersion"], "7");
    }
}

/// A live object for patch targets: the document as JSON through the typed form, as the
/// server reads it back from storage; `None` when it could not have been stored.
pub fn stored_object(doc: &[u8]) -> Option<(&'static ResourceInfo, Value)> {
    let parsed = codec::parse_json(doc).ok()?;
    let info = kind_of(&parsed.value);
    let mut obj = parsed.value;
    let map = obj.as_object_mut()?;
    map.insert("apiVersion".into(), info.api_version().into());
    map.insert("kind".into(), info.kind.into());
    let mut typed = info.ops.roundtrip(obj).ok()?;
    krust_apiserver::glue::apply_defaults(info, &mut typed);
    Some((info, typed))
}

/// What the server does with a patched object: round trip, then update validation.
pub fn update_pipeline(info: &ResourceInfo, old: &Value, new: Value) {
    let Ok(mut typed) = info.ops.roundtrip(new) else {
        return;
    };
    krust_apiserver::strategy::prepare_for_update(info, &mut typed, old);
    krust_apiserver::glue::apply_defaults(info, &mut typed);
    let _ = krust_apiserver::glue::validate_update(info, None, &typed, old);
    if info.has_subresource("status") {
        let _ = krust_apiserver::glue::validate_update(info, Some("status"), &typed, old);
    }
    check_encoding(&typed);
}

/// Patch targets: split the input, read the live object, patch it with `content_type`
/// through the server's own entry point, then validate the result as an update.
pub fn patch_target(content_type: &str, data: &[u8]) {
    let (doc, patch) = split(data);
    let Some((info, old)) = stored_object(doc) else {
        return;
    };
    match krust_apiserver::glue::patch(info, "fuzz", content_type, &old, patch) {
        Ok(new) => update_pipeline(info, &old, new),
        Err(e) => assert_client_error(&e, content_type),
    }
}

/// The first path where two JSON values differ, for assertion messages. A member that is
/// `null` counts as absent: Go decodes both to a nil pointer, so upstream treats them alike
/// (a present but empty `Time` message decodes to `"deletionTimestamp": null`, which
/// encodes back as no field at all).
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w) {
                            return Some(format!(".{k}{d}"));
                        }
                    }
                    None if v.is_null() => {}
                    None => return Some(format!(".{k}: {v} vs absent")),
                }
            }
            y.iter()
                .find(|(k, v)| !v.is_null() && !x.contains_key(*k))
                .map(|(k, v)| format!(".{k}: absent vs {v}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w).map(|d| format!("[{i}]{d}"))),
        _ if a == b => None,
        _ => Some(format!(": {a} vs {b}")),
    }
}
