//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, the required
//! anti-affinity of pods already placed, and preferred terms of both sides as scores. Counts
//! come from the snapshot's term indexes, so a cycle costs O(terms x feasible nodes), not
//! O(pods in the cluster).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::framework::{
    state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot, TermKind};

pub const NAME: &str = "InterPodAffinity";
pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY_REASON: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
const SCORE_STATE: &str = "InterPodAffinity/score";

pub struct InterPodAffinity {
    /// Weight of existing pods' required affinity terms when scoring (upstream default 1).
    pub hard_pod_affinity_weight: i64,
}

impl InterPodAffinity {
    pub fn from_args(args: &Value) -> Result<InterPodAffinity, String> {
        let w = args
            .get("hardPodAffinityWeight")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if !(0..=100).contains(&w) {
            return Err(format!(
                "InterPodAffinity: hardPodAffinityWeight {w} not in 0-100"
            ));
        }
        Ok(InterPodAffinity {
            hard_pod_affinity_weight: w,
        })
    }
}

/// (topology key, values where a matching pod is).
type Occupied = Vec<(String, HashSet<String>)>;

struct FilterState {
    existing_anti: Occupied,
    affinity: Occupied,
    /// No pod matches the affinity terms anywhere but the pod matches them itself: the first
    /// pod of a group may go anywhere.
    affinity_self_ok: bool,
    anti: Occupied,
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::PodDelete,
            ClusterEvent::PodAdd,
            ClusterEvent::NamespaceChange,
        ]
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

fn occupied(snap: &Snapshot, t: &AffinityTerm) -> (String, HashSet<String>) {
    let values = snap.with_match_counts(t, |c| {
        c.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(v, _)| v.clone())
            .collect()
    });
    (t.topology_key.clone(), values)
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snap: &Snapshot) -> Status {
        let me = PodInfo::new(Arc::new(pod.clone()), 0);
        let mut existing_anti: Occupied = Vec::new();
        if snap.anti_affinity_pods > 0 {
            for (kind, _, c) in snap.carried_terms() {
                if kind == TermKind::RequiredAntiAffinity && snap.term_matches(&c.term, &me) {
                    existing_anti.push((
                        c.term.topology_key.clone(),
                        c.counts.keys().cloned().collect(),
                    ));
                }
            }
        }
        let mut affinity = Vec::new();
        let mut anti = Vec::new();
        let mut self_ok = true;
        for t in &me.terms {
            match t.kind {
                TermKind::RequiredAffinity => {
                    self_ok &= snap.term_matches(&t.term, &me);
                    affinity.push(occupied(snap, &t.term));
                }
                TermKind::RequiredAntiAffinity => anti.push(occupied(snap, &t.term)),
                _ => {}
            }
        }
        if existing_anti.is_empty() && affinity.is_empty() && anti.is_empty() {
            return Status::skip();
        }
        let nobody = affinity.iter().all(|(_, v)| v.is_empty());
        state.write(
            NAME,
            FilterState {
                existing_anti,
                affinity_self_ok: self_ok && nobody,
                affinity,
                anti,
            },
        );
        Status::success()
    }
}

fn hit(node: &NodeInfo, occ: &Occupied) -> bool {
    occ.iter()
        .any(|(k, vals)| node.labels.get(k).is_some_and(|v| vals.contains(v)))
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let s = match state_of::<FilterState>(state, NAME) {
            Ok(s) => s,
            Err(e) => return e,
        };
        if !s.affinity.is_empty() && !s.affinity_self_ok {
            let all = s
                .affinity
                .iter()
                .all(|(k, vals)| node.labels.get(k).is_some_and(|v| vals.contains(v)));
            if !all {
                return Status::unresolvable(AFFINITY_REASON);
            }
        }
        if s.affinity_self_ok && !s.affinity.iter().all(|(k, _)| node.labels.contains_key(k)) {
            return Status::unresolvable(AFFINITY_REASON);
        }
        if hit(node, &s.anti) {
            return Status::unschedulable(ANTI_AFFINITY_REASON);
        }
        if hit(node, &s.existing_anti) {
            return Status::unschedulable(EXISTING_ANTI_AFFINITY_REASON);
        }
        Status::success()
    }
}

