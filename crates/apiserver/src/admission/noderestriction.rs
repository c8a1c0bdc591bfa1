//! NodeRestriction, as upstream's `plugin/pkg/admission/noderestriction`, with the write
//! half of upstream's Node authorizer: a node identity (`system:node:<name>` in
//! `system:nodes`) may write only what its kubelet needs.
//!
//! - nodes: only its own Node (and status); not its taints, not labels under
//!   `node-restriction.kubernetes.io/` or unknown `kubernetes.io`/`k8s.io` labels, no
//!   `configSource`;
//! - pods: create mirror pods bound to itself (owned by its Node, referencing no service
//!   account, secret, configmap or claim), update the status of pods bound to itself
//!   (labels unchanged), delete and evict pods bound to itself;
//! - leases: only `kube-node-lease/<name>`;
//! - CertificateSigningRequests (create) and events;
//! - nothing else: other writes are refused as an authorizer would refuse them.
//!
//! Reads are not restricted (yet). The checks are in three places, each with what it
//! needs: [`check_request`] before the request is served (attributes, and the stored pod
//! for a delete or eviction), [`check_create`] on the object being created and
//! [`check_update`] on the merged object of an update or patch.

use krust_machinery::status::qualified;
use krust_machinery::ApiError;
use serde_json::Value;

use crate::auth::{self, Attributes, Identity, ResourceAttributes};
use crate::request::ResourcePath;
use crate::rest::Rest;

/// Upstream's plugin name.
pub const PLUGIN_NAME: &str = "NodeRestriction";
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Labels a kubelet may set on its Node within the `kubernetes.io` and `k8s.io` namespaces
/// (upstream's `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// `admission.NewForbidden`: `<resource> "<name>" is forbidden: <why>`.
fn refuse(group: &str, resource: &str, name: &str, why: impl std::fmt::Display) -> ApiError {
    let gr = qualified(group, resource);
    if name.is_empty() {
        ApiError::forbidden(format!("{gr} is forbidden: {why}"))
    } else {
        ApiError::forbidden(format!("{gr} {name:?} is forbidden: {why}"))
    }
}

/// Upstream's admission operation of a verb.
fn operation(verb: &str) -> &'static str {
    match verb {
        "create" => "CREATE",
        "delete" | "deletecollection" => "DELETE",
        _ => "UPDATE",
    }
}

