//! DeploymentController: rolls a Deployment's pod template out through ReplicaSets.
//!
//! Each distinct template gets one ReplicaSet named `<deployment>-<pod-template-hash>`, labelled
//! and selected by that hash. RollingUpdate scales the new ReplicaSet up while the total stays
//! within `replicas + maxSurge`, and old ones down while at least `replicas - maxUnavailable`
//! pods stay available (counting a ReplicaSet as no more available than its spec, so a stale
//! status never lets it scale down twice); Recreate scales the old ones to zero and waits for
//! their pods to go before scaling the new one up. Revisions live in the
//! `deployment.kubernetes.io/revision` annotation; a template equal to an old ReplicaSet's
//! (what `kubectl rollout undo` patches in) revives that ReplicaSet with a new revision. Paused
//! Deployments only scale. Scaling a Deployment while several ReplicaSets are active spreads the
//! change over them in proportion to their sizes, as upstream, using the
//! `deployment.kubernetes.io/max-replicas` annotation each carries ([`proportional`]). Old
//! ReplicaSets at zero beyond `revisionHistoryLimit` are deleted.
//! Status and the Progressing/Available conditions follow upstream, so `kubectl rollout
//! status` and `rollout history` work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, pod_is_active, selector_of,
    Backoff, Recorder, Result,
};
use crate::{Shared, Shutdown};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        recorder: Recorder::new(shared.client.clone(), "deployment-controller"),
    });
    let rs_store = shared.replicasets.store();
    // Pods wake their Deployment (through their ReplicaSet) so Recreate sees old pods go.
    let pod_owner = move |pod: Pod| -> Option<ObjectRef<Deployment>> {
        let r = controller_of(&pod.metadata)?;
        if r.kind != "ReplicaSet" {
            return None;
        }
        let ns = pod.namespace()?;
        let rs = rs_store.get(&ObjectRef::new(&r.name).within(&ns))?;
        let d = controller_of(&rs.metadata)?;
        (d.kind == "Deployment").then(|| ObjectRef::new(&d.name).within(&ns))
    };
    Controller::for_stream(shared.deployments.subscribe(), shared.deployments.store())
        .owns_stream(shared.replicasets.subscribe())
        .watches_stream(shared.pods.subscribe(), pod_owner)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |d, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*d)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// FNV-1a 32 of the template (without the hash label) and the collision count, in the
/// vowel-free alphabet upstream uses for names.
pub fn template_hash(template: &PodTemplateSpec, collision_count: i32) -> String {
    let mut t = template.clone();
    strip_hash_label(&mut t);
    let mut bytes = serde_json::to_vec(&t).unwrap_or_default();
    if collision_count > 0 {
        bytes.extend_from_slice(&collision_count.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[(d as usize) % ALPHABET.len()] as char)
        .collect::<String>()
        .chars()
        .take(10)
        .collect()
}

fn strip_hash_label(t: &mut PodTemplateSpec) {
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = t.metadata.as_mut() {
                m.labels = None;
            }
        }
    }
}

/// Whether two templates are equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    strip_hash_label(&mut a);
    strip_hash_label(&mut b);
    let norm = |t: &PodTemplateSpec| {
        let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.retain(|k, _| k == "labels" || k == "annotations");
            if m.get("annotations")
                .is_some_and(|a| a.as_object().is_some_and(|o| o.is_empty()))
            {
                m.remove("annotations");
            }
        }
        v
    };
    norm(&a) == norm(&b)
}

fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Resolves maxSurge / maxUnavailable against `replicas` (surge rounds up, unavailable down);
/// both zero is made maxUnavailable 1, as upstream.
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    fn resolve(v: Option<&IntOrString>, replicas: i32, round_up: bool) -> i32 {
        match v {
            None => {
                let pct = 25.0 * f64::from(replicas) / 100.0;
                (if round_up { pct.ceil() } else { pct.floor() }) as i32
            }
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => {
                let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                let x = pct * f64::from(replicas) / 100.0;
                (if round_up { x.ceil() } else { x.floor() }) as i32
            }
        }
    }
    let surge = resolve(surge, replicas, true);
    let mut unavailable = resolve(unavailable, replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas.max(0)))
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Available replicas of a ReplicaSet, never more than it is asked to keep.
fn available(rs: &ReplicaSet) -> i32 {
    let a = rs
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    a.min(spec_replicas(rs))
}

