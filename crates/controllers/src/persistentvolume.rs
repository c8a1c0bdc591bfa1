//! PersistentVolume binder (upstream's `persistentvolume-binder`): binds Pending claims to
//! Available volumes and keeps both sides of each binding consistent.
//!
//! Two loops over caches of their own, as upstream's two work queues:
//! - claims: a claim without `pv.kubernetes.io/bind-completed` gets the volume its
//!   `spec.volumeName` names (pre-bound by the user), else one reserved for it by a volume's
//!   `claimRef`, else the smallest Available volume that fits (class, access and volume modes,
//!   capacity, selector; see [`krust_machinery::storage`]). A claim whose class waits for its
//!   first consumer is bound only once the scheduler annotated it with the chosen node, to a
//!   volume whose node affinity admits that node. A bound claim whose volume vanished or went
//!   to another claim is Lost.
//! - volumes: a volume without `claimRef` is Available; one whose claim is gone is Released,
//!   then kept (Retain), deleted (Delete) or marked Failed (Recycle is not supported). A
//!   volume being deleted still changes phase, so that `pv-protection` sees it released.
//!
//! Binding is four writes, in upstream's order, each skipped when already done: the volume's
//! `claimRef`, its phase, the claim's `volumeName` and annotations, the claim's status. A
//! binding cut short is finished by the next reconcile, because the volume's `claimRef`
//! reserves it for the claim. Volume writes carry the cached resourceVersion, so two claims
//! racing for one volume end in a conflict and a retry, never in a double binding.
//! [`plan_claim`] and [`plan_volume`] decide and are tested alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_machinery::storage::{
    check_volume_satisfies_claim, claim_class, delays_binding, find_matching_volume, is_bound_to,
    NodeRef, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE,
    NOT_SUPPORTED_PROVISIONER,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::informer::Informer;
use crate::util::{is_conflict, is_not_found, key_of, Backoff, Recorder, Result};
use crate::{Shared, Shutdown};

/// How often a Pending claim is looked at again (upstream's resync period).
const PENDING_RESYNC: Duration = Duration::from_secs(15);

/// What a claim needs now.
#[derive(Debug, PartialEq)]
pub enum ClaimPlan {
    /// Bind (or finish binding) the claim to this volume.
    Bind(Arc<PersistentVolume>),
    /// Stay Pending; tell the user why when there is something to tell (type, reason, message).
    Pending(Option<(&'static str, &'static str, String)>),
    /// The bound volume is gone or belongs to another claim.
    Lost(&'static str, &'static str),
}

