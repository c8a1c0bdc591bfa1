//! DefaultPreemption (PostFilter): when no node fits, finds a node where evicting pods of lower
//! priority makes room, evicting as few and as unimportant pods as possible. The scheduler
//! deletes the victims and nominates the node; the pod is retried when they are gone.
//!
//! PodDisruptionBudgets are honoured as upstream does: on each node the pods whose eviction
//! would exceed a budget's `disruptionsAllowed` are reprieved first, and the node chosen is
//! the one with the fewest such violations, then the lowest highest victim priority, the
//! lowest priority sum and the fewest victims. A budget is violated only when nothing else
//! makes room.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    Code, CycleState, NodeStatuses, Plugin, PostFilterPlugin, PostFilterResult, Status,
};
use crate::snapshot::{DisruptionBudget, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "DefaultPreemption";
/// Cycle-state key under which the scheduler stores the incoming pod's resolved priority.
pub const PRIORITY_KEY: &str = "PodPriority";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

pub struct DefaultPreemption;

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

/// "N reason, M reason" sorted, as upstream prints histograms.
pub fn histogram(reasons: &HashMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

struct Candidate {
    node: String,
    victims: Vec<Arc<PodInfo>>,
    /// Victims whose eviction exceeds a PodDisruptionBudget.
    violations: usize,
}

/// Splits `pods` (most important first) into those whose eviction would exceed a budget and
/// those it would not, spending each budget's allowance in that order.
fn split_by_budget<'a>(
    pods: Vec<Arc<PodInfo>>,
    budgets: impl Iterator<Item = &'a DisruptionBudget>,
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<(&DisruptionBudget, i32)> =
        budgets.map(|b| (b, b.disruptions_allowed)).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violated = false;
        for (b, left) in allowed.iter_mut() {
            if b.covers(&p) {
                *left -= 1;
                violated |= *left < 0;
            }
        }
        if violated {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        snap: &Snapshot,
        statuses: &NodeStatuses,
        filter: &dyn Fn(&CycleState, &Pod, &NodeInfo) -> Status,
    ) -> (PostFilterResult, Status) {
        let total = snap.num_nodes();
        let fail = |hist: HashMap<String, usize>| {
            (
                PostFilterResult::default(),
                Status::unschedulable(format!(
                    "preemption: 0/{total} nodes are available: {}.",
                    histogram(&hist)
                )),
            )
        };
        let never = pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref())
            == Some("Never");
        if never {
            return (
                PostFilterResult::default(),
                Status::unresolvable("not eligible due to preemptionPolicy=Never."),
            );
        }
        let prio = state.read::<i32>(PRIORITY_KEY).copied().unwrap_or(0);
        let mut hist: HashMap<String, usize> = HashMap::new();
        let mut cands = Vec::new();
        for n in snap.nodes() {
            let st = statuses.get(&n.name);
            if st.is_some_and(|s| s.code != Code::Unschedulable) {
                *hist.entry(NOT_HELPFUL.into()).or_default() += 1;
                continue;
            }
            let mut lower: Vec<Arc<PodInfo>> = n
                .pods
                .iter()
                .filter(|p| p.priority < prio)
                .cloned()
                .collect();
            if lower.is_empty() {
                *hist.entry(NO_VICTIMS.into()).or_default() += 1;
                continue;
            }
            let mut trial = n.clone();
            for v in &lower {
                trial.remove_pod(&v.key);
            }
            if !filter(state, pod, &trial).is_success() {
                *hist.entry(NO_VICTIMS.into()).or_default() += 1;
                continue;
            }
            // reprieve the most important pods first, keeping those the pod fits beside;
            // pods protected by a disruption budget before all others
            lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
            let (violating, fine) = split_by_budget(lower, snap.budgets());
            let mut victims = Vec::new();
            let mut violations = 0;
            for (v, protected) in violating
                .into_iter()
                .map(|v| (v, true))
                .chain(fine.into_iter().map(|v| (v, false)))
            {
                trial.add_pod(v.clone());
                if !filter(state, pod, &trial).is_success() {
                    trial.remove_pod(&v.key);
                    victims.push(v);
                    violations += usize::from(protected);
                }
            }
            victims.sort_by_key(|p| std::cmp::Reverse(p.priority));
            cands.push(Candidate {
                node: n.name.clone(),
                victims,
                violations,
            });
        }
        let best = cands.into_iter().min_by_key(|c| {
            let highest = c
                .victims
                .iter()
                .map(|v| v.priority)
                .max()
                .unwrap_or(i32::MIN);
            let sum: i64 = c.victims.iter().map(|v| v.priority as i64).sum();
            (c.violations, highest, sum, c.victims.len())
        });
        match best {
            Some(c) => (
                PostFilterResult {
                    nominated_node: Some(c.node),
                    victims: c.victims.iter().map(|v| v.pod.clone()).collect(),
                },
                Status::success(),
            ),
            None => fail(hist),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::FilterPlugin;
    use crate::framework::PreFilterPlugin;
    use crate::plugins::node_resources_fit::NodeResourcesFit;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    #[test]
    fn evicts_the_least_important_pods_that_make_room() {
        let mut s = snapshot(&[
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        ]);
        let add = |s: &mut Snapshot, name: &str, cpu: &str, prio: i32, node: &str| {
            s.add_pod(
                Arc::new(PodInfo::new(req_pod(name, cpu, "1Mi"), prio)),
                node,
            );
        };
        add(&mut s, "a-low", "2", 1, "a");
        add(&mut s, "a-high", "2", 1000, "a");
        add(&mut s, "b-mid1", "2", 10, "b");
        add(&mut s, "b-mid2", "2", 10, "b");
        let fit = NodeResourcesFit::default();
        let p = req_pod("p", "2", "1Mi");
        let mut st = CycleState::default();
        fit.pre_filter(&mut st, &p, &s);
        st.write(PRIORITY_KEY, 100i32);
        let statuses: NodeStatuses = s
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), fit.filter(&st, &p, n)))
            .collect();
        let f = |st: &CycleState, p: &Pod, n: &NodeInfo| fit.filter(st, p, n);
        let (res, status) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert!(status.is_success());
        assert_eq!(res.nominated_node.as_deref(), Some("a"));
        assert_eq!(res.victims.len(), 1);
        assert_eq!(res.victims[0].metadata.name.as_deref(), Some("a-low"));

        // nobody below priority 0
        st.write(PRIORITY_KEY, 0i32);
        let (res, status) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert!(res.nominated_node.is_none());
        assert_eq!(
            status.message(),
            "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
    }

    fn budget(ns: &str, app: &str, allowed: i32) -> DisruptionBudget {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            serde_json::from_value(json!({
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "minAvailable": 1},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 0,
                           "desiredHealthy": 0, "expectedPods": 0}
            }))
            .expect("pdb");
        DisruptionBudget::from_api(&pdb)
    }

    #[test]
    fn prefers_nodes_where_no_budget_is_violated() {
        let mut s = snapshot(&[
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        ]);
        let add = |s: &mut Snapshot, name: &str, app: &str, prio: i32, node: &str| {
            let p = pod_labels(
                name,
                json!({"app": app}),
                json!({"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}]}),
            );
            s.add_pod(Arc::new(PodInfo::new(p, prio)), node);
        };
        // a holds the cheapest victims, but they are guarded by a budget allowing none
        add(&mut s, "a-db1", "db", 1, "a");
        add(&mut s, "a-db2", "db", 1, "a");
        add(&mut s, "b-web1", "web", 5, "b");
        add(&mut s, "b-web2", "web", 5, "b");
        s.set_budget("default/db", Some(budget("default", "db", 0)));
        let fit = NodeResourcesFit::default();
        let p = req_pod("p", "2", "1Mi");
        let mut st = CycleState::default();
        fit.pre_filter(&mut st, &p, &s);
        st.write(PRIORITY_KEY, 100i32);
        let statuses: NodeStatuses = s
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), fit.filter(&st, &p, n)))
            .collect();
        let f = |st: &CycleState, p: &Pod, n: &NodeInfo| fit.filter(st, p, n);
        let (res, status) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert!(status.is_success());
        assert_eq!(res.nominated_node.as_deref(), Some("b"));
        assert_eq!(res.victims.len(), 1);

        // the budget allows one disruption: a's victim no longer violates it and is cheaper
        s.set_budget("default/db", Some(budget("default", "db", 1)));
        let (res, _) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert_eq!(res.nominated_node.as_deref(), Some("a"));

        // a budget in another namespace, or with an empty selector, guards nothing here
        s.set_budget("default/db", Some(budget("other", "db", 0)));
        let (res, _) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert_eq!(res.nominated_node.as_deref(), Some("a"));

        // when every node's victims are guarded, the budget is violated rather than failing
        s.set_budget("default/db", Some(budget("default", "db", 0)));
        s.set_budget("default/web", Some(budget("default", "web", 0)));
        let (res, status) = DefaultPreemption.post_filter(&st, &p, &s, &statuses, &f);
        assert!(status.is_success());
        assert_eq!(res.nominated_node.as_deref(), Some("a"));
        assert_eq!(res.victims.len(), 1);
    }
}
