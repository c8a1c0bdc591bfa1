//! PodTopologySpread: `topologySpreadConstraints` (DoNotSchedule as a filter on skew,
//! ScheduleAnyway as a score), and upstream's system default constraints for pods owned by a
//! ReplicaSet, StatefulSet or ReplicationController (spread over hostnames, maxSkew 3, and
//! zones, maxSkew 5). Upstream derives the default selector from the owning set's selector;
//! here it is the pod's own labels, which every replica carries.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use krust_machinery::selector::Selector;
use serde_json::Value;

use super::node_affinity::Required;
use crate::framework::{
    state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::{AffinityTerm, Namespaces, NodeInfo, Snapshot};

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const MISSING_LABEL_REASON: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const SCORE_STATE: &str = "PodTopologySpread/score";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub hard: bool,
    pub min_domains: i64,
    /// The selector over the pod's namespace (with matchLabelKeys folded in).
    pub term: AffinityTerm,
    pub self_match: bool,
    pub honor_affinity: bool,
}

/// A constraint without its selector: what `defaultConstraints` hold.
#[derive(Clone, Debug)]
pub struct DefaultConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub hard: bool,
}

pub struct PodTopologySpread {
    /// Constraints for pods that name none and belong to a set; empty disables defaulting.
    pub defaults: Vec<DefaultConstraint>,
}

impl PodTopologySpread {
    pub fn from_args(args: &Value) -> Result<PodTopologySpread, String> {
        let system = vec![
            DefaultConstraint {
                max_skew: 3,
                topology_key: HOSTNAME.into(),
                hard: false,
            },
            DefaultConstraint {
                max_skew: 5,
                topology_key: ZONE.into(),
                hard: false,
            },
        ];
        let defaults = match args.get("defaultingType").and_then(Value::as_str) {
            None | Some("System") => system,
            Some("List") => args
                .get("defaultConstraints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| DefaultConstraint {
                    max_skew: c.get("maxSkew").and_then(Value::as_i64).unwrap_or(1),
                    topology_key: c
                        .get("topologyKey")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    hard: c.get("whenUnsatisfiable").and_then(Value::as_str)
                        == Some("DoNotSchedule"),
                })
                .collect(),
            Some(other) => return Err(format!("PodTopologySpread: defaultingType {other:?}")),
        };
        Ok(PodTopologySpread { defaults })
    }

    /// The pod's constraints, or the defaults when it names none and belongs to a set.
    pub fn constraints(&self, pod: &Pod) -> Vec<Constraint> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let explicit = spec
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        let mut out = Vec::new();
        for c in explicit {
            let mut sel = c
                .label_selector
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| Selector::from_label_selector(&v).ok())
                .unwrap_or_else(Selector::nothing);
            let extra: Vec<String> = c
                .match_label_keys
                .iter()
                .flatten()
                .filter_map(|k| labels.get(k).map(|v| format!("{k}={v}")))
                .collect();
            if !extra.is_empty() && !sel.is_nothing() {
                let s = format!("{sel}");
                let joined = if s.is_empty() {
                    extra.join(",")
                } else {
                    format!("{s},{}", extra.join(","))
                };
                sel = Selector::parse(&joined).unwrap_or(sel);
            }
            let self_match = sel.matches(&labels);
            out.push(Constraint {
                max_skew: c.max_skew as i64,
                topology_key: c.topology_key.clone(),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                min_domains: c.min_domains.unwrap_or(1) as i64,
                term: AffinityTerm::new(Namespaces::List(vec![ns.clone()]), sel, &c.topology_key),
                self_match,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            });
        }
        let owned = pod.metadata.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true)
                && matches!(
                    o.kind.as_str(),
                    "ReplicaSet" | "StatefulSet" | "ReplicationController"
                )
        });
        if explicit.is_empty() && owned && !labels.is_empty() {
            let sel = Selector::parse(
                &labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .unwrap_or_else(|_| Selector::nothing());
            for d in &self.defaults {
                out.push(Constraint {
                    max_skew: d.max_skew,
                    topology_key: d.topology_key.clone(),
                    hard: d.hard,
                    min_domains: 1,
                    term: AffinityTerm::new(
                        Namespaces::List(vec![ns.clone()]),
                        sel.clone(),
                        &d.topology_key,
                    ),
                    self_match: true,
                    honor_affinity: true,
                });
            }
        }
        out
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::PodDelete,
            ClusterEvent::PodAdd,
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

struct HardState(Vec<(Constraint, HashMap<String, i64>, i64)>);

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snap: &Snapshot) -> Status {
        let hard: Vec<Constraint> = self
            .constraints(pod)
            .into_iter()
            .filter(|c| c.hard)
            .collect();
        if hard.is_empty() {
            return Status::skip();
        }
        let required = Required::of(pod);
        let mut out = Vec::new();
        for c in hard {
            let mut domains: HashSet<&String> = HashSet::new();
            for n in snap.nodes() {
                if c.honor_affinity && !required.matches(n) {
                    continue;
                }
                if let Some(v) = n.labels.get(&c.topology_key) {
                    domains.insert(v);
                }
            }
            let counts: HashMap<String, i64> = snap.with_match_counts(&c.term, |m| {
                domains
                    .iter()
                    .map(|d| ((*d).clone(), m.get(*d).copied().unwrap_or(0)))
                    .collect()
            });
            let mut min = counts.values().copied().min().unwrap_or(0);
            if (counts.len() as i64) < c.min_domains {
                min = 0;
            }
            out.push((c, counts, min));
        }
        state.write(NAME, HardState(out));
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let s = match state_of::<HardState>(state, NAME) {
            Ok(s) => s,
            Err(e) => return e,
        };
        for (c, counts, min) in &s.0 {
            let Some(v) = node.labels.get(&c.topology_key) else {
                return Status::unresolvable(MISSING_LABEL_REASON);
            };
            let n = counts.get(v).copied().unwrap_or(0) + i64::from(c.self_match);
            if n - min > c.max_skew {
                return Status::unschedulable(REASON);
            }
        }
        Status::success()
    }
}

