//! NodeAffinity: `spec.nodeSelector` and required node affinity terms must match the node's
//! labels (terms are ORed, expressions within a term ANDed); preferred terms add their weight.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Pod};

use crate::framework::{
    default_normalize, state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

/// A node selector term: every expression and field must hold; an empty term matches nothing.
pub fn term_matches(t: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| {
        krust_machinery::selector::node_requirement_holds(
            r,
            node.labels.get(&r.key).map(String::as_str),
        )
    }) && fields.iter().all(|r| {
        let v = (r.key == "metadata.name").then_some(node.name.as_str());
        krust_machinery::selector::node_requirement_holds(r, v)
    })
}

/// What the pod demands of a node's labels, parsed once per cycle.
pub struct Required {
    pub node_selector: BTreeMap<String, String>,
    pub terms: Option<Vec<NodeSelectorTerm>>,
}

impl Required {
    pub fn of(pod: &Pod) -> Required {
        let spec = pod.spec.as_ref();
        Required {
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            terms: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| r.node_selector_terms.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }

    pub fn matches(&self, node: &NodeInfo) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && self
                .terms
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| term_matches(t, node)))
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &Snapshot) -> Status {
        let r = Required::of(pod);
        if r.is_empty() {
            return Status::skip();
        }
        state.write(NAME, r);
        Status::success()
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        match state_of::<Required>(state, NAME) {
            Ok(r) if r.matches(node) => Status::success(),
            Ok(_) => Status::unresolvable(REASON),
            Err(e) => e,
        }
    }
}

struct Preferred(Vec<(i32, NodeSelectorTerm)>);
const PREFERRED: &str = "NodeAffinity/preferred";

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        let terms: Vec<(i32, NodeSelectorTerm)> = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|t| t.weight != 0)
            .map(|t| (t.weight, t.preference.clone()))
            .collect();
        if terms.is_empty() {
            return Status::skip();
        }
        state.write(PREFERRED, Preferred(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let p = state_of::<Preferred>(state, PREFERRED)?;
        Ok(p.0
            .iter()
            .filter(|(_, t)| term_matches(t, node))
            .map(|(w, _)| *w as i64)
            .sum())
    }

    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn filter(pod: &Pod, n: &NodeInfo) -> Status {
        let mut st = CycleState::default();
        if NodeAffinity
            .pre_filter(&mut st, pod, &Snapshot::default())
            .is_skip()
        {
            return Status::success();
        }
        NodeAffinity.filter(&st, pod, n)
    }

    #[test]
    fn node_selector_and_required_terms() {
        let ssd = NodeInfo::new(node("a", "1", "1Gi", json!({"disk": "ssd", "gen": "5"})));
        let hdd = NodeInfo::new(node("b", "1", "1Gi", json!({"disk": "hdd"})));
        let sel = pod("p", json!({"nodeSelector": {"disk": "ssd"}}));
        assert!(filter(&sel, &ssd).is_success());
        assert_eq!(filter(&sel, &hdd).reasons, vec![REASON]);
        let req = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}),
        );
        assert!(filter(&req, &ssd).is_success());
        assert!(filter(&req, &hdd).is_success());
        let c = NodeInfo::new(node("c", "1", "1Gi", json!({"gen": "3"})));
        assert!(!filter(&req, &c).is_success());
        let notin = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["hdd"]}, {"key": "gpu", "operator": "DoesNotExist"}]}]}}}}),
        );
        assert!(filter(&notin, &ssd).is_success());
        assert!(!filter(&notin, &hdd).is_success());
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let p = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}]}}}),
        );
        let nodes = [
            NodeInfo::new(node("1", "1", "1Gi", json!({"zone": "a", "disk": "x"}))),
            NodeInfo::new(node("2", "1", "1Gi", json!({"zone": "a"}))),
            NodeInfo::new(node("3", "1", "1Gi", json!({}))),
        ];
        let mut st = CycleState::default();
        NodeAffinity.pre_score(&mut st, &p, &Snapshot::default(), &[]);
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| {
                NodeAffinity
                    .score(&st, &p, n, &Snapshot::default())
                    .expect("score")
            })
            .collect();
        NodeAffinity.normalize(&st, &p, &mut s);
        assert_eq!(s, vec![100, 80, 0]);
    }
}