fn node_name_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn name_of(obj: &Value) -> &str {
    krust_machinery::object::name(obj).unwrap_or_default()
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The checks that need only the request (and, for a pod's deletion or eviction, the
/// stored pod, read through `stored_pod` only then). `Ok` for anyone but a node.
pub async fn check_request<F, Fut>(
    who: &Identity,
    attrs: &Attributes<'_>,
    stored_pod: F,
) -> Result<(), ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let (Some(node), Some(r)) = (who.node_name(), attrs.resource) else {
        return Ok(());
    };
    let verb = attrs.verb;
    if !is_write(verb) {
        return Ok(());
    }
    let name = r.name.unwrap_or_default();
    let deny = |why: String| refuse(r.group, r.resource, name, why);
    if node.is_empty() {
        return Err(deny(format!(
            "could not determine node from user {:?}",
            who.user
        )));
    }
    match (r.group, r.resource, r.subresource) {
        ("", "nodes", _) => {
            if verb == "deletecollection" || (verb != "create" && name != node) {
                return Err(deny(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                )));
            }
            Ok(())
        }
        ("", "pods", None) => match verb {
            "create" => Ok(()),
            "delete" => {
                let pod = stored_pod().await?;
                if node_name_of(&pod) != node {
                    return Err(deny(format!(
                        "node {node:?} can only delete pods with spec.nodeName set to itself"
                    )));
                }
                Ok(())
            }
            _ => Err(deny(format!(
                "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
                operation(verb)
            ))),
        },
        ("", "pods", Some("status")) if matches!(verb, "update" | "patch") => Ok(()),
        ("", "pods", Some("status")) => {
            Err(deny(format!("unexpected operation {:?}", operation(verb))))
        }
        ("", "pods", Some("eviction")) => {
            let pod = stored_pod().await?;
            if node_name_of(&pod) != node {
                return Err(deny(format!(
                    "node {node} can only evict pods with spec.nodeName set to itself"
                )));
            }
            Ok(())
        }
        ("", "pods", Some(sub)) => Err(deny(format!(
            "unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed"
        ))),
        ("coordination.k8s.io", "leases", _) => {
            if r.namespace != Some(NODE_LEASE_NAMESPACE) {
                return Err(deny(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                )));
            }
            if verb != "create" && name != node {
                return Err(deny(
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
            Ok(())
        }
        ("certificates.k8s.io", "certificatesigningrequests", None) if verb == "create" => Ok(()),
        // Projected service account tokens for the node's pods. Upstream also checks that
        // the token is bound to a pod on this node (the Node authorizer's graph, issue 18).
        ("", "serviceaccounts", Some("token")) if verb == "create" => Ok(()),
        ("", "events", None) | ("events.k8s.io", "events", None) => Ok(()),
        _ => Err(auth::forbidden(who, attrs, "")),
    }
}

/// [`check_create`] for a create through `rest`, reading the node's Node for a pod.
pub async fn admit_create(
    rest: &Rest,
    rp: &ResourcePath<'_>,
    who: &Identity,
    obj: &Value,
) -> Result<(), ApiError> {
    let Some(node) = who.node_name() else {
        return Ok(());
    };
    let attrs = rp.attributes();
    let own_node = match (attrs.group, attrs.resource) {
        ("", "pods") => match rest.registry.lookup("", "v1", "nodes") {
            Some(info) => {
                let nodes = ResourcePath {
                    info: &info,
                    namespace: None,
                    name: Some(node.to_string()),
                    subresource: None,
                    legacy_watch: false,
                };
                rest.get(&nodes, node).await.ok().map(|(n, _)| n)
            }
            None => None,
        },
        _ => None,
    };
    check_create(who, &attrs, obj, own_node.as_ref())
}

/// The checks on an object a node creates.
pub fn check_create(
    who: &Identity,
    r: &ResourceAttributes<'_>,
    obj: &Value,
    own_node: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = who.node_name() else {
        return Ok(());
    };
    let name = name_of(obj);
    let deny = |why: String| refuse(r.group, r.resource, name, why);
    match (r.group, r.resource, r.subresource) {
        ("", "nodes", None) => {
            if name != node {
                return Err(deny(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                )));
            }
            if has(obj, "/spec/configSource") {
                return Err(deny(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                )));
            }
            let forbidden = forbidden_labels(&modified_labels(obj, &Value::Null));
            if !forbidden.is_empty() {
                return Err(deny(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                )));
            }
            Ok(())
        }
        ("", "pods", None) => check_mirror_pod(node, obj, own_node).map_err(deny),
        ("coordination.k8s.io", "leases", None) if name != node => Err(deny(
            "can only access node lease with the same name as the requesting node".into(),
        )),
        _ => Ok(()),
    }
}

fn has(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).is_some_and(|v| !v.is_null())
}

