//! VolumeBinding: a pod's PersistentVolumeClaims must exist and be usable where it runs.
//! - PreFilter: a missing claim, a claim being deleted, or an unbound claim whose class binds
//!   at once (Immediate: the PersistentVolume binder will bind it) makes the pod
//!   unschedulable everywhere; a pod without claims skips the plugin.
//! - Filter: a bound claim's volume must admit the node by its node affinity; an unbound
//!   WaitForFirstConsumer claim needs an Available volume that fits on the node (each claim
//!   its own), unless its class names a provisioner that makes volumes on demand.
//! - PreBind: unbound claims get `volume.kubernetes.io/selected-node`, which tells the binder
//!   (or an external provisioner) where the pod goes. Unlike upstream, the scheduler does not
//!   reserve volumes itself; the binder picks one that fits the selected node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use krust_machinery::storage::{
    claim_class, delays_binding, find_matching_volume, volume_fits_node, NodeRef,
    ANN_BIND_COMPLETED, ANN_SELECTED_NODE, NOT_SUPPORTED_PROVISIONER,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::framework::{
    state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreBindPlugin, PreFilterPlugin,
    Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "VolumeBinding";
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

pub struct VolumeBinding;

/// A claim still to be bound, and whether its class provisions volumes on demand.
struct Unbound {
    claim: Arc<PersistentVolumeClaim>,
    provisioned: bool,
}

/// What PreFilter found for the pod's claims.
#[derive(Default)]
struct State {
    /// Volumes of bound claims.
    bound: Vec<Arc<PersistentVolume>>,
    /// Some bound claim names a volume that does not exist.
    missing_volume: bool,
    unbound: Vec<Unbound>,
    /// Every volume, when some claim is still to be bound.
    volumes: Vec<Arc<PersistentVolume>>,
}

/// The claim names of the pod's `persistentVolumeClaim` volumes.
pub fn claim_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect()
}

