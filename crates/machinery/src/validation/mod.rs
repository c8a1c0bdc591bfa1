//! Validation of objects on create, update and status update, with upstream's field paths and
//! messages. Objects are JSON already normalised through the k8s-openapi types and defaulted
//! (see [`crate::defaults`]): like upstream, validation expects defaults to be applied, so a
//! field upstream always defaults (e.g. a container's `imagePullPolicy`) is required here.
//!
//! The API server is expected to do, before calling in, what upstream's REST layer does:
//! fill `metadata.name` from `generateName`, drop `metadata.namespace` on cluster-scoped
//! kinds, copy the stored `resourceVersion` into unconditional updates, carry system
//! metadata over on update (see [`crate::defaults::prepare_for_update`]), keep allocated
//! Service cluster IPs and node ports when an update omits them, and generate a Job's
//! selector (see [`crate::defaults::set_job_selector`]).
//!
//! Errors are returned as [`Cause`]s; wrap them with [`crate::ApiError::invalid`].

pub mod certificates;
mod cluster;
mod container;
mod core;
mod cron;
pub mod field;
mod meta;
pub mod names;
mod networking;
mod pod;
pub mod quantity;
mod service;
pub(crate) mod volumes;
mod workloads;

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;
use crate::status::Cause;
use names::NameRule;

pub use self::core::validate_namespace_finalizers;
pub use cron::validate_schedule;
pub use networking::INGRESS_CLASS_ANNOTATION;

/// Validates an object about to be created.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut errs = if is_core_event(info) {
        // upstream validates legacy (core/v1) events without the ObjectMeta rules
        core::event_meta(obj)
    } else {
        meta::validate_create(obj, info.namespaced, name_rule(info))
    };
    errs.extend(validate_kind(info, obj, None));
    errs
}

/// Validates a full update (PUT or PATCH of the main resource) of `old` into `new`.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    // upstream skips the ObjectMeta update rules for core/v1 events
    let mut errs = if is_core_event(info) {
        core::event_meta(new)
    } else {
        meta::validate_update(new, old)
    };
    errs.extend(validate_kind(info, new, Some(old)));
    errs
}

/// Validates a write to the `status` subresource. The API server keeps the old spec; this
/// checks metadata and the status transitions upstream polices.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = meta::validate_update(new, old);
    errs.extend(match (info.group, info.kind) {
        ("", "Pod") => pod::validate_status(new, old),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("", "ReplicationController") => workloads::validate_replica_status(info.kind, new),
        ("batch", "Job") => workloads::validate_job_status(new),
        ("", "Namespace") => core::validate_namespace_status(new),
        ("", "PersistentVolumeClaim") => core::validate_pvc_status(new),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress_status(new),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            certificates::validate(new, Some(old), certificates::Door::Status)
        }
        _ => Vec::new(),
    });
    errs
}

/// Validates a write to a CertificateSigningRequest's `approval` subresource.
pub fn validate_approval_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = meta::validate_update(new, old);
    errs.extend(certificates::validate(
        new,
        Some(old),
        certificates::Door::Approval,
    ));
    errs
}

