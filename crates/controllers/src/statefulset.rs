//! StatefulSetController: pods with stable identities `<set>-<ordinal>`.
//!
//! Each reconcile walks the ordinals as upstream's `updateStatefulSet` does:
//! 1. ordinals below `replicas`: create missing pods (first their claims
//!    `<claim>-<set>-<ordinal>` from `volumeClaimTemplates`) and replace failed ones. Under
//!    `OrderedReady` it stops at the first pod it created or that is not Running and Ready, so
//!    `web-1` is created only once `web-0` is Ready; under `Parallel` it goes on.
//! 2. ordinals at or above `replicas` (scale down): deleted highest first, one at a time under
//!    `OrderedReady`, all at once under `Parallel`.
//! 3. `RollingUpdate`: from the highest ordinal down to `partition`, deletes one pod that is not
//!    of the update revision and waits until it is back Running and Ready; step 1 recreates it
//!    from the new template. `OnDelete` leaves replacement to the user.
//!
//! Templates are versioned with ControllerRevisions ([`crate::history`]); pods carry the
//! revision's name in `controller-revision-hash` and their own in
//! `statefulset.kubernetes.io/pod-name`. Status (replicas, ready, available, current, updated,
//! current/update revision, observedGeneration) makes `kubectl rollout status sts/x` work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::history::{self, HASH_LABEL};
use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, pod_is_available,
    pod_is_ready, selector_of, Backoff, Expectations, Recorder, Result,
};
use crate::{Shared, Shutdown};

/// The label with the pod's own name, for per-pod Services.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    expectations: Expectations,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        expectations: Expectations::default(),
        recorder: Recorder::new(shared.client.clone(), "statefulset-controller"),
    });
    Controller::for_stream(shared.statefulsets.subscribe(), shared.statefulsets.store())
        .owns_stream(shared.pods.subscribe())
        .owns_stream(shared.controllerrevisions.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |s, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*s)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The ordinal of `pod` if it is named `<set>-<ordinal>`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|n: &i32| *n >= 0)
}

/// The name of the claim from template `claim` for pod `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The pod for `ordinal` of `set`, from `template` of revision `revision`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    let service = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .unwrap_or_default();
    if !service.is_empty() {
        spec.subdomain = Some(service);
    }
    // Each claim template becomes a volume backed by this pod's own claim.
    let claims = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes = spec.volumes.take().unwrap_or_default();
        for c in &claims {
            let cname = c.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != cname);
            volumes.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&cname, &set.name_any(), ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pod_is_ready(p)
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

fn revision_label(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// One step the walk over the ordinals decided on.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Create(i32),
    Delete(i32),
}

/// What a pod looks like to the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub terminating: bool,
    pub terminal: bool,
    pub healthy: bool,
    pub updated: bool,
}

