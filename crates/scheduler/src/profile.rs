//! A profile: the plugins one `schedulerName` runs at each extension point, built from the
//! registry, and the scheduling algorithm over a snapshot (filter, post-filter, score).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::config::{resolve, ConfigError, ProfileConfig};
use crate::framework::{
    Code, CycleState, NodeStatuses, Plugin, PostFilterResult, Status, MAX_NODE_SCORE,
};
use crate::plugins::{registry, IGNORED};
use crate::snapshot::{NodeInfo, Snapshot};

/// Fewest nodes a cycle looks at before it stops searching (upstream's minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES: usize = 100;

pub struct Profile {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: i32,
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    pub filter: Vec<Arc<dyn Plugin>>,
    pub post_filter: Vec<Arc<dyn Plugin>>,
    pub pre_score: Vec<Arc<dyn Plugin>>,
    pub score: Vec<(Arc<dyn Plugin>, i64)>,
    pub reserve: Vec<Arc<dyn Plugin>>,
    pub pre_bind: Vec<Arc<dyn Plugin>>,
    pub bind: Vec<Arc<dyn Plugin>>,
    /// Every plugin, for the events that re-queue pods they rejected.
    pub all: Vec<Arc<dyn Plugin>>,
}

/// Why a pod fits nowhere: upstream's FitError.
#[derive(Debug, Default)]
pub struct FitError {
    pub num_nodes: usize,
    pub statuses: NodeStatuses,
    pub pre_filter_msg: Option<String>,
    pub post_filter_msg: Option<String>,
    /// Plugins that rejected the pod somewhere.
    pub rejectors: Vec<&'static str>,
    pub preemption: PostFilterResult,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_nodes)?;
        if let Some(m) = &self.pre_filter_msg {
            write!(f, " {m}.")?;
        } else {
            let mut hist: HashMap<String, usize> = HashMap::new();
            for s in self.statuses.values() {
                for r in &s.reasons {
                    *hist.entry(r.clone()).or_default() += 1;
                }
            }
            write!(
                f,
                " {}.",
                crate::plugins::default_preemption::histogram(&hist)
            )?;
        }
        if let Some(m) = &self.post_filter_msg {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

/// The outcome of one scheduling cycle.
pub enum Outcome {
    Scheduled { node: String, state: CycleState },
    Unschedulable(Box<FitError>),
    Error(Status),
}

impl Profile {
    pub fn build(cfg: &ProfileConfig, global_percentage: i32) -> Result<Profile, ConfigError> {
        let name = cfg.scheduler_name.clone().unwrap_or_default();
        let err = |message: String| ConfigError::Profile {
            profile: name.clone(),
            message,
        };
        let reg: HashMap<&str, crate::plugins::Factory> = registry().into_iter().collect();
        let resolved = resolve(cfg);
        let mut p = Profile {
            scheduler_name: name.clone(),
            percentage_of_nodes_to_score: cfg
                .percentage_of_nodes_to_score
                .unwrap_or(global_percentage),
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            pre_bind: Vec::new(),
            bind: Vec::new(),
            all: Vec::new(),
        };
        for (plugin, points, weight) in resolved.plugins {
            if points.is_empty() {
                continue;
            }
            let Some(factory) = reg.get(plugin.as_str()) else {
                if IGNORED.contains(&plugin.as_str()) {
                    continue;
                }
                return Err(err(format!("plugin {plugin:?} does not exist")));
            };
            let args = resolved.args.get(&plugin).cloned().unwrap_or_default();
            let inst = factory(&args).map_err(err)?;
            let has = |pt: &str| points.contains(&pt);
            if has("preFilter") && inst.as_pre_filter().is_some() {
                p.pre_filter.push(inst.clone());
            }
            if has("filter") && inst.as_filter().is_some() {
                p.filter.push(inst.clone());
            }
            if has("postFilter") && inst.as_post_filter().is_some() {
                p.post_filter.push(inst.clone());
            }
            if has("preScore") && inst.as_pre_score().is_some() {
                p.pre_score.push(inst.clone());
            }
            if has("score") && inst.as_score().is_some() {
                p.score.push((inst.clone(), weight));
            }
            if has("reserve") && inst.as_reserve().is_some() {
                p.reserve.push(inst.clone());
            }
            if has("preBind") && inst.as_pre_bind().is_some() {
                p.pre_bind.push(inst.clone());
            }
            if has("bind") && inst.as_bind().is_some() {
                p.bind.push(inst.clone());
            }
            p.all.push(inst);
        }
        if p.bind.is_empty() {
            return Err(err("no bind plugin is enabled".into()));
        }
        Ok(p)
    }

    /// Runs every Filter plugin that PreFilter did not skip; the first rejection wins.
    pub fn run_filters(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        for p in &self.filter {
            let name = p.name();
            if state.skipped(name, false) {
                continue;
            }
            if let Some(f) = p.as_filter() {
                let s = f.filter(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(name);
                }
            }
        }
        Status::success()
    }

    /// How many feasible nodes to find before scoring (upstream's numFeasibleNodesToFind).
    pub fn nodes_to_find(&self, all: usize) -> usize {
        if all < MIN_FEASIBLE_NODES || self.percentage_of_nodes_to_score >= 100 {
            return all;
        }
        let mut pct = self.percentage_of_nodes_to_score as i64;
        if pct <= 0 {
            pct = (50 - all as i64 / 125).max(5);
        }
        ((all as i64 * pct / 100) as usize).max(MIN_FEASIBLE_NODES)
    }

    /// One scheduling cycle for `pod` over the snapshot. `start` rotates where the node search
    /// begins, so consecutive pods see different nodes first; it is advanced here.
    pub fn schedule(
        &self,
        pod: &Pod,
        priority: i32,
        snap: &Snapshot,
        start: &mut usize,
    ) -> Outcome {
        let mut state = CycleState::default();
        state.write(crate::plugins::default_preemption::PRIORITY_KEY, priority);
        let total = snap.num_nodes();
        let mut fit = FitError {
            num_nodes: total,
            ..FitError::default()
        };
        for p in &self.pre_filter {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            let s = pf.pre_filter(&mut state, pod, snap);
            match s.code {
                Code::Success => {}
                Code::Skip => state.skip_filter.push(p.name()),
                Code::Error => return Outcome::Error(s.with_plugin(p.name())),
                _ => {
                    fit.pre_filter_msg = Some(s.message());
                    fit.rejectors.push(p.name());
                    return Outcome::Unschedulable(Box::new(fit));
                }
            }
        }
        if total == 0 {
            return Outcome::Unschedulable(Box::new(fit));
        }
        let want = self.nodes_to_find(total);
        let nodes = snap.nodes();
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want);
        let begin = *start % total;
        let mut seen = 0;
        while seen < total && feasible.len() < want {
            let n = &nodes[(begin + seen) % total];
            seen += 1;
            let s = self.run_filters(&state, pod, n);
            match s.code {
                Code::Success => feasible.push(n),
                Code::Error => return Outcome::Error(s),
                _ => {
                    if !fit.rejectors.contains(&s.plugin) {
                        fit.rejectors.push(s.plugin);
                    }
                    fit.statuses.insert(n.name.clone(), s);
                }
            }
        }
        *start = (begin + seen) % total;
        if feasible.is_empty() {
            let run = |st: &CycleState, p: &Pod, n: &NodeInfo| self.run_filters(st, p, n);
            for p in &self.post_filter {
                let Some(pf) = p.as_post_filter() else {
                    continue;
                };
                let (res, s) = pf.post_filter(&state, pod, snap, &fit.statuses, &run);
                if s.is_success() {
                    fit.preemption = res;
                    fit.post_filter_msg = None;
                    break;
                }
                fit.post_filter_msg = Some(s.message());
            }
            return Outcome::Unschedulable(Box::new(fit));
        }
        if feasible.len() == 1 {
            return Outcome::Scheduled {
                node: feasible[0].name.clone(),
                state,
            };
        }
        match self.prioritize(&mut state, pod, snap, &feasible) {
            Ok(i) => Outcome::Scheduled {
                node: feasible[i].name.clone(),
                state,
            },
            Err(s) => Outcome::Error(s),
        }
    }

    /// PreScore, Score, NormalizeScore and weights; the index of the winner, ties at random.
    fn prioritize(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Result<usize, Status> {
        for p in &self.pre_score {
            let Some(ps) = p.as_pre_score() else { continue };
            let s = ps.pre_score(state, pod, snap, nodes);
            match s.code {
                Code::Success => {}
                Code::Skip => state.skip_score.push(p.name()),
                _ => return Err(s.with_plugin(p.name())),
            }
        }
        let mut total = vec![0i64; nodes.len()];
        let mut raw = vec![0i64; nodes.len()];
        for (p, weight) in &self.score {
            if state.skipped(p.name(), true) {
                continue;
            }
            let Some(sp) = p.as_score() else { continue };
            for (i, n) in nodes.iter().enumerate() {
                raw[i] = sp
                    .score(state, pod, n, snap)
                    .map_err(|s| s.with_plugin(p.name()))?;
            }
            sp.normalize(state, pod, &mut raw);
            for (t, r) in total.iter_mut().zip(&raw) {
                *t += (*r).clamp(0, MAX_NODE_SCORE) * weight;
            }
        }
        let mut rng = rand::rng();
        let (mut best, mut ties) = (0, 0u32);
        for (i, s) in total.iter().enumerate() {
            if *s > total[best] {
                best = i;
                ties = 1;
            } else if *s == total[best] {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn default_profile() -> Profile {
        Profile::build(&SchedulerConfig::default().profiles[0], 0).expect("profile")
    }

    #[test]
    fn adaptive_percentage() {
        let p = default_profile();
        assert_eq!(p.nodes_to_find(50), 50);
        assert_eq!(p.nodes_to_find(1000), 420);
        assert_eq!(p.nodes_to_find(5000), 500);
        assert_eq!(p.nodes_to_find(100_000), 5000);
    }

    #[test]
    fn upstream_message_for_a_pod_that_fits_nowhere() {
        let mut nodes: Vec<_> = (0..3)
            .map(|i| node(&format!("n{i}"), "1", "1Gi", json!({})))
            .collect();
        for i in 0..2 {
            nodes.push(node_json(json!({"metadata": {"name": format!("t{i}")},
                "spec": {"taints": [{"key": "key", "value": "value", "effect": "NoSchedule"}]},
                "status": {"allocatable": {"cpu": "64", "memory": "64Gi", "pods": "110"}}})));
        }
        let s = snapshot(&nodes);
        let p = default_profile();
        let pod = req_pod("big", "2", "1Mi");
        let Outcome::Unschedulable(fit) = p.schedule(&pod, 0, &s, &mut 0) else {
            panic!("expected unschedulable");
        };
        assert_eq!(
            fit.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {key: value}, 3 Insufficient cpu. \
             preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn picks_the_least_allocated_node() {
        let mut s = snapshot(&[
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        ]);
        place(&mut s, req_pod("x", "3", "3Gi"), "a");
        let p = default_profile();
        for _ in 0..5 {
            let Outcome::Scheduled { node, .. } =
                p.schedule(&req_pod("p", "100m", "100Mi"), 0, &s, &mut 0)
            else {
                panic!("expected a node");
            };
            assert_eq!(node, "b");
        }
    }
}
