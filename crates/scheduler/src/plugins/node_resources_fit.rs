//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral-storage, extended resources
//! such as `nvidia.com/gpu`, and one pod slot) must fit in the node's allocatable minus what
//! is requested there; scores by the LeastAllocated (default) or MostAllocated strategy.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::framework::{
    state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, ScorePlugin, Status,
    MAX_NODE_SCORE,
};
use crate::snapshot::{pod_requests, NodeInfo, Resource, Snapshot, CPU, MEMORY};

pub const NAME: &str = "NodeResourcesFit";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
}

pub struct NodeResourcesFit {
    pub strategy: Strategy,
    /// Resources and weights the score looks at (default cpu and memory, weight 1 each).
    pub resources: Vec<(String, i64)>,
    pub ignored: Vec<String>,
    pub ignored_groups: Vec<String>,
}

/// What PreFilter computed: the pod's requests, and the non-zero cpu/memory for scoring.
pub struct PreFilterState {
    pub requests: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
}

pub fn parse_resources(args: &Value) -> Vec<(String, i64)> {
    let list: Vec<(String, i64)> = args
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r.get("name")?.as_str()?.to_string(),
                r.get("weight").and_then(Value::as_i64).unwrap_or(1),
            ))
        })
        .collect();
    if list.is_empty() {
        vec![(CPU.to_string(), 1), (MEMORY.to_string(), 1)]
    } else {
        list
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

impl NodeResourcesFit {
    pub fn from_args(args: &Value) -> Result<NodeResourcesFit, String> {
        let ss = args.get("scoringStrategy").cloned().unwrap_or(Value::Null);
        let strategy = match ss
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("LeastAllocated")
        {
            "LeastAllocated" => Strategy::LeastAllocated,
            "MostAllocated" => Strategy::MostAllocated,
            other => {
                return Err(format!(
                    "NodeResourcesFit: scoring strategy {other:?} is not supported"
                ))
            }
        };
        Ok(NodeResourcesFit {
            strategy,
            resources: parse_resources(&ss),
            ignored: strings(args.get("ignoredResources")),
            ignored_groups: strings(args.get("ignoredResourceGroups")),
        })
    }

    fn ignored(&self, name: &str) -> bool {
        self.ignored.iter().any(|i| i == name)
            || name
                .split_once('/')
                .is_some_and(|(g, _)| self.ignored_groups.iter().any(|i| i == g))
    }

    /// The reasons the pod does not fit on the node (empty when it fits).
    pub fn insufficient(&self, req: &Resource, node: &NodeInfo) -> Vec<String> {
        let mut out = Vec::new();
        let alloc = &node.allocatable;
        if node.requested.allowed_pods + 1 > alloc.allowed_pods {
            out.push("Too many pods".to_string());
        }
        if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - node.requested.milli_cpu {
            out.push("Insufficient cpu".to_string());
        }
        if req.memory > 0 && req.memory > alloc.memory - node.requested.memory {
            out.push("Insufficient memory".to_string());
        }
        if req.ephemeral_storage > 0
            && req.ephemeral_storage > alloc.ephemeral_storage - node.requested.ephemeral_storage
        {
            out.push("Insufficient ephemeral-storage".to_string());
        }
        for (name, v) in &req.scalar {
            if *v > 0 && !self.ignored(name) && *v > alloc.get(name) - node.requested.get(name) {
                out.push(format!("Insufficient {name}"));
            }
        }
        out
    }
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit::from_args(&Value::Null).unwrap_or(NodeResourcesFit {
            strategy: Strategy::LeastAllocated,
            resources: Vec::new(),
            ignored: Vec::new(),
            ignored_groups: Vec::new(),
        })
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::PodDelete,
        ]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

/// Writes the pod's requests into the cycle state (shared with BalancedAllocation).
pub fn compute_requests(state: &mut CycleState, pod: &Pod) {
    if state.read::<PreFilterState>(NAME).is_none() {
        let (requests, non_zero_cpu, non_zero_memory) = pod_requests(pod);
        state.write(
            NAME,
            PreFilterState {
                requests,
                non_zero_cpu,
                non_zero_memory,
            },
        );
    }
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &Snapshot) -> Status {
        compute_requests(state, pod);
        Status::success()
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let s = match state_of::<PreFilterState>(state, NAME) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let reasons = self.insufficient(&s.requests, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                reasons,
                ..Status::unschedulable("")
            }
        }
    }
}

