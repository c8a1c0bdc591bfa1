//! PodGCController (upstream's `pod-garbage-collector`): every 20 s it force-deletes the pods
//! that no kubelet will ever finish, so that they do not stay Terminating or pile up:
//! - terminated pods (Succeeded or Failed) beyond `terminated_pod_gc_threshold`, oldest first;
//! - pods bound to a node that no longer exists: missing from the node cache for 40 s and
//!   then confirmed absent by a GET, since a cache may lag a node that was just created;
//! - terminating pods that were never bound to a node;
//! - terminating pods on a node that is not Ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (upstream's non-graceful node shutdown).
//!
//! A pod that is not yet terminal gets phase Failed and a `DisruptionTarget` condition before
//! it is deleted, as upstream does, so that Jobs count it as failed and not as vanished.
//! [`plan`] decides and is tested alone; [`run`] applies it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::util::{is_not_found, Recorder, Result};
use crate::{Shared, Shutdown};

/// Upstream's gcCheckPeriod.
const PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing from the cache before it is looked up (upstream's
/// quarantineTime).
const QUARANTINE: Duration = Duration::from_secs(40);
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Why a pod is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// One terminated pod too many.
    Terminated,
    /// Its node is gone.
    Orphaned,
    /// Terminating and never scheduled.
    Unscheduled,
    /// Terminating on a not-ready node taken out of service.
    OutOfService,
}

impl Reason {
    fn message(self) -> &'static str {
        match self {
            Reason::Terminated => "PodGC: too many terminated pods",
            Reason::Orphaned => "PodGC: node no longer exists",
            Reason::Unscheduled => "PodGC: terminating pod that was never scheduled",
            Reason::OutOfService => "PodGC: node is out of service",
        }
    }
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute")
        });
    !ready && tainted
}

/// Node names that pods are bound to but that the node cache does not hold.
pub fn missing_nodes(pods: &[Arc<Pod>], nodes: &HashMap<String, Arc<Node>>) -> HashSet<String> {
    pods.iter()
        .filter_map(|p| node_name(p))
        .filter(|n| !nodes.contains_key(*n))
        .map(str::to_string)
        .collect()
}

/// The pods to collect, each once, given the nodes confirmed deleted.
pub fn plan(
    pods: &[Arc<Pod>],
    nodes: &HashMap<String, Arc<Node>>,
    deleted_nodes: &HashSet<String>,
    threshold: usize,
) -> Vec<(Arc<Pod>, Reason)> {
    let mut out: Vec<(Arc<Pod>, Reason)> = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut take = |pod: &Arc<Pod>, reason: Reason, out: &mut Vec<(Arc<Pod>, Reason)>| {
        if taken.insert(pod.uid().unwrap_or_default()) {
            out.push((pod.clone(), reason));
        }
    };
    for pod in pods {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        match node_name(pod) {
            Some(n) if deleted_nodes.contains(n) => take(pod, Reason::Orphaned, &mut out),
            Some(n) if terminating && nodes.get(n).is_some_and(|node| out_of_service(node)) => {
                take(pod, Reason::OutOfService, &mut out);
            }
            Some(_) => {}
            None if terminating => take(pod, Reason::Unscheduled, &mut out),
            None => {}
        }
    }
    if threshold > 0 {
        let mut terminated: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| is_terminated(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if terminated.len() > threshold {
            terminated.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let excess = terminated.len() - threshold;
            for pod in terminated.into_iter().take(excess) {
                take(pod, Reason::Terminated, &mut out);
            }
        }
    }
    out
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let recorder = Recorder::new(shared.client.clone(), "pod-garbage-collector");
    let nodes_api: Api<Node> = Api::all(shared.client.clone());
    // When each missing node was first seen missing.
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.clone() => return,
        }
        let pods = shared.pods.store().state();
        let nodes: HashMap<String, Arc<Node>> = shared
            .nodes
            .store()
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        let missing = missing_nodes(&pods, &nodes);
        missing_since.retain(|n, _| missing.contains(n));
        let mut deleted = HashSet::new();
        for name in missing {
            let since = *missing_since
                .entry(name.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            match nodes_api.get(&name).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    deleted.insert(name);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(node = %name, error = %e, "podgc: node lookup failed"),
            }
        }
        let threshold = shared.config.terminated_pod_gc_threshold;
        for (pod, reason) in plan(&pods, &nodes, &deleted, threshold) {
            if let Err(e) = collect(&shared, &recorder, &pod, reason).await {
                tracing::warn!(pod = %pod.name_any(), error = %e, "podgc: deleting pod failed");
            }
        }
    }
}

