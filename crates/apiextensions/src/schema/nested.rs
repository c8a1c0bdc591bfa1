//! Upstream's rules for value validations under `allOf`, `anyOf`, `oneOf` and `not`:
//! they may only constrain values, never say what the structure is (type, defaults,
//! vendor extensions), or pruning and defaulting would depend on which branch matched.

use krust_machinery::Cause;
use serde_json::{Map, Value};

use crate::path::{child, index, key};

/// Generic keywords and extensions a nested value validation must leave out, with the
/// words upstream uses for each.
const FORBIDDEN: [(&str, &str); 13] = [
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("externalDocs", "must be undefined to be structural"),
    (
        "x-kubernetes-preserve-unknown-fields",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-embedded-resource",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-int-or-string",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-list-map-keys",
        "must be empty to be structural",
    ),
    (
        "x-kubernetes-list-type",
        "must be undefined to be structural",
    ),
    (
        "x-kubernetes-map-type",
        "must be undefined to be structural",
    ),
    ("x-kubernetes-validations", "must be empty to be structural"),
];

/// Checks the junctors of one structural node.
pub(crate) fn check_value_validations(obj: &Map<String, Value>, path: &str, errs: &mut Vec<Cause>) {
    let skip_any_of = is_int_or_string_any_of(obj.get("anyOf"));
    let first_all_of_any_of = obj
        .get("allOf")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .map(|first| is_int_or_string_any_of(first.get("anyOf")))
        .unwrap_or(false);
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if junctor == "anyOf" && skip_any_of {
            continue;
        }
        let Some(list) = obj.get(junctor).and_then(Value::as_array) else {
            continue;
        };
        let base = child(path, junctor);
        for (i, branch) in list.iter().enumerate() {
            let skip = junctor == "allOf" && i == 0 && first_all_of_any_of;
            check_nested(branch, &index(&base, i), skip, errs);
        }
    }
    if let Some(not) = obj.get("not") {
        check_nested(not, &child(path, "not"), false, errs);
    }
}

/// `anyOf: [{type: integer}, {type: string}]`, upstream's spelling of int-or-string that
/// is allowed to carry types.
fn is_int_or_string_any_of(any_of: Option<&Value>) -> bool {
    let Some(list) = any_of.and_then(Value::as_array) else {
        return false;
    };
    list.len() == 2
        && list[0] == serde_json::json!({"type": "integer"})
        && list[1] == serde_json::json!({"type": "string"})
}

fn check_nested(v: &Value, path: &str, skip_any_of: bool, errs: &mut Vec<Cause>) {
    let Some(obj) = v.as_object() else {
        return;
    };
    for (k, detail) in FORBIDDEN {
        let set = match obj.get(k) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            errs.push(Cause::forbidden(child(path, k), detail));
        }
    }
    if obj.get("nullable").and_then(Value::as_bool) == Some(true) {
        errs.push(Cause::forbidden(
            child(path, "nullable"),
            "must be false to be structural",
        ));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let base = child(path, "properties");
        if props.contains_key("metadata") {
            errs.push(Cause::forbidden(
                key(&base, "metadata"),
                "must not be specified in a nested context",
            ));
        }
        for (k, p) in props {
            check_nested(p, &key(&base, k), false, errs);
        }
    }
    if let Some(items) = obj.get("items") {
        check_nested(items, &child(path, "items"), false, errs);
    }
    let mut inner = obj.clone();
    if skip_any_of {
        inner.remove("anyOf");
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = inner.get(junctor).and_then(Value::as_array) {
            let base = child(path, junctor);
            for (i, branch) in list.iter().enumerate() {
                check_nested(branch, &index(&base, i), false, errs);
            }
        }
    }
    if let Some(not) = inner.get("not") {
        check_nested(not, &child(path, "not"), false, errs);
    }
}