/// What a volume needs now.
#[derive(Debug, PartialEq, Eq)]
pub enum VolumePlan {
    /// Nothing to write.
    InSync,
    /// Set the phase.
    Phase(&'static str),
    /// The claim went to another volume: forget it (`keep_name`: the user pre-bound this
    /// volume to that claim name, so only the uid goes).
    Unbind { keep_name: bool },
    /// The claim is gone: Released, then the reclaim policy.
    Release(Reclaim),
}

/// What happens to a released volume.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Reclaim {
    Retain,
    Delete,
    /// Neither kept nor deletable: phase Failed with this message.
    Fail(&'static str),
}

fn annotated(meta: &kube::api::ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn claim_ref(v: &PersistentVolume) -> Option<&ObjectReference> {
    v.spec.as_ref()?.claim_ref.as_ref()
}

/// Decides for a claim, given every volume, the claim's class and the node chosen for its
/// first consumer (name and labels; `None` when none was chosen).
pub fn plan_claim(
    c: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    class: Option<&StorageClass>,
    selected: Option<NodeRef<'_>>,
) -> ClaimPlan {
    let find = |name: &str| {
        volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
    };
    const LOST: &str =
        "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!";
    if annotated(&c.metadata, ANN_BIND_COMPLETED) {
        let Some(v) = Some(volume_name(c))
            .filter(|n| !n.is_empty())
            .and_then(find)
        else {
            return ClaimPlan::Lost("ClaimLost", LOST);
        };
        if claim_ref(v).is_none() || is_bound_to(v, c) {
            return ClaimPlan::Bind(v.clone());
        }
        return ClaimPlan::Lost(
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        );
    }
    let wanted = volume_name(c);
    if !wanted.is_empty() {
        // Pre-bound by the user: that volume or none.
        let Some(v) = find(wanted) else {
            return ClaimPlan::Pending(None);
        };
        if is_bound_to(v, c) {
            return ClaimPlan::Bind(v.clone());
        }
        if claim_ref(v).is_some() {
            return ClaimPlan::Pending(None);
        }
        return match check_volume_satisfies_claim(v, c) {
            Ok(()) => ClaimPlan::Bind(v.clone()),
            Err(m) => ClaimPlan::Pending(Some((
                "Warning",
                "VolumeMismatch",
                format!("Cannot bind to requested volume {wanted:?}: {m}"),
            ))),
        };
    }
    let delay = delays_binding(class);
    if delay && selected.is_none() {
        // A volume the user reserved for the claim is bound at once, as upstream does.
        if let Some(v) = volumes.iter().find(|v| is_bound_to(v, c)) {
            return ClaimPlan::Bind(v.clone());
        }
        return ClaimPlan::Pending(Some((
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".to_string(),
        )));
    }
    if let Some(v) = find_matching_volume(c, volumes, selected, &|_| false) {
        return ClaimPlan::Bind(v.clone());
    }
    let class_name = claim_class(c);
    let why = match class {
        _ if class_name.is_empty() => (
            "Normal",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set"
                .to_string(),
        ),
        None => (
            "Warning",
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        ),
        Some(sc) if sc.provisioner == NOT_SUPPORTED_PROVISIONER || sc.provisioner.starts_with("kubernetes.io/") => (
            "Warning",
            "ProvisioningFailed",
            format!("no volume plugin matched name: {}", sc.provisioner),
        ),
        Some(sc) => (
            "Normal",
            "ExternalProvisioning",
            format!(
                "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                sc.provisioner
            ),
        ),
    };
    ClaimPlan::Pending(Some(why))
}

/// Decides for a volume, given its claim as the API has it now (`None`: no claim of that
/// name and uid exists).
pub fn plan_volume(v: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumePlan {
    let phase = phase_of_volume(v);
    let set = |want: &'static str| {
        if phase == want {
            VolumePlan::InSync
        } else {
            VolumePlan::Phase(want)
        }
    };
    let Some(r) = claim_ref(v) else {
        return set("Available");
    };
    if r.uid.as_deref().is_none_or(str::is_empty) {
        // Reserved by the user for a claim that is not bound yet.
        return set("Available");
    }
    match claim {
        Some(c) if is_bound_to(v, c) => {
            let bound_to = volume_name(c);
            if bound_to.is_empty() {
                // The claim side of the binding is still to be written.
                VolumePlan::InSync
            } else if Some(bound_to) == v.metadata.name.as_deref() {
                set("Bound")
            } else {
                VolumePlan::Unbind {
                    keep_name: !annotated(&v.metadata, ANN_BOUND_BY_CONTROLLER),
                }
            }
        }
        _ => {
            let policy = v
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                .unwrap_or("Retain");
            if phase == "Failed" {
                return VolumePlan::InSync;
            }
            VolumePlan::Release(match policy {
                "Delete" => Reclaim::Delete,
                "Recycle" => Reclaim::Fail("Recycle is not supported; use Retain or Delete"),
                _ => Reclaim::Retain,
            })
        }
    }
}

struct Ctx {
    shared: Arc<Shared>,
    volumes: Informer<PersistentVolume>,
    claims: Informer<PersistentVolumeClaim>,
    classes: Informer<StorageClass>,
    claim_backoff: Backoff,
    volume_backoff: Backoff,
    recorder: Recorder,
    /// The last event told about each claim, so a waiting claim does not repeat itself.
    told: Mutex<HashMap<String, String>>,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let client = shared.client.clone();
    let volumes: Informer<PersistentVolume> = Informer::start(Api::all(client.clone()));
    let claims: Informer<PersistentVolumeClaim> = Informer::start(Api::all(client.clone()));
    let classes: Informer<StorageClass> = Informer::start(Api::all(client.clone()));
    let (v, c, s) = (volumes.store(), claims.store(), classes.store());
    let ready = async {
        let _ = futures::join!(
            v.wait_until_ready(),
            c.wait_until_ready(),
            s.wait_until_ready()
        );
    };
    tokio::select! {
        _ = ready => {}
        _ = shutdown.clone() => return,
    }
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        volumes: volumes.clone(),
        claims: claims.clone(),
        classes,
        claim_backoff: Backoff::default(),
        volume_backoff: Backoff::default(),
        recorder: Recorder::new(client, "persistentvolume-controller"),
        told: Mutex::default(),
    });
    // A volume wakes its claim, or every waiting claim when it is free.
    let claim_store = claims.store();
    let volume_claims = move |v: PersistentVolume| -> Vec<ObjectRef<PersistentVolumeClaim>> {
        match claim_ref(&v) {
            Some(r) => vec![ObjectRef::new(r.name.as_deref().unwrap_or_default())
                .within(r.namespace.as_deref().unwrap_or_default())],
            None => claim_store
                .state()
                .iter()
                .filter(|c| !annotated(&c.metadata, ANN_BIND_COMPLETED))
                .map(|c| ObjectRef::from_obj(&**c))
                .collect(),
        }
    };
    // A claim wakes the volume it names and those reserved for it (also when it is deleted).
    let volume_store = volumes.store();
    let claim_volumes = move |c: PersistentVolumeClaim| -> Vec<ObjectRef<PersistentVolume>> {
        let mut out: Vec<ObjectRef<PersistentVolume>> = volume_store
            .state()
            .iter()
            .filter(|v| {
                claim_ref(v).is_some_and(|r| {
                    r.name == c.metadata.name && r.namespace == c.metadata.namespace
                })
            })
            .map(|v| ObjectRef::from_obj(&**v))
            .collect();
        let named = volume_name(&c);
        if !named.is_empty() {
            out.push(ObjectRef::new(named));
        }
        out
    };
    let claim_loop = Controller::for_stream(claims.subscribe(), claims.store())
        .watches_stream(volumes.subscribe(), volume_claims)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile_claim,
            |c, _e, ctx: Arc<Ctx>| ctx.claim_backoff.fail(&key_of(&*c)),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let volume_loop = Controller::for_stream(volumes.subscribe(), volumes.store())
        .watches_stream(claims.subscribe(), claim_volumes)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile_volume,
            |v, _e, ctx: Arc<Ctx>| ctx.volume_backoff.fail(&v.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    futures::join!(claim_loop, volume_loop);
}

impl Ctx {
    fn tell(&self, c: &PersistentVolumeClaim, kind: &str, reason: &str, message: String) {
        let said = format!("{kind}/{reason}/{message}");
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        if told.get(&key_of(c)) == Some(&said) {
            return;
        }
        told.insert(key_of(c), said);
        if kind == "Warning" {
            self.recorder.warning(c, reason, message);
        } else {
            self.recorder.normal(c, reason, message);
        }
    }

