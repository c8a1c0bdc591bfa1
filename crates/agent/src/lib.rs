//! The krust node agent (kubelet): makes a machine a node. It registers the Node, keeps its
//! Lease and status fresh, and runs the pods bound to it as containers through containerd's
//! CRI, with pod networking from a CNI bridge.
//!
//! Layout:
//! - [`runtime`]: the `Runtime` trait (the CRI calls the agent makes), the containerd client,
//!   an in-memory fake, and the test suite both pass.
//! - [`containerd`]: the agent's own containerd (config, start, stop) under its data dir.
//! - [`cni`]: the bridge conflist over the node's pod CIDR.
//! - [`images`]: the pause and busybox images, built locally as OCI archives and imported.
//! - [`credentials`]: the node's identity (TLS bootstrapping with a join token or a bootstrap
//!   kubeconfig, CSRs for its client and serving certificates, renewal).
//! - [`node`]: the Node object, registration, Lease and status heartbeats.
//! - [`pod`]: the pod manager, the per-pod state machine and status computation, probes,
//!   lifecycle hooks and the Events about containers.
//! - [`labels`]: labels and annotations on CRI objects (the agent's checkpoint).
//! - [`server`]: the agent's HTTPS API (kubelet port): container logs, and exec, attach and
//!   port-forward proxied to containerd's streaming server.
//! - [`shutdown`]: graceful node shutdown (a logind inhibitor lock; pods stopped before the
//!   machine goes down).
//!
//! [`run`] sets the node up (containerd, images, Node, CNI) and then runs until `shutdown`;
//! [`reset`] removes what a node left on the machine (`krust agent-reset`).

pub mod cni;
pub mod containerd;
pub mod credentials;
pub mod images;
pub mod labels;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
pub mod shutdown;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runtime::cri::CriRuntime;
use runtime::Runtime;

/// How long the agent waits for a node IPAM controller to give the new Node a podCIDR.
const POD_CIDR_WAIT: Duration = Duration::from_secs(3);

/// How long the agent waits for its first list of Services.
const SERVICES_WAIT: Duration = Duration::from_secs(5);

