//! Merge facts for the built-in types: which lists merge by key (and on which keys), which
//! lists are sets, which maps and structs are atomic.
//!
//! Upstream carries these as `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type` in its
//! OpenAPI documents; the k8s-openapi schemas we serve lack them, so they are listed here,
//! keyed by definition name and property, from the API conventions of the types. This table
//! is the one source of truth: the patch code merges by it, and the served OpenAPI v3
//! documents (krust-apiserver's `openapi`) carry it as those extensions, so that clients that
//! compute patches themselves (client-side `kubectl apply`) agree with the server.
//!
//! Anything not listed follows upstream's defaults: a list is replaced whole by a strategic
//! merge patch and is atomic for server-side apply; maps and structs merge key by key.

use std::collections::HashMap;
use std::sync::LazyLock;

/// How server-side apply treats a list (`x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars: each value is owned on its own (`v:<value>`).
    Set,
    /// A list of objects identified by these key fields (`k:{...}`).
    Map(&'static [&'static str]),
}

/// Whether a struct or map is merged field by field or replaced whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Atomic,
    Granular,
}

/// What is known about one property of one definition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldFacts {
    /// Strategic merge patch merges this list (by `merge_key` for lists of objects, as a set
    /// for lists of scalars) instead of replacing it.
    pub patch_merge: bool,
    /// Strategic merge patch replaces this map instead of merging it.
    pub patch_replace: bool,
    /// `retainKeys` strategy: `kubectl apply` sends `$retainKeys` for this field.
    pub retain_keys: bool,
    /// The key identifying list items in a strategic merge patch.
    pub merge_key: Option<&'static str>,
    /// The list type for server-side apply; `None` means atomic.
    pub list_type: Option<ListType>,
    /// The map or struct granularity for server-side apply when set on the field itself.
    pub granularity: Option<Granularity>,
}

/// A list of objects merged by `keys` (the first is the strategic merge key).
const fn keyed(keys: &'static [&'static str]) -> FieldFacts {
    let merge_key = match keys.first() {
        Some(k) => Some(*k),
        None => None,
    };
    FieldFacts {
        patch_merge: true,
        patch_replace: false,
        retain_keys: false,
        merge_key,
        list_type: Some(ListType::Map(keys)),
        granularity: None,
    }
}

/// Like [`keyed`], and `kubectl apply` sends `$retainKeys` in each item.
const fn keyed_retain(keys: &'static [&'static str]) -> FieldFacts {
    FieldFacts {
        retain_keys: true,
        ..keyed(keys)
    }
}

/// A list of scalars merged as a set by both patch kinds.
const fn set() -> FieldFacts {
    FieldFacts {
        patch_merge: true,
        list_type: Some(ListType::Set),
        ..NONE
    }
}

/// A list of scalars that is a set for server-side apply but replaced by patches.
const fn apply_set() -> FieldFacts {
    FieldFacts {
        list_type: Some(ListType::Set),
        ..NONE
    }
}

/// A keyed list for server-side apply that patches replace whole.
const fn apply_keyed(keys: &'static [&'static str]) -> FieldFacts {
    FieldFacts {
        list_type: Some(ListType::Map(keys)),
        ..NONE
    }
}

/// Merged by key in patches but atomic for server-side apply.
const fn patch_keyed(key: &'static str) -> FieldFacts {
    FieldFacts {
        patch_merge: true,
        merge_key: Some(key),
        list_type: Some(ListType::Atomic),
        ..NONE
    }
}

/// Replaced whole by both.
const fn atomic() -> FieldFacts {
    FieldFacts {
        list_type: Some(ListType::Atomic),
        granularity: Some(Granularity::Atomic),
        ..NONE
    }
}

/// A struct with a `retainKeys` strategy (a union whose other members are cleared).
const fn retain() -> FieldFacts {
    FieldFacts {
        retain_keys: true,
        ..NONE
    }
}

/// A struct that is granular here although its type is atomic elsewhere.
const fn granular() -> FieldFacts {
    FieldFacts {
        granularity: Some(Granularity::Granular),
        ..NONE
    }
}

