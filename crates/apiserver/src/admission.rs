//! Mutating admission on create, as upstream's in-tree admission plugins.
//!
//! - DefaultTolerationSeconds: a pod that does not tolerate the `node.kubernetes.io/not-ready`
//!   or `node.kubernetes.io/unreachable` NoExecute taint gets a toleration of it for
//!   [`DEFAULT_TOLERATION_SECONDS`], so the node lifecycle controller evicts it five minutes
//!   after its node fails rather than at once.

use krust_machinery::ResourceInfo;
use serde_json::{json, Value};

/// Upstream's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Applies the mutating admission plugins to an object being created.
pub fn admit_create(info: &ResourceInfo, obj: &mut Value) {
    if (info.group, info.kind) == ("", "Pod") {
        default_toleration_seconds(obj, DEFAULT_TOLERATION_SECONDS);
    }
}

/// Whether toleration `t` tolerates the NoExecute taint `key` (any value).
fn tolerates_no_execute(t: &Value, key: &str) -> bool {
    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
    if !effect.is_empty() && effect != "NoExecute" {
        return false;
    }
    let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
    let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
    match op {
        "Exists" => tkey.is_empty() || tkey == key,
        _ => {
            tkey == key
                && t.get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        }
    }
}

/// Upstream's DefaultTolerationSeconds plugin.
pub fn default_toleration_seconds(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tols.is_null() {
        *tols = json!([]);
    }
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !list.iter().any(|t| tolerates_no_execute(t, key)) {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_both_tolerations_once() {
        let mut pod = json!({"spec": {"containers": [{"name": "c"}]}});
        default_toleration_seconds(&mut pod, 300);
        let tols = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(tols.len(), 2);
        assert!(tols
            .iter()
            .all(|t| t["tolerationSeconds"] == 300 && t["effect"] == "NoExecute"));
        default_toleration_seconds(&mut pod, 300);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn keeps_existing_ones() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]}});
        default_toleration_seconds(&mut pod, 300);
        let tols = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["tolerationSeconds"], 5);
        assert_eq!(tols[1]["key"], "node.kubernetes.io/not-ready");
        // Tolerating everything needs nothing more.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut all, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