/// The rule `metadata.name` follows for a kind.
pub fn name_rule(info: &ResourceInfo) -> NameRule {
    match (info.group, info.kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        // upstream: "We don't care what you call your certificate requests."
        ("certificates.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn is_core_event(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Event"
}

fn validate_kind(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    match (info.group, info.kind) {
        ("", "Pod") => pod::validate(obj, old),
        ("", "PodTemplate") => pod::validate_pod_template_object(obj),
        ("", "Service") => service::validate(obj, old),
        ("", "Endpoints") => service::validate_endpoints(obj),
        ("discovery.k8s.io", "EndpointSlice") => service::validate_endpoint_slice(obj, old),
        ("", "ConfigMap") => core::validate_config_map(obj, old),
        ("", "Secret") => core::validate_secret(obj, old),
        ("", "ServiceAccount") => core::validate_service_account(obj),
        ("", "Namespace") => core::validate_namespace(obj, old),
        ("", "Node") => core::validate_node(obj, old),
        ("", "PersistentVolume") => core::validate_pv(obj, old),
        ("", "PersistentVolumeClaim") => core::validate_pvc(obj, old),
        ("", "Event") => core::validate_event(obj, old, true),
        ("events.k8s.io", "Event") => core::validate_event(obj, old, false),
        ("", "ResourceQuota") => core::validate_resource_quota(obj),
        ("", "LimitRange") => core::validate_limit_range(obj),
        ("", "ReplicationController") => workloads::validate_replication_controller(obj, old),
        ("apps", "Deployment") => workloads::validate_deployment(obj, old),
        ("apps", "ReplicaSet") => workloads::validate_replica_set(obj, old),
        ("apps", "StatefulSet") => workloads::validate_stateful_set(obj, old),
        ("apps", "DaemonSet") => workloads::validate_daemon_set(obj, old),
        ("apps", "ControllerRevision") => workloads::validate_controller_revision(obj, old),
        ("batch", "Job") => workloads::validate_job(obj, old),
        ("batch", "CronJob") => workloads::validate_cron_job(obj, old),
        ("coordination.k8s.io", "Lease") => cluster::validate_lease(obj),
        ("scheduling.k8s.io", "PriorityClass") => cluster::validate_priority_class(obj, old),
        ("policy", "PodDisruptionBudget") => workloads::validate_pod_disruption_budget(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => cluster::validate_hpa(obj),
        ("storage.k8s.io", "StorageClass") => cluster::validate_storage_class(obj, old),
        ("rbac.authorization.k8s.io", "Role") => cluster::validate_role(obj, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => cluster::validate_role(obj, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            cluster::validate_role_binding(obj, old, true)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            cluster::validate_role_binding(obj, old, false)
        }
        ("networking.k8s.io", "Ingress") => networking::validate_ingress(obj, old),
        ("networking.k8s.io", "IngressClass") => networking::validate_ingress_class(obj, old),
        ("networking.k8s.io", "NetworkPolicy") => networking::validate_network_policy(obj),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let door = if old.is_some() {
                certificates::Door::Update
            } else {
                certificates::Door::Create
            };
            certificates::validate(obj, old, door)
        }
        _ => Vec::new(),
    }
}

static NULL: Value = Value::Null;

/// A child value, or `null` when absent, so lookups chain without `Option` plumbing.
pub(crate) fn sub<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&NULL)
}

/// A string field, `""` when absent (Go's zero value).
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn opt_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub(crate) fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// Drops members that hold Go zero values (null, "", 0, false, [], {}): upstream compares
/// typed structs, where an absent field and its zero value are the same thing.
pub(crate) fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), prune(v)))
                .filter(|(_, v)| !is_zero(v))
                .collect();
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// Upstream's `apiequality.Semantic.DeepEqual` over JSON: zero values equal absence.
pub(crate) fn semantic_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.map(prune).filter(|v| !is_zero(v));
    let b = b.map(prune).filter(|v| !is_zero(v));
    a == b
}