/// One source of score: `weight` x pods at the node's value of `topology_key`, from the
/// incoming pod's preferred terms (pods matching them) or from existing pods' terms that
/// match the incoming pod (pods carrying them).
struct Source {
    weight: i64,
    topology_key: String,
    counts: Arc<HashMap<String, i64>>,
}

struct ScoreState(Vec<Source>);

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snap: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        let me = PodInfo::new(Arc::new(pod.clone()), 0);
        let mut sources = Vec::new();
        for t in &me.terms {
            let sign = match t.kind {
                TermKind::PreferredAffinity => 1,
                TermKind::PreferredAntiAffinity => -1,
                _ => continue,
            };
            sources.push(Source {
                weight: sign * t.weight as i64,
                topology_key: t.term.topology_key.clone(),
                counts: snap.match_counts(&t.term),
            });
        }
        for (kind, w, c) in snap.carried_terms() {
            let weight = match kind {
                TermKind::PreferredAffinity => w as i64,
                TermKind::PreferredAntiAffinity => -(w as i64),
                TermKind::RequiredAffinity => self.hard_pod_affinity_weight,
                TermKind::RequiredAntiAffinity => continue,
            };
            if weight != 0 && snap.term_matches(&c.term, &me) {
                sources.push(Source {
                    weight,
                    topology_key: c.term.topology_key.clone(),
                    counts: c.counts.clone(),
                });
            }
        }
        if sources.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_STATE, ScoreState(sources));
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let s = state_of::<ScoreState>(state, SCORE_STATE)?;
        let mut total = 0;
        for src in &s.0 {
            if let Some(v) = node.labels.get(&src.topology_key) {
                total += src.weight * src.counts.get(v).copied().unwrap_or(0);
            }
        }
        Ok(total)
    }

    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        let (min, max) = min_max(scores);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                MAX_NODE_SCORE * (*s - min) / diff
            } else {
                0
            };
        }
    }
}