/// Pods matching a constraint's selector, per topology value (shared with the snapshot).
type Counts = std::sync::Arc<HashMap<String, i64>>;

struct SoftState(Vec<(Constraint, f64, Counts)>);

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        let soft: Vec<Constraint> = self
            .constraints(pod)
            .into_iter()
            .filter(|c| !c.hard)
            .collect();
        if soft.is_empty() {
            return Status::skip();
        }
        let mut out = Vec::new();
        for c in soft {
            let domains = if c.topology_key == HOSTNAME {
                nodes.len()
            } else {
                nodes
                    .iter()
                    .filter_map(|n| n.labels.get(&c.topology_key))
                    .collect::<HashSet<_>>()
                    .len()
            };
            let counts = snap.match_counts(&c.term);
            out.push((c, ((domains + 2) as f64).ln(), counts));
        }
        state.write(SCORE_STATE, SoftState(out));
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let s = state_of::<SoftState>(state, SCORE_STATE)?;
        let mut total = 0.0;
        for (c, weight, counts) in &s.0 {
            let Some(v) = node.labels.get(&c.topology_key) else {
                // upstream ignores nodes missing a key: they score 0 after normalising
                return Ok(-1);
            };
            let n = counts.get(v).copied().unwrap_or(0);
            total += n as f64 * weight + (c.max_skew - 1) as f64;
        }
        Ok(total.round() as i64)
    }

    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let min = valid.clone().min().unwrap_or(0);
        let max = valid.max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn spread(hard: bool) -> serde_json::Value {
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": if hard {"DoNotSchedule"} else {"ScheduleAnyway"},
            "labelSelector": {"matchLabels": {"app": "web"}}}]})
    }

    fn cluster() -> Snapshot {
        let mut s = snapshot(&[
            node("a1", "4", "4Gi", json!({"zone": "a"})),
            node("b1", "4", "4Gi", json!({"zone": "b"})),
            node("x", "4", "4Gi", json!({})),
        ]);
        place(
            &mut s,
            pod_labels("w0", json!({"app": "web"}), json!({})),
            "a1",
        );
        s
    }

    #[test]
    fn do_not_schedule_limits_skew() {
        let s = cluster();
        let p = pod_labels("w1", json!({"app": "web"}), spread(true));
        let pts = PodTopologySpread::from_args(&Value::Null).expect("args");
        let mut st = CycleState::default();
        assert!(pts.pre_filter(&mut st, &p, &s).is_success());
        assert_eq!(
            pts.filter(&st, &p, s.node("a1").expect("a1")).reasons,
            vec![REASON]
        );
        assert!(pts.filter(&st, &p, s.node("b1").expect("b1")).is_success());
        assert_eq!(
            pts.filter(&st, &p, s.node("x").expect("x")).reasons,
            vec![MISSING_LABEL_REASON]
        );
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let s = cluster();
        let p = pod_labels("w1", json!({"app": "web"}), spread(false));
        let pts = PodTopologySpread::from_args(&Value::Null).expect("args");
        let mut st = CycleState::default();
        let nodes: Vec<&NodeInfo> = s.nodes().iter().collect();
        assert!(pts.pre_score(&mut st, &p, &s, &nodes).is_success());
        let mut sc: Vec<i64> = nodes
            .iter()
            .map(|n| pts.score(&st, &p, n, &s).expect("score"))
            .collect();
        pts.normalize(&st, &p, &mut sc);
        let by: HashMap<_, _> = nodes.iter().map(|n| n.name.as_str()).zip(sc).collect();
        assert!(by["b1"] > by["a1"], "{by:?}");
        assert_eq!(by["x"], 0);
    }

    #[test]
    fn replicas_get_system_defaults() {
        let pts = PodTopologySpread::from_args(&Value::Null).expect("args");
        let owned: Pod = serde_json::from_value(json!({"metadata": {"name": "r", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]}})).expect("pod");
        let c = pts.constraints(&owned);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| !c.hard));
        assert_eq!(c[0].topology_key, HOSTNAME);
        let bare = pod_labels("p", json!({"app": "web"}), json!({}));
        assert!(pts.constraints(&bare).is_empty());
        let none = PodTopologySpread::from_args(&json!({"defaultingType": "List"})).expect("args");
        assert!(none.constraints(&owned).is_empty());
    }
}
