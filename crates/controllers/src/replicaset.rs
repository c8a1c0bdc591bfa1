//! ReplicaSetController and ReplicationManager: keep `replicas` active pods that match the
//! selector, owned through a controlling ownerReference; adopt matching orphans and release
//! owned pods that stopped matching, as upstream's ControllerRefManager; write status
//! (replicas, fullyLabeled, ready, available, observedGeneration) and SuccessfulCreate /
//! SuccessfulDelete events. Creations start slow (1, 2, 4, ... pods per batch, at most
//! [`BURST`] per pass) and are recorded as expectations, so a reconcile never acts on a
//! cache that has not yet seen its last creations and deletions.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use krust_machinery::selector::Selector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::informer::Informer;
use crate::util::{
    controller_of, controller_ref, is_not_found, key_of, pod_is_active, pod_is_available,
    pod_is_ready, selector_of, Backoff, Error, Expectations, Recorder, Result,
};
use crate::{Shared, Shutdown};

/// The most pods created or deleted in one pass (upstream: 500).
pub const BURST: usize = 500;

/// What the replica logic needs from a ReplicaSet or a ReplicationController.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    fn replicas(&self) -> i32;
    fn pod_selector(&self) -> Selector;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// The status as JSON, to compare with the one computed.
    fn status_value(&self) -> Value;
}

impl ReplicaOwner for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn pod_selector(&self) -> Selector {
        selector_of(self.spec.as_ref().map(|s| &s.selector))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

impl ReplicaOwner for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn pod_selector(&self) -> Selector {
        let map: serde_json::Map<String, Value> = self
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        if map.is_empty() {
            return Selector::nothing();
        }
        Selector::from_map(&map)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

struct Ctx<K: ReplicaOwner> {
    shared: Arc<Shared>,
    owners: Store<K>,
    backoff: Backoff,
    expectations: Expectations,
    recorder: Recorder,
}

/// Runs the ReplicaSet controller.
pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let inf = shared.replicasets.clone();
    run_for(shared, inf, "replicaset-controller", shutdown).await
}

/// Runs the ReplicationController manager.
pub async fn run_rc(shared: Arc<Shared>, shutdown: Shutdown) {
    let inf = shared.replicationcontrollers.clone();
    run_for(shared, inf, "replication-controller", shutdown).await
}

async fn run_for<K: ReplicaOwner>(
    shared: Arc<Shared>,
    owners: Informer<K>,
    component: &'static str,
    shutdown: Shutdown,
) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        owners: owners.store(),
        backoff: Backoff::default(),
        expectations: Expectations::default(),
        recorder: Recorder::new(shared.client.clone(), component),
    });
    let store = owners.store();
    let orphan_owners = move |pod: Pod| -> Vec<ObjectRef<K>> {
        if controller_of(&pod.metadata).is_some() || pod.metadata.deletion_timestamp.is_some() {
            return Vec::new();
        }
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        store
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
            .filter(|o| o.pod_selector().matches(&labels))
            .map(|o| ObjectRef::from_obj(&**o))
            .collect()
    };
    Controller::for_stream(owners.subscribe(), owners.store())
        .owns_stream(shared.pods.subscribe())
        .watches_stream(shared.pods.subscribe(), orphan_owners)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile::<K>,
            |o, _e, ctx: Arc<Ctx<K>>| ctx.backoff.fail(&key_of(&*o)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Orders pods for deletion, most deletable first, as upstream's ActivePods ranking:
/// unassigned before assigned, pending before running, not ready before ready, recently ready
/// before long ready, newer before older.
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    fn rank(p: &Pod) -> (u8, u8, u8, i64, i64) {
        let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        };
        let ready_since = crate::util::pod_ready_since(p);
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        (
            u8::from(assigned),
            phase,
            u8::from(ready_since.is_some()),
            // later readiness / creation first: negate
            -ready_since.map(|t| t.as_second()).unwrap_or(0),
            -created,
        )
    }
    pods.sort_by_key(|p| rank(p));
}

/// The pod an owner creates from its template.
pub fn pod_from_template<K: ReplicaOwner>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Replica counts as the status reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
}

/// Counts `active` pods against the template labels and minReadySeconds at `now`.
pub fn count(
    active: &[Arc<Pod>],
    template_labels: &BTreeMap<String, String>,
    min_ready: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts {
        replicas: active.len() as i32,
        ..Default::default()
    };
    for p in active {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            c.fully_labeled += 1;
        }
        if pod_is_ready(p) {
            c.ready += 1;
        }
        if pod_is_available(p, min_ready, now) {
            c.available += 1;
        }
    }
    c
}

