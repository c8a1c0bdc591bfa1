//! Labels and annotations the agent puts on CRI sandboxes and containers. They are how the
//! agent finds its pods' containers again after a restart (the checkpoint lives in the
//! runtime, as upstream's kubelet keeps it). The names are upstream's, so tools that know
//! kubelet-made containers recognise ours.

/// Pod uid (sandboxes and containers).
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Pod name (sandboxes and containers).
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace (sandboxes and containers).
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Container name (containers).
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks what a krust agent made; everything else in the runtime is left alone.
pub const MANAGED: &str = "krust.dev/managed";
/// Name of the node whose agent made it (several agents may share one containerd in tests).
pub const NODE: &str = "krust.dev/node";

/// Container annotation: the restart count (also the CRI metadata attempt).
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Container annotation: the pod's termination grace period, in seconds.
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Container annotation: "init" or "app".
pub const CONTAINER_KIND: &str = "krust.dev/container-kind";
