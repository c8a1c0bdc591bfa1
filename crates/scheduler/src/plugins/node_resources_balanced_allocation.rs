//! NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory utilisation (with the
//! pod) stay close to each other: score = (1 - standard deviation of the fractions) x 100.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::node_resources_fit::{self, parse_resources, requested_allocatable, PreFilterState};
use crate::framework::{
    state_of, ClusterEvent, CycleState, Plugin, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation {
    pub resources: Vec<String>,
}

impl BalancedAllocation {
    pub fn from_args(args: &Value) -> Result<BalancedAllocation, String> {
        Ok(BalancedAllocation {
            resources: parse_resources(args).into_iter().map(|(n, _)| n).collect(),
        })
    }
}

impl Plugin for BalancedAllocation {
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
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        node_resources_fit::compute_requests(state, pod);
        Status::success()
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let s = state_of::<PreFilterState>(state, node_resources_fit::NAME)?;
        let fractions: Vec<f64> = self
            .resources
            .iter()
            .filter_map(|r| {
                let (req, alloc) = requested_allocatable(s, node, r);
                (alloc > 0).then(|| (req as f64 / alloc as f64).min(1.0))
            })
            .collect();
        if fractions.is_empty() {
            return Ok(0);
        }
        let n = fractions.len() as f64;
        let mean = fractions.iter().sum::<f64>() / n;
        let std = if fractions.len() == 2 {
            (fractions[0] - fractions[1]).abs() / 2.0
        } else {
            (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    #[test]
    fn balanced_beats_lopsided() {
        let mut s = snapshot(&[
            node("lop", "4", "4Gi", json!({})),
            node("bal", "4", "4Gi", json!({})),
        ]);
        place(&mut s, req_pod("x", "3", "100Mi"), "lop");
        let p = req_pod("p", "1", "1Gi");
        let b = BalancedAllocation::from_args(&Value::Null).expect("args");
        let mut st = CycleState::default();
        b.pre_score(&mut st, &p, &s, &[]);
        let lop = b
            .score(&st, &p, s.node("lop").expect("lop"), &s)
            .expect("score");
        let bal = b
            .score(&st, &p, s.node("bal").expect("bal"), &s)
            .expect("score");
        assert_eq!(bal, 100);
        assert!(lop < bal, "{lop} < {bal}");
    }
}
