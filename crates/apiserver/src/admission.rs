//! Mutating admission on create, as upstream's in-tree admission plugins.
//!
//! - DefaultTolerationSeconds: a pod that does not tolerate the `node.kubernetes.io/not-ready`
//!   or `node.kubernetes.io/unreachable` NoExecute taint gets a toleration of it for
//!   [`DEFAULT_TOLERATION_SECONDS`], so the node lifecycle controller evicts it five minutes
//!   after its node fails rather than at once.
//! - ServiceAccount: a pod runs as `default` unless it names a ServiceAccount, and unless the
//!   pod or its ServiceAccount opts out (`automountServiceAccountToken: false`) it gets the
//!   `kube-api-access-*` projected volume (a bound token, the cluster CA, the namespace)
//!   mounted where client libraries look for in-cluster credentials. Unlike upstream, a
//!   ServiceAccount that does not exist (yet) is no reason to refuse the pod: the
//!   serviceaccount controller makes `default` shortly after a namespace, and API servers
//!   without controllers (tests) must still take pods.
//! - StorageObjectInUseProtection: a new PersistentVolumeClaim gets the
//!   `kubernetes.io/pvc-protection` finalizer and a new PersistentVolume the
//!   `kubernetes.io/pv-protection` one; the `pvc-protection` and `pv-protection` controllers
//!   lift them once no pod uses the claim, or the volume is no longer bound.
//! - DefaultIngressClass ([`defaultingressclass`]): an Ingress that names no class gets the
//!   default IngressClass.
//! - NodeRestriction ([`noderestriction`]): what a node identity may write; called by the
//!   server before a request and by `rest` on the objects of a node's create or update.
//! - Dynamic admission ([`webhooks`]): Mutating and ValidatingWebhookConfigurations, called
//!   by `rest` after the built-in plugins and after validation (through krust-webhook).
//!
//! What the plugins need from the store is read first ([`lookups`]), so that
//! [`admit_create`] and the plugins stay pure functions of the object and those reads.

pub mod defaultingressclass;
pub mod noderestriction;
pub mod webhooks;

use krust_machinery::{storage, ResourceInfo};
use serde_json::{json, Value};

use crate::request::ResourcePath;
use crate::rest::Rest;

/// What the plugins read from the store about an object being created.
#[derive(Debug, Default)]
pub struct Lookups {
    /// The pod's ServiceAccount as stored, if it exists.
    pub service_account: Option<Value>,
    /// The stored IngressClasses, for an Ingress that names no class.
    pub ingress_classes: Vec<Value>,
}

/// Reads what [`admit_create`] needs for `obj`; only the lookups its kind uses are made.
pub async fn lookups(rest: &Rest, info: &ResourceInfo, obj: &Value) -> Lookups {
    Lookups {
        service_account: service_account_of(rest, info, obj).await,
        ingress_classes: defaultingressclass::classes_for(rest, info, obj).await,
    }
}

/// Where the token volume is mounted in every container.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Prefix of the injected volume's name.
pub const API_ACCESS_VOLUME_PREFIX: &str = "kube-api-access-";
/// Token lifetime of the injected volume: upstream's 3607 seconds, odd so that it is
/// recognisable as the injected one.
pub const API_ACCESS_TOKEN_SECONDS: i64 = 3607;
/// The ConfigMap with the cluster CA, published in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Upstream's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Applies the mutating admission plugins to an object being created, with what
/// [`lookups`] read for it.
pub fn admit_create(info: &ResourceInfo, obj: &mut Value, lookups: &Lookups) {
    match (info.group, info.kind) {
        ("", "Pod") => {
            default_toleration_seconds(obj, DEFAULT_TOLERATION_SECONDS);
            let sa = lookups.service_account.as_ref();
            service_account_admission(obj, sa, &crate::rest::random_suffix());
        }
        ("networking.k8s.io", "Ingress") => {
            defaultingressclass::admit(obj, &lookups.ingress_classes);
        }
        ("", "PersistentVolumeClaim") => add_finalizer(obj, storage::PVC_PROTECTION_FINALIZER),
        ("", "PersistentVolume") => add_finalizer(obj, storage::PV_PROTECTION_FINALIZER),
        _ => {}
    }
}

/// Adds `finalizer` to the object's finalizers unless it is there already.
fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
            list.push(json!(finalizer));
        }
    }
}

