//! krust's scheduler: assigns pods without a node to nodes, as kube-scheduler does, talking to
//! the API server only through the Kubernetes API (kube-rs watchers and `pods/binding`).
//!
//! - [`framework`]: the extension points (PreFilter, Filter, PostFilter, PreScore, Score with
//!   NormalizeScore, Reserve, Bind) as small traits, the [`framework::Status`] that separates
//!   Unschedulable from internal errors, and the per-cycle [`framework::CycleState`].
//! - [`plugins`]: one module per in-tree plugin under upstream's name, and the registry.
//! - [`config`]: profiles from a KubeSchedulerConfiguration-shaped YAML, upstream's defaults.
//! - [`profile`]: a profile's plugin lists and the cycle: filter (a rotating, adaptive share
//!   of the nodes), post-filter (preemption), score (0-100 x weight, ties at random).
//! - [`snapshot`]: nodes and the pods on them, assumed pods included, with the term indexes
//!   that keep inter-pod affinity and topology spreading cheap.
//! - [`queue`]: active (by priority), backoff and unschedulable pods, woken by the cluster
//!   events the rejecting plugins registered.
//! - [`scheduler`]: the loop that ties them to the API: watchers in, binds and status out.

pub mod config;
pub mod framework;
pub mod plugins;
pub mod profile;
pub mod queue;
pub mod scheduler;
pub mod snapshot;

pub use config::SchedulerConfig;
pub use scheduler::run;