/// How many replicas the new ReplicaSet should have in a rolling update.
pub fn new_rs_replicas(desired: i32, surge: i32, new_current: i32, all_current: i32) -> i32 {
    if new_current >= desired {
        return desired;
    }
    let max_total = desired + surge;
    if all_current >= max_total {
        return new_current;
    }
    new_current + (max_total - all_current).min(desired - new_current)
}

/// Scale-down plan for old ReplicaSets (oldest first) in a rolling update: returns the new
/// replica counts. Unhealthy replicas go first, then available ones while at least
/// `min_available` stay available.
pub fn scale_down_olds(
    olds: &[(i32, i32)],
    new_spec: i32,
    new_available: i32,
    desired: i32,
    max_unavailable: i32,
) -> Vec<i32> {
    let mut out: Vec<i32> = olds.iter().map(|(s, _)| *s).collect();
    let old_total: i32 = out.iter().sum();
    if old_total == 0 {
        return out;
    }
    let all = old_total + new_spec;
    let min_available = desired - max_unavailable;
    let new_unavailable = (new_spec - new_available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    // Unhealthy first: replicas that are not available cost no availability.
    for (i, (spec, avail)) in olds.iter().enumerate() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (spec - avail).max(0).min(budget);
        out[i] -= unhealthy;
        budget -= unhealthy;
    }
    // Then available ones, keeping min_available.
    let available_total: i32 = olds
        .iter()
        .zip(&out)
        .map(|((_, a), s)| (*a).min(*s))
        .sum::<i32>()
        + new_available;
    let mut can = available_total - min_available;
    for (i, (_, avail)) in olds.iter().enumerate() {
        if can <= 0 {
            break;
        }
        let n = out[i].min(*avail).min(can);
        out[i] -= n;
        can -= n;
    }
    out
}

/// Upstream's proportional scaling of several active ReplicaSets, each given as (spec replicas,
/// its `max-replicas` annotation, creation time): the difference between `desired + maxSurge`
/// and their total goes to each in proportion to its size against the size the annotation
/// records, largest first (newest first among equals when growing, oldest when shrinking);
/// the rounding leftover goes to the first. Returns the new sizes in the given order.
pub fn proportional(
    sets: &[(i32, Option<i32>, i64)],
    desired: i32,
    max_surge: i32,
    status_replicas: i32,
) -> Vec<i32> {
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let total: i32 = sets.iter().map(|s| s.0).sum();
    let to_add = allowed - total;
    let mut sizes: Vec<i32> = sets.iter().map(|s| s.0).collect();
    if to_add == 0 || sets.is_empty() {
        return sizes;
    }
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|&a, &b| {
        let by_size = sets[b].0.cmp(&sets[a].0);
        if to_add > 0 {
            by_size.then(sets[b].2.cmp(&sets[a].2))
        } else {
            by_size.then(sets[a].2.cmp(&sets[b].2))
        }
    });
    let mut added = 0;
    for &i in &order {
        let (spec, max_before, _) = sets[i];
        if spec == 0 || added == to_add {
            continue;
        }
        let fraction = if desired == 0 {
            -spec
        } else {
            let before = max_before.filter(|m| *m > 0).unwrap_or(status_replicas);
            if before <= 0 {
                0
            } else {
                (f64::from(spec) * f64::from(allowed) / f64::from(before)).round() as i32 - spec
            }
        };
        let left = to_add - added;
        let p = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        sizes[i] = spec + p;
        added += p;
    }
    let first = order[0];
    sizes[first] = (sizes[first] + to_add - added).max(0);
    sizes
}

