//! DaemonSetsController: one pod per eligible node.
//!
//! A node is eligible when the template's `nodeSelector` and required node affinity admit it
//! and its NoSchedule/NoExecute taints are tolerated, counting the tolerations every daemon pod
//! gets ([`daemon_tolerations`], as upstream: not-ready and unreachable NoExecute, the pressure
//! and unschedulable NoSchedule taints); a pod keeps running on a node while only its NoExecute
//! taints are tolerated. Pods are pinned to their node with required node affinity on
//! `metadata.name` (upstream since 1.12) and bound by the scheduler.
//!
//! Each reconcile: creates a pod on eligible nodes without one, deletes pods from nodes that are
//! gone or no longer eligible, failed pods and duplicates; then RollingUpdate replaces pods of
//! older revisions, keeping at most `maxUnavailable` nodes without an available pod, or with
//! `maxSurge` starting the new pod beside the old one and deleting the old once the new is
//! available. Templates are versioned with ControllerRevisions ([`crate::history`]); pods carry
//! the revision hash in `controller-revision-hash`. Status follows upstream so `kubectl rollout
//! status ds/x` works.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::history::{self, HASH_LABEL};
use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, node_selected,
    pod_is_available, pod_is_ready, selector_of, untolerated, Backoff, Expectations, Recorder,
    Result,
};
use crate::{Shared, Shutdown};

/// The deprecated generation label upstream still sets on daemon pods.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

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
        recorder: Recorder::new(shared.client.clone(), "daemonset-controller"),
    });
    // Any node change can change where every DaemonSet should run.
    let ds_store = shared.daemonsets.store();
    let all_daemonsets = move |_node: Node| -> Vec<ObjectRef<DaemonSet>> {
        ds_store
            .state()
            .iter()
            .map(|d| ObjectRef::from_obj(&**d))
            .collect()
    };
    Controller::for_stream(shared.daemonsets.subscribe(), shared.daemonsets.store())
        .owns_stream(shared.pods.subscribe())
        .owns_stream(shared.controllerrevisions.subscribe())
        .watches_stream(shared.nodes.subscribe(), all_daemonsets)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |d, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*d)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    }
}

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    t
}

/// The template's tolerations plus the daemon ones it lacks.
fn with_daemon_tolerations(mut tols: Vec<Toleration>, host_network: bool) -> Vec<Toleration> {
    for d in daemon_tolerations(host_network) {
        if !tols
            .iter()
            .any(|t| t.key == d.key && t.effect == d.effect && t.operator == d.operator)
        {
            tols.push(d);
        }
    }
    tols
}

/// Whether a daemon pod of `template` should be started on `node`, and whether one already
/// there may keep running.
pub fn node_should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let spec = template.spec.clone().unwrap_or_default();
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(n) != node.metadata.name.as_deref() {
            return (false, false);
        }
    }
    if !node_selected(&spec, node) {
        return (false, false);
    }
    let tols = with_daemon_tolerations(
        spec.tolerations.clone().unwrap_or_default(),
        spec.host_network.unwrap_or(false),
    );
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let run = untolerated(&taints, &tols, &["NoSchedule", "NoExecute"]).is_none();
    let keep = untolerated(&taints, &tols, &["NoExecute"]).is_none();
    (run, keep)
}

/// The pod for `node` from `template`, pinned to it by required node affinity.
pub fn new_pod(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.tolerations = Some(with_daemon_tolerations(
        spec.tolerations.take().unwrap_or_default(),
        spec.host_network.unwrap_or(false),
    ));
    let mut affinity = spec.affinity.take().unwrap_or_default();
    let mut na = affinity.node_affinity.take().unwrap_or_default();
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    affinity.node_affinity = Some(na);
    spec.affinity = Some(affinity);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The node a daemon pod runs on or is pinned to.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Resolves an int-or-percent against `total`, rounding up as upstream does for DaemonSets.
pub fn resolve(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            (pct * f64::from(total) / 100.0).ceil() as i32
        }
    }
}

/// A node as the rolling update sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodePods {
    /// An old-revision pod, and whether it is available.
    pub old: Option<bool>,
    /// A new-revision pod, and whether it is available.
    pub new: Option<bool>,
}

/// What the rolling update does on a node.
#[derive(Debug, PartialEq, Eq)]
pub enum Roll {
    DeleteOld(usize),
    SurgeNew(usize),
}