fn pod_service_account_name(pod: &Value) -> &str {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// The ServiceAccount a pod being created will run as, if it exists.
pub async fn service_account_of(rest: &Rest, info: &ResourceInfo, pod: &Value) -> Option<Value> {
    if (info.group, info.kind) != ("", "Pod") {
        return None;
    }
    let sa_info = rest.registry.lookup("", "v1", "serviceaccounts")?;
    let name = pod_service_account_name(pod).to_string();
    let rp = ResourcePath {
        info: &sa_info,
        namespace: krust_machinery::object::namespace(pod).map(str::to_string),
        name: Some(name.clone()),
        subresource: None,
        legacy_watch: false,
    };
    rest.get(&rp, &name).await.ok().map(|(v, _)| v)
}

/// Mirror pods (static pods' API copies) are left alone, as upstream.
fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
}

/// Upstream's ServiceAccount admission plugin; `suffix` names a new token volume.
pub fn service_account_admission(pod: &mut Value, sa: Option<&Value>, suffix: &str) {
    if is_mirror_pod(pod) {
        return;
    }
    let name = pod_service_account_name(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.and_then(|s| s.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if !volumes.is_array() {
        *volumes = json!([]);
    }
    let Some(list) = volumes.as_array_mut() else {
        return;
    };
    let existing = list.iter().find_map(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with(API_ACCESS_VOLUME_PREFIX))
            .map(str::to_string)
    });
    let volume_name = match existing {
        Some(n) => n,
        None => {
            let mut n = format!("{API_ACCESS_VOLUME_PREFIX}{suffix}");
            while list.iter().any(|v| v["name"] == n.as_str()) {
                n.push('x');
            }
            list.push(api_access_volume(&n));
            n
        }
    };
    for key in ["initContainers", "containers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts
                .iter()
                .any(|m| m["mountPath"] == SERVICE_ACCOUNT_MOUNT_PATH)
            {
                continue;
            }
            mounts.push(json!({"name": volume_name, "readOnly": true,
                "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}));
        }
    }
}

/// The injected projected volume, already in its defaulted form (admission runs after
/// defaulting).
fn api_access_volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": API_ACCESS_TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}})
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
    fn protects_claims_and_volumes_once() {
        let mut claim = json!({"metadata": {"name": "data", "finalizers": null}});
        add_finalizer(&mut claim, storage::PVC_PROTECTION_FINALIZER);
        add_finalizer(&mut claim, storage::PVC_PROTECTION_FINALIZER);
        assert_eq!(
            claim["metadata"]["finalizers"],
            json!(["kubernetes.io/pvc-protection"])
        );
        let mut volume = json!({"metadata": {"name": "pv", "finalizers": ["example.com/keep"]}});
        add_finalizer(&mut volume, storage::PV_PROTECTION_FINALIZER);
        assert_eq!(
            volume["metadata"]["finalizers"],
            json!(["example.com/keep", "kubernetes.io/pv-protection"])
        );
    }

    #[test]
    fn injects_the_api_access_volume() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [
                {"name": "mine", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]}],
            "volumes": [{"name": "mine", "emptyDir": {}}]}});
        service_account_admission(&mut pod, None, "abcde");
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        let vol = &spec["volumes"][1];
        assert_eq!(vol["name"], "kube-api-access-abcde");
        let sources = &vol["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true,
            "mountPath": SERVICE_ACCOUNT_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
        // A container that mounts something there already keeps its own.
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        // Admitting again (an update path, a retry) adds nothing.
        let before = pod.clone();
        service_account_admission(&mut pod, None, "zzzzz");
        assert_eq!(pod, before);
    }

    #[test]
    fn automount_opt_outs() {
        let opted_out = json!({"automountServiceAccountToken": false});
        let mut pod =
            json!({"spec": {"serviceAccountName": "robot", "containers": [{"name": "a"}]}});
        service_account_admission(&mut pod, Some(&opted_out), "abcde");
        assert_eq!(pod["spec"]["serviceAccountName"], "robot");
        assert!(pod["spec"].get("volumes").is_none());
        // The pod's own choice wins over its ServiceAccount's.
        let mut pod =
            json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "a"}]}});
        service_account_admission(&mut pod, Some(&opted_out), "abcde");
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        let mut pod =
            json!({"spec": {"automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        service_account_admission(&mut pod, None, "abcde");
        assert!(pod["spec"].get("volumes").is_none());
        let mut mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}},
            "spec": {"containers": [{"name": "a"}]}});
        service_account_admission(&mut mirror, None, "abcde");
        assert!(mirror["spec"].get("serviceAccountName").is_none());
    }

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