/// Marks `pod` Failed (unless terminated already) and deletes it at once.
async fn collect(shared: &Shared, recorder: &Recorder, pod: &Pod, reason: Reason) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let name = pod.name_any();
    if reason != Reason::Terminated && !is_terminated(pod) {
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByPodGC".into()),
            message: Some(reason.message().into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        let patch = json!({"status": {"phase": "Failed", "conditions": conditions}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), ?reason, "podgc: deleted pod");
            recorder.normal(pod, "PodGC", reason.message().to_string());
            Ok(())
        }
        Err(e) if is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, Taint,
    };
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: Option<&str>, phase: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(created).expect("timestamp"))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        p
    }

    fn node(name: &str, ready: bool, taint: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoExecute".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "Unknown" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(plan: &[(Arc<Pod>, Reason)]) -> Vec<(String, Reason)> {
        plan.iter().map(|(p, r)| (p.name_any(), *r)).collect()
    }

    fn nodes(list: Vec<Arc<Node>>) -> HashMap<String, Arc<Node>> {
        list.into_iter().map(|n| (n.name_any(), n)).collect()
    }

    #[test]
    fn oldest_terminated_pods_beyond_the_threshold_go() {
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("new", Some("a"), "Succeeded", 300)),
            Arc::new(pod("old", Some("a"), "Failed", 100)),
            Arc::new(pod("mid", Some("a"), "Succeeded", 200)),
            Arc::new(pod("running", Some("a"), "Running", 50)),
        ];
        let n = nodes(vec![node("a", true, None)]);
        let got = names(&plan(&pods, &n, &HashSet::new(), 2));
        assert_eq!(got, vec![("old".to_string(), Reason::Terminated)]);
        assert!(
            plan(&pods, &n, &HashSet::new(), 0).is_empty(),
            "0 keeps all"
        );
        assert!(plan(&pods, &n, &HashSet::new(), 3).is_empty());
    }

    #[test]
    fn pods_of_deleted_nodes_go_only_once_confirmed() {
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("p", Some("gone"), "Running", 1)),
            Arc::new(pod("q", Some("a"), "Running", 1)),
        ];
        let n = nodes(vec![node("a", true, None)]);
        let missing = missing_nodes(&pods, &n);
        assert_eq!(missing, HashSet::from(["gone".to_string()]));
        assert!(plan(&pods, &n, &HashSet::new(), 0).is_empty());
        let got = names(&plan(&pods, &n, &missing, 0));
        assert_eq!(got, vec![("p".to_string(), Reason::Orphaned)]);
    }

    #[test]
    fn terminating_pods_go_when_unscheduled_or_out_of_service() {
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(terminating(pod("unscheduled", None, "Pending", 1))),
            Arc::new(pod("pending", None, "Pending", 1)),
            Arc::new(terminating(pod("oos", Some("down"), "Running", 1))),
            Arc::new(pod("oos-alive", Some("down"), "Running", 1)),
            Arc::new(terminating(pod("unreachable", Some("lost"), "Running", 1))),
            Arc::new(terminating(pod("ready-oos", Some("up"), "Running", 1))),
        ];
        let n = nodes(vec![
            node("down", false, Some(OUT_OF_SERVICE)),
            node("lost", false, Some("node.kubernetes.io/unreachable")),
            node("up", true, Some(OUT_OF_SERVICE)),
        ]);
        let got = names(&plan(&pods, &n, &HashSet::new(), 0));
        assert_eq!(
            got,
            vec![
                ("unscheduled".to_string(), Reason::Unscheduled),
                ("oos".to_string(), Reason::OutOfService),
            ]
        );
    }

    #[test]
    fn a_pod_is_collected_once() {
        // The oldest terminated pod is one too many and its node is gone as well.
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("p", Some("gone"), "Failed", 1)),
            Arc::new(pod("r", Some("a"), "Failed", 2)),
        ];
        let n = nodes(vec![node("a", true, None)]);
        let deleted = HashSet::from(["gone".to_string()]);
        let got = names(&plan(&pods, &n, &deleted, 1));
        assert_eq!(got, vec![("p".to_string(), Reason::Orphaned)]);
    }
}
