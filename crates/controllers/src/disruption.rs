//! DisruptionController: keeps each PodDisruptionBudget's status current, so that evictions
//! and the scheduler's preemption know how many of its pods may be disrupted now.
//!
//! Status follows upstream: `expectedPods` is the number of matching pods for an integer
//! `minAvailable`, else the summed scale of the pods' controllers (a Deployment through its
//! ReplicaSets, a ReplicaSet, a ReplicationController or a StatefulSet); `desiredHealthy`
//! comes from `minAvailable` or `expectedPods - maxUnavailable` (percentages round up);
//! `currentHealthy` counts matching pods that are Ready and not being deleted, less those
//! an eviction already took (`disruptedPods`, forgotten after two minutes); and
//! `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::informer::Informer;
use crate::util::{controller_of, is_not_found, key_of, pod_is_ready, Backoff, Recorder, Result};
use crate::{Shared, Shutdown};

/// How long an eviction's entry in `disruptedPods` holds back a pod that was not deleted.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

struct Ctx {
    shared: Arc<Shared>,
    budgets: Informer<PodDisruptionBudget>,
    backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let budgets: Informer<PodDisruptionBudget> = Informer::start(Api::all(shared.client.clone()));
    let _ = budgets.store().wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        budgets: budgets.clone(),
        backoff: Backoff::default(),
        recorder: Recorder::new(shared.client.clone(), "controllermanager"),
    });
    let store = budgets.store();
    let pod_budgets = move |pod: Pod| -> Vec<ObjectRef<PodDisruptionBudget>> {
        let ns = pod.namespace().unwrap_or_default();
        store
            .state()
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns.as_str()) && selects(b, &pod))
            .map(|b| ObjectRef::from_obj(&**b))
            .collect()
    };
    Controller::for_stream(budgets.subscribe(), budgets.store())
        .watches_stream(shared.pods.subscribe(), pod_budgets)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |b, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*b)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Whether the budget's selector picks the pod: in policy/v1 a null selector picks none and
/// an empty one every pod of the namespace.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    crate::util::selector_of(Some(sel)).matches(&labels)
}

/// A count or a percentage of `total`, rounded up as upstream does for budgets.
pub fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((p * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The part of the status that depends on the pods: (expected, desired, healthy, allowed,
/// disrupted pods still held back).
#[derive(Debug, PartialEq)]
pub struct Counts {
    pub expected: i32,
    pub desired: i32,
    pub healthy: i32,
    pub allowed: i32,
    pub disrupted: BTreeMap<String, Time>,
}

/// Computes the counts from the matching pods and, when the budget needs it, the summed
/// scale of their controllers (`None`: some pod has no controller with a scale).
pub fn counts(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    controllers_scale: Option<i32>,
    now: Timestamp,
) -> Option<Counts> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = controllers_scale?;
            (expected, (expected - scaled(max, expected)?).max(0))
        }
        (None, Some(IntOrString::Int(min))) => (pods.len() as i32, *min),
        (None, Some(min)) => {
            let expected = controllers_scale?;
            (expected, scaled(min, expected)?)
        }
        (None, None) => (pods.len() as i32, 0),
    };
    let live: HashSet<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let disrupted: BTreeMap<String, Time> = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            live.contains(name.as_str())
                && at.0.as_second() + DELETION_TIMEOUT.as_secs() as i64 > now.as_second()
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_is_ready(p))
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_none_or(|n| !disrupted.contains_key(n))
        })
        .count() as i32;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    Some(Counts {
        expected,
        desired,
        healthy,
        allowed,
        disrupted,
    })
}