    fn forget(&self, c: &PersistentVolumeClaim) {
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key_of(c));
    }

    fn claims_api(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.shared.client.clone(), ns)
    }

    fn volumes_api(&self) -> Api<PersistentVolume> {
        Api::all(self.shared.client.clone())
    }
}

async fn reconcile_claim(c: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*c);
    if c.metadata.deletion_timestamp.is_some() {
        ctx.forget(&c);
        return Ok(Action::await_change());
    }
    let volumes = ctx.volumes.store().state();
    let class_name = claim_class(&c);
    let class = ctx
        .classes
        .store()
        .state()
        .into_iter()
        .find(|s| !class_name.is_empty() && s.metadata.name.as_deref() == Some(class_name));
    let node_name = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE))
        .cloned();
    let node: Option<Arc<Node>> = node_name.as_ref().and_then(|n| {
        ctx.shared
            .nodes
            .store()
            .state()
            .into_iter()
            .find(|x| x.metadata.name.as_deref() == Some(n.as_str()))
    });
    let no_labels = BTreeMap::new();
    let selected = node_name.as_deref().map(|name| NodeRef {
        name,
        labels: node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&no_labels),
    });
    let plan = plan_claim(&c, &volumes, class.as_deref(), selected);
    let action = match plan {
        ClaimPlan::Bind(v) => {
            bind(&ctx, &v, &c).await?;
            ctx.forget(&c);
            Action::await_change()
        }
        ClaimPlan::Pending(why) => {
            set_claim_phase(&ctx, &c, "Pending").await?;
            if let Some((kind, reason, message)) = why {
                ctx.tell(&c, kind, reason, message);
            }
            Action::requeue(PENDING_RESYNC)
        }
        ClaimPlan::Lost(reason, message) => {
            if set_claim_phase(&ctx, &c, "Lost").await? {
                ctx.tell(&c, "Warning", reason, message.to_string());
            }
            Action::await_change()
        }
    };
    ctx.claim_backoff.forget(&key);
    Ok(action)
}

