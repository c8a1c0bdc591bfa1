//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386), on top of the `json-patch` crate.

use serde_json::Value;

use super::PatchError;

/// Upstream refuses JSON patches with more operations than this.
const MAX_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 patch document to `original`.
/// A malformed document is a 400; an operation that cannot apply (missing path, failed
/// `test`) is a 422, as upstream answers.
pub fn json_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("error decoding JSON patch: {e}")))?;
    let Value::Array(ops) = &raw else {
        return Err(PatchError::BadRequest(
            "a JSON patch must be a list of operations".into(),
        ));
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let patch: json_patch::Patch = serde_json::from_value(raw)
        .map_err(|e| PatchError::BadRequest(format!("invalid JSON patch operation: {e}")))?;
    // Work on a copy without the crate's undo log: a failed patch leaves `original` untouched
    // either way, and no undo step can misbehave.
    let mut doc = original.clone();
    json_patch::patch_unsafe(&mut doc, &patch.0).map_err(|e| {
        let op = patch.0.get(e.operation).map(op_name).unwrap_or("?");
        PatchError::Unprocessable(format!(
            "JSON patch operation {} ({op}) failed at path {:?}: {}",
            e.operation,
            e.path.as_str(),
            e.kind
        ))
    })?;
    Ok(doc)
}

fn op_name(op: &json_patch::PatchOperation) -> &'static str {
    match op {
        json_patch::PatchOperation::Add(_) => "add",
        json_patch::PatchOperation::Remove(_) => "remove",
        json_patch::PatchOperation::Replace(_) => "replace",
        json_patch::PatchOperation::Move(_) => "move",
        json_patch::PatchOperation::Copy(_) => "copy",
        json_patch::PatchOperation::Test(_) => "test",
    }
}

/// Applies an RFC 7386 merge patch to `original`: objects merge, `null` deletes, anything
/// else (lists included) replaces. The patch must be an object, as for every Kubernetes object.
pub fn json_merge_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("error decoding merge patch: {e}")))?;
    if !patch.is_object() {
        return Err(PatchError::BadRequest(
            "a merge patch must be a JSON object".into(),
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn json_patch_operations() {
        let body = br#"[
            {"op": "test", "path": "/metadata/name", "value": "p"},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "j"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "d"}},
            {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/c"},
            {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/m"},
            {"op": "remove", "path": "/metadata/labels/a"}
        ]"#;
        let out = json_patch(&pod(), body).expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"c": "1", "m": "2"}));
        assert_eq!(out["spec"]["containers"][0]["image"], "j");
        assert_eq!(out["spec"]["containers"][1]["name"], "d");
    }

    #[test]
    fn json_patch_errors_are_typed() {
        let p = pod();
        // Not JSON, not a list, unknown op: 400.
        for body in [
            &b"{"[..],
            br#"{"op":"add"}"#,
            br#"[{"op":"frobnicate","path":"/a"}]"#,
            br#"[{"op":"add","value":1}]"#,
        ] {
            let err = json_patch(&p, body).expect_err("malformed");
            assert_eq!(err.code(), 400, "{err}");
        }
        // Failed test and missing path: 422, with the operation and path in the message.
        let err = json_patch(
            &p,
            br#"[{"op":"test","path":"/metadata/name","value":"q"}]"#,
        )
        .expect_err("test fails");
        assert_eq!(err.code(), 422);
        assert!(
            err.to_string().contains("(test)") && err.to_string().contains("/metadata/name"),
            "{err}"
        );
        let err = json_patch(
            &p,
            br#"[{"op":"replace","path":"/spec/nothing/x","value":1}]"#,
        )
        .expect_err("missing");
        assert_eq!(err.code(), 422);
        let err = json_patch(&p, br#"[{"op":"remove","path":"/spec/containers/5"}]"#)
            .expect_err("out of range");
        assert_eq!(err.code(), 422);
        let err = json_patch(&p, br#"[{"op":"move","from":"/spec","path":"/spec/x"}]"#)
            .expect_err("into itself");
        assert_eq!(err.code(), 422);
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let p = pod();
        let body = br#"[{"op":"add","path":"/metadata/labels/b","value":"2"},{"op":"remove","path":"/nope"}]"#;
        assert!(json_patch(&p, body).is_err());
        assert_eq!(p, pod());
    }

    /// Upstream answers 413 RequestEntityTooLarge past 10,000 operations.
    #[test]
    fn json_patch_operation_limit() {
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "", "value": 1}))
            .collect();
        let body = serde_json::to_vec(&ops).expect("encodes");
        assert_eq!(json_patch(&pod(), &body).map_err(|e| e.code()), Err(413));
    }

    #[test]
    fn merge_patch_rules() {
        let out = json_merge_patch(
            &pod(),
            br#"{"metadata":{"labels":{"a":null,"b":"2"}},"spec":{"containers":[{"name":"x"}]},"new":{"k":null,"v":1}}"#,
        )
        .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        // Lists are replaced whole.
        assert_eq!(out["spec"]["containers"], json!([{"name": "x"}]));
        // Nulls inside new objects do not survive.
        assert_eq!(out["new"], json!({"v": 1}));
        assert_eq!(
            json_merge_patch(&pod(), b"[1]").map_err(|e| e.code()),
            Err(400)
        );
        assert_eq!(
            json_merge_patch(&pod(), b"nope").map_err(|e| e.code()),
            Err(400)
        );
    }
}
