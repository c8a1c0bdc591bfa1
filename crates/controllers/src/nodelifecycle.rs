//! NodeLifecycleController, with upstream's taint-based eviction (the `taint-eviction-controller`
//! since 1.29) folded in.
//!
//! Health: a node is alive while its Lease in `kube-node-lease` is renewed or its Ready
//! condition's `lastHeartbeatTime` advances. As upstream, what counts is when this controller
//! *saw* either change (a private per-node record), never the clocks in the objects, so a
//! restarted controller gives every node a fresh grace period. A node silent for longer than
//! `node_monitor_grace_period` gets Ready, MemoryPressure, DiskPressure and PIDPressure set to
//! Unknown (reason NodeStatusUnknown).
//!
//! Taints from conditions (TaintNodesByCondition and the NoExecute taint manager together):
//! Ready=False gives `node.kubernetes.io/not-ready`, Ready=Unknown
//! `node.kubernetes.io/unreachable`, each as NoSchedule and NoExecute; pressure conditions and
//! `spec.unschedulable` give their NoSchedule taints. They go when the condition clears.
//!
//! Eviction: a pod on a node with a NoExecute taint it does not tolerate is deleted at once; one
//! that tolerates it with `tolerationSeconds` is deleted that long after the taint's
//! `timeAdded` (the reconcile comes back then).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::util::{is_conflict, is_not_found, tolerates, Backoff, Recorder, Result};
use crate::{Shared, Shutdown};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Condition-driven taints this controller owns (key, effect).
const MANAGED: &[&str] = &[
    NOT_READY,
    UNREACHABLE,
    UNSCHEDULABLE,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
];