/// Sets the claim's phase; returns whether it changed.
async fn set_claim_phase(ctx: &Ctx, c: &PersistentVolumeClaim, phase: &str) -> Result<bool> {
    if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
        return Ok(false);
    }
    let ns = c.namespace().unwrap_or_default();
    let patch = json!({"status": {"phase": phase}});
    match ctx
        .claims_api(&ns)
        .patch_status(
            &c.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes whatever of the binding of `c` to `v` is missing, in upstream's order.
async fn bind(ctx: &Ctx, v: &PersistentVolume, c: &PersistentVolumeClaim) -> Result<()> {
    let pv_name = v.name_any();
    let ns = c.namespace().unwrap_or_default();
    let volumes = ctx.volumes_api();
    // 1. The volume's claimRef, with the claim's uid.
    let mut volume = v.clone();
    let reserved_with_uid = is_bound_to(v, c)
        && claim_ref(v).is_some_and(|r| r.uid.as_deref().is_some_and(|u| !u.is_empty()));
    if !reserved_with_uid {
        let by_controller = claim_ref(v).is_none();
        let spec = volume.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: c.metadata.name.clone(),
            namespace: c.metadata.namespace.clone(),
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
            field_path: None,
        });
        if by_controller {
            volume
                .annotations_mut()
                .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        volume = volumes
            .replace(&pv_name, &PostParams::default(), &volume)
            .await?;
    }
    // 2. The volume's phase.
    if phase_of_volume(&volume) != "Bound" {
        let patch = json!({"status": {"phase": "Bound"}});
        volumes
            .patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // 3. The claim's volumeName and annotations.
    let claims = ctx.claims_api(&ns);
    let mut claim = c.clone();
    let mut changed = false;
    if volume_name(c) != pv_name {
        claim.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.clone());
        claim
            .annotations_mut()
            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        changed = true;
    }
    if !annotated(&claim.metadata, ANN_BIND_COMPLETED) {
        claim
            .annotations_mut()
            .insert(ANN_BIND_COMPLETED.into(), "yes".into());
        changed = true;
    }
    if changed {
        claim = claims
            .replace(&c.name_any(), &PostParams::default(), &claim)
            .await?;
        tracing::info!(claim = %key_of(c), volume = %pv_name, "bound claim to volume");
    }
    // 4. The claim's status: Bound, with the volume's modes and capacity.
    let spec = volume.spec.clone().unwrap_or_default();
    let want = PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: spec.access_modes.clone(),
        capacity: spec.capacity.clone(),
        ..claim.status.clone().unwrap_or_default()
    };
    if claim.status.as_ref() != Some(&want) {
        let patch = json!({"status": {
            "phase": "Bound",
            "accessModes": spec.access_modes,
            "capacity": spec.capacity,
        }});
        claims
            .patch_status(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// The claim a volume's claimRef names, as the API has it now: the cache first, then a GET
/// when the cache says it is gone or different (a cache may lag a claim just made).
async fn claim_of(ctx: &Ctx, v: &PersistentVolume) -> Result<Option<PersistentVolumeClaim>> {
    let Some(r) = claim_ref(v) else {
        return Ok(None);
    };
    let (Some(name), Some(ns)) = (r.name.as_deref(), r.namespace.as_deref()) else {
        return Ok(None);
    };
    let cached = ctx.claims.store().get(&ObjectRef::new(name).within(ns));
    if let Some(c) = cached.filter(|c| is_bound_to(v, c)) {
        return Ok(Some((*c).clone()));
    }
    Ok(ctx.claims_api(ns).get_opt(name).await?)
}

async fn reconcile_volume(v: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = v.name_any();
    // A volume being deleted is tracked like any other, as upstream: its protection
    // finalizer is lifted only once it is no longer Bound, i.e. once this loop released it.
    let claim = claim_of(&ctx, &v).await?;
    let volumes = ctx.volumes_api();
    let set_phase = |phase: &'static str, message: Option<&'static str>| {
        let volumes = volumes.clone();
        let name = name.clone();
        async move {
            let patch = json!({"status": {"phase": phase, "message": message}});
            match volumes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(e),
            }
        }
    };
    match plan_volume(&v, claim.as_ref()) {
        VolumePlan::InSync => {}
        VolumePlan::Phase(p) => set_phase(p, None).await?,
        VolumePlan::Unbind { keep_name } => {
            let mut volume = (*v).clone();
            if keep_name {
                if let Some(r) = volume.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
                    r.uid = None;
                    r.resource_version = None;
                }
            } else {
                if let Some(s) = volume.spec.as_mut() {
                    s.claim_ref = None;
                }
                volume.annotations_mut().remove(ANN_BOUND_BY_CONTROLLER);
            }
            match volumes
                .replace(&name, &PostParams::default(), &volume)
                .await
            {
                Ok(_) => set_phase("Available", None).await?,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        VolumePlan::Release(reclaim) => {
            if phase_of_volume(&v) != "Released" {
                set_phase("Released", None).await?;
                tracing::info!(volume = %name, ?reclaim, "volume released");
            }
            match reclaim {
                Reclaim::Retain => {}
                Reclaim::Fail(why) => {
                    set_phase("Failed", Some(why)).await?;
                    ctx.recorder
                        .warning(&*v, "VolumeFailedRecycle", why.to_string());
                }
                Reclaim::Delete => {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: v.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match volumes.delete(&name, &dp).await {
                        Ok(_) => tracing::info!(volume = %name, "released volume deleted"),
                        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    ctx.volume_backoff.forget(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pv(name: &str, extra: Value) -> Arc<PersistentVolume> {
        let mut o = json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/data"}},
            "status": {"phase": "Available"},
        });
        merge(&mut o, extra);
        Arc::new(serde_json::from_value(o).expect("pv"))
    }

    fn pvc(extra: Value) -> PersistentVolumeClaim {
        let mut o = json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "500Mi"}}},
            "status": {"phase": "Pending"},
        });
        merge(&mut o, extra);
        serde_json::from_value(o).expect("pvc")
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn class(mode: &str, provisioner: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "local"}, "provisioner": provisioner, "volumeBindingMode": mode,
        }))
        .expect("class")
    }

    fn bound_to(plan: ClaimPlan) -> String {
        match plan {
            ClaimPlan::Bind(v) => v.name_any(),
            other => panic!("expected a binding, got {other:?}"),
        }
    }

    fn reason(plan: ClaimPlan) -> &'static str {
        match plan {
            ClaimPlan::Pending(Some((_, r, _))) => r,
            ClaimPlan::Lost(r, _) => r,
            other => panic!("expected a reason, got {other:?}"),
        }
    }

    #[test]
    fn pending_claims_bind_the_smallest_fitting_volume() {
        let vs = vec![
            pv("big", json!({"spec": {"capacity": {"storage": "5Gi"}}})),
            pv("small", json!({})),
            pv("classy", json!({"spec": {"storageClassName": "local"}})),
        ];
        assert_eq!(
            bound_to(plan_claim(&pvc(json!({})), &vs, None, None)),
            "small"
        );
        let none = plan_claim(
            &pvc(json!({"spec": {"resources": {"requests": {"storage": "50Gi"}}}})),
            &vs,
            None,
            None,
        );
        assert_eq!(reason(none), "FailedBinding");
        let missing_class = pvc(json!({"spec": {"storageClassName": "gold"}}));
        assert_eq!(
            reason(plan_claim(&missing_class, &vs, None, None)),
            "ProvisioningFailed"
        );
    }

    #[test]
    fn pre_bound_claims_take_their_volume_or_wait() {
        let vs = vec![
            pv("small", json!({})),
            pv("chosen", json!({"spec": {"capacity": {"storage": "2Gi"}}})),
        ];
        let c = pvc(json!({"spec": {"volumeName": "chosen"}}));
        assert_eq!(bound_to(plan_claim(&c, &vs, None, None)), "chosen");
        let gone = pvc(json!({"spec": {"volumeName": "nope"}}));
        assert_eq!(plan_claim(&gone, &vs, None, None), ClaimPlan::Pending(None));
        let too_big = pvc(json!({"spec": {"volumeName": "small",
            "resources": {"requests": {"storage": "2Gi"}}}}));
        assert_eq!(
            reason(plan_claim(&too_big, &vs, None, None)),
            "VolumeMismatch"
        );
        // A volume the user reserved by claimRef wins over a smaller one.
        let reserved = vec![
            pv("small", json!({})),
            pv(
                "mine",
                json!({"spec": {"capacity": {"storage": "3Gi"},
                "claimRef": {"name": "c", "namespace": "ns"}}}),
            ),
        ];
        assert_eq!(
            bound_to(plan_claim(&pvc(json!({})), &reserved, None, None)),
            "mine"
        );
    }

    #[test]
    fn wait_for_first_consumer_binds_on_the_selected_node() {
        let affinity = |node: &str| {
            json!({"spec": {"storageClassName": "local", "nodeAffinity": {"required": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
                "operator": "In", "values": [node]}]}]}}}})
        };
        let vs = vec![pv("on-a", affinity("a")), pv("on-b", affinity("b"))];
        let sc = class("WaitForFirstConsumer", NOT_SUPPORTED_PROVISIONER);
        let c = pvc(json!({"spec": {"storageClassName": "local"}}));
        assert_eq!(
            reason(plan_claim(&c, &vs, Some(&sc), None)),
            "WaitForFirstConsumer"
        );
        let labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), "b".to_string())]);
        let on_b = Some(NodeRef {
            name: "b",
            labels: &labels,
        });
        assert_eq!(bound_to(plan_claim(&c, &vs, Some(&sc), on_b)), "on-b");
        let immediate = class("Immediate", NOT_SUPPORTED_PROVISIONER);
        let plan = plan_claim(&c, &vs, Some(&immediate), None);
        assert!(
            matches!(plan, ClaimPlan::Bind(_)),
            "immediate binds anywhere: {plan:?}"
        );
        let external = class("WaitForFirstConsumer", "rancher.io/local-path");
        let labels = BTreeMap::new();
        let elsewhere = Some(NodeRef {
            name: "z",
            labels: &labels,
        });
        assert_eq!(
            reason(plan_claim(&c, &vs, Some(&external), elsewhere)),
            "ExternalProvisioning"
        );
    }

    #[test]
    fn bound_claims_are_checked_not_rebound() {
        let done = json!({"metadata": {"annotations": {ANN_BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": "v"}});
        let mine = vec![pv(
            "v",
            json!({"spec": {"claimRef": {"name": "c", "namespace": "ns", "uid": "u1"}}}),
        )];
        assert!(matches!(
            plan_claim(&pvc(done.clone()), &mine, None, None),
            ClaimPlan::Bind(_)
        ));
        assert_eq!(
            reason(plan_claim(&pvc(done.clone()), &[], None, None)),
            "ClaimLost"
        );
        let theirs = vec![pv(
            "v",
            json!({"spec": {"claimRef": {"name": "c", "namespace": "ns", "uid": "other"}}}),
        )];
        assert_eq!(
            reason(plan_claim(&pvc(done), &theirs, None, None)),
            "ClaimMisbound"
        );
    }

    #[test]
    fn volumes_follow_their_claims() {
        let free = pv("v", json!({"status": {"phase": "Pending"}}));
        assert_eq!(plan_volume(&free, None), VolumePlan::Phase("Available"));
        let bound = pv(
            "v",
            json!({"spec": {"claimRef": {"name": "c", "namespace": "ns", "uid": "u1"}}}),
        );
        let claim = pvc(json!({"spec": {"volumeName": "v"}}));
        assert_eq!(
            plan_volume(&bound, Some(&claim)),
            VolumePlan::Phase("Bound")
        );
        let in_progress = pvc(json!({}));
        assert_eq!(plan_volume(&bound, Some(&in_progress)), VolumePlan::InSync);
        let elsewhere = pvc(json!({"spec": {"volumeName": "w"}}));
        assert_eq!(
            plan_volume(&bound, Some(&elsewhere)),
            VolumePlan::Unbind { keep_name: true }
        );
        assert_eq!(
            plan_volume(&bound, None),
            VolumePlan::Release(Reclaim::Retain)
        );
        let recreated = pvc(json!({"metadata": {"uid": "u2"}, "spec": {"volumeName": "v"}}));
        assert_eq!(
            plan_volume(&bound, Some(&recreated)),
            VolumePlan::Release(Reclaim::Retain),
            "a new claim of the same name is not the bound one"
        );
        let deleting = pv(
            "v",
            json!({"spec": {"persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"name": "c", "namespace": "ns", "uid": "u1"}}}),
        );
        assert_eq!(
            plan_volume(&deleting, None),
            VolumePlan::Release(Reclaim::Delete)
        );
    }
}
