//! The zero values upstream's encoder always writes.
//!
//! kube-apiserver decodes every body into Go structs and encodes them again, so a field
//! without `omitempty` comes back even when nobody set it: a new DaemonSet's
//! `status.numberReady` is `0`, a container status's `imageID` is `""`. Those are the fields
//! upstream's OpenAPI marks `required`, and generated clients (Python, Java, C#) refuse an
//! object that lacks one. [`fill_required`] adds them, walking the kind's schema (the same
//! [`TypeTree`](crate::patch::schema::TypeTree) the patch code uses) below every struct that
//! is present; see [`Zero`] for which scalars have a zero. A `null` counts as unset, as it
//! does when Go decodes it.

use serde_json::Value;

use crate::patch::schema::{type_tree, Node, Shape};
use crate::registry::ResourceInfo;

/// Adds the zero value of every required scalar that `obj` (of `info`'s kind) lacks.
pub fn fill_required(info: &ResourceInfo, obj: &mut Value) {
    let tree = type_tree(info);
    fill(tree.root(), obj);
}

/// The paths (`status.numberReady`, `spec.ports[0].port`) of required fields that `obj` lacks
/// below the structs it has, of any type: what a generated client would refuse.
pub fn missing_required(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let tree = type_tree(info);
    let mut out = Vec::new();
    missing(tree.root(), obj, "", &mut out);
    out
}

fn missing(node: Node, value: &Value, path: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(map)) => {
            for name in node.required() {
                if map.get(name).is_none_or(Value::is_null) {
                    out.push(join(name));
                }
            }
            for (k, v) in map {
                if let Some(child) = node.declared(k) {
                    missing(child, v, &join(k), out);
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            for (k, v) in map {
                missing(node.child(""), v, &join(k), out);
            }
        }
        (Shape::List, Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                missing(node.items(), v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn fill(node: Node, value: &mut Value) {
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(map)) => {
            for (name, zero) in node.zeros() {
                match map.get_mut(name) {
                    Some(v) if !v.is_null() => {}
                    Some(v) => *v = zero.value(),
                    None => {
                        map.insert(name.to_string(), zero.value());
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                if let Some(child) = node.declared(k) {
                    fill(child, v);
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            let values = node.child("");
            for v in map.values_mut() {
                fill(values, v);
            }
        }
        (Shape::List, Value::Array(items)) => {
            let item = node.items();
            for v in items {
                fill(item, v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use serde_json::json;

    fn filled(api_version: &str, kind: &str, mut obj: Value) -> Value {
        let r = Registry::builtin();
        fill_required(r.by_kind(api_version, kind).expect("kind served"), &mut obj);
        obj
    }

    #[test]
    fn a_new_daemon_sets_status_counts_are_zero() {
        let ds = filled(
            "apps/v1",
            "DaemonSet",
            json!({"metadata": {"name": "d"}, "spec": {}, "status": {}}),
        );
        assert_eq!(
            ds["status"],
            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
        );
        // Absent structs stay absent: only what exists is completed.
        let bare = filled("apps/v1", "DaemonSet", json!({"metadata": {"name": "d"}}));
        assert!(bare.get("status").is_none());
    }

    #[test]
    fn set_values_are_kept_and_nulls_become_zero() {
        let rc = filled(
            "v1",
            "ReplicationController",
            json!({"status": {"replicas": 3}}),
        );
        assert_eq!(rc["status"]["replicas"], 3);
        let rc = filled(
            "v1",
            "ReplicationController",
            json!({"status": {"replicas": null}}),
        );
        assert_eq!(rc["status"]["replicas"], 0);
    }

    #[test]
    fn lists_and_nested_structs_are_walked() {
        let pod = filled(
            "v1",
            "Pod",
            json!({"status": {"containerStatuses": [{"name": "c", "image": "busybox"}], "conditions": [{"type": "Ready"}]}}),
        );
        let cs = &pod["status"]["containerStatuses"][0];
        assert_eq!(cs["imageID"], "");
        assert_eq!(cs["ready"], false);
        assert_eq!(cs["restartCount"], 0);
        assert_eq!(pod["status"]["conditions"][0]["status"], "");
    }

    #[test]
    fn times_quantities_and_int_or_strings_get_no_zero() {
        // metav1.Condition requires lastTransitionTime, a Time: Go writes null, so nothing.
        let job = filled(
            "batch/v1",
            "Job",
            json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
        );
        let c = &job["status"]["conditions"][0];
        assert!(c.get("lastTransitionTime").is_none(), "{c}");
        // An HTTP probe's port (IntOrString) is required, but has no scalar zero.
        let pod = filled(
            "v1",
            "Pod",
            json!({"spec": {"containers": [{"name": "c", "readinessProbe": {"httpGet": {}}}]}}),
        );
        let get = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
        assert!(get.get("port").is_none(), "{get}");
    }

    #[test]
    fn missing_required_names_paths() {
        let r = Registry::builtin();
        let info = r.by_kind("v1", "Service").expect("served");
        let svc = json!({"metadata": {}, "spec": {"ports": [{"name": "a"}]}});
        assert_eq!(missing_required(info, &svc), vec!["spec.ports[0].port"]);
        let mut svc = svc;
        fill_required(info, &mut svc);
        assert!(missing_required(info, &svc).is_empty());
    }

    #[test]
    fn autoscaling_v2_status() {
        let hpa = filled(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"status": {}}),
        );
        assert_eq!(hpa["status"]["desiredReplicas"], 0);
    }
}
