//! TaintToleration: NoSchedule/NoExecute taints reject pods that do not tolerate them;
//! untolerated PreferNoSchedule taints lower a node's score.

use k8s_openapi::api::core::v1::Pod;

use super::{pod_tolerations, tolerates};
use crate::framework::{
    default_normalize, ClusterEvent, CycleState, FilterPlugin, Plugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let tols = pod_tolerations(pod);
        for taint in node.taints() {
            if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
                continue;
            }
            if !tols.iter().any(|t| tolerates(t, taint)) {
                return Status::unresolvable(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or_default()
                ));
            }
        }
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(
        &self,
        _: &CycleState,
        pod: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let tols: Vec<_> = pod_tolerations(pod)
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .collect();
        Ok(node
            .taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t)))
            .count() as i64)
    }

    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn tainted(effect: &str) -> NodeInfo {
        NodeInfo::new(node_json(json!({"metadata": {"name": "a"},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": effect}]}})))
    }

    #[test]
    fn untolerated_no_schedule_rejects_with_upstream_message() {
        let st = CycleState::default();
        let s = TaintToleration.filter(&st, &pod("p", json!({})), &tainted("NoSchedule"));
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}".to_string()]
        );
        let tol = pod(
            "p",
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        );
        assert!(TaintToleration
            .filter(&st, &tol, &tainted("NoSchedule"))
            .is_success());
        let wrong = pod(
            "p",
            json!({"tolerations": [{"key": "dedicated", "value": "cpu"}]}),
        );
        assert!(!TaintToleration
            .filter(&st, &wrong, &tainted("NoExecute"))
            .is_success());
        assert!(TaintToleration
            .filter(&st, &pod("p", json!({})), &tainted("PreferNoSchedule"))
            .is_success());
    }

    #[test]
    fn prefer_no_schedule_scores_lower() {
        let st = CycleState::default();
        let p = pod("p", json!({}));
        let clean = NodeInfo::new(node("b", "1", "1Gi", json!({})));
        let mut scores = vec![
            TaintToleration
                .score(&st, &p, &tainted("PreferNoSchedule"), &Snapshot::default())
                .expect("score"),
            TaintToleration
                .score(&st, &p, &clean, &Snapshot::default())
                .expect("score"),
        ];
        TaintToleration.normalize(&st, &p, &mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