async fn scale(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, to: i32, max_surge: i32) -> Result<()> {
    let from = spec_replicas(rs);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ann = rs.metadata.annotations.clone().unwrap_or_default();
    if from == to
        && ann.get(DESIRED_REPLICAS) == Some(&desired.to_string())
        && ann.get(MAX_REPLICAS) == Some(&(desired + max_surge).to_string())
    {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(
        ctx.shared.client.clone(),
        &rs.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS: desired.to_string(),
            MAX_REPLICAS: (desired + max_surge).to_string(),
        }},
        "spec": {"replicas": to},
    });
    api.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if from != to {
        let verb = if to > from { "up" } else { "down" };
        ctx.recorder.normal(
            d,
            "ScalingReplicaSet",
            format!(
                "Scaled {verb} replica set {} from {from} to {to}",
                rs.name_any()
            ),
        );
    }
    Ok(())
}

/// Annotations a ReplicaSet inherits from its Deployment.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            k != REVISION
                && k != "kubectl.kubernetes.io/last-applied-configuration"
                && k != "deployment.kubernetes.io/revision-history"
                && k != DESIRED_REPLICAS
                && k != MAX_REPLICAS
        })
        .collect()
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*d);
    if ctx
        .shared
        .deployments
        .store()
        .get(&ObjectRef::from_obj(&*d))
        .is_none()
        || d.metadata.deletion_timestamp.is_some()
    {
        ctx.backoff.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let selector = selector_of(Some(&spec.selector));
    if selector.is_everything() || selector.is_nothing() {
        return Ok(Action::await_change());
    }
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.shared.client.clone(), &ns);
    // ReplicaSets owned (adopting orphans that match, as upstream).
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in ctx.shared.replicasets.store().state() {
        if rs.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let labels = rs.metadata.labels.clone().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => owned.push((*rs).clone()),
            None if rs.metadata.deletion_timestamp.is_none() && selector.matches(&labels) => {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(&*d));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                match rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(r) => owned.push(r),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
    }
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let template = spec.template.clone();
    let desired = spec.replicas.unwrap_or(1);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone());
    let (max_surge, max_unavailable) = if recreate {
        (0, desired)
    } else {
        resolve_fenceposts(
            ru.as_ref().and_then(|r| r.max_surge.as_ref()),
            ru.as_ref().and_then(|r| r.max_unavailable.as_ref()),
            desired,
        )
    };
    let paused = spec.paused.unwrap_or(false);
    let new_idx = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let max_old_revision = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, rs)| revision_of(&rs.metadata))
        .max()
        .unwrap_or(0);
    let mut created_new = None;
    let mut new_rs: Option<ReplicaSet> = new_idx.map(|i| owned[i].clone());
    let olds: Vec<ReplicaSet> = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, rs)| rs.clone())
        .collect();
    let want_revision = max_old_revision + 1;
    // Bring an existing new ReplicaSet's revision forward (a rollback revives an old one).
    if let Some(rs) = new_rs.as_ref() {
        if revision_of(&rs.metadata) < want_revision && !paused {
            let patch = json!({"metadata": {"annotations": {REVISION: want_revision.to_string()}}});
            new_rs = Some(
                rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?,
            );
        }
    }
    if new_rs.is_none() && !paused {
        let collision = d
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let hash = template_hash(&template, collision);
        let mut t = template.clone();
        let tm = t.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut sel = spec.selector.clone();
        sel.match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let old_total: i32 = olds.iter().map(spec_replicas).sum();
        let replicas = if recreate {
            0
        } else {
            new_rs_replicas(desired, max_surge, 0, old_total)
        };
        let mut ann = copied_annotations(&d);
        ann.insert(REVISION.into(), want_revision.to_string());
        ann.insert(DESIRED_REPLICAS.into(), desired.to_string());
        ann.insert(MAX_REPLICAS.into(), (desired + max_surge).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                labels: tm.labels.clone(),
                annotations: Some(ann),
                owner_references: Some(vec![controller_ref(&*d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector: LabelSelector {
                    match_labels: sel.match_labels,
                    match_expressions: sel.match_expressions,
                },
                template: Some(t),
            }),
            status: None,
        };
        match rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    ctx.recorder.normal(
                        &*d,
                        "ScalingReplicaSet",
                        format!(
                            "Scaled up replica set {} from 0 to {replicas}",
                            created.name_any()
                        ),
                    );
                }
                created_new = Some(created.name_any());
                new_rs = Some(created);
            }
            Err(e) if is_conflict(&e) => {
                // A ReplicaSet of that name with another template: bump collisionCount.
                let api: Api<Deployment> = Api::namespaced(ctx.shared.client.clone(), &ns);
                let patch = json!({"status": {"collisionCount": collision + 1}});
                api.patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Proportional scaling: a new size while several ReplicaSets are active is spread over
    // them in proportion to their sizes (upstream's `scale`), before the rollout goes on.
    let mut proportioned = false;
    if !recreate {
        let all: Vec<&ReplicaSet> = new_rs.iter().chain(olds.iter()).collect();
        let active: Vec<&ReplicaSet> = all
            .iter()
            .copied()
            .filter(|r| spec_replicas(r) > 0)
            .collect();
        let scaling_event = active.iter().any(|r| {
            r.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_REPLICAS))
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != desired)
        });
        let saturated = new_rs
            .as_ref()
            .is_some_and(|r| spec_replicas(r) == desired && available(r) == desired);
        if scaling_event && active.len() > 1 && !saturated {
            let view: Vec<(i32, Option<i32>, i64)> = active
                .iter()
                .map(|r| {
                    (
                        spec_replicas(r),
                        r.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(MAX_REPLICAS))
                            .and_then(|v| v.parse().ok()),
                        r.metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| t.0.as_second())
                            .unwrap_or(i64::MAX),
                    )
                })
                .collect();
            let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let sizes = proportional(&view, desired, max_surge, status_replicas);
            for (r, to) in active.iter().zip(sizes) {
                scale(&ctx, &d, r, to, max_surge).await?;
            }
            proportioned = true;
        }
    }

    // Scale.
    let mut requeue = None;
    if proportioned {
        requeue = Some(Duration::from_millis(500));
    } else if paused {
        // Paused: no rollout, only scaling. The one active ReplicaSet (or the newest, when
        // none is active) takes the new size; several active ones are left as they are.
        let all: Vec<&ReplicaSet> = new_rs.iter().chain(olds.iter()).collect();
        let active: Vec<&ReplicaSet> = all
            .iter()
            .copied()
            .filter(|r| spec_replicas(r) > 0)
            .collect();
        let target = match active.as_slice() {
            [one] => Some(*one),
            [] => all.iter().copied().max_by_key(|r| revision_of(&r.metadata)),
            _ => None,
        };
        if let Some(rs) = target {
            scale(&ctx, &d, rs, desired, max_surge).await?;
        }
    } else if let Some(rs) = new_rs.as_ref() {
        if recreate {
            let old_active = olds.iter().any(|o| spec_replicas(o) > 0);
            for o in &olds {
                scale(&ctx, &d, o, 0, max_surge).await?;
            }
            let old_uids: Vec<&str> = olds
                .iter()
                .filter_map(|o| o.metadata.uid.as_deref())
                .collect();
            let old_pods_left = ctx.shared.pods.store().state().iter().any(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str())
                    && pod_is_active(p)
                    && controller_of(&p.metadata)
                        .is_some_and(|r| old_uids.contains(&r.uid.as_str()))
            });
            if !old_active && !old_pods_left {
                scale(&ctx, &d, rs, desired, max_surge).await?;
            } else {
                requeue = Some(Duration::from_secs(1));
            }
        } else {
            let all: i32 = spec_replicas(rs) + olds.iter().map(spec_replicas).sum::<i32>();
            let n = new_rs_replicas(desired, max_surge, spec_replicas(rs), all);
            let n = if spec_replicas(rs) > desired {
                desired
            } else {
                n
            };
            scale(&ctx, &d, rs, n, max_surge).await?;
            let plan = scale_down_olds(
                &olds
                    .iter()
                    .map(|o| (spec_replicas(o), available(o)))
                    .collect::<Vec<_>>(),
                n,
                available(rs),
                desired,
                max_unavailable,
            );
            for (o, to) in olds.iter().zip(plan) {
                if to != spec_replicas(o) {
                    scale(&ctx, &d, o, to, max_surge).await?;
                }
            }
        }
    }

    // Refresh from the cache for status (our own writes show up in the next pass).
    let current: Vec<ReplicaSet> = owned
        .iter()
        .map(|rs| {
            ctx.shared
                .replicasets
                .store()
                .get(&ObjectRef::from_obj(rs))
                .map(|r| (*r).clone())
                .unwrap_or_else(|| rs.clone())
        })
        .collect();
    let new_name = new_rs.as_ref().map(|r| r.name_any());
    let new_cur = current.iter().find(|r| Some(r.name_any()) == new_name);
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let replicas: i32 = current.iter().map(|r| st(r).replicas).sum();
    let updated = new_cur.map(|r| st(r).replicas).unwrap_or(0);
    let ready: i32 = current
        .iter()
        .map(|r| st(r).ready_replicas.unwrap_or(0))
        .sum();
    let avail: i32 = current
        .iter()
        .map(|r| st(r).available_replicas.unwrap_or(0))
        .sum();
    let total_spec: i32 = current.iter().map(spec_replicas).sum();
    let complete = updated == desired
        && replicas == desired
        && avail >= desired
        && new_cur.is_some_and(|r| {
            st(r).observed_generation.unwrap_or(0) >= r.metadata.generation.unwrap_or(0)
        });
    let now = Timestamp::now();
    let old_status = d.status.clone().unwrap_or_default();
    let mut conditions = old_status.conditions.clone().unwrap_or_default();
    let available_ok = avail >= desired - max_unavailable;
    set_condition(
        &mut conditions,
        "Available",
        if available_ok { "True" } else { "False" },
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability.".to_string()
        } else {
            "Deployment does not have minimum availability.".to_string()
        },
        now,
    );
    let rs_name = new_name.clone().unwrap_or_default();
    let progressing = if paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if let Some(n) = &created_new {
        (
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{n}\""),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let prev = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let timed_out = !complete
        && !paused
        && prev.as_ref().is_some_and(|c| {
            c.reason.as_deref() != Some("NewReplicaSetAvailable")
                && c.last_update_time
                    .as_ref()
                    .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second())
        });
    if timed_out {
        set_condition(
            &mut conditions,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            now,
        );
    } else if prev
        .as_ref()
        .map(|c| (c.status.as_str(), c.reason.as_deref()))
        != Some((progressing.0, Some(progressing.1)))
        || prev.as_ref().and_then(|c| c.message.as_deref()) != Some(progressing.2.as_str())
        || (!complete && new_cur.map(|r| st(r).available_replicas) != Some(Some(avail)))
    {
        set_condition(
            &mut conditions,
            "Progressing",
            progressing.0,
            progressing.1,
            progressing.2,
            now,
        );
    }
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(avail),
        unavailable_replicas: Some((total_spec.max(desired) - avail).max(0)),
        conditions: Some(conditions),
        collision_count: old_status.collision_count,
        terminating_replicas: None,
    };
    let dep_api: Api<Deployment> = Api::namespaced(ctx.shared.client.clone(), &ns);
    if !same_status(&old_status, &status) {
        let patch = json!({"status": status});
        match dep_api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // The Deployment carries its current revision.
    if let Some(rs) = new_rs.as_ref() {
        let rev = revision_of(&rs.metadata).to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            != Some(&rev)
        {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            dep_api
                .patch(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }
    // History: when the rollout is done, delete old ReplicaSets at zero beyond the limit.
    if complete {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut dead: Vec<&ReplicaSet> = current
            .iter()
            .filter(|r| Some(r.name_any()) != new_name)
            .filter(|r| spec_replicas(r) == 0 && st(r).replicas == 0)
            .collect();
        dead.sort_by_key(|r| revision_of(&r.metadata));
        let excess = dead.len().saturating_sub(limit);
        for r in dead.into_iter().take(excess) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: r.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match rs_api.delete(&r.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ctx.backoff.forget(&key);
    if let Some(r) = requeue {
        return Ok(Action::requeue(r));
    }
    if !complete && !paused {
        // Re-check the progress deadline (and availability) now and then.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    Ok(Action::await_change())
}

fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Sets a condition, keeping lastTransitionTime when the status does not change.
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let existing = conds.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            if c.status != status
                || c.reason.as_deref() != Some(reason)
                || c.message.as_deref() != Some(message.as_str())
            {
                c.last_update_time = Some(Time(now));
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message);
        }
        None => conds.push(DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
            last_update_time: Some(Time(now)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_is_stable_ignores_its_label_and_changes_with_the_template() {
        let a = template("nginx:1");
        let mut labelled = a.clone();
        labelled
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert(HASH_LABEL.into(), "xyz".into()));
        assert_eq!(template_hash(&a, 0), template_hash(&labelled, 0));
        assert!(equal_ignore_hash(&a, &labelled));
        assert_ne!(template_hash(&a, 0), template_hash(&template("nginx:2"), 0));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        assert!(!equal_ignore_hash(&a, &template("nginx:2")));
        assert!(template_hash(&a, 0).chars().all(|c| !"aeiou".contains(c)));
    }

    #[test]
    fn fenceposts_default_to_25_percent() {
        assert_eq!(resolve_fenceposts(None, None, 10), (3, 2));
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 10),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(
                Some(&IntOrString::String("50%".into())),
                Some(&IntOrString::Int(1)),
                5
            ),
            (3, 1)
        );
    }

    #[test]
    fn new_replica_set_grows_within_surge() {
        // 10 desired, surge 3, new has 0, olds total 10: may add 3.
        assert_eq!(new_rs_replicas(10, 3, 0, 10), 3);
        // at the cap: no growth
        assert_eq!(new_rs_replicas(10, 3, 3, 13), 3);
        // olds scaled down: grows to desired at most
        assert_eq!(new_rs_replicas(10, 3, 8, 8), 10);
        assert_eq!(new_rs_replicas(10, 3, 12, 12), 10);
    }

    #[test]
    fn old_replica_sets_scale_down_keeping_min_available() {
        // desired 10, maxUnavailable 2: one old RS of 10 all available, new 3 none available.
        assert_eq!(scale_down_olds(&[(10, 10)], 3, 0, 10, 2), vec![8]);
        // new 3 available: old may go down to 10 - 2 - 3 = 5 available kept... min_available 8
        assert_eq!(scale_down_olds(&[(8, 8)], 5, 3, 10, 2), vec![5]);
        // unhealthy old replicas go first, within the surge budget (13 - 8 - 3)
        assert_eq!(scale_down_olds(&[(10, 6)], 3, 0, 10, 2), vec![8]);
        // nothing when no budget
        assert_eq!(scale_down_olds(&[(10, 10)], 0, 0, 10, 0), vec![10]);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 10 -> 20 replicas, surge 25%: max 13 -> 25. Old 8, new 5: +12 split 7 / 5.
        assert_eq!(
            proportional(&[(8, Some(13), 100), (5, Some(13), 200)], 20, 5, 13),
            vec![15, 10]
        );
        // 20 -> 10, max 25 -> 13: old 15, new 10 shrink to 8 / 5.
        assert_eq!(
            proportional(&[(15, Some(25), 100), (10, Some(25), 200)], 10, 3, 25),
            vec![8, 5]
        );
        // Equal sizes: the newest grow first.
        assert_eq!(
            proportional(
                &[(1, Some(3), 100), (1, Some(3), 200), (1, Some(3), 300)],
                4,
                1,
                3
            ),
            vec![1, 2, 2]
        );
        // The largest takes its share first; nothing is left for the smaller one.
        assert_eq!(
            proportional(&[(3, Some(5), 100), (2, Some(5), 200)], 5, 1, 5),
            vec![4, 2]
        );
        // To zero: everything goes.
        assert_eq!(
            proportional(&[(3, Some(4), 100), (1, Some(4), 200)], 0, 1, 4),
            vec![0, 0]
        );
    }

    #[test]
    fn conditions_keep_transition_time() {
        let t0 = Timestamp::from_second(100).expect("t");
        let t1 = Timestamp::from_second(200).expect("t");
        let mut c = Vec::new();
        set_condition(&mut c, "Available", "True", "A", "m".into(), t0);
        set_condition(&mut c, "Available", "True", "A", "m".into(), t1);
        assert_eq!(c[0].last_transition_time, Some(Time(t0)));
        set_condition(&mut c, "Available", "False", "B", "m".into(), t1);
        assert_eq!(c[0].last_transition_time, Some(Time(t1)));
        assert_eq!(c.len(), 1);
    }
}