/// Upstream's rolling update over the eligible nodes: with `max_surge` 0, delete old pods,
/// unavailable ones first, while at most `max_unavailable` nodes lack an available pod; with a
/// surge, start new pods beside old available ones (at most `max_surge` at once) and delete the
/// old pod once the new one is available.
pub fn roll(nodes: &[NodePods], max_unavailable: i32, max_surge: i32) -> Vec<Roll> {
    let mut out = Vec::new();
    if max_surge > 0 {
        let mut surging = nodes
            .iter()
            .filter(|n| n.old.is_some() && n.new == Some(false))
            .count() as i32;
        for (i, n) in nodes.iter().enumerate() {
            match (n.old, n.new) {
                (Some(_), Some(true)) => out.push(Roll::DeleteOld(i)),
                (Some(false), None) => out.push(Roll::DeleteOld(i)),
                (Some(true), None) if surging < max_surge => {
                    surging += 1;
                    out.push(Roll::SurgeNew(i));
                }
                _ => {}
            }
        }
        return out;
    }
    let mut unavailable = nodes
        .iter()
        .filter(|n| n.old != Some(true) && n.new != Some(true))
        .count() as i32;
    for (i, n) in nodes.iter().enumerate() {
        if n.new.is_some() {
            continue;
        }
        match n.old {
            Some(false) => out.push(Roll::DeleteOld(i)),
            Some(true) if unavailable < max_unavailable => {
                unavailable += 1;
                out.push(Roll::DeleteOld(i));
            }
            _ => {}
        }
    }
    out
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*ds);
    if ctx
        .shared
        .daemonsets
        .store()
        .get(&ObjectRef::from_obj(&*ds))
        .is_none()
        || ds.metadata.deletion_timestamp.is_some()
    {
        ctx.expectations.forget(&key);
        ctx.backoff.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    if selector_of(Some(&spec.selector)).is_nothing() {
        return Ok(Action::await_change());
    }
    let all_pods = ctx.shared.pods_in(&ns);
    if !ctx.expectations.satisfied_by_pods(&key, &all_pods) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // Revisions.
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut revisions = history::owned(&*ds, &ctx.shared.controllerrevisions.store().state());
    let collision = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = history::sync(
        &rev_api,
        &*ds,
        &revisions,
        &spec.template,
        &spec.selector.match_labels.clone().unwrap_or_default(),
        collision,
    )
    .await?;
    revisions.retain(|r| r.name_any() != update.name_any());
    revisions.push(update.clone());
    let hash = update
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .cloned()
        .unwrap_or_default();

    // Pods by node, oldest first.
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in all_pods
        .iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if let Some(n) = node_of(p) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    let nodes: Vec<Arc<Node>> = ctx.shared.nodes.store().state();
    let node_names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();
    let is_new = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .map(String::as_str)
            == Some(hash.as_str())
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let ru = strategy.rolling_update.clone().unwrap_or_default();

    let mut create_on: Vec<String> = Vec::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    let mut eligible: Vec<(String, NodePods, Vec<Arc<Pod>>)> = Vec::new();
    let (mut desired, mut current, mut ready, mut available, mut updated, mut misscheduled) =
        (0, 0, 0, 0, 0, 0);
    for node in &nodes {
        let nname = node.name_any();
        let (run, keep) = node_should_run(&spec.template, node);
        let pods = by_node.remove(&nname).unwrap_or_default();
        let (failed, pods): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        if run {
            desired += 1;
            if let Some(p) = pods.first() {
                current += 1;
                ready += i32::from(pod_is_ready(p));
                available += i32::from(pod_is_available(p, min_ready, now));
            }
            updated += i32::from(pods.iter().any(|p| is_new(p)));
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
        delete.extend(failed);
        if !keep || (!run && pods.is_empty()) {
            delete.extend(pods);
            continue;
        }
        if pods.is_empty() {
            if run {
                create_on.push(nname);
            }
            continue;
        }
        // Duplicates: keep one of each revision at most, and only both while surging.
        let (new, old): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| is_new(p));
        let mut keep_new = new;
        let mut keep_old = old;
        delete.extend(keep_new.drain(1.min(keep_new.len())..));
        delete.extend(keep_old.drain(1.min(keep_old.len())..));
        let np = NodePods {
            old: keep_old
                .first()
                .map(|p| pod_is_available(p, min_ready, now)),
            new: keep_new
                .first()
                .map(|p| pod_is_available(p, min_ready, now)),
        };
        let mut pods = keep_old;
        pods.extend(keep_new);
        eligible.push((nname, np, pods));
    }
    // Pods on nodes that are gone.
    for (n, pods) in by_node {
        if !node_names.contains(&n) {
            delete.extend(pods);
        }
    }
    if rolling {
        let max_surge = resolve(ru.max_surge.as_ref(), desired, 0);
        let mut max_unavailable = resolve(ru.max_unavailable.as_ref(), desired, 1);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let view: Vec<NodePods> = eligible.iter().map(|(_, np, _)| *np).collect();
        for r in roll(&view, max_unavailable, max_surge) {
            match r {
                Roll::DeleteOld(i) => {
                    if let Some(p) = eligible[i].2.iter().find(|p| !is_new(p)) {
                        delete.push(p.clone());
                    }
                }
                Roll::SurgeNew(i) => create_on.push(eligible[i].0.clone()),
            }
        }
    }

    let pod_api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut created = Vec::new();
    let mut failure = None;
    for n in &create_on {
        let pod = new_pod(&ds, &spec.template, &hash, n);
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                ctx.recorder.normal(
                    &*ds,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                created.push(p.name_any());
            }
            Err(e) => {
                ctx.recorder
                    .warning(&*ds, "FailedCreate", format!("Error creating: {e}"));
                failure = Some(e);
                break;
            }
        }
    }
    ctx.expectations.expect(&key, created, Vec::new());
    let mut deleted = Vec::new();
    for p in &delete {
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
                    &*ds,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name_any()),
                );
                deleted.push(p.metadata.uid.clone().unwrap_or_default());
            }
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    ctx.expectations.expect(&key, Vec::new(), deleted);
    if let Some(e) = failure {
        return Err(e.into());
    }

    let new_status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
        "numberUnavailable": (desired - available).max(0),
        "collisionCount": collision,
    });
    let old = serde_json::to_value(&ds.status).unwrap_or_default();
    let differs = new_status.as_object().into_iter().flatten().any(|(k, v)| {
        let o = old.get(k).cloned().unwrap_or(json!(0));
        &o != v && !(o == json!(0) && v.is_null())
    });
    if differs {
        let api: Api<DaemonSet> = Api::namespaced(ctx.shared.client.clone(), &ns);
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
    let in_use: BTreeSet<String> = all_pods
        .iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
        .collect();
    history::truncate(
        &rev_api,
        &revisions,
        &[update.name_any().as_str()],
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            value: None,
                            time_added: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn eligibility_counts_selector_taints_and_daemon_tolerations() {
        let mut t = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec::default()),
        };
        assert_eq!(node_should_run(&t, &node("a", &[], &[])), (true, true));
        // Tolerated automatically: unschedulable, not-ready, unreachable.
        let cordoned = node(
            "a",
            &[],
            &[("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        assert_eq!(node_should_run(&t, &cordoned), (true, true));
        let dead = node("a", &[], &[("node.kubernetes.io/unreachable", "NoExecute")]);
        assert_eq!(node_should_run(&t, &dead), (true, true));
        // A foreign NoSchedule taint: not started, but an existing pod stays.
        assert_eq!(
            node_should_run(&t, &node("a", &[], &[("gpu", "NoSchedule")])),
            (false, true)
        );
        assert_eq!(
            node_should_run(&t, &node("a", &[], &[("gpu", "NoExecute")])),
            (false, false)
        );
        if let Some(s) = t.spec.as_mut() {
            s.node_selector = Some([("role".to_string(), "edge".to_string())].into());
        }
        assert_eq!(node_should_run(&t, &node("a", &[], &[])), (false, false));
        assert_eq!(
            node_should_run(&t, &node("a", &[("role", "edge")], &[])),
            (true, true)
        );
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                generation: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = new_pod(&ds, &PodTemplateSpec::default(), "abc", "n7");
        assert_eq!(node_of(&p).as_deref(), Some("n7"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[HASH_LABEL], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "3");
        let tols = p.spec.and_then(|s| s.tolerations).unwrap_or_default();
        assert!(tols
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")));
    }

    #[test]
    fn rolling_update_keeps_max_unavailable_or_surges() {
        let old_ok = NodePods {
            old: Some(true),
            new: None,
        };
        let nodes = vec![old_ok; 4];
        assert_eq!(roll(&nodes, 1, 0), vec![Roll::DeleteOld(0)]);
        assert_eq!(
            roll(&nodes, 2, 0),
            vec![Roll::DeleteOld(0), Roll::DeleteOld(1)]
        );
        // One node already without an available pod uses the budget.
        let mut n2 = nodes.clone();
        n2[3] = NodePods {
            old: None,
            new: Some(false),
        };
        assert_eq!(roll(&n2, 1, 0), vec![]);
        // An unavailable old pod goes regardless.
        n2[2] = NodePods {
            old: Some(false),
            new: None,
        };
        assert_eq!(roll(&n2, 1, 0), vec![Roll::DeleteOld(2)]);
        // Surge: new beside old, old goes when new is available.
        assert_eq!(roll(&nodes, 0, 1), vec![Roll::SurgeNew(0)]);
        let surging = vec![
            NodePods {
                old: Some(true),
                new: Some(true),
            },
            old_ok,
        ];
        assert_eq!(
            roll(&surging, 0, 1),
            vec![Roll::DeleteOld(0), Roll::SurgeNew(1)]
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(resolve(Some(&IntOrString::String("10%".into())), 5, 1), 1);
        assert_eq!(resolve(Some(&IntOrString::String("50%".into())), 5, 1), 3);
        assert_eq!(resolve(None, 5, 1), 1);
    }
}
