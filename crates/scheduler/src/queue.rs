//! The scheduling queue: pods waiting for a cycle, highest priority first (upstream's
//! PrioritySort), a backoff queue for pods that failed recently, and the pods parked as
//! unschedulable until a cluster event that one of their rejecting plugins cares about.
//!
//! Transitions: `add` -> active; `pop` takes from active; a failed cycle -> `park` (rejected
//! by plugins: unschedulable) or `backoff` (error, preemption); `on_event` moves parked pods
//! whose rejectors registered the event to backoff (or active once their backoff is over);
//! `flush` moves expired backoffs to active, and pods parked too long to active.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::framework::ClusterEvent;

/// How long a pod stays parked without any event before it is retried anyway.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub priority: i32,
    pub attempts: u32,
    pub added: Instant,
    backoff_until: Option<Instant>,
}

struct Entry {
    priority: i32,
    seq: u64,
    key: String,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Parked,
    /// Popped and being scheduled.
    InFlight,
}

pub struct SchedulingQueue {
    initial_backoff: Duration,
    max_backoff: Duration,
    pods: HashMap<String, (QueuedPod, Where)>,
    active: BinaryHeap<Entry>,
    backoff: BTreeMap<(Instant, u64), String>,
    parked: HashMap<String, (Vec<&'static str>, Instant)>,
    seq: u64,
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> SchedulingQueue {
        SchedulingQueue {
            initial_backoff,
            max_backoff,
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BTreeMap::new(),
            parked: HashMap::new(),
            seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    fn push_active(&mut self, key: String, priority: i32) {
        self.seq += 1;
        self.active.push(Entry {
            priority,
            seq: self.seq,
            key,
        });
    }

    /// A new or updated pending pod. Updates of a parked pod retry it (after its backoff).
    pub fn add(&mut self, key: String, pod: Arc<Pod>, priority: i32) {
        match self.pods.get_mut(&key) {
            Some((q, w)) => {
                q.pod = pod;
                q.priority = priority;
                if *w == Where::Parked {
                    self.parked.remove(&key);
                    self.wake(&key);
                }
            }
            None => {
                self.pods.insert(
                    key.clone(),
                    (
                        QueuedPod {
                            pod,
                            priority,
                            attempts: 0,
                            added: Instant::now(),
                            backoff_until: None,
                        },
                        Where::Active,
                    ),
                );
                self.push_active(key, priority);
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.pods.remove(key);
        self.parked.remove(key);
        // active and backoff entries are skipped lazily
    }

    /// The next pod to schedule, highest priority first.
    pub fn pop(&mut self) -> Option<(String, QueuedPod)> {
        while let Some(e) = self.active.pop() {
            if let Some((q, w)) = self.pods.get_mut(&e.key) {
                if *w == Where::Active && q.priority == e.priority {
                    *w = Where::InFlight;
                    q.attempts += 1;
                    return Some((e.key, q.clone()));
                }
            }
        }
        None
    }

    /// Scheduled: forget the pod.
    pub fn done(&mut self, key: &str) {
        self.pods.remove(key);
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        (self.initial_backoff * (1u32 << shift)).min(self.max_backoff)
    }

    /// Moves an in-flight pod to the backoff queue (errors, preemption, failed binds).
    pub fn backoff(&mut self, key: &str) {
        let Some(attempts) = self.pods.get(key).map(|(q, _)| q.attempts) else {
            return;
        };
        let until = Instant::now() + self.backoff_for(attempts);
        self.seq += 1;
        self.backoff.insert((until, self.seq), key.to_string());
        if let Some((q, w)) = self.pods.get_mut(key) {
            q.backoff_until = Some(until);
            *w = Where::Backoff;
        }
    }

    /// A pod whose bind failed: back into the queue after a backoff.
    pub fn add_backoff(&mut self, key: String, pod: Arc<Pod>, priority: i32) {
        self.pods.entry(key.clone()).or_insert((
            QueuedPod {
                pod,
                priority,
                attempts: 1,
                added: Instant::now(),
                backoff_until: None,
            },
            Where::InFlight,
        ));
        self.backoff(&key);
    }

    /// Parks a pod the plugins rejected until an event they registered for.
    pub fn park(&mut self, key: &str, rejectors: Vec<&'static str>) {
        let Some(attempts) = self.pods.get(key).map(|(q, _)| q.attempts) else {
            return;
        };
        let until = Instant::now() + self.backoff_for(attempts);
        if let Some((q, w)) = self.pods.get_mut(key) {
            q.backoff_until = Some(until);
            *w = Where::Parked;
        }
        self.parked
            .insert(key.to_string(), (rejectors, Instant::now()));
    }

    /// Makes a parked pod schedulable again: into backoff if it is not over, else active.
    fn wake(&mut self, key: &str) {
        let Some((q, w)) = self.pods.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        match q.backoff_until.filter(|u| *u > now) {
            Some(until) => {
                *w = Where::Backoff;
                self.seq += 1;
                self.backoff.insert((until, self.seq), key.to_string());
            }
            None => {
                *w = Where::Active;
                let p = q.priority;
                self.push_active(key.to_string(), p);
            }
        }
    }

    /// A cluster event: parked pods whose rejectors care about it are retried. `cares` says
    /// whether a plugin registered the event.
    pub fn on_event(&mut self, event: ClusterEvent, cares: impl Fn(&str, ClusterEvent) -> bool) {
        let keys: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, (rej, _))| rej.is_empty() || rej.iter().any(|p| cares(p, event)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.parked.remove(&k);
            self.wake(&k);
        }
    }

    /// Expired backoffs to active, long-parked pods to active; when to call again.
    pub fn flush(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some((&(until, seq), _)) = self.backoff.iter().next() {
            if until > now {
                break;
            }
            let Some(key) = self.backoff.remove(&(until, seq)) else {
                break;
            };
            if let Some((q, w)) = self.pods.get_mut(&key) {
                if *w == Where::Backoff && q.backoff_until == Some(until) {
                    *w = Where::Active;
                    let p = q.priority;
                    self.push_active(key, p);
                }
            }
        }
        let stale: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) > MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.parked.remove(&k);
            self.wake(&k);
        }
        let next_backoff = self.backoff.keys().next().map(|(u, _)| *u);
        let next_parked = self
            .parked
            .values()
            .map(|(_, s)| *s + MAX_UNSCHEDULABLE)
            .min();
        match (next_backoff, next_parked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::pod;
    use serde_json::json;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_millis(0), Duration::from_millis(0))
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = q();
        q.add("a".into(), pod("a", json!({})), 0);
        q.add("b".into(), pod("b", json!({})), 10);
        q.add("c".into(), pod("c", json!({})), 0);
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(k, _)| k)).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
    }

    #[test]
    fn parked_pods_wake_on_events_their_plugins_registered() {
        let mut q = q();
        q.add("a".into(), pod("a", json!({})), 0);
        let _ = q.pop();
        q.park("a", vec!["NodeResourcesFit"]);
        assert!(q.pop().is_none());
        q.on_event(ClusterEvent::NodeAdd, |p, e| {
            p == "TaintToleration" && e == ClusterEvent::NodeAdd
        });
        q.flush();
        assert!(q.pop().is_none());
        q.on_event(ClusterEvent::PodDelete, |p, e| {
            p == "NodeResourcesFit" && e == ClusterEvent::PodDelete
        });
        q.flush();
        assert_eq!(q.pop().map(|(k, _)| k), Some("a".to_string()));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let q = SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(q.backoff_for(1), Duration::from_secs(1));
        assert_eq!(q.backoff_for(3), Duration::from_secs(4));
        assert_eq!(q.backoff_for(10), Duration::from_secs(10));
    }

    #[test]
    fn deleted_pods_are_not_popped() {
        let mut q = q();
        q.add("a".into(), pod("a", json!({})), 0);
        q.delete("a");
        assert!(q.pop().is_none());
        assert!(q.is_empty());
    }
}
