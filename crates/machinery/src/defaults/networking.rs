//! `networking.k8s.io/v1` defaults, as upstream's `pkg/apis/networking/v1/defaults.go`.
//! Ingress has none.

use serde_json::{json, Value};

use super::{field, items, set};

/// `SetDefaults_NetworkPolicy` and `SetDefaults_NetworkPolicyPort`. `spec.podSelector` is a
/// struct held by value upstream, so it is always written (`{}` selects every pod).
pub(super) fn network_policy(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "podSelector", json!({}));
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec["policyTypes"] = types;
    }
    for direction in ["ingress", "egress"] {
        for rule in items(spec, direction) {
            for port in items(rule, "ports") {
                set(port, "protocol", json!("TCP"));
            }
        }
    }
}

/// `SetDefaults_IngressClass`: parameters without a scope refer to a cluster-scoped object.
pub(super) fn ingress_class(obj: &mut Value) {
    if let Some(params) = obj
        .pointer_mut("/spec/parameters")
        .filter(|p| p.is_object())
    {
        set(params, "scope", json!("Cluster"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::defaulted;
    use serde_json::json;

    #[test]
    fn network_policy_types_and_protocols() {
        let np = defaulted(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"ingress": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}}),
        );
        let spec = &np["spec"];
        assert_eq!(spec["podSelector"], json!({}));
        assert_eq!(spec["policyTypes"], json!(["Ingress"]));
        assert_eq!(spec["ingress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ingress"][0]["ports"][1]["protocol"], "UDP");

        let np = defaulted(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {"matchLabels": {"app": "db"}}, "egress": [{"ports": [{"port": 5432}]}]}}),
        );
        let spec = &np["spec"];
        assert_eq!(spec["podSelector"]["matchLabels"]["app"], "db");
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(spec["egress"][0]["ports"][0]["protocol"], "TCP");

        // Types the client chose are kept, even egress-only ones with no egress rules.
        let np = defaulted(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"policyTypes": ["Egress"]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
        // An empty egress list adds nothing.
        let np = defaulted(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"egress": []}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    }

    #[test]
    fn ingress_class_parameters_scope() {
        let ic = defaulted(
            "networking.k8s.io/v1",
            "IngressClass",
            json!({"spec": {"controller": "example.com/c", "parameters": {"kind": "Params", "name": "p"}}}),
        );
        assert_eq!(ic["spec"]["parameters"]["scope"], "Cluster");
        let ic = defaulted(
            "networking.k8s.io/v1",
            "IngressClass",
            json!({"spec": {"controller": "example.com/c", "parameters": {"kind": "Params", "name": "p", "scope": "Namespace", "namespace": "x"}}}),
        );
        assert_eq!(ic["spec"]["parameters"]["scope"], "Namespace");
        let ic = defaulted(
            "networking.k8s.io/v1",
            "IngressClass",
            json!({"spec": {"controller": "example.com/c"}}),
        );
        assert!(ic["spec"].get("parameters").is_none());
        // Ingress has no defaults in v1.
        let ing = json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {}}]}}]}});
        assert_eq!(
            defaulted("networking.k8s.io/v1", "Ingress", ing.clone()),
            ing
        );
    }
}