/// Bound for scheduling (upstream's isPVCFullyBound): named volume and completed binding.
fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|n| !n.is_empty())
        && c.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED))
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::VolumeChange,
        ]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snap: &Snapshot) -> Status {
        let names = claim_names(pod);
        if names.is_empty() {
            return Status::skip();
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut st = State::default();
        for name in names {
            let Some(c) = snap.volumes.claims.get(&format!("{ns}/{name}")) else {
                return Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if c.metadata.deletion_timestamp.is_some() {
                return Status::unresolvable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                ));
            }
            if fully_bound(c) {
                let volume = c.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                match volume.and_then(|v| snap.volumes.volumes.get(v)) {
                    Some(v) => st.bound.push(v.clone()),
                    None => st.missing_volume = true,
                }
                continue;
            }
            let class = snap.volumes.classes.get(claim_class(c)).map(|c| &**c);
            if !delays_binding(class) {
                return Status::unresolvable(UNBOUND_IMMEDIATE);
            }
            st.unbound.push(Unbound {
                claim: c.clone(),
                provisioned: class.is_some_and(|c| c.provisioner != NOT_SUPPORTED_PROVISIONER),
            });
        }
        if !st.unbound.is_empty() {
            st.volumes = snap.volumes.volumes.values().cloned().collect();
        }
        state.write(NAME, st);
        Status::success()
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let st = match state_of::<State>(state, NAME) {
            Ok(s) => s,
            Err(s) => return s,
        };
        if st.missing_volume {
            return Status::unresolvable(PV_NOT_EXIST);
        }
        let here = NodeRef {
            name: &node.name,
            labels: &node.labels,
        };
        if st.bound.iter().any(|v| !volume_fits_node(v, here)) {
            return Status::unresolvable(NODE_CONFLICT);
        }
        let mut taken: Vec<&str> = Vec::new();
        for u in &st.unbound {
            let selected = u
                .claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE));
            if selected.is_some_and(|n| *n != node.name) {
                // Already promised to another node's pod.
                return Status::unresolvable(BIND_CONFLICT);
            }
            let found =
                find_matching_volume(&u.claim, &st.volumes, Some(here), &|n| taken.contains(&n));
            match found {
                Some(v) => taken.push(v.metadata.name.as_deref().unwrap_or_default()),
                None if u.provisioned => {}
                None => return Status::unresolvable(BIND_CONFLICT),
            }
        }
        Status::success()
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, client: &kube::Client, pod: &Pod, node: &str) -> Status {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        for name in claim_names(pod) {
            let claim = match api.get(name).await {
                Ok(c) => c,
                Err(e) => return Status::error(format!("reading claim {ns}/{name}: {e}")),
            };
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE));
            if fully_bound(&claim) || selected.map(String::as_str) == Some(node) {
                continue;
            }
            let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Status::error(format!("selecting node for claim {ns}/{name}: {e}"));
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::snapshot::testutil::*;
    use serde_json::{json, Value};

    fn with_claims(claims: &[&str]) -> Arc<Pod> {
        let vols: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod("p", json!({"volumes": vols}))
    }

    fn claim(name: &str, extra: Value) -> Arc<PersistentVolumeClaim> {
        let mut o = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        });
        if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if let (Some(Value::Object(a)), Value::Object(b)) = (o.get_mut(k), v) {
                    a.extend(b.clone());
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        Arc::new(serde_json::from_value(o).expect("claim"))
    }

    fn local_pv(name: &str, node: &str, extra: Value) -> Arc<PersistentVolume> {
        let mut o = json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local", "local": {"path": "/mnt"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": "Available"},
        });
        if let Some(spec) = extra.get("spec").and_then(Value::as_object) {
            if let Some(s) = o["spec"].as_object_mut() {
                s.extend(spec.clone());
            }
        }
        Arc::new(serde_json::from_value(o).expect("pv"))
    }

    fn class(
        name: &str,
        mode: &str,
        provisioner: &str,
    ) -> Arc<k8s_openapi::api::storage::v1::StorageClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "provisioner": provisioner, "volumeBindingMode": mode}))
            .expect("class"),
        )
    }

    fn cluster() -> Snapshot {
        let mut s = snapshot(&[
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        ]);
        s.volumes.classes.insert(
            "local".into(),
            class("local", "WaitForFirstConsumer", NOT_SUPPORTED_PROVISIONER),
        );
        s.volumes.classes.insert(
            "dynamic".into(),
            class("dynamic", "WaitForFirstConsumer", "example.com/csi"),
        );
        s
    }

    /// The nodes the pod may go to, or PreFilter's rejection.
    fn feasible(s: &Snapshot, pod: &Pod) -> Result<Vec<String>, Status> {
        let mut st = CycleState::default();
        let pre = VolumeBinding.pre_filter(&mut st, pod, s);
        match pre.code {
            Code::Skip => return Ok(s.nodes().iter().map(|n| n.name.clone()).collect()),
            Code::Success => {}
            _ => return Err(pre),
        }
        Ok(s.nodes()
            .iter()
            .filter(|n| VolumeBinding.filter(&st, pod, n).is_success())
            .map(|n| n.name.clone())
            .collect())
    }

    #[test]
    fn missing_and_unbound_immediate_claims_reject_the_pod() {
        let mut s = cluster();
        let p = with_claims(&["data"]);
        let e = feasible(&s, &p).expect_err("no claim");
        assert_eq!(e.message(), "persistentvolumeclaim \"data\" not found");
        s.volumes
            .claims
            .insert("default/data".into(), claim("data", json!({})));
        let e = feasible(&s, &p).expect_err("unbound");
        assert_eq!(e.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(e.message(), UNBOUND_IMMEDIATE);
        let mut none = CycleState::default();
        assert!(VolumeBinding
            .pre_filter(&mut none, &pod("plain", json!({})), &s)
            .is_skip());
    }

    #[test]
    fn a_bound_claim_keeps_the_pod_on_its_volume_node() {
        let mut s = cluster();
        s.volumes.claims.insert(
            "default/data".into(),
            claim(
                "data",
                json!({"metadata": {"annotations": {ANN_BIND_COMPLETED: "yes"}},
                "spec": {"volumeName": "pv-b"}}),
            ),
        );
        let pod = with_claims(&["data"]);
        let e = feasible(&s, &pod).expect("prefilter");
        assert!(e.is_empty(), "volume missing: {e:?}");
        s.volumes
            .volumes
            .insert("pv-b".into(), local_pv("pv-b", "b", json!({})));
        assert_eq!(
            feasible(&s, &pod).expect("prefilter"),
            vec!["b".to_string()]
        );
    }

    #[test]
    fn wait_for_first_consumer_claims_need_a_free_volume_on_the_node() {
        let mut s = cluster();
        s.volumes.claims.insert(
            "default/one".into(),
            claim("one", json!({"spec": {"storageClassName": "local"}})),
        );
        s.volumes.claims.insert(
            "default/two".into(),
            claim("two", json!({"spec": {"storageClassName": "local"}})),
        );
        let pod = with_claims(&["one", "two"]);
        assert!(feasible(&s, &pod).expect("prefilter").is_empty());
        s.volumes
            .volumes
            .insert("a1".into(), local_pv("a1", "a", json!({})));
        s.volumes
            .volumes
            .insert("b1".into(), local_pv("b1", "b", json!({})));
        assert!(
            feasible(&s, &pod).expect("prefilter").is_empty(),
            "each claim needs its own volume"
        );
        s.volumes
            .volumes
            .insert("b2".into(), local_pv("b2", "b", json!({})));
        assert_eq!(
            feasible(&s, &pod).expect("prefilter"),
            vec!["b".to_string()]
        );
        // A volume taken by another claim does not count.
        s.volumes.volumes.insert(
            "b2".into(),
            local_pv(
                "b2",
                "b",
                json!({"spec": {"claimRef": {"name": "x", "namespace": "default"}}}),
            ),
        );
        assert!(feasible(&s, &pod).expect("prefilter").is_empty());
    }

    #[test]
    fn provisioned_and_selected_claims() {
        let mut s = cluster();
        s.volumes.claims.insert(
            "default/dyn".into(),
            claim("dyn", json!({"spec": {"storageClassName": "dynamic"}})),
        );
        let pod = with_claims(&["dyn"]);
        assert_eq!(feasible(&s, &pod).expect("prefilter").len(), 2);
        s.volumes.claims.insert(
            "default/dyn".into(),
            claim(
                "dyn",
                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "a"}},
                "spec": {"storageClassName": "dynamic"}}),
            ),
        );
        assert_eq!(
            feasible(&s, &pod).expect("prefilter"),
            vec!["a".to_string()]
        );
    }
}
