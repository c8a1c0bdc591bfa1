//! The plugin framework: one small trait per extension point (PreFilter, Filter, PostFilter,
//! PreScore, Score, Reserve, PreBind, Bind), the status every plugin answers
//! with, the per-cycle scratchpad, and the events that can make a rejected pod schedulable.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::snapshot::{NodeInfo, Snapshot};

/// Highest score a Score plugin hands back after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;

/// How a plugin's answer is to be read. Unschedulable outcomes are expected results, never
/// errors: `Unschedulable` may be resolved by preemption, `UnschedulableAndUnresolvable` may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    Unschedulable,
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (PreFilter/PreScore): skip its Filter/Score.
    Skip,
    Error,
}

/// A plugin's answer: a code, the reasons shown to users, and which plugin said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            ..Status::success()
        }
    }

    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn error(reason: impl Into<String>) -> Status {
        Status {
            code: Code::Error,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// The per-cycle scratchpad: what PreFilter/PreScore compute once for the pod, read back by
/// Filter/Score for every node. Keyed by plugin name; a handful of entries, so a list
/// searched by address first (the keys are constants) beats hashing on this hot path.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
    /// Plugins whose PreFilter answered Skip: their Filter is not run.
    pub skip_filter: Vec<&'static str>,
    /// Plugins whose PreScore answered Skip: their Score is not run.
    pub skip_score: Vec<&'static str>,
}

fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = Box::new(value),
            None => self.data.push((key, Box::new(value))),
        }
    }

    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| same(k, key))
            .or_else(|| self.data.iter().find(|(k, _)| *k == key))?
            .1
            .downcast_ref()
    }

    /// Whether a plugin's Filter (`score` false) or Score (`score` true) is skipped.
    pub fn skipped(&self, plugin: &'static str, score: bool) -> bool {
        let list = if score {
            &self.skip_score
        } else {
            &self.skip_filter
        };
        !list.is_empty() && list.iter().any(|k| same(k, plugin) || *k == plugin)
    }
}

/// A cluster change that can make a rejected pod schedulable (upstream's ClusterEvent, coarse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    PodDelete,
    PodAdd,
    /// A namespace was added or relabelled (terms with a namespaceSelector).
    NamespaceChange,
    /// A PersistentVolumeClaim, PersistentVolume or StorageClass was added or changed.
    VolumeChange,
}

/// The statuses that Filter gave each rejected node, by node name.
pub type NodeStatuses = HashMap<String, Status>;

/// What a PostFilter found: a node to nominate and the pods to evict there.
#[derive(Clone, Debug, Default)]
pub struct PostFilterResult {
    pub nominated_node: Option<String>,
    pub victims: Vec<Arc<Pod>>,
}

/// Every plugin: a name, the events that can undo its rejections, and its extension points.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

/// Runs once per cycle before filtering; may reject the pod outright or answer Skip.
pub trait PreFilterPlugin: Send + Sync {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot) -> Status;
}

/// Whether the pod can run on one node.
pub trait FilterPlugin: Send + Sync {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Runs when no node passed the filters (preemption).
pub trait PostFilterPlugin: Send + Sync {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        statuses: &NodeStatuses,
        filter: &dyn Fn(&CycleState, &Pod, &NodeInfo) -> Status,
    ) -> (PostFilterResult, Status);
}

/// Runs once per cycle before scoring, with the feasible nodes.
pub trait PreScorePlugin: Send + Sync {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status;
}

/// Ranks one feasible node; `normalize` maps the raw scores of all of them to 0..=100.
pub trait ScorePlugin: Send + Sync {
    fn score(
        &self,
        state: &CycleState,
        pod: &Pod,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Result<i64, Status>;
    fn normalize(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [i64]) {}
}

/// Told when the pod is assumed on a node, and when that is undone.
pub trait ReservePlugin: Send + Sync {
    fn reserve(&self, state: &CycleState, pod: &Pod, node: &str) -> Status;
    fn unreserve(&self, state: &CycleState, pod: &Pod, node: &str);
}

/// Writes what must exist before the pod is bound (the node chosen for its volumes). Runs
/// off the scheduling loop, right before Bind; a failure undoes the assumption and retries.
#[async_trait::async_trait]
pub trait PreBindPlugin: Send + Sync {
    async fn pre_bind(&self, client: &kube::Client, pod: &Pod, node: &str) -> Status;
}

/// Binds the pod to the node through the API. Runs off the scheduling loop.
#[async_trait::async_trait]
pub trait BindPlugin: Send + Sync {
    async fn bind(&self, client: &kube::Client, pod: &Pod, node: &str) -> Status;
}

/// Scales raw scores so the highest is 100 (upstream's DefaultNormalizeScore); `reverse`
/// turns "more is worse" into "more is better".
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// Shorthand used by plugins to reach their cycle state or fail with an internal error.
pub fn state_of<'a, T: Any + Send + Sync>(
    state: &'a CycleState,
    key: &'static str,
) -> Result<&'a T, Status> {
    state
        .read::<T>(key)
        .ok_or_else(|| Status::error(format!("reading {key:?} from cycle state")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_scales_and_reverses() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
    }

    #[test]
    fn cycle_state_round_trips() {
        let mut st = CycleState::default();
        st.write("a", 5u32);
        assert_eq!(st.read::<u32>("a"), Some(&5));
        assert!(st.read::<i64>("a").is_none());
    }
}
