//! The in-tree plugins, one module each under upstream's names, and the registry of factories
//! that profiles are built from.

pub mod default_binder;
pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use std::sync::Arc;

use crate::framework::Plugin;

/// Builds a plugin from its `pluginConfig` args (JSON; `null` when none are given).
pub type Factory = fn(&serde_json::Value) -> Result<Arc<dyn Plugin>, String>;

/// Every plugin this scheduler knows, by name.
pub fn registry() -> Vec<(&'static str, Factory)> {
    vec![
        (node_name::NAME, |_| Ok(Arc::new(node_name::NodeName))),
        (node_unschedulable::NAME, |_| {
            Ok(Arc::new(node_unschedulable::NodeUnschedulable))
        }),
        (taint_toleration::NAME, |_| {
            Ok(Arc::new(taint_toleration::TaintToleration))
        }),
        (node_resources_fit::NAME, |a| {
            Ok(Arc::new(node_resources_fit::NodeResourcesFit::from_args(
                a,
            )?))
        }),
        (node_resources_balanced_allocation::NAME, |a| {
            Ok(Arc::new(
                node_resources_balanced_allocation::BalancedAllocation::from_args(a)?,
            ))
        }),
        (node_affinity::NAME, |_| {
            Ok(Arc::new(node_affinity::NodeAffinity))
        }),
        (node_ports::NAME, |_| Ok(Arc::new(node_ports::NodePorts))),
        (inter_pod_affinity::NAME, |a| {
            Ok(Arc::new(inter_pod_affinity::InterPodAffinity::from_args(
                a,
            )?))
        }),
        (pod_topology_spread::NAME, |a| {
            Ok(Arc::new(pod_topology_spread::PodTopologySpread::from_args(
                a,
            )?))
        }),
        (image_locality::NAME, |_| {
            Ok(Arc::new(image_locality::ImageLocality))
        }),
        (default_preemption::NAME, |_| {
            Ok(Arc::new(default_preemption::DefaultPreemption))
        }),
        (volume_binding::NAME, |_| {
            Ok(Arc::new(volume_binding::VolumeBinding))
        }),
        (default_binder::NAME, |_| {
            Ok(Arc::new(default_binder::DefaultBinder))
        }),
    ]
}

/// Plugins upstream accepts but this scheduler has nothing to do for (volume limits and zones, gates):
/// a config naming them is accepted and they are ignored.
pub const IGNORED: &[&str] = &[
    "PrioritySort",
    "VolumeRestrictions",
    "NodeVolumeLimits",
    "VolumeZone",
    "SchedulingGates",
    "DynamicResources",
];

/// Whether a toleration tolerates a taint (upstream's ToleratesTaint).
pub fn tolerates(
    t: &k8s_openapi::api::core::v1::Toleration,
    taint: &k8s_openapi::api::core::v1::Taint,
) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

pub fn pod_tolerations(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> &[k8s_openapi::api::core::v1::Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}