impl Ctx {
    /// The summed replicas of the distinct controllers of `pods`, None when one has none.
    async fn controllers_scale(&self, ns: &str, pods: &[Arc<Pod>]) -> Result<Option<i32>> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for p in pods {
            let Some(owner) = controller_of(&p.metadata) else {
                return Ok(None);
            };
            let replicas = match owner.kind.as_str() {
                "ReplicaSet" => {
                    let Some(rs) = self
                        .shared
                        .replicasets
                        .store()
                        .get(&ObjectRef::new(&owner.name).within(ns))
                    else {
                        return Ok(None);
                    };
                    match controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                        Some(d) => {
                            if !seen.insert(d.uid.clone()) {
                                continue;
                            }
                            let dep = self
                                .shared
                                .deployments
                                .store()
                                .get(&ObjectRef::new(&d.name).within(ns));
                            match dep {
                                Some(dep) => dep.spec.as_ref().and_then(|s| s.replicas),
                                None => return Ok(None),
                            }
                        }
                        None => rs.spec.as_ref().and_then(|s| s.replicas),
                    }
                }
                "ReplicationController" => self
                    .shared
                    .replicationcontrollers
                    .store()
                    .get(&ObjectRef::new(&owner.name).within(ns))
                    .and_then(|rc| rc.spec.as_ref().and_then(|s| s.replicas)),
                "StatefulSet" => {
                    if seen.contains(&owner.uid) {
                        continue;
                    }
                    let api: Api<StatefulSet> = Api::namespaced(self.shared.client.clone(), ns);
                    match api.get(&owner.name).await {
                        Ok(s) => s.spec.and_then(|s| s.replicas),
                        Err(e) if is_not_found(&e) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => return Ok(None),
            };
            if seen.insert(owner.uid.clone()) {
                total += replicas.unwrap_or(1);
            }
        }
        Ok(Some(total))
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*pdb);
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    // reconcile from the latest cached version, not the event's copy
    let pdb = ctx
        .budgets
        .store()
        .get(&ObjectRef::new(&name).within(&ns))
        .unwrap_or(pdb);
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = ctx
        .shared
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && selects(&pdb, p))
        .collect();
    let spec = pdb.spec.clone().unwrap_or_default();
    let needs_scale = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let scale = if needs_scale {
        ctx.controllers_scale(&ns, &pods).await?
    } else {
        None
    };
    let now = Timestamp::now();
    let counts = match counts(&pdb, &pods, scale, now) {
        Some(c) => c,
        None => {
            ctx.recorder.warning(
                &*pdb,
                "NoControllers",
                "found no controllers for a pod this budget selects".to_string(),
            );
            Counts {
                expected: 0,
                desired: 0,
                healthy: 0,
                allowed: 0,
                disrupted: BTreeMap::new(),
            }
        }
    };
    let old = pdb.status.clone().unwrap_or_default();
    let allowed = counts.allowed > 0;
    let condition_now = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed");
    let cond_status = if allowed { "True" } else { "False" };
    let transition = match condition_now {
        Some(c) if c.status == cond_status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let status = PodDisruptionBudgetStatus {
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!counts.disrupted.is_empty()).then(|| counts.disrupted.clone()),
        disruptions_allowed: counts.allowed,
        current_healthy: counts.healthy,
        desired_healthy: counts.desired,
        expected_pods: counts.expected,
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: cond_status.into(),
            reason: if allowed {
                "SufficientPods"
            } else {
                "InsufficientPods"
            }
            .into(),
            message: String::new(),
            last_transition_time: transition,
            observed_generation: pdb.metadata.generation,
        }]),
    };
    if status != old {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.shared.client.clone(), &ns);
        let patch = json!({"status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    ctx.backoff.forget(&key);
    // come back when the oldest held-back eviction expires
    Ok(match counts.disrupted.values().map(|t| t.0).min() {
        Some(oldest) => {
            let left = oldest.as_second() + DELETION_TIMEOUT.as_secs() as i64 - now.as_second();
            Action::requeue(Duration::from_secs(left.clamp(1, 120) as u64))
        }
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pdb(spec: Value, status: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "ns", "generation": 1},
            "spec": spec,
            "status": status,
        }))
        .expect("pdb")
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn selector_null_picks_none_and_empty_picks_all() {
        let p = pod("a", true, false);
        assert!(!selects(&pdb(json!({}), json!({})), &p));
        assert!(selects(&pdb(json!({"selector": {}}), json!({})), &p));
        assert!(selects(
            &pdb(
                json!({"selector": {"matchLabels": {"app": "web"}}}),
                json!({})
            ),
            &p
        ));
        assert!(!selects(
            &pdb(
                json!({"selector": {"matchLabels": {"app": "db"}}}),
                json!({})
            ),
            &p
        ));
    }

    #[test]
    fn min_available_count_uses_matching_pods() {
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", false, false),
            pod("d", true, true),
        ];
        let b = pdb(json!({"minAvailable": 1}), json!({}));
        let c = counts(&b, &pods, None, now()).expect("counts");
        assert_eq!((c.expected, c.desired, c.healthy, c.allowed), (4, 1, 2, 1));
        let b = pdb(json!({"minAvailable": 3}), json!({}));
        let c = counts(&b, &pods, None, now()).expect("counts");
        assert_eq!(c.allowed, 0);
    }

    #[test]
    fn percentages_and_max_unavailable_use_controller_scale() {
        let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), true, false)).collect();
        let b = pdb(json!({"maxUnavailable": "25%"}), json!({}));
        // 25% of 5 rounds up to 2: desired 3, healthy 4
        let c = counts(&b, &pods, Some(5), now()).expect("counts");
        assert_eq!((c.expected, c.desired, c.healthy, c.allowed), (5, 3, 4, 1));
        let b = pdb(json!({"minAvailable": "50%"}), json!({}));
        let c = counts(&b, &pods, Some(5), now()).expect("counts");
        assert_eq!((c.desired, c.allowed), (3, 1));
        // no controller scale known: no answer (the controller allows nothing)
        assert!(counts(&b, &pods, None, now()).is_none());
        let b = pdb(json!({"maxUnavailable": 0}), json!({}));
        let c = counts(&b, &pods, Some(4), now()).expect("counts");
        assert_eq!(c.allowed, 0);
    }

    #[test]
    fn recent_disruptions_are_held_back_until_they_expire() {
        let pods = vec![pod("a", true, false), pod("b", true, false)];
        let b = pdb(
            json!({"minAvailable": 1}),
            json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0,
                   "expectedPods": 0,
                   "disruptedPods": {"a": "2026-05-31T23:59:30Z", "gone": "2026-05-31T23:59:30Z",
                                     "b": "2026-05-31T23:50:00Z"}}),
        );
        let c = counts(&b, &pods, None, now()).expect("counts");
        // a is held back (30 s ago), b's entry expired, gone's pod no longer exists
        assert_eq!(c.disrupted.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!((c.healthy, c.allowed), (1, 0));
    }
}