/// Requested (including the pod) and allocatable for one resource, as scoring sees them.
pub fn requested_allocatable(s: &PreFilterState, node: &NodeInfo, name: &str) -> (i64, i64) {
    match name {
        CPU => (
            node.non_zero_cpu + s.non_zero_cpu,
            node.allocatable.milli_cpu,
        ),
        MEMORY => (
            node.non_zero_memory + s.non_zero_memory,
            node.allocatable.memory,
        ),
        n => (
            node.requested.get(n) + s.requests.get(n),
            node.allocatable.get(n),
        ),
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let s = state_of::<PreFilterState>(state, NAME)?;
        let (mut total, mut weights) = (0, 0);
        for (name, w) in &self.resources {
            let (req, alloc) = requested_allocatable(s, node, name);
            if alloc == 0 {
                continue;
            }
            let req = req.min(alloc);
            let score = match self.strategy {
                Strategy::LeastAllocated => (alloc - req) * MAX_NODE_SCORE / alloc,
                Strategy::MostAllocated => req * MAX_NODE_SCORE / alloc,
            };
            total += score * w;
            weights += w;
        }
        Ok(if weights == 0 { 0 } else { total / weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn run(plugin: &NodeResourcesFit, pod: &Pod, node: &NodeInfo) -> (Status, i64) {
        let mut st = CycleState::default();
        plugin.pre_filter(&mut st, pod, &Snapshot::default());
        let f = plugin.filter(&st, pod, node);
        let s = plugin
            .score(&st, pod, node, &Snapshot::default())
            .unwrap_or(-1);
        (f, s)
    }

    #[test]
    fn fits_and_reports_each_insufficient_resource() {
        let mut s = snapshot(&[node("a", "2", "4Gi", json!({}))]);
        place(&mut s, req_pod("x", "1500m", "1Gi"), "a");
        let n = s.node("a").expect("node");
        let fit = NodeResourcesFit::default();
        assert!(run(&fit, &req_pod("p", "500m", "1Gi"), n).0.is_success());
        let (st, _) = run(&fit, &req_pod("p", "1", "8Gi"), n);
        assert_eq!(st.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
    }

    #[test]
    fn extended_resources_and_pod_count() {
        let n = NodeInfo::new(node_json(json!({"metadata": {"name": "g"},
            "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "1", "nvidia.com/gpu": "1"}}})));
        let gpu = |k: &str| {
            pod(
                "p",
                json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"nvidia.com/gpu": k}, "limits": {"nvidia.com/gpu": k}}}]}),
            )
        };
        let fit = NodeResourcesFit::default();
        assert!(run(&fit, &gpu("1"), &n).0.is_success());
        assert_eq!(
            run(&fit, &gpu("2"), &n).0.reasons,
            vec!["Insufficient nvidia.com/gpu"]
        );
        let mut full = n.clone();
        full.add_pod(std::sync::Arc::new(crate::snapshot::PodInfo::new(
            req_pod("x", "0", "0"),
            0,
        )));
        assert_eq!(run(&fit, &gpu("1"), &full).0.reasons, vec!["Too many pods"]);
        let ignoring =
            NodeResourcesFit::from_args(&json!({"ignoredResourceGroups": ["nvidia.com"]}))
                .expect("args");
        assert!(run(&ignoring, &gpu("2"), &n).0.is_success());
    }

    #[test]
    fn least_and_most_allocated_order() {
        let mut s = snapshot(&[
            node("busy", "4", "4Gi", json!({})),
            node("idle", "4", "4Gi", json!({})),
        ]);
        place(&mut s, req_pod("x", "3", "3Gi"), "busy");
        let p = req_pod("p", "500m", "512Mi");
        let least = NodeResourcesFit::default();
        let most =
            NodeResourcesFit::from_args(&json!({"scoringStrategy": {"type": "MostAllocated"}}))
                .expect("args");
        let busy = s.node("busy").expect("busy");
        let idle = s.node("idle").expect("idle");
        assert!(run(&least, &p, idle).1 > run(&least, &p, busy).1);
        assert!(run(&most, &p, busy).1 > run(&most, &p, idle).1);
        // idle: (4000-500)/4000 -> 87, (4096-512)/4096 -> 87
        assert_eq!(run(&least, &p, idle).1, 87);
    }
}
