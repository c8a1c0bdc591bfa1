//! Kind-specific behaviour of the generic REST storage, as upstream's per-kind strategies:
//! what a create resets, how long a deletion may take. CertificateSigningRequests'
//! (requester, status and approval doors) are [`certificates`]'.

pub mod certificates;
pub mod customresource;
pub mod customresourcedefinition;

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use krust_machinery::object;
use krust_machinery::registry::typed_resource;
use krust_machinery::ResourceInfo;
use serde_json::{json, Value};

/// The kinds served beside the built-in ones: CustomResourceDefinitions and the
/// admission configurations.
pub fn extension_resources() -> Vec<ResourceInfo> {
    const NONE: &[&str] = &[];
    const API_EXTENSIONS: &[&str] = &["api-extensions"];
    vec![
        customresourcedefinition::resource(),
        typed_resource::<admissionregistration::MutatingWebhookConfiguration>(
            NONE,
            API_EXTENSIONS,
            NONE,
        ),
        typed_resource::<admissionregistration::ValidatingWebhookConfiguration>(
            NONE,
            API_EXTENSIONS,
            NONE,
        ),
    ]
}

/// Resets what clients may not set at creation.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match (info.group, info.kind) {
        ("", "Pod") => {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos_class(map.get("spec"))}),
            );
        }
        ("", "Namespace") => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "Service") | ("networking.k8s.io", "Ingress") => {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("", "Node") | ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {}
        _ if info.has_subresource("status") => {
            map.insert("status".into(), json!({}));
        }
        _ => {}
    }
}

/// Carries over what an update may leave out: a Service's allocated addresses.
pub fn prepare_for_update(info: &ResourceInfo, obj: &mut Value, old: &Value) {
    if (info.group, info.kind) != ("", "Service") {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                spec.insert(f.into(), v.clone());
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort")
                .and_then(Value::as_i64)
                .is_some_and(|n| n != 0)
            {
                continue;
            }
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}

/// The QoS class upstream derives from requests and limits.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec.and_then(|s| s.get(*f)).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(r));
            let lim = limits.and_then(|m| m.get(r));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Seconds a deletion waits before the object goes. Only pods on a node wait: their
/// kubelet must stop the containers first and then deletes with grace 0.
pub fn grace_period(info: &ResourceInfo, obj: &Value, requested: Option<i64>) -> i64 {
    if (info.group, info.kind) != ("", "Pod") {
        return 0;
    }
    let scheduled = object::path(obj, "spec.nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        object::path(obj, "status.phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    requested
        .or_else(|| object::path(obj, "spec.terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// Changes a deletion makes beyond metadata (a namespace shows it is terminating).
pub fn prepare_for_delete(info: &ResourceInfo, obj: &mut Value) {
    if (info.group, info.kind) == ("", "Namespace") {
        obj["status"] = json!({"phase": "Terminating"});
    }
    if customresourcedefinition::is_crd(info) {
        customresourcedefinition::prepare_for_delete(obj);
    }
}

/// Finalizers a deletion adds before it marks the object: a CustomResourceDefinition
/// stays until its custom resources are gone.
pub fn deletion_finalizers(info: &ResourceInfo, finalizers: &mut Vec<String>) {
    if customresourcedefinition::is_crd(info)
        && !finalizers
            .iter()
            .any(|f| f == customresourcedefinition::CLEANUP_FINALIZER)
    {
        finalizers.push(customresourcedefinition::CLEANUP_FINALIZER.into());
    }
}

/// Namespaces are kept until the namespace controller empties them; the `kubernetes`
/// finalizer in `spec.finalizers` says so.
pub fn namespace_finalizers(obj: &Value) -> Vec<String> {
    object::path(obj, "spec.finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(Some(&json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        assert_eq!(
            qos_class(Some(
                &json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})
            )),
            "Burstable"
        );
        let g = json!({"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(Some(&g)), "Guaranteed");
    }
}