/// What can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("setting up containerd")]
    Containerd(#[from] containerd::ContainerdError),
    #[error("talking to the container runtime")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("preparing the node's images")]
    Images(#[from] images::ImageError),
    #[error("starting the agent's HTTPS API")]
    Server(#[from] server::ServerError),
    #[error("the node's credentials")]
    Credentials(#[from] credentials::CredentialsError),
    #[error("{context}")]
    Api {
        context: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's InternalIP (and every pod's hostIP).
    pub node_ip: String,
    /// containerd's files, pod logs and image archives go here.
    pub data_dir: PathBuf,
    /// Pod CIDR used when the Node has no `spec.podCIDR`.
    pub pod_cidr: String,
    /// Name of the CNI bridge on the host.
    pub bridge: String,
    /// A CRI socket to use instead of starting the agent's own containerd.
    pub runtime_endpoint: Option<PathBuf>,
    pub max_pods: u32,
    pub lease_interval: Duration,
    pub status_interval: Duration,
    pub cgroup_root: PathBuf,
    /// Port of the agent's HTTPS API on the node IP (0: any free port); the Node says which.
    pub kubelet_port: u16,
    /// The cluster CA (DER) that callers' client certificates must be signed by.
    pub client_ca: Vec<Vec<u8>>,
    /// The serving certificate of the agent's API (from [`credentials`]); `None` serves a
    /// self-signed one, which the API server does not trust (tests of the agent alone).
    pub serving_cert: Option<Arc<credentials::CertSlot>>,
    /// Graceful node shutdown (off by default, as upstream).
    pub shutdown_grace: shutdown::GracePeriods,
    /// logind's drop-in directory, where a too short `InhibitDelayMaxSec` is raised.
    pub logind_conf_dir: PathBuf,
    /// Cluster DNS servers for ClusterFirst pods (empty: the kube-dns Service's address).
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain pods' search paths and names end in.
    pub cluster_domain: String,
    /// The node's resolver configuration, for `dnsPolicy: Default` pods and the search path
    /// every pod inherits (a file naming only a local stub is replaced by
    /// systemd-resolved's list of real servers).
    pub resolv_conf: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: "node".to_string(),
            node_ip: "127.0.0.1".to_string(),
            data_dir: PathBuf::from("/var/lib/krust/agent"),
            pod_cidr: "10.42.0.0/24".to_string(),
            bridge: "krust0".to_string(),
            runtime_endpoint: None,
            max_pods: 110,
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            kubelet_port: 10250,
            client_ca: Vec::new(),
            serving_cert: None,
            shutdown_grace: shutdown::GracePeriods::default(),
            logind_conf_dir: PathBuf::from("/etc/systemd/logind.conf.d"),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

impl AgentConfig {
    fn validate(&self) -> Result<(), AgentError> {
        if self.node_name.is_empty() {
            return Err(AgentError::Config("the node name is empty".into()));
        }
        if self.node_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(AgentError::Config(format!(
                "--node-ip {:?} is not an IP address",
                self.node_ip
            )));
        }
        if cni::Cidr::parse(&self.pod_cidr).is_none() {
            return Err(AgentError::Config(format!(
                "--pod-cidr {:?} is not an IPv4 CIDR",
                self.pod_cidr
            )));
        }
        self.shutdown_grace.validate().map_err(AgentError::Config)?;
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(AgentError::Config(format!(
                "bridge name {:?} must be 1-15 characters",
                self.bridge
            )));
        }
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.runtime_endpoint
            .clone()
            .unwrap_or_else(|| containerd::Layout::new(&self.data_dir).socket())
    }
}

/// Sets the node up and runs it until `shutdown` resolves. Containers (and containerd) keep
/// running after it returns.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    config.validate()?;
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::Io {
        what: "creating",
        path: config.data_dir.clone(),
        source,
    })?;
    let layout = containerd::Layout::new(&config.data_dir);
    // The CNI config must be there before the first sandbox; rewritten below if the Node has
    // a pod CIDR of its own.
    let default_cidr = cni::Cidr::parse(&config.pod_cidr)
        .ok_or_else(|| AgentError::Config(format!("bad --pod-cidr {}", config.pod_cidr)))?;
    write_cni(&layout, &config, default_cidr)?;
    if config.runtime_endpoint.is_none() {
        containerd::ensure_running(
            &layout,
            &containerd::Settings::default(),
            Duration::from_secs(30),
        )
        .await?;
    }
    let socket = config.socket();
    let rt = Arc::new(CriRuntime::new(&socket)?);
    let version = rt.version().await?;
    images::ensure_images(rt.as_ref(), &socket, &config.data_dir.join("images")).await?;

    // The API comes up before the Node registers, so the Node names the port it listens on.
    let ip: std::net::IpAddr = config
        .node_ip
        .parse()
        .map_err(|_| AgentError::Config(format!("bad --node-ip {}", config.node_ip)))?;
    let serving: Arc<dyn rustls::server::ResolvesServerCert> = match &config.serving_cert {
        Some(slot) => slot.clone(),
        None => credentials::CertSlot::new(credentials::provisional_serving(&config.node_name)?)?,
    };
    let api = server::Server::bind(
        std::net::SocketAddr::new(ip, config.kubelet_port),
        serving,
        &config.client_ca,
        server::Context {
            runtime: rt.clone(),
            node_name: config.node_name.clone(),
        },
    )
    .await?;
    let kubelet_port = api.port();
    let api = tokio::spawn(api.serve());
    tracing::info!(port = kubelet_port, "agent API listening");

    let id = Arc::new(node::NodeIdentity {
        name: config.node_name.clone(),
        ip: config.node_ip.clone(),
        max_pods: config.max_pods,
        machine: node::Machine::probe(&config.data_dir),
        runtime_version: format!("{}://{}", version.runtime_name, version.runtime_version),
        kubelet_port,
    });
    let registered = node::register(&client, &id, false)
        .await
        .map_err(|e| AgentError::Api {
            context: "registering the node",
            source: Box::new(e),
        })?;
    let pod_cidr = |n: &k8s_openapi::api::core::v1::Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(cni::Cidr::parse)
    };
    let mut assigned = pod_cidr(&registered);
    // A node IPAM controller assigns new nodes a CIDR right after they register: give it a
    // moment, as the kubelet waits for its podCIDR, before falling back to --pod-cidr.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let deadline = std::time::Instant::now() + POD_CIDR_WAIT;
    while assigned.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(n) = nodes.get(&config.node_name).await {
            assigned = pod_cidr(&n);
        }
    }
    match assigned {
        Some(cidr) => {
            tracing::info!(%cidr, "pod CIDR from the Node");
            write_cni(&layout, &config, cidr)?;
        }
        None => tracing::info!(cidr = %default_cidr, "the Node has no podCIDR; using --pod-cidr"),
    }
    tracing::info!(node = %config.node_name, runtime = %id.runtime_version, elapsed = ?started.elapsed(), "node agent ready");

    let (shutting_down, shutting_down_rx) = tokio::sync::watch::channel(false);
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        id.clone(),
        config.lease_interval,
        config.status_interval,
        shutting_down_rx,
    ));
    let (node_shutdown, node_shutdown_rx) = tokio::sync::mpsc::channel(4);
    let graceful = start_graceful_shutdown(
        config.shutdown_grace,
        &config.logind_conf_dir,
        shutting_down,
        node_shutdown,
    )
    .await;
    // Every Service, for containers' service variables and the cluster DNS address.
    let services = krust_watch::Watched::all(kube::Api::all(client.clone()), Default::default());
    if tokio::time::timeout(SERVICES_WAIT, services.store().wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!("no Service list yet; pods start without service variables");
    }
    let host_dns = match krust_dns::resolvconf::host_config(&config.resolv_conf) {
        Ok((_, conf)) => conf,
        Err(e) => {
            tracing::warn!(path = %config.resolv_conf.display(), error = %e, "cannot read the node's resolv.conf");
            Default::default()
        }
    };
    let ctx = Arc::new(pod::PodContext {
        client,
        runtime: rt,
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.clone(),
        logs_root: config.data_dir.join("pods"),
        runtime_name: version.runtime_name,
        cgroup_root: config.cgroup_root.clone(),
        volumes_root: config.data_dir.join("volumes"),
        sandbox_starts: Arc::new(tokio::sync::Semaphore::new(pod::SANDBOX_STARTS)),
        services: services.store().clone(),
        dns: pod::dns::NodeDns {
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            host: host_dns,
        },
        host_hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
    });
    pod::run(ctx, shutdown, node_shutdown_rx).await;
    if let Some(g) = graceful {
        g.abort();
    }
    heartbeat.abort();
    api.abort();
    tracing::info!(node = %config.node_name, "node agent stopped; containers keep running");
    Ok(())
}