/// `admitPodCreate`: why a node may not create this pod, if it may not.
fn check_mirror_pod(node: &str, pod: &Value, own_node: Option<&Value>) -> Result<(), String> {
    let annotations = pod.pointer("/metadata/annotations");
    if annotations.and_then(|a| a.get(MIRROR_ANNOTATION)).is_none() {
        return Err(format!("pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"));
    }
    if node_name_of(pod) != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let owner = match owners {
        [] => {
            return Err(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [o] => o,
        _ => {
            return Err(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    };
    let s = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default();
    let b = |k: &str| owner.get(k).and_then(Value::as_bool);
    if s("apiVersion") != "v1" || s("kind") != "Node" || s("name") != node {
        return Err(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        ));
    }
    if b("controller") != Some(true) {
        return Err(format!(
            "node {node:?} can only create pods with a controller owner reference set to itself"
        ));
    }
    if b("blockOwnerDeletion") == Some(true) {
        return Err(format!(
            "node {node:?} must not set blockOwnerDeletion on an owner reference"
        ));
    }
    let node_uid = own_node
        .and_then(|n| n.pointer("/metadata/uid"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if s("uid") != node_uid {
        return Err(format!(
            "node {node} UID mismatch: expected {} got {node_uid}",
            s("uid")
        ));
    }
    pod_references(pod)
        .map_err(|what| format!("node {node:?} can not create pods that reference {what}"))
}

/// What API objects a pod names that a node may not hand it.
fn pod_references(pod: &Value) -> Result<(), &'static str> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err("a service account");
    }
    let text = spec.to_string();
    let volumes = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let secret_volume = volumes.iter().any(|v| {
        has(v, "/secret")
            || v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| has(s, "/secret")))
    });
    if secret_volume
        || text.contains("\"secretKeyRef\"")
        || text.contains("\"secretRef\"")
        || has(spec, "/imagePullSecrets/0")
    {
        return Err("secrets");
    }
    let configmap_volume = volumes.iter().any(|v| {
        has(v, "/configMap")
            || v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| has(s, "/configMap")))
    });
    if configmap_volume || text.contains("\"configMapKeyRef\"") || text.contains("\"configMapRef\"")
    {
        return Err("configmaps");
    }
    if text.contains("\"clusterTrustBundle\"") {
        return Err("clustertrustbundles");
    }
    if volumes.iter().any(|v| has(v, "/persistentVolumeClaim")) {
        return Err("persistentvolumeclaims");
    }
    Ok(())
}

/// The checks on the merged object of a node's update or patch (`old` as stored).
pub fn check_update(
    who: &Identity,
    r: &ResourceAttributes<'_>,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let Some(node) = who.node_name() else {
        return Ok(());
    };
    let name = r.name.unwrap_or_default();
    let deny = |why: String| refuse(r.group, r.resource, name, why);
    match (r.group, r.resource, r.subresource) {
        ("", "nodes", _) => {
            if has(new, "/spec/configSource")
                && new.pointer("/spec/configSource") != old.pointer("/spec/configSource")
            {
                return Err(deny(format!("node {node:?} is not allowed to update configSource to a new non-nil configSource")));
            }
            if !same(new.pointer("/spec/taints"), old.pointer("/spec/taints")) {
                return Err(deny(format!(
                    "node {node:?} is not allowed to modify taints"
                )));
            }
            let forbidden = forbidden_labels(&modified_labels(new, old));
            if !forbidden.is_empty() {
                return Err(deny(format!(
                    "is not allowed to modify labels: {}",
                    forbidden.join(", ")
                )));
            }
            Ok(())
        }
        ("", "pods", Some("status")) => {
            if node_name_of(old) != node {
                return Err(deny(format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself")));
            }
            if !same(
                new.pointer("/metadata/labels"),
                old.pointer("/metadata/labels"),
            ) {
                return Err(deny(format!(
                    "node {node:?} cannot update labels through pod status"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Equal, an empty list or map counting as absent.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        _ => false,
    };
    (empty(a) && empty(b)) || a == b
}

/// Label keys added, removed or changed between two objects, sorted.
fn modified_labels(new: &Value, old: &Value) -> Vec<String> {
    let labels = |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (labels(new), labels(old));
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
}

fn under(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.ends_with(&format!(".{domain}"))
}

fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key) || {
        let ns = label_namespace(key);
        KUBELET_LABEL_NAMESPACES.iter().any(|d| under(ns, d))
    }
}

/// `getForbiddenLabels`: node-restriction labels, and `kubernetes.io`/`k8s.io` labels a
/// kubelet does not set.
fn forbidden_labels(modified: &[String]) -> Vec<String> {
    modified
        .iter()
        .filter(|k| {
            let ns = label_namespace(k);
            under(ns, "node-restriction.kubernetes.io")
                || ((under(ns, "kubernetes.io") || under(ns, "k8s.io")) && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
