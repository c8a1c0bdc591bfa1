//! The container runtime seam: the CRI operations the agent uses, as one trait.
//!
//! - [`cri`]: the real implementation, a tonic `runtime.v1` client of containerd's CRI plugin
//!   over its unix socket.
//! - [`fake`]: an in-memory runtime for unit tests; its "processes" follow a tiny convention
//!   (see its docs) so tests can make containers exit.
//! - [`suite`]: the one behavioural test suite that every implementation passes (the fake in
//!   unit tests, containerd in `tests/cri.rs` when containerd is installed).
//!
//! The trait speaks the CRI message types themselves (re-exported as [`api`]) so the real
//! implementation is a thin pass-through and nothing is lost in translation.

pub mod cri;
pub mod fake;
pub mod suite;

use std::collections::HashMap;

use async_trait::async_trait;

/// The CRI `runtime.v1` messages.
pub use k8s_cri::v1 as api;

/// What can go wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The object (sandbox, container, image) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The runtime's socket cannot be reached.
    #[error("connecting to the runtime at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: Box<tonic::transport::Error>,
    },
    /// The runtime answered a call with an error.
    #[error("{op}: {}", .status.message())]
    Rpc {
        op: &'static str,
        #[source]
        status: Box<tonic::Status>,
    },
    /// A call with a time limit (ExecSync) ran past it; the runtime killed what it ran.
    #[error("{op} timed out after {seconds}s")]
    Timeout { op: &'static str, seconds: i64 },
    /// The fake runtime refused a call (a scripted failure or a bad argument).
    #[error("{0}")]
    Fake(String),
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, RuntimeError::Timeout { .. })
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The CRI operations the node agent needs. Every method is one CRI call.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name and version (`containerd`, `1.6.20~ds1`).
    async fn version(&self) -> Result<api::VersionResponse>;

    /// Creates and starts a pod sandbox (pause container and network); returns its id.
    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String>;
    /// Stops the sandbox's containers and tears its network down; the sandbox stays listed.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    /// Removes a sandbox and its containers. Removing one that is gone is not an error.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    /// A sandbox's status; [`RuntimeError::NotFound`] if it does not exist.
    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus>;
    /// Sandboxes whose labels include all of `labels`.
    async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::PodSandbox>>;

    /// Creates a container in a sandbox; returns its id.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `timeout` seconds.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()>;
    /// Removes a container. Removing one that is gone is not an error.
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// Containers whose labels include all of `labels`.
    async fn list_containers(&self, labels: HashMap<String, String>)
        -> Result<Vec<api::Container>>;
    /// A container's status; [`RuntimeError::NotFound`] if it does not exist.
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus>;
    /// Runs `cmd` in a running container and waits for it (exec probes and hooks). With
    /// `timeout` > 0 seconds the runtime kills it after that long and the call fails with
    /// [`RuntimeError::Timeout`]; a non-zero exit is a result, not an error.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<api::ExecSyncResponse>;

    /// The image if the runtime has it (`None` if absent).
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>>;
    /// Pulls an image; returns its reference.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String>;

    /// Prepares a command in a running container; returns the URL on the runtime's streaming
    /// server that runs it once a client upgrades a request to it (SPDY or WebSocket).
    async fn exec(&self, req: api::ExecRequest) -> Result<String>;
    /// Prepares an attach to a running container's process; returns the streaming URL.
    async fn attach(&self, req: api::AttachRequest) -> Result<String>;
    /// Prepares port forwarding into a sandbox's network namespace; returns the streaming URL.
    async fn port_forward(&self, sandbox_id: &str) -> Result<String>;
}

/// The state of a container as the agent reasons about it.
pub fn container_state(state: i32) -> api::ContainerState {
    api::ContainerState::try_from(state).unwrap_or(api::ContainerState::ContainerUnknown)
}

/// Whether a sandbox state value means ready.
pub fn sandbox_ready(state: i32) -> bool {
    state == api::PodSandboxState::SandboxReady as i32
}