const NONE: FieldFacts = FieldFacts {
    patch_merge: false,
    patch_replace: false,
    retain_keys: false,
    merge_key: None,
    list_type: None,
    granularity: None,
};

macro_rules! core {
    ($t:literal) => {
        concat!("io.k8s.api.core.v1.", $t)
    };
}
macro_rules! apps {
    ($t:literal) => {
        concat!("io.k8s.api.apps.v1.", $t)
    };
}
macro_rules! batch {
    ($t:literal) => {
        concat!("io.k8s.api.batch.v1.", $t)
    };
}
macro_rules! meta {
    ($t:literal) => {
        concat!("io.k8s.apimachinery.pkg.apis.meta.v1.", $t)
    };
}

/// (definition, property, facts).
static FIELDS: &[(&str, &str, FieldFacts)] = &[
    // Object metadata.
    (meta!("ObjectMeta"), "finalizers", set()),
    (meta!("ObjectMeta"), "ownerReferences", keyed(&["uid"])),
    (meta!("ObjectMeta"), "managedFields", atomic()),
    (meta!("LabelSelector"), "matchExpressions", atomic()),
    (meta!("LabelSelectorRequirement"), "values", atomic()),
    // Pods and containers.
    (core!("PodSpec"), "containers", keyed(&["name"])),
    (core!("PodSpec"), "initContainers", keyed(&["name"])),
    (core!("PodSpec"), "ephemeralContainers", keyed(&["name"])),
    (core!("PodSpec"), "volumes", keyed_retain(&["name"])),
    (core!("PodSpec"), "imagePullSecrets", keyed(&["name"])),
    (core!("PodSpec"), "hostAliases", keyed(&["ip"])),
    (core!("PodSpec"), "tolerations", atomic()),
    (core!("PodSpec"), "readinessGates", atomic()),
    (
        core!("PodSpec"),
        "topologySpreadConstraints",
        keyed(&["topologyKey", "whenUnsatisfiable"]),
    ),
    (core!("PodSpec"), "schedulingGates", keyed(&["name"])),
    (core!("PodSpec"), "resourceClaims", keyed_retain(&["name"])),
    (core!("PodSpec"), "nodeSelector", atomic()),
    (core!("Container"), "command", atomic()),
    (core!("Container"), "args", atomic()),
    (
        core!("Container"),
        "ports",
        keyed(&["containerPort", "protocol"]),
    ),
    (core!("Container"), "envFrom", atomic()),
    (core!("Container"), "env", keyed(&["name"])),
    (core!("Container"), "resizePolicy", atomic()),
    (core!("Container"), "volumeMounts", keyed(&["mountPath"])),
    (core!("Container"), "volumeDevices", keyed(&["devicePath"])),
    (core!("EphemeralContainer"), "command", atomic()),
    (core!("EphemeralContainer"), "args", atomic()),
    (
        core!("EphemeralContainer"),
        "ports",
        keyed(&["containerPort", "protocol"]),
    ),
    (core!("EphemeralContainer"), "envFrom", atomic()),
    (core!("EphemeralContainer"), "env", keyed(&["name"])),
    (core!("EphemeralContainer"), "resizePolicy", atomic()),
    (
        core!("EphemeralContainer"),
        "volumeMounts",
        keyed(&["mountPath"]),
    ),
    (
        core!("EphemeralContainer"),
        "volumeDevices",
        keyed(&["devicePath"]),
    ),
    (
        core!("ResourceRequirements"),
        "claims",
        apply_keyed(&["name"]),
    ),
    (core!("ExecAction"), "command", atomic()),
    (core!("HTTPGetAction"), "httpHeaders", atomic()),
    (core!("Capabilities"), "add", atomic()),
    (core!("Capabilities"), "drop", atomic()),
    (core!("LinuxContainerUser"), "supplementalGroups", atomic()),
    (core!("PodSecurityContext"), "supplementalGroups", atomic()),
    (core!("PodSecurityContext"), "sysctls", atomic()),
    (core!("PodDNSConfig"), "nameservers", atomic()),
    (core!("PodDNSConfig"), "searches", atomic()),
    (core!("PodDNSConfig"), "options", atomic()),
    (core!("HostAlias"), "hostnames", atomic()),
    (
        core!("TopologySpreadConstraint"),
        "matchLabelKeys",
        atomic(),
    ),
    (core!("NodeSelector"), "nodeSelectorTerms", atomic()),
    (core!("NodeSelectorTerm"), "matchExpressions", atomic()),
    (core!("NodeSelectorTerm"), "matchFields", atomic()),
    (core!("NodeSelectorRequirement"), "values", atomic()),
    (
        core!("NodeAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
        atomic(),
    ),
    (
        core!("PodAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
        atomic(),
    ),
    (
        core!("PodAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
        atomic(),
    ),
    (
        core!("PodAntiAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
        atomic(),
    ),
    (
        core!("PodAntiAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
        atomic(),
    ),
    (core!("PodAffinityTerm"), "namespaces", atomic()),
    (core!("PodAffinityTerm"), "matchLabelKeys", atomic()),
    (core!("PodAffinityTerm"), "mismatchLabelKeys", atomic()),
    (
        core!("TopologySelectorTerm"),
        "matchLabelExpressions",
        atomic(),
    ),
    (
        core!("TopologySelectorLabelRequirement"),
        "values",
        atomic(),
    ),
    (core!("PodStatus"), "conditions", keyed(&["type"])),
    (core!("PodStatus"), "hostIPs", patch_keyed("ip")),
    (core!("PodStatus"), "podIPs", keyed(&["ip"])),
    (core!("PodStatus"), "initContainerStatuses", atomic()),
    (core!("PodStatus"), "containerStatuses", atomic()),
    (core!("PodStatus"), "ephemeralContainerStatuses", atomic()),
    (
        core!("PodStatus"),
        "resourceClaimStatuses",
        keyed_retain(&["name"]),
    ),
    (
        core!("ContainerStatus"),
        "volumeMounts",
        keyed(&["mountPath"]),
    ),
    (
        core!("ContainerStatus"),
        "allocatedResourcesStatus",
        keyed(&["name"]),
    ),
    (
        core!("ResourceStatus"),
        "resources",
        apply_keyed(&["resourceID"]),
    ),
    // Volumes.
    (core!("SecretVolumeSource"), "items", atomic()),
    (core!("SecretProjection"), "items", atomic()),
    (core!("ConfigMapVolumeSource"), "items", atomic()),
    (core!("ConfigMapProjection"), "items", atomic()),
    (core!("DownwardAPIVolumeSource"), "items", atomic()),
    (core!("DownwardAPIProjection"), "items", atomic()),
    (core!("ProjectedVolumeSource"), "sources", atomic()),
    (core!("RBDVolumeSource"), "monitors", atomic()),
    (core!("RBDPersistentVolumeSource"), "monitors", atomic()),
    (core!("CephFSVolumeSource"), "monitors", atomic()),
    (core!("CephFSPersistentVolumeSource"), "monitors", atomic()),
    (core!("ISCSIVolumeSource"), "portals", atomic()),
    (core!("ISCSIPersistentVolumeSource"), "portals", atomic()),
    (core!("FCVolumeSource"), "targetWWNs", atomic()),
    (core!("FCVolumeSource"), "wwids", atomic()),
    (core!("PersistentVolumeSpec"), "accessModes", atomic()),
    (core!("PersistentVolumeSpec"), "mountOptions", atomic()),
    (core!("PersistentVolumeSpec"), "claimRef", granular()),
    (core!("PersistentVolumeClaimSpec"), "accessModes", atomic()),
    (
        core!("PersistentVolumeClaimStatus"),
        "accessModes",
        atomic(),
    ),
    (
        core!("PersistentVolumeClaimStatus"),
        "conditions",
        keyed(&["type"]),
    ),
    // Services and endpoints.
    (core!("ServiceSpec"), "ports", keyed(&["port", "protocol"])),
    (core!("ServiceSpec"), "selector", atomic()),
    (core!("ServiceSpec"), "clusterIPs", atomic()),
    (core!("ServiceSpec"), "externalIPs", atomic()),
    (core!("ServiceSpec"), "loadBalancerSourceRanges", atomic()),
    (core!("ServiceSpec"), "ipFamilies", atomic()),
    (core!("ServiceStatus"), "conditions", keyed(&["type"])),
    (core!("LoadBalancerStatus"), "ingress", atomic()),
    (core!("LoadBalancerIngress"), "ports", atomic()),
    (core!("Endpoints"), "subsets", atomic()),
    (core!("EndpointSubset"), "addresses", atomic()),
    (core!("EndpointSubset"), "notReadyAddresses", atomic()),
    (core!("EndpointSubset"), "ports", atomic()),
    (
        "io.k8s.api.discovery.v1.EndpointSlice",
        "endpoints",
        atomic(),
    ),
    ("io.k8s.api.discovery.v1.EndpointSlice", "ports", atomic()),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses", apply_set()),
    (
        "io.k8s.api.discovery.v1.EndpointHints",
        "forZones",
        atomic(),
    ),
    (
        "io.k8s.api.discovery.v1.EndpointHints",
        "forNodes",
        atomic(),
    ),
    // Service accounts, nodes, namespaces, quotas.
    (core!("ServiceAccount"), "secrets", keyed(&["name"])),
    (core!("ServiceAccount"), "imagePullSecrets", atomic()),
    (core!("NodeSpec"), "podCIDRs", set()),
    (core!("NodeSpec"), "taints", atomic()),
    (core!("NodeStatus"), "conditions", keyed(&["type"])),
    (core!("NodeStatus"), "addresses", keyed(&["type"])),
    (core!("NodeStatus"), "images", atomic()),
    (core!("NodeStatus"), "volumesInUse", atomic()),
    (core!("NodeStatus"), "volumesAttached", atomic()),
    (core!("NodeStatus"), "runtimeHandlers", atomic()),
    (core!("ContainerImage"), "names", atomic()),
    (core!("NamespaceSpec"), "finalizers", atomic()),
    (core!("NamespaceStatus"), "conditions", keyed(&["type"])),
    (core!("ReplicationControllerSpec"), "selector", atomic()),
    (
        core!("ReplicationControllerStatus"),
        "conditions",
        keyed(&["type"]),
    ),
    (core!("LimitRangeSpec"), "limits", atomic()),
    (core!("ResourceQuotaSpec"), "scopes", atomic()),
    (core!("ScopeSelector"), "matchExpressions", atomic()),
    (
        core!("ScopedResourceSelectorRequirement"),
        "values",
        atomic(),
    ),
    // Workloads.
    (apps!("DeploymentSpec"), "strategy", retain()),
    (apps!("DeploymentStatus"), "conditions", keyed(&["type"])),
    (apps!("ReplicaSetStatus"), "conditions", keyed(&["type"])),
    (apps!("StatefulSetSpec"), "volumeClaimTemplates", atomic()),
    (apps!("StatefulSetStatus"), "conditions", keyed(&["type"])),
    (apps!("DaemonSetStatus"), "conditions", keyed(&["type"])),
    (batch!("JobStatus"), "conditions", patch_keyed("type")),
    (batch!("PodFailurePolicy"), "rules", atomic()),
    (batch!("PodFailurePolicyRule"), "onPodConditions", atomic()),
    (
        batch!("PodFailurePolicyOnExitCodesRequirement"),
        "values",
        apply_set(),
    ),
    (batch!("SuccessPolicy"), "rules", atomic()),
    (batch!("UncountedTerminatedPods"), "succeeded", apply_set()),
    (batch!("UncountedTerminatedPods"), "failed", apply_set()),
    (batch!("CronJobStatus"), "active", atomic()),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "metrics",
        atomic(),
    ),
    (
        "io.k8s.api.autoscaling.v2.HPAScalingRules",
        "policies",
        atomic(),
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "currentMetrics",
        atomic(),
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        keyed(&["type"]),
    ),
    // RBAC and storage.
    ("io.k8s.api.rbac.v1.PolicyRule", "verbs", atomic()),
    ("io.k8s.api.rbac.v1.PolicyRule", "apiGroups", atomic()),
    ("io.k8s.api.rbac.v1.PolicyRule", "resources", atomic()),
    ("io.k8s.api.rbac.v1.PolicyRule", "resourceNames", atomic()),
    ("io.k8s.api.rbac.v1.PolicyRule", "nonResourceURLs", atomic()),
    ("io.k8s.api.rbac.v1.Role", "rules", atomic()),
    ("io.k8s.api.rbac.v1.ClusterRole", "rules", atomic()),
    (
        "io.k8s.api.rbac.v1.AggregationRule",
        "clusterRoleSelectors",
        atomic(),
    ),
    ("io.k8s.api.rbac.v1.RoleBinding", "subjects", atomic()),
    (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        "subjects",
        atomic(),
    ),
    (
        "io.k8s.api.storage.v1.StorageClass",
        "mountOptions",
        atomic(),
    ),
    (
        "io.k8s.api.storage.v1.StorageClass",
        "allowedTopologies",
        atomic(),
    ),
];

/// Structs replaced whole by server-side apply wherever they appear (`+structType=atomic`).
static ATOMIC_STRUCTS: &[&str] = &[
    meta!("LabelSelector"),
    meta!("OwnerReference"),
    core!("ObjectReference"),
    core!("LocalObjectReference"),
    core!("TypedLocalObjectReference"),
    core!("SecretReference"),
    core!("ConfigMapKeySelector"),
    core!("SecretKeySelector"),
    core!("ObjectFieldSelector"),
    core!("ResourceFieldSelector"),
    core!("NodeSelector"),
    core!("NodeSelectorTerm"),
    core!("TopologySelectorTerm"),
    core!("ScopeSelector"),
    core!("EndpointAddress"),
    core!("EndpointPort"),
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.api.rbac.v1.RoleRef",
];

/// Struct fields that Go holds by value, so they exist (as `{}`) even when unset. Upstream
/// compares objects with them present; we fill them in before comparing so that ownership
/// is recorded alike (`f:spec` owns its fields, not itself). Properties named `metadata`,
/// `spec` and `status` holding a struct are always such fields and are not listed.
static VALUE_STRUCTS: &[(&str, &str)] = &[
    (apps!("DeploymentSpec"), "template"),
    (apps!("DeploymentSpec"), "strategy"),
    (apps!("StatefulSetSpec"), "template"),
    (apps!("StatefulSetSpec"), "updateStrategy"),
    (apps!("DaemonSetSpec"), "template"),
    (apps!("DaemonSetSpec"), "updateStrategy"),
    (apps!("ReplicaSetSpec"), "template"),
    (batch!("JobSpec"), "template"),
    (batch!("CronJobSpec"), "jobTemplate"),
    (core!("PodTemplate"), "template"),
    (core!("Container"), "resources"),
    (core!("EphemeralContainer"), "resources"),
    (core!("ContainerStatus"), "state"),
    (core!("ContainerStatus"), "lastState"),
    (core!("PersistentVolumeClaimSpec"), "resources"),
    (core!("WeightedPodAffinityTerm"), "podAffinityTerm"),
    (core!("PreferredSchedulingTerm"), "preference"),
    (core!("ServiceStatus"), "loadBalancer"),
    (core!("NodeStatus"), "daemonEndpoints"),
    (core!("NodeStatus"), "nodeInfo"),
    (core!("NodeDaemonEndpoints"), "kubeletEndpoint"),
    (core!("Event"), "involvedObject"),
    (core!("Event"), "source"),
    ("io.k8s.api.events.v1.Event", "regarding"),
    ("io.k8s.api.events.v1.Event", "deprecatedSource"),
    ("io.k8s.api.discovery.v1.Endpoint", "conditions"),
    ("io.k8s.api.networking.v1.IngressStatus", "loadBalancer"),
    ("io.k8s.api.networking.v1.HTTPIngressPath", "backend"),
    ("io.k8s.api.networking.v1.IngressServiceBackend", "port"),
    ("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector"),
    ("io.k8s.api.rbac.v1.RoleBinding", "roleRef"),
    ("io.k8s.api.rbac.v1.ClusterRoleBinding", "roleRef"),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "scaleTargetRef",
    ),
];

/// Granular lists Go serializes even when empty (as `null`): present on both sides of a
/// comparison, so creating the first item does not make the list itself owned.
static ALWAYS_NULL: &[(&str, &str)] = &[(core!("PodSpec"), "containers")];

/// Defaults of list-map key fields, used when an item omits them (so a container port
/// without `protocol` is the item `{"containerPort":80,"protocol":"TCP"}`).
static KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    (core!("ContainerPort"), "protocol", "TCP"),
    (core!("ServicePort"), "protocol", "TCP"),
];

static INDEX: LazyLock<HashMap<&'static str, HashMap<&'static str, FieldFacts>>> =
    LazyLock::new(|| {
        let mut index: HashMap<&'static str, HashMap<&'static str, FieldFacts>> = HashMap::new();
        for (def, field, facts) in FIELDS {
            index.entry(def).or_default().insert(field, *facts);
        }
        index
    });

/// The facts for `property` of definition `def`, if any are known.
pub fn field(def: &str, property: &str) -> Option<&'static FieldFacts> {
    INDEX.get(def)?.get(property)
}

/// Whether definition `def` is a struct that server-side apply replaces whole.
pub fn atomic_struct(def: &str) -> bool {
    ATOMIC_STRUCTS.contains(&def)
}

/// The default of key field `key` of items of definition `def`.
pub fn key_default(def: &str, key: &str) -> Option<&'static str> {
    KEY_DEFAULTS
        .iter()
        .find(|(d, k, _)| *d == def && *k == key)
        .map(|(_, _, v)| *v)
}