/// What the controller last saw of a node's heartbeats, and when it saw them change.
struct Health {
    lease: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    seen: Instant,
}

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    recorder: Recorder,
    health: Mutex<HashMap<String, Health>>,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        recorder: Recorder::new(shared.client.clone(), "node-controller"),
        health: Mutex::default(),
    });
    let lease_node = |lease: Lease| -> Option<ObjectRef<Node>> {
        (lease.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE))
            .then(|| ObjectRef::new(&lease.name_any()))
    };
    // A pod matters only when it lands on a node with a NoExecute taint.
    let nodes = shared.nodes.store();
    let pod_node = move |pod: Pod| -> Option<ObjectRef<Node>> {
        let name = pod.spec.as_ref()?.node_name.clone()?;
        let r = ObjectRef::new(&name);
        let node = nodes.get(&r)?;
        node.spec
            .as_ref()?
            .taints
            .as_ref()?
            .iter()
            .any(|t| t.effect == "NoExecute")
            .then_some(r)
    };
    Controller::for_stream(shared.nodes.subscribe(), shared.nodes.store())
        .watches_stream(shared.leases.subscribe(), lease_node)
        .watches_stream(shared.pods.subscribe(), pod_node)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |n, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&n.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The conditions of a node that stopped posting status: the kubelet's ones Unknown.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conds.iter_mut().find(|c| c.type_ == t) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                }
            }
            None => conds.push(NodeCondition {
                type_: t.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: None,
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    conds
}

/// The node's taints with the condition-driven ones brought up to date.
pub fn desired_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    let status = |t: &str| condition(node, t).map(|c| c.status.as_str());
    let mut want: Vec<(&str, &str)> = Vec::new();
    match status("Ready") {
        Some("False") => want.extend([(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]),
        Some("Unknown") => want.extend([(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]),
        _ => {}
    }
    for (cond, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if status(cond) == Some("True") {
            want.push((key, "NoSchedule"));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push((UNSCHEDULABLE, "NoSchedule"));
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut out: Vec<Taint> = current
        .into_iter()
        .filter(|t| {
            !MANAGED.contains(&t.key.as_str())
                || want.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    out
}

/// When a pod on a node with `taints` must go: now (`Some(0)`), after some seconds, or never.
/// A NoExecute taint it does not tolerate evicts at once; otherwise the smallest
/// `tolerationSeconds` among the tolerations used counts from the taint's `timeAdded`.
pub fn eviction_at(taints: &[Taint], tolerations: &[Toleration], now: Timestamp) -> Option<i64> {
    let mut at: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|x| tolerates(x, t)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // The taint is tolerated forever if any matching toleration has no limit.
        if matching.iter().any(|x| x.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|x| x.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = t
            .time_added
            .as_ref()
            .map(|x| x.0.as_second())
            .unwrap_or(now.as_second());
        let left = (added + secs - now.as_second()).max(0);
        at = Some(at.map_or(left, |a| a.min(left)));
    }
    at
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = node.name_any();
    if ctx
        .shared
        .nodes
        .store()
        .get(&ObjectRef::from_obj(&*node))
        .is_none()
    {
        ctx.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        ctx.backoff.forget(&name);
        return Ok(Action::await_change());
    }
    let grace = ctx.shared.config.node_monitor_grace_period;
    let lease = ctx
        .shared
        .leases
        .store()
        .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let heartbeat =
        condition(&node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let silent_for = {
        let mut h = ctx.health.lock().unwrap_or_else(|p| p.into_inner());
        let e = h.entry(name.clone()).or_insert(Health {
            lease,
            heartbeat,
            seen: Instant::now(),
        });
        if e.lease != lease || e.heartbeat != heartbeat {
            e.lease = lease;
            e.heartbeat = heartbeat;
            e.seen = Instant::now();
        }
        e.seen.elapsed()
    };
    let now = Timestamp::now();
    let api: Api<Node> = Api::all(ctx.shared.client.clone());
    let mut node = (*node).clone();
    let ready = condition(&node, "Ready").map(|c| c.status.clone());
    if silent_for > grace && ready.as_deref() != Some("Unknown") {
        let conds = unknown_conditions(&node, now);
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conds},
        });
        node = match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(node = %name, silent = ?silent_for, "node stopped posting status; marked Unknown");
        ctx.recorder.normal(
            &node,
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
    }
    let taints = desired_taints(&node, now);
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints != current {
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }},
        });
        node = match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
    }

    // Taint-based eviction.
    let mut wake: Option<Duration> = None;
    let no_execute: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    if !no_execute.is_empty() {
        for pod in ctx.shared.pods.store().state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let tols = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match eviction_at(&no_execute, &tols, now) {
                None => {}
                Some(0) => evict(&ctx, &pod).await?,
                Some(secs) => {
                    let d = Duration::from_secs(secs as u64);
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                }
            }
        }
    }
    ctx.backoff.forget(&name);
    // Come back when the grace period would run out, or the next eviction is due.
    let ready = condition(&node, "Ready").map(|c| c.status.as_str());
    if ready != Some("Unknown") {
        let left = grace.saturating_sub(silent_for) + Duration::from_millis(200);
        wake = Some(wake.map_or(left, |w| w.min(left)));
    }
    Ok(wake
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

async fn evict(ctx: &Ctx, pod: &Pod) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => {
            ctx.recorder.normal(
                pod,
                "TaintManagerEviction",
                format!("Marking for deletion Pod {ns}/{}", pod.name_any()),
            );
            Ok(())
        }
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(ready: &str, unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(Timestamp::from_second(s).expect("ts"))),
        }
    }

    fn keys(t: &[Taint]) -> Vec<(String, String)> {
        let mut v: Vec<_> = t
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn taints_follow_ready_and_cordon() {
        let now = Timestamp::from_second(1000).expect("ts");
        assert!(desired_taints(&node("True", false, vec![]), now).is_empty());
        let t = desired_taints(
            &node("Unknown", false, vec![taint("gpu", "NoSchedule", None)]),
            now,
        );
        assert_eq!(
            keys(&t),
            vec![
                ("gpu".into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoExecute".into()),
                (UNREACHABLE.into(), "NoSchedule".into()),
            ]
        );
        assert!(t
            .iter()
            .any(|t| t.effect == "NoExecute" && t.time_added.is_some()));
        let back = desired_taints(&node("True", true, t), now);
        assert_eq!(
            keys(&back),
            vec![
                ("gpu".into(), "NoSchedule".into()),
                (UNSCHEDULABLE.into(), "NoSchedule".into()),
            ]
        );
        let nr = desired_taints(&node("False", false, vec![]), now);
        assert!(nr.iter().all(|t| t.key == NOT_READY));
        // Unchanged taints keep their timeAdded.
        let kept = vec![
            taint(UNREACHABLE, "NoSchedule", None),
            taint(UNREACHABLE, "NoExecute", Some(5)),
        ];
        assert_eq!(
            desired_taints(&node("Unknown", false, kept.clone()), now),
            kept
        );
    }

    #[test]
    fn unknown_conditions_keep_heartbeats() {
        let now = Timestamp::from_second(1000).expect("ts");
        let conds = unknown_conditions(&node("True", false, vec![]), now);
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(conds.len(), 4);
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let now = Timestamp::from_second(1000).expect("ts");
        let taints = vec![taint(UNREACHABLE, "NoExecute", Some(990))];
        let tol = |secs: Option<i64>| Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            value: None,
            toleration_seconds: secs,
        };
        assert_eq!(eviction_at(&taints, &[], now), Some(0));
        assert_eq!(eviction_at(&taints, &[tol(Some(300))], now), Some(290));
        assert_eq!(eviction_at(&taints, &[tol(Some(5))], now), Some(0));
        assert_eq!(eviction_at(&taints, &[tol(None)], now), None);
        assert_eq!(
            eviction_at(&[taint("x", "NoSchedule", None)], &[], now),
            None
        );
    }
}