async fn reconcile<K: ReplicaOwner>(obj: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action> {
    let key = key_of(&*obj);
    let ns = obj.namespace().unwrap_or_default();
    // A stale trigger for an owner that is gone: nothing to do but forget it.
    if ctx.owners.get(&ObjectRef::from_obj(&*obj)).is_none() {
        ctx.expectations.forget(&key);
        ctx.backoff.forget(&key);
        return Ok(Action::await_change());
    }
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let pods = ctx.shared.pods_in(&ns);
    if !ctx.expectations.satisfied_by_pods(&key, &pods) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let selector = obj.pod_selector();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if selector.matches(&labels) {
                    owned.push(pod);
                } else if pod.metadata.deletion_timestamp.is_none() {
                    release(&api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if !deleting
                    && pod.metadata.deletion_timestamp.is_none()
                    && selector.matches(&labels)
                {
                    if let Some(p) = adopt(&api, &pod, &*obj).await? {
                        owned.push(Arc::new(p));
                    }
                }
            }
        }
    }
    let mut active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| pod_is_active(p)).collect();
    let want = obj.replicas().max(0) as usize;
    if !deleting {
        if active.len() < want {
            let template = obj
                .template()
                .ok_or_else(|| Error::Invalid(format!("{key} has no pod template")))?;
            let n = (want - active.len()).min(BURST);
            create_pods(&ctx, &api, &*obj, template, n, &key).await?;
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            deletion_order(&mut active);
            let victims: Vec<Arc<Pod>> = active.drain(..n).collect();
            delete_pods(&ctx, &api, &*obj, victims, &key).await?;
        }
    }
    // Status from the cache as it was; the next pass (triggered by the pod events) corrects it.
    let template_labels = obj
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = obj.min_ready_seconds();
    let c = count(&active, &template_labels, min_ready, Timestamp::now());
    write_status(&ctx, &*obj, c).await?;
    ctx.backoff.forget(&key);
    if min_ready > 0 && c.ready > c.available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64 + 1)));
    }
    Ok(Action::await_change())
}

async fn write_status<K: ReplicaOwner>(ctx: &Ctx<K>, obj: &K, c: Counts) -> Result<()> {
    let current = obj.status_value();
    let get = |f: &str| current.get(f).and_then(Value::as_i64).unwrap_or(0);
    let generation = obj.meta().generation.unwrap_or(0);
    if get("replicas") == i64::from(c.replicas)
        && get("fullyLabeledReplicas") == i64::from(c.fully_labeled)
        && get("readyReplicas") == i64::from(c.ready)
        && get("availableReplicas") == i64::from(c.available)
        && get("observedGeneration") == generation
    {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(
        ctx.shared.client.clone(),
        &obj.namespace().unwrap_or_default(),
    );
    let patch = json!({"status": {
        "replicas": c.replicas,
        "fullyLabeledReplicas": c.fully_labeled,
        "readyReplicas": c.ready,
        "availableReplicas": c.available,
        "observedGeneration": generation,
    }});
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn create_pods<K: ReplicaOwner>(
    ctx: &Ctx<K>,
    api: &Api<Pod>,
    owner: &K,
    template: &PodTemplateSpec,
    n: usize,
    key: &str,
) -> Result<()> {
    let pod = pod_from_template(owner, template);
    let pp = PostParams::default();
    let mut done = 0usize;
    let mut batch = 1usize;
    while done < n {
        let size = batch.min(n - done);
        let results = futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
        let mut names = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.name_any();
                    ctx.recorder
                        .normal(owner, "SuccessfulCreate", format!("Created pod: {name}"));
                    names.push(name);
                }
                Err(e) => failure = Some(e),
            }
        }
        ctx.expectations.expect(key, names, Vec::new());
        if let Some(e) = failure {
            ctx.recorder
                .warning(owner, "FailedCreate", format!("Error creating: {e}"));
            return Err(e.into());
        }
        done += size;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pods<K: ReplicaOwner>(
    ctx: &Ctx<K>,
    api: &Api<Pod>,
    owner: &K,
    victims: Vec<Arc<Pod>>,
    key: &str,
) -> Result<()> {
    let results = futures::future::join_all(victims.iter().map(|p| {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = p.name_any();
        async move { api.delete(&name, &dp).await }
    }))
    .await;
    let mut uids = Vec::new();
    let mut failure = None;
    for (p, r) in victims.iter().zip(results) {
        match r {
            Ok(_) => {
                ctx.recorder.normal(
                    owner,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name_any()),
                );
                uids.push(p.metadata.uid.clone().unwrap_or_default());
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => failure = Some(e),
        }
    }
    ctx.expectations.expect(key, Vec::new(), uids);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sets `owner` as the pod's controller; None when the pod went away meanwhile.
async fn adopt<K: ReplicaOwner>(api: &Api<Pod>, pod: &Pod, owner: &K) -> Result<Option<Pod>> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the owner's reference from a pod that no longer matches its selector.
async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<()> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<i64>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).expect("time"))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletes_unscheduled_then_unready_then_newest_ready() {
        let mut pods = vec![
            pod("old-ready", Some("n1"), "Running", Some(100)),
            pod("new-ready", Some("n1"), "Running", Some(200)),
            pod("running-unready", Some("n1"), "Running", None),
            pod("pending", Some("n1"), "Pending", None),
            pod("unscheduled", None, "Pending", None),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn counts_ready_and_available_with_min_ready_seconds() {
        let pods = vec![
            pod("a", Some("n"), "Running", Some(1000)),
            pod("b", Some("n"), "Running", Some(1095)),
            pod("c", Some("n"), "Pending", None),
        ];
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let now = Timestamp::from_second(1100).expect("time");
        let c = count(&pods, &labels, 10, now);
        assert_eq!(
            c,
            Counts {
                replicas: 3,
                fully_labeled: 3,
                ready: 2,
                available: 1
            }
        );
        assert_eq!(count(&pods, &labels, 0, now).available, 2);
    }

    #[test]
    fn pods_from_template_are_owned_and_labelled() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
        };
        let p = pod_from_template(&rs, &t);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        let r = &p.metadata.owner_references.as_ref().expect("refs")[0];
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("ReplicaSet", "u1"));
        assert_eq!(r.controller, Some(true));
    }
}