/// Whether `property` of `def` is a struct held by value (see [`VALUE_STRUCTS`]).
pub fn value_struct(def: &str, property: &str) -> bool {
    matches!(property, "metadata" | "spec" | "status") || VALUE_STRUCTS.contains(&(def, property))
}

/// Whether `property` of `def` is serialized as `null` when unset (see [`ALWAYS_NULL`]).
pub fn always_null(def: &str, property: &str) -> bool {
    ALWAYS_NULL.contains(&(def, property))
}

/// Every listed value-struct field, for consistency checks.
pub fn all_value_structs() -> &'static [(&'static str, &'static str)] {
    VALUE_STRUCTS
}

/// Every listed (definition, property), for consistency checks.
pub fn all_fields() -> impl Iterator<Item = (&'static str, &'static str, &'static FieldFacts)> {
    FIELDS.iter().map(|(d, f, facts)| (*d, *f, facts))
}

/// Every definition listed as an atomic struct.
pub fn all_atomic_structs() -> &'static [&'static str] {
    ATOMIC_STRUCTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let c = field("io.k8s.api.core.v1.PodSpec", "containers").expect("containers listed");
        assert!(c.patch_merge);
        assert_eq!(c.merge_key, Some("name"));
        assert_eq!(c.list_type, Some(ListType::Map(&["name"])));
        let ports = field("io.k8s.api.core.v1.Container", "ports").expect("ports listed");
        assert_eq!(ports.merge_key, Some("containerPort"));
        assert_eq!(
            ports.list_type,
            Some(ListType::Map(&["containerPort", "protocol"]))
        );
        let fin = field(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        )
        .expect("finalizers");
        assert!(fin.patch_merge && fin.merge_key.is_none());
        assert_eq!(fin.list_type, Some(ListType::Set));
        let tol = field("io.k8s.api.core.v1.PodSpec", "tolerations").expect("tolerations");
        assert!(!tol.patch_merge);
        assert_eq!(tol.list_type, Some(ListType::Atomic));
        assert!(field("io.k8s.api.core.v1.PodSpec", "nodeName").is_none());
        assert!(atomic_struct(
            "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
        ));
        assert!(!atomic_struct("io.k8s.api.core.v1.PodSpec"));
        assert_eq!(
            key_default("io.k8s.api.core.v1.ContainerPort", "protocol"),
            Some("TCP")
        );
        assert_eq!(
            key_default("io.k8s.api.core.v1.ContainerPort", "containerPort"),
            None
        );
    }

    #[test]
    fn no_duplicate_entries() {
        let mut seen = std::collections::HashSet::new();
        for (d, f, _) in all_fields() {
            assert!(seen.insert((d, f)), "{d}.{f} listed twice");
        }
    }
}