/// A short description of how `new` differs from `old`, standing in for the `cmp.Diff`
/// upstream appends to some Forbidden messages.
pub(crate) fn diff(old: &Value, new: &Value) -> String {
    let mut lines = Vec::new();
    diff_into("", &prune(old), &prune(new), &mut lines);
    lines.truncate(20);
    lines.join("\n")
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_into(
                    &p,
                    a.get(k).unwrap_or(&NULL),
                    b.get(k).unwrap_or(&NULL),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_into(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ => {
            if !old.is_null() {
                out.push(format!("- {path}: {}", field::render(old)));
            }
            if !new.is_null() {
                out.push(format!("+ {path}: {}", field::render(new)));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use serde_json::Value;

    use crate::registry::{Registry, ResourceInfo};
    use crate::status::Cause;

    pub fn info(api_version: &str, kind: &str) -> ResourceInfo {
        Registry::builtin()
            .by_kind(api_version, kind)
            .cloned()
            .unwrap_or_else(|| panic!("{api_version} {kind} served"))
    }

    /// Defaults then validates, as the API server does on create.
    pub fn create(api_version: &str, kind: &str, mut obj: Value) -> Vec<String> {
        let info = info(api_version, kind);
        crate::defaults::apply_defaults(&info, &mut obj);
        super::validate_create(&info, &obj)
            .iter()
            .map(Cause::describe)
            .collect()
    }

    pub fn update(api_version: &str, kind: &str, mut new: Value, mut old: Value) -> Vec<String> {
        let info = info(api_version, kind);
        crate::defaults::apply_defaults(&info, &mut new);
        crate::defaults::apply_defaults(&info, &mut old);
        super::validate_update(&info, &new, &old)
            .iter()
            .map(Cause::describe)
            .collect()
    }

    pub fn has(errs: &[String], want: &str) -> bool {
        errs.iter().any(|e| e == want)
    }

    pub fn has_prefix(errs: &[String], want: &str) -> bool {
        errs.iter().any(|e| e.starts_with(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn semantic_equality_ignores_zero_values() {
        assert!(semantic_eq(
            Some(&json!({"a": [], "b": "", "c": {"d": null}})),
            None
        ));
        assert!(semantic_eq(
            Some(&json!({"a": 1})),
            Some(&json!({"a": 1, "b": false}))
        ));
        assert!(!semantic_eq(Some(&json!({"a": 1})), Some(&json!({"a": 2}))));
        let d = diff(
            &json!({"a": {"b": 1}, "c": [1]}),
            &json!({"a": {"b": 2}, "c": [1, 2]}),
        );
        assert_eq!(d, "- a.b: 1\n+ a.b: 2\n- c: [1]\n+ c: [1,2]");
    }

    /// Every kind, through the API server's pipeline: decode through k8s-openapi, default,
    /// decode again (defaults must only use real fields), validate.
    #[test]
    fn minimal_objects_of_every_kind_pass() {
        let pod_spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec});
        let sel = json!({"matchLabels": {"app": "x"}});
        let ns = |v: Value| {
            let mut v = v;
            v["metadata"] = json!({"name": "x", "namespace": "default", "uid": "u1"});
            v
        };
        let cluster = |v: Value| {
            let mut v = v;
            v["metadata"] = json!({"name": "x"});
            v
        };
        let cases = vec![
            ("v1", "Namespace", cluster(json!({}))),
            ("v1", "Pod", ns(json!({"spec": pod_spec}))),
            (
                "v1",
                "Service",
                ns(json!({"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}})),
            ),
            (
                "v1",
                "Endpoints",
                ns(
                    json!({"subsets": [{"addresses": [{"ip": "10.42.0.1"}], "ports": [{"port": 80}]}]}),
                ),
            ),
            ("v1", "ConfigMap", ns(json!({"data": {"a": "b"}}))),
            ("v1", "Secret", ns(json!({"stringData": {"a": "b"}}))),
            ("v1", "ServiceAccount", ns(json!({}))),
            (
                "v1",
                "Node",
                cluster(json!({"status": {"capacity": {"cpu": "2", "pods": "110"}}})),
            ),
            (
                "v1",
                "Event",
                ns(
                    json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R"}),
                ),
            ),
            (
                "v1",
                "PersistentVolume",
                cluster(
                    json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/d"}}}),
                ),
            ),
            (
                "v1",
                "PersistentVolumeClaim",
                ns(
                    json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
                ),
            ),
            (
                "v1",
                "ReplicationController",
                ns(json!({"spec": {"template": template}})),
            ),
            (
                "v1",
                "ResourceQuota",
                ns(json!({"spec": {"hard": {"pods": "10"}}})),
            ),
            (
                "v1",
                "LimitRange",
                ns(json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}})),
            ),
            ("v1", "PodTemplate", ns(json!({"template": template}))),
            (
                "apps/v1",
                "Deployment",
                ns(json!({"spec": {"selector": sel, "template": template}})),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                ns(json!({"spec": {"selector": sel, "template": template}})),
            ),
            (
                "apps/v1",
                "StatefulSet",
                ns(json!({"spec": {"selector": sel, "template": template, "serviceName": "x"}})),
            ),
            (
                "apps/v1",
                "DaemonSet",
                ns(json!({"spec": {"selector": sel, "template": template}})),
            ),
            ("apps/v1", "ControllerRevision", ns(json!({"revision": 1}))),
            (
                "policy/v1",
                "PodDisruptionBudget",
                ns(json!({"spec": {"selector": sel, "minAvailable": 1}})),
            ),
            (
                "batch/v1",
                "CronJob",
                ns(
                    json!({"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
                ),
            ),
            (
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                ns(
                    json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "maxReplicas": 3}}),
                ),
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                ns(json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})),
            ),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                ns(
                    json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.1"]}], "ports": [{"port": 80}]}),
                ),
            ),
            (
                "events.k8s.io/v1",
                "Event",
                ns(
                    json!({"eventTime": "2024-01-01T00:00:00.000000Z", "type": "Normal", "reason": "R", "action": "A", "reportingController": "c", "reportingInstance": "i"}),
                ),
            ),
            (
                "storage.k8s.io/v1",
                "StorageClass",
                cluster(json!({"provisioner": "example.com/x"})),
            ),
            (
                "scheduling.k8s.io/v1",
                "PriorityClass",
                cluster(json!({"value": 100})),
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "Role",
                ns(
                    json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
                ),
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                cluster(
                    json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
                ),
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                ns(
                    json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}),
                ),
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                cluster(
                    json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}, "subjects": [{"kind": "Group", "name": "g"}]}),
                ),
            ),
            (
                "networking.k8s.io/v1",
                "Ingress",
                ns(
                    json!({"spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
                ),
            ),
            (
                "networking.k8s.io/v1",
                "IngressClass",
                cluster(json!({"spec": {"controller": "example.com/ingress"}})),
            ),
            (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                ns(json!({"spec": {}})),
            ),
            (
                "certificates.k8s.io/v1",
                "CertificateSigningRequest",
                cluster(certificates::tests::valid_csr()),
            ),
        ];
        let registry = crate::Registry::builtin();
        let case_count = cases.len();
        for (api_version, kind, mut obj) in cases {
            let info = testutil::info(api_version, kind);
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!(kind);
            let mut decoded = info
                .ops
                .roundtrip(obj)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            crate::defaults::apply_defaults(&info, &mut decoded);
            let again = info
                .ops
                .roundtrip(decoded.clone())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(again, decoded, "{kind}: defaults must only set real fields");
            let errs: Vec<String> = validate_create(&info, &decoded)
                .iter()
                .map(Cause::describe)
                .collect();
            assert!(errs.is_empty(), "{kind}: {errs:?}");
            let mut stored = decoded.clone();
            stored["metadata"]["resourceVersion"] = json!("1");
            let errs: Vec<String> = validate_update(&info, &stored, &stored)
                .iter()
                .map(Cause::describe)
                .collect();
            assert!(errs.is_empty(), "{kind} update: {errs:?}");
            let rows = crate::table::row(&info, &decoded, time::OffsetDateTime::UNIX_EPOCH);
            assert_eq!(
                rows.len(),
                crate::table::columns(&info).len(),
                "{kind} table row"
            );
        }
        // every served kind has been covered (Job needs its generated selector)
        let covered = registry
            .resources()
            .iter()
            .filter(|r| r.kind != "Job")
            .count();
        assert_eq!(covered, case_count);
        let info = testutil::info("batch/v1", "Job");
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "d", "uid": "u1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        job = info
            .ops
            .roundtrip(job)
            .unwrap_or_else(|e| panic!("job: {e}"));
        crate::defaults::set_job_selector(&mut job);
        crate::defaults::apply_defaults(&info, &mut job);
        assert_eq!(info.ops.roundtrip(job.clone()).ok(), Some(job.clone()));
        let errs: Vec<String> = validate_create(&info, &job)
            .iter()
            .map(Cause::describe)
            .collect();
        assert!(errs.is_empty(), "Job: {errs:?}");
    }

    #[test]
    fn name_rules_per_kind() {
        assert_eq!(
            name_rule(&testutil::info("v1", "Namespace")),
            NameRule::Label
        );
        assert_eq!(
            name_rule(&testutil::info("v1", "Service")),
            NameRule::Dns1035
        );
        assert_eq!(
            name_rule(&testutil::info(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole"
            )),
            NameRule::PathSegment
        );
        assert_eq!(
            name_rule(&testutil::info("v1", "ConfigMap")),
            NameRule::Subdomain
        );
    }

    #[test]
    fn bad_name_message_matches_upstream() {
        let e = testutil::create(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
        );
        assert_eq!(
            e,
            vec!["metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
    }
}
