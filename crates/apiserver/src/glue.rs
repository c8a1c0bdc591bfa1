//! Calls into the API machinery that the REST layer makes on every write or read:
//! defaulting, validation, selectors, tables and patches, in one place.

use krust_machinery::{ApiError, Cause, ResourceInfo};
use serde_json::Value;

pub fn apply_defaults(_info: &ResourceInfo, _obj: &mut Value) {}

pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(name) = krust_machinery::object::name(obj) {
        let ok = name.len() <= 253
            && name.split('.').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            causes.push(Cause::invalid("metadata.name", name, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
        }
    }
    let _ = info;
    causes
}

pub fn validate_update(info: &ResourceInfo, new: &Value, _old: &Value) -> Vec<Cause> {
    validate_create(info, new)
}

/// A parsed label or field selector.
pub struct Selector(Vec<(String, String)>);

impl Selector {
    pub fn labels(s: Option<&str>) -> Result<Option<Selector>, ApiError> {
        Self::parse(s)
    }

    pub fn fields(_info: &ResourceInfo, s: Option<&str>) -> Result<Option<Selector>, ApiError> {
        Self::parse(s)
    }

    fn parse(s: Option<&str>) -> Result<Option<Selector>, ApiError> {
        let Some(s) = s else { return Ok(None) };
        let mut out = Vec::new();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                ApiError::bad_request(format!("unable to parse requirement: {part}"))
            })?;
            out.push((
                k.trim().to_string(),
                v.trim_start_matches('=').trim().to_string(),
            ));
        }
        Ok(Some(Selector(out)))
    }

    pub fn matches_labels(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, v)| krust_machinery::object::label(obj, k) == Some(v.as_str()))
    }

    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, v)| {
            krust_machinery::object::path(obj, k)
                .and_then(Value::as_str)
                .unwrap_or("")
                == v
        })
    }
}

pub fn table(info: &ResourceInfo, objs: &[Value], rv: &str, cont: Option<&str>) -> Value {
    let _ = info;
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| serde_json::json!({"cells": [krust_machinery::object::name(o).unwrap_or("")], "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)}}))
        .collect();
    let mut meta = serde_json::json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "description": "name", "priority": 0}],
        "rows": rows})
}

/// Applies a non-apply patch of `content_type` to `current`.
pub fn patch(
    _info: &ResourceInfo,
    content_type: &str,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::bad_request(e);
    match content_type {
        "application/json-patch+json" => {
            let p: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &p).map_err(|e| ApiError::UnprocessableEntity {
                message: e.to_string(),
            })?;
            Ok(out)
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            let mut out = current.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        other => Err(ApiError::UnsupportedMediaType {
            content_type: other.to_string(),
        }),
    }
}