pub fn min_max(scores: &[i64]) -> (i64, i64) {
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0);
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    /// Per-node raw scores for tests.
    fn score_all(p: &InterPodAffinity, pod: &Pod, snap: &Snapshot) -> HashMap<String, i64> {
        let mut st = CycleState::default();
        if p.pre_score(&mut st, pod, snap, &[]).is_skip() {
            return HashMap::new();
        }
        let mut raw: Vec<i64> = snap
            .nodes()
            .iter()
            .map(|n| p.score(&st, pod, n, snap).unwrap_or(-1000))
            .collect();
        p.normalize(&st, pod, &mut raw);
        snap.nodes()
            .iter()
            .map(|n| n.name.clone())
            .zip(raw)
            .collect()
    }

    fn filter(pod: &Pod, snap: &Snapshot) -> HashMap<String, Status> {
        let p = InterPodAffinity::from_args(&Value::Null).expect("args");
        let mut st = CycleState::default();
        let skip = p.pre_filter(&mut st, pod, snap).is_skip();
        snap.nodes()
            .iter()
            .map(|n| {
                let s = if skip {
                    Status::success()
                } else {
                    p.filter(&st, pod, n)
                };
                (n.name.clone(), s)
            })
            .collect()
    }

    fn zones() -> Snapshot {
        snapshot(&[
            node("a1", "4", "4Gi", json!({"zone": "a"})),
            node("a2", "4", "4Gi", json!({"zone": "a"})),
            node("b1", "4", "4Gi", json!({"zone": "b"})),
        ])
    }

    #[test]
    fn required_affinity_follows_matching_pods() {
        let mut s = zones();
        let term = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
        let p = pod_labels("web", json!({"app": "web"}), term.clone());
        // nobody matches and the pod does not match itself: nowhere
        assert!(filter(&p, &s)
            .values()
            .all(|st| st.reasons == vec![AFFINITY_REASON]));
        // a pod that matches its own term may start the group anywhere
        let selfish = pod_labels("db0", json!({"app": "db"}), term.clone());
        assert!(filter(&selfish, &s).values().all(Status::is_success));
        place(
            &mut s,
            pod_labels("db", json!({"app": "db"}), json!({})),
            "a2",
        );
        let f = filter(&p, &s);
        assert!(f["a1"].is_success() && f["a2"].is_success());
        assert!(!f["b1"].is_success());
    }

    #[test]
    fn required_anti_affinity_both_ways() {
        let mut s = zones();
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        place(
            &mut s,
            pod_labels("w0", json!({"app": "web"}), json!({})),
            "a1",
        );
        let f = filter(&pod_labels("w1", json!({"app": "web"}), anti.clone()), &s);
        assert_eq!(f["a1"].reasons, vec![ANTI_AFFINITY_REASON]);
        assert!(f["a2"].is_success() && f["b1"].is_success());
        s.remove_pod("default/w0");
        place(&mut s, pod_labels("w0", json!({"app": "web"}), anti), "a1");
        // a plain pod the existing one repels
        let f = filter(&pod_labels("plain", json!({"app": "web"}), json!({})), &s);
        assert_eq!(f["a1"].reasons, vec![EXISTING_ANTI_AFFINITY_REASON]);
        assert!(f["a2"].is_success());
        // other labels are not affected
        assert!(filter(&pod_labels("x", json!({"app": "x"}), json!({})), &s)
            .values()
            .all(Status::is_success));
    }

    #[test]
    fn preferred_terms_order_nodes() {
        let mut s = zones();
        place(
            &mut s,
            pod_labels("c", json!({"app": "cache"}), json!({})),
            "b1",
        );
        let p = InterPodAffinity::from_args(&Value::Null).expect("args");
        let near = pod(
            "n",
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}}),
        );
        let sc = score_all(&p, &near, &s);
        assert_eq!((sc["b1"], sc["a1"]), (100, 0));
        let far = pod(
            "f",
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}}),
        );
        let sc = score_all(&p, &far, &s);
        assert_eq!((sc["b1"], sc["a1"], sc["a2"]), (0, 100, 100));
        // an existing pod's preferred anti-affinity repels matching incoming pods
        place(
            &mut s,
            pod_labels(
                "r",
                json!({}),
                json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}),
            ),
            "a1",
        );
        let sc = score_all(&p, &pod_labels("x", json!({"app": "x"}), json!({})), &s);
        assert_eq!((sc["a1"], sc["a2"]), (0, 100));
    }

    fn in_namespace(p: Arc<Pod>, ns: &str) -> Arc<Pod> {
        let mut p = (*p).clone();
        p.metadata.namespace = Some(ns.to_string());
        Arc::new(p)
    }

    fn ns_labels(v: Value) -> Option<std::collections::BTreeMap<String, String>> {
        serde_json::from_value(v).ok()
    }

    #[test]
    fn namespace_selector_picks_namespaces_by_label() {
        let mut s = zones();
        s.set_namespace("default", ns_labels(json!({})));
        s.set_namespace("team-a", ns_labels(json!({"team": "a"})));
        s.set_namespace("team-b", ns_labels(json!({"team": "b"})));
        place(
            &mut s,
            in_namespace(pod_labels("db", json!({"app": "db"}), json!({})), "team-a"),
            "a2",
        );
        let with = |team: &str| {
            pod_labels(
                "web",
                json!({"app": "web"}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}},
                     "namespaceSelector": {"matchLabels": {"team": team}},
                     "topologyKey": "zone"}]}}}),
            )
        };
        let f = filter(&with("a"), &s);
        assert!(f["a1"].is_success() && f["a2"].is_success());
        assert_eq!(f["b1"].reasons, vec![AFFINITY_REASON]);
        // no namespace labelled team=b holds a db pod
        assert!(filter(&with("b"), &s)
            .values()
            .all(|st| st.reasons == vec![AFFINITY_REASON]));
        // without a namespaceSelector the term looks only in the pod's own namespace
        let own = pod_labels(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(filter(&own, &s)
            .values()
            .all(|st| st.reasons == vec![AFFINITY_REASON]));
        // relabelling the namespace changes what the same term selects
        assert!(s.set_namespace("team-a", ns_labels(json!({"team": "c"}))));
        assert!(filter(&with("a"), &s)
            .values()
            .all(|st| st.reasons == vec![AFFINITY_REASON]));
        assert!(s.set_namespace("team-b", ns_labels(json!({"team": "a"}))));
        place(
            &mut s,
            in_namespace(pod_labels("db2", json!({"app": "db"}), json!({})), "team-b"),
            "b1",
        );
        let f = filter(&with("a"), &s);
        assert!(f["b1"].is_success());
        assert_eq!(f["a1"].reasons, vec![AFFINITY_REASON]);
    }
}