/// Takes logind's inhibitor lock and watches for shutdowns, if a grace period is set and
/// there is a system bus; without one the agent runs on without the feature.
async fn start_graceful_shutdown(
    periods: shutdown::GracePeriods,
    logind_conf_dir: &std::path::Path,
    node: tokio::sync::watch::Sender<bool>,
    pods: tokio::sync::mpsc::Sender<pod::NodeShutdown>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !periods.enabled() {
        return None;
    }
    let logind = match shutdown::Logind::connect().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no logind on the system bus: graceful node shutdown is off");
            return None;
        }
    };
    // In the task, not before it: a logind that is slow to reload must not hold up the pods.
    let conf_dir = logind_conf_dir.to_path_buf();
    Some(tokio::spawn(async move {
        if let Some(max) = logind.max_delay().await.filter(|max| *max < periods.total) {
            tracing::info!(?max, requested = ?periods.total, "raising logind's InhibitDelayMaxUSec");
            match logind.raise_max_delay(periods.total, &conf_dir).await {
                Ok(Some(now)) if now >= periods.total => {}
                Ok(now) => tracing::warn!(
                    ?now,
                    requested = ?periods.total,
                    "logind's InhibitDelayMaxUSec is still shorter than --shutdown-grace-period: the machine will not wait that long"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "logind's InhibitDelayMaxUSec is shorter than --shutdown-grace-period and could not be raised: the machine will not wait that long"
                ),
            }
        }
        shutdown::run(logind, periods, node, pods).await;
    }))
}

fn write_cni(
    layout: &containerd::Layout,
    config: &AgentConfig,
    cidr: cni::Cidr,
) -> Result<(), AgentError> {
    cni::write_conflist(
        &layout.cni_conf_dir(),
        &config.bridge,
        cidr,
        &layout.cni_ipam_dir(),
    )
    .map_err(|source| AgentError::Io {
        what: "writing the CNI config in",
        path: layout.cni_conf_dir(),
        source,
    })
}

/// What [`reset`] removed.
#[derive(Debug, Default)]
pub struct ResetReport {
    pub sandboxes: usize,
    pub containerd_stopped: bool,
    pub bridge_deleted: bool,
}

/// Removes what a node left on this machine: every sandbox the agent made (containers
/// stopped at once), their cgroups and logs, the agent's containerd, and the bridge.
/// Data under `data_dir` other than pod logs is kept.
pub async fn reset(data_dir: &Path, bridge: &str, cgroup_root: &Path) -> ResetReport {
    let layout = containerd::Layout::new(data_dir);
    let mut report = ResetReport::default();
    if containerd::answers(&layout).await {
        if let Ok(rt) = CriRuntime::new(&layout.socket()) {
            let selector = std::collections::HashMap::from([(
                labels::MANAGED.to_string(),
                "true".to_string(),
            )]);
            let sandboxes = rt
                .list_pod_sandboxes(selector.clone())
                .await
                .unwrap_or_default();
            for c in rt.list_containers(selector).await.unwrap_or_default() {
                let _ = rt.stop_container(&c.id, 0).await;
            }
            for s in sandboxes {
                let _ = rt.stop_pod_sandbox(&s.id).await;
                if rt.remove_pod_sandbox(&s.id).await.is_ok() {
                    report.sandboxes += 1;
                }
                if let Some(uid) = s.labels.get(labels::POD_UID) {
                    pod::worker::cleanup_cgroups(cgroup_root, uid);
                }
            }
        }
    }
    report.containerd_stopped = containerd::stop(&layout, Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(data_dir.join("pods"));
    let _ = std::fs::remove_dir_all(data_dir.join("volumes"));
    if !bridge.is_empty() {
        report.bridge_deleted = tokio::process::Command::new("ip")
            .args(["link", "delete", bridge])
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
    }
    report
}