/// The walk of upstream's `updateStatefulSet` over `pods` (by ordinal): what to create and
/// delete now. `rolling_from`: the partition for RollingUpdate, None for OnDelete.
pub fn plan(
    pods: &BTreeMap<i32, Slot>,
    replicas: i32,
    parallel: bool,
    rolling_from: Option<i32>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    // 1. the ordinals that should exist.
    for i in 0..replicas.max(0) {
        match pods.get(&i) {
            None => {
                steps.push(Step::Create(i));
                if !parallel {
                    return steps;
                }
            }
            Some(s) if s.terminal && !s.terminating => {
                steps.push(Step::Delete(i));
                if !parallel {
                    return steps;
                }
            }
            Some(s) if !s.healthy || s.terminating => {
                if !parallel {
                    return steps;
                }
            }
            Some(_) => {}
        }
    }
    // 2. the condemned ones, highest first.
    let condemned: Vec<(&i32, &Slot)> = pods.range(replicas.max(0)..).rev().collect();
    for (i, s) in condemned {
        if s.terminating {
            if !parallel {
                return steps;
            }
            continue;
        }
        steps.push(Step::Delete(*i));
        if !parallel {
            return steps;
        }
    }
    if !steps.is_empty() {
        return steps;
    }
    // 3. the rolling update, highest first, one unavailable at a time.
    if let Some(partition) = rolling_from {
        for i in (partition.max(0)..replicas.max(0)).rev() {
            let Some(s) = pods.get(&i) else {
                return steps;
            };
            if !s.updated && !s.terminating {
                steps.push(Step::Delete(i));
                return steps;
            }
            if !s.healthy {
                return steps;
            }
        }
    }
    steps
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*set);
    if ctx
        .shared
        .statefulsets
        .store()
        .get(&ObjectRef::from_obj(&*set))
        .is_none()
        || set.metadata.deletion_timestamp.is_some()
    {
        ctx.expectations.forget(&key);
        ctx.backoff.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let selector = selector_of(Some(&spec.selector));
    if selector.is_nothing() {
        return Ok(Action::await_change());
    }
    let all_pods = ctx.shared.pods_in(&ns);
    if !ctx.expectations.satisfied_by_pods(&key, &all_pods) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let pods: BTreeMap<i32, Arc<Pod>> = all_pods
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .filter_map(|p| ordinal_of(&name, p.metadata.name.as_deref()?).map(|i| (i, p)))
        .collect();

    // Revisions.
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut revisions = history::owned(&*set, &ctx.shared.controllerrevisions.store().state());
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    let collision = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = history::sync(
        &rev_api,
        &*set,
        &revisions,
        &spec.template,
        &selector_labels,
        collision,
    )
    .await?;
    revisions.retain(|r| r.name_any() != update.name_any());
    revisions.push(update.clone());
    let update_name = update.name_any();
    let status = set.status.clone().unwrap_or_default();
    let current = status
        .current_revision
        .as_ref()
        .and_then(|c| revisions.iter().find(|r| &r.name_any() == c))
        .cloned()
        .unwrap_or_else(|| update.clone());
    let current_name = current.name_any();
    let current_template = history::template_of(&current).unwrap_or(spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();
    let slots: BTreeMap<i32, Slot> = pods
        .iter()
        .map(|(i, p)| {
            (
                *i,
                Slot {
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    terminal: terminal(p),
                    healthy: running_and_ready(p) && p.metadata.deletion_timestamp.is_none(),
                    updated: revision_label(p) == Some(update_name.as_str()),
                },
            )
        })
        .collect();
    let steps = plan(
        &slots,
        replicas,
        parallel,
        (!on_delete).then_some(partition),
    );

    let pod_api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
    for step in steps {
        match step {
            Step::Create(i) => {
                let (template, rev) = if !on_delete && i < partition {
                    (&current_template, current_name.as_str())
                } else {
                    (&spec.template, update_name.as_str())
                };
                create_claims(&ctx, &set, i).await?;
                let pod = new_pod(&set, template, rev, i);
                let pname = pod.name_any();
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        ctx.recorder.normal(
                            &*set,
                            "SuccessfulCreate",
                            format!("create Pod {pname} in StatefulSet {name} successful"),
                        );
                        ctx.expectations.expect(&key, vec![pname], Vec::new());
                    }
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => {
                        ctx.recorder.warning(
                            &*set,
                            "FailedCreate",
                            format!("create Pod {pname} in StatefulSet {name} failed error: {e}"),
                        );
                        return Err(e.into());
                    }
                }
            }
            Step::Delete(i) => {
                let Some(p) = pods.get(&i) else { continue };
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: p.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pod_api.delete(&p.name_any(), &dp).await {
                    Ok(_) => {
                        ctx.recorder.normal(
                            &*set,
                            "SuccessfulDelete",
                            format!(
                                "delete Pod {} in StatefulSet {name} successful",
                                p.name_any()
                            ),
                        );
                        ctx.expectations.expect(
                            &key,
                            Vec::new(),
                            vec![p.metadata.uid.clone().unwrap_or_default()],
                        );
                    }
                    Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    // Status, from the cache as it was; pod events bring the next pass.
    let live: Vec<&Arc<Pod>> = pods.values().collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let st_replicas = count(&|_| true);
    let ready = count(&|p| pod_is_ready(p));
    let available = count(&|p| pod_is_available(p, min_ready, now));
    let not_terminating = |p: &Pod| p.metadata.deletion_timestamp.is_none();
    let mut current_replicas =
        count(&|p| not_terminating(p) && revision_label(p) == Some(current_name.as_str()));
    let updated_replicas =
        count(&|p| not_terminating(p) && revision_label(p) == Some(update_name.as_str()));
    let mut current_revision = current_name.clone();
    if updated_replicas == replicas && st_replicas == replicas && ready == replicas {
        current_revision = update_name.clone();
        current_replicas = updated_replicas;
    }
    let new_status = json!({
        "observedGeneration": set.metadata.generation,
        "replicas": st_replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_replicas,
        "updatedReplicas": updated_replicas,
        "currentRevision": current_revision,
        "updateRevision": update_name,
        "collisionCount": collision,
    });
    let old = serde_json::to_value(&status).unwrap_or_default();
    let differs = new_status.as_object().into_iter().flatten().any(|(k, v)| {
        let o = old.get(k).cloned().unwrap_or(json!(0));
        &o != v && !(o == json!(0) && v.is_null())
    });
    if differs {
        let api: Api<StatefulSet> = Api::namespaced(ctx.shared.client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": new_status })),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // History beyond the limit, keeping what pods still use.
    let in_use: BTreeSet<String> = pods
        .values()
        .filter_map(|p| revision_label(p).map(String::from))
        .collect();
    history::truncate(
        &rev_api,
        &revisions,
        &[current_revision.as_str(), update_name.as_str()],
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    ctx.backoff.forget(&key);
    if min_ready > 0 && ready > available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64 + 1)));
    }
    Ok(Action::await_change())
}

/// Creates the pod's claims from `volumeClaimTemplates` (existing ones are kept as they are).
async fn create_claims(ctx: &Ctx, set: &StatefulSet, ordinal: i32) -> Result<()> {
    let spec = set.spec.clone().unwrap_or_default();
    let templates = spec.volume_claim_templates.unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let pod_name = format!("{}-{ordinal}", set.name_any());
    for t in templates {
        let cname = claim_name(
            t.metadata.name.as_deref().unwrap_or_default(),
            &set.name_any(),
            ordinal,
        );
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(cname.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => ctx.recorder.normal(
                set,
                "SuccessfulCreate",
                format!(
                    "create Claim {cname} Pod {pod_name} in StatefulSet {} success",
                    set.name_any()
                ),
            ),
            Err(e) if is_conflict(&e) => {}
            Err(e) => {
                ctx.recorder.warning(
                    set,
                    "FailedCreate",
                    format!("create Claim {cname} for Pod {pod_name} failed error: {e}"),
                );
                return Err(e.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;

    fn healthy(updated: bool) -> Slot {
        Slot {
            terminating: false,
            terminal: false,
            healthy: true,
            updated,
        }
    }

    fn pending() -> Slot {
        Slot {
            healthy: false,
            ..healthy(true)
        }
    }

    #[test]
    fn ordinals_parse_only_for_the_set() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "web-a"), None);
        assert_eq!(ordinal_of("web-1", "web-1-0"), Some(0));
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let mut pods = BTreeMap::new();
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![Step::Create(0)]);
        pods.insert(0, pending());
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![]);
        pods.insert(0, healthy(true));
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![Step::Create(1)]);
        // Parallel creates every missing one at once.
        assert_eq!(
            plan(&BTreeMap::new(), 3, true, Some(0)),
            vec![Step::Create(0), Step::Create(1), Step::Create(2)]
        );
    }

    #[test]
    fn scale_down_goes_highest_first() {
        let pods: BTreeMap<i32, Slot> = (0..4).map(|i| (i, healthy(true))).collect();
        assert_eq!(plan(&pods, 1, false, Some(0)), vec![Step::Delete(3)]);
        assert_eq!(
            plan(&pods, 1, true, Some(0)),
            vec![Step::Delete(3), Step::Delete(2), Step::Delete(1)]
        );
        let mut p = pods.clone();
        p.insert(
            3,
            Slot {
                terminating: true,
                ..healthy(true)
            },
        );
        assert_eq!(plan(&p, 1, false, Some(0)), vec![], "waits for web-3 to go");
    }

    #[test]
    fn rolling_update_replaces_highest_first_down_to_the_partition() {
        let mut pods: BTreeMap<i32, Slot> = (0..3).map(|i| (i, healthy(false))).collect();
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![Step::Delete(2)]);
        pods.insert(2, pending());
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![], "waits for web-2");
        pods.insert(2, healthy(true));
        assert_eq!(plan(&pods, 3, false, Some(0)), vec![Step::Delete(1)]);
        // partition 2: only web-2 is updated
        assert_eq!(plan(&pods, 3, false, Some(2)), vec![]);
        // OnDelete: nothing
        let old: BTreeMap<i32, Slot> = (0..3).map(|i| (i, healthy(false))).collect();
        assert_eq!(plan(&old, 3, false, None), vec![]);
    }

    #[test]
    fn pods_get_identity_labels_and_claims() {
        let set = StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec::default()),
                    status: None,
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let t = PodTemplateSpec::default();
        let p = new_pod(&set, &t, "web-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[HASH_LABEL], "web-abc");
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.expect("volumes");
        assert_eq!(
            vols[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("www-web-2")
        );
    }
}
