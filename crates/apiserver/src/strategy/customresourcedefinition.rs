//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) as a kind: decoding, defaulting,
//! validation (krust-apiextensions' `crd`), the Terminating condition and the cleanup
//! finalizer a deletion adds. The definitions' effect, serving their kinds, is the
//! `apiextensions` controller's.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use krust_machinery::registry::KindOps;
use krust_machinery::{object, Cause, ResourceInfo};
use serde_json::{json, Value};

pub const GROUP: &str = "apiextensions.k8s.io";
/// Kept on a definition being deleted until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

pub fn is_crd(info: &ResourceInfo) -> bool {
    (info.group, info.kind) == (GROUP, "CustomResourceDefinition")
}

/// The served `customresourcedefinitions` resource.
pub fn resource() -> ResourceInfo {
    ResourceInfo {
        group: GROUP,
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition".into(),
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        namespaced: false,
        subresources: &["status"],
        ops: Arc::new(CrdOps),
    }
}

struct CrdOps;

impl KindOps for CrdOps {
    fn roundtrip(&self, value: Value) -> Result<Value, String> {
        let typed: CustomResourceDefinition =
            serde_json::from_value(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<CustomResourceDefinition>()
    }

    fn schema_name(&self) -> String {
        <CustomResourceDefinition as schemars::JsonSchema>::schema_name().into_owned()
    }

    fn apply_defaults(&self, obj: &mut Value) {
        apply_defaults(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        krust_apiextensions::crd::validate_crd(obj, old)
    }
}

/// Upstream's v1 defaults (krust-apiextensions' `default_crd`), and a webhook service's port.
fn apply_defaults(obj: &mut Value) {
    krust_apiextensions::crd::default_crd(obj);
    if let Some(svc) = obj
        .pointer_mut("/spec/conversion/webhook/clientConfig/service")
        .and_then(Value::as_object_mut)
    {
        svc.entry("port").or_insert_with(|| json!(443));
    }
}

/// A deletion shows on the definition as the Terminating condition.
pub fn prepare_for_delete(obj: &mut Value) {
    set_condition(
        obj,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
}

/// Sets one `status.conditions` entry, keeping its transition time when its status stays.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conditions = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(list)) = conditions else {
        return;
    };
    let now = object::now_rfc3339();
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => list.push(json!({"type": kind, "status": status, "reason": reason,
            "message": message, "lastTransitionTime": now})),
    }
}

/// Whether condition `kind` is `True`.
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    object::path(obj, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|l| {
            l.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_conditions() {
        let mut crd = json!({"spec": {"names": {"kind": "Widget", "plural": "widgets"},
            "conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {"service": {"name": "conv", "namespace": "ns"}}}}}});
        apply_defaults(&mut crd);
        assert_eq!(crd["spec"]["names"]["singular"], "widget");
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(
            crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"],
            443
        );
        set_condition(&mut crd, "Established", "False", "Installing", "");
        let first = crd["status"]["conditions"][0]["lastTransitionTime"].clone();
        set_condition(&mut crd, "Established", "True", "InitialNamesAccepted", "");
        assert!(condition_true(&crd, "Established"));
        assert_eq!(
            crd["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(crd["status"]["conditions"][0]["lastTransitionTime"].is_string());
        let _ = first;
        prepare_for_delete(&mut crd);
        assert!(condition_true(&crd, "Terminating"));
    }
}
