//! `krust agent`: the node agent (kubelet) against an API server; `krust agent-reset`: remove
//! what an agent left on this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use krust_agent::credentials::{Bootstrap, JoinToken, NodeCredentials};

/// Flags of the node agent, shared with the agent `krust server` hosts.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentFlags {
    /// Name of the Node (default: the machine's hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP (default: the address of the interface the default route uses,
    /// as upstream, else 127.0.0.1; tests pass 127.0.0.1).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Pod CIDR when the Node has no spec.podCIDR.
    #[arg(long, default_value = "10.42.0.0/24")]
    pub pod_cidr: String,
    /// Name of the pod network bridge on the host.
    #[arg(long, default_value = "krust0")]
    pub bridge: String,
    /// CRI socket of a containerd to use instead of starting the agent's own.
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Most pods on the node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_renew_seconds: u64,
    /// Seconds between node status updates.
    #[arg(long, default_value_t = 60)]
    pub status_update_seconds: u64,
    /// Port of the agent's HTTPS API (logs, exec, port-forward) on the node IP; 0 picks a
    /// free one. The Node's status.daemonEndpoints says which.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// How long a machine shutdown is held back (a systemd-logind delay lock) while the pods
    /// stop; 0 turns graceful node shutdown off.
    #[arg(long, default_value = "0s", value_parser = super::controllers::parse_duration)]
    pub shutdown_grace_period: Duration,
    /// The part of --shutdown-grace-period reserved for critical pods, which stop last.
    #[arg(long, default_value = "0s", value_parser = super::controllers::parse_duration)]
    pub shutdown_grace_period_critical_pods: Duration,
    /// Where the agent writes the logind drop-in that raises InhibitDelayMaxSec to
    /// --shutdown-grace-period when logind's limit is shorter (as the kubelet does).
    #[arg(long, default_value = "/etc/systemd/logind.conf.d")]
    pub logind_conf_dir: PathBuf,
    /// Do not run the service proxy (`krust proxy`) beside the agent.
    #[arg(long)]
    pub disable_proxy: bool,
    /// Do not enforce NetworkPolicies on this node (as k3s's --disable-network-policy).
    #[arg(long)]
    pub disable_network_policy: bool,
    /// How pods reach pods on other nodes: `host-gw` routes each node's pod CIDR to its
    /// InternalIP (nodes on one link), `vxlan` tunnels, `auto` picks per node (host-gw where
    /// the node is directly reachable), `none` leaves it to another CNI.
    #[arg(long, default_value = "auto", value_parser = ["auto", "host-gw", "vxlan", "none"])]
    pub pod_network_backend: String,
    /// DNS servers for ClusterFirst pods, comma separated (default: the
    /// `kube-system/kube-dns` Service's cluster IP).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain: pods' search paths, and the zone the cluster DNS serves.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's resolver configuration, for `dnsPolicy: Default` pods and the names the
    /// cluster DNS forwards (one naming only a local stub such as 127.0.0.53 is read from
    /// systemd-resolved's upstream list instead).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

impl AgentFlags {
    pub fn config(&self, data_dir: PathBuf) -> anyhow::Result<krust_agent::AgentConfig> {
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        Ok(krust_agent::AgentConfig {
            node_name,
            node_ip: match self.node_ip {
                Some(ip) => ip.to_string(),
                None => match primary_address() {
                    Ok(ip) => ip.to_string(),
                    // A machine without a default route still makes a single-node cluster.
                    Err(e) => {
                        tracing::warn!(error = %e, "no default route: the node's InternalIP is 127.0.0.1");
                        "127.0.0.1".to_string()
                    }
                },
            },
            data_dir,
            pod_cidr: self.pod_cidr.clone(),
            bridge: self.bridge.clone(),
            runtime_endpoint: self.container_runtime_endpoint.clone(),
            max_pods: self.max_pods,
            lease_interval: Duration::from_secs(self.lease_renew_seconds.max(1)),
            status_interval: Duration::from_secs(self.status_update_seconds.max(1)),
            kubelet_port: self.kubelet_port,
            shutdown_grace: krust_agent::shutdown::GracePeriods {
                total: self.shutdown_grace_period,
                critical: self.shutdown_grace_period_critical_pods,
            },
            logind_conf_dir: self.logind_conf_dir.clone(),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            resolv_conf: self.resolv_conf.clone(),
            ..Default::default()
        })
    }
}

/// The source address the kernel picks for traffic to the outside world, i.e. the address of
/// the default route's interface. Connecting a UDP socket only consults the routing table: no
/// packet is sent.
fn primary_address() -> std::io::Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // TEST-NET-3 (RFC 5737): never routed anywhere real, but it selects the default route.
    socket.connect("203.0.113.1:9")?;
    Ok(socket.local_addr()?.ip())
}

/// Routes to the other nodes' pod CIDRs and masquerading of traffic leaving the cluster.
fn spawn_pod_network(
    client: &kube::Client,
    config: &krust_agent::AgentConfig,
    backend: &str,
    cluster_cidr: &str,
) {
    let (Ok(mode), Ok(cidr)) = (
        backend.parse::<krust_podnet::Mode>(),
        cluster_cidr.parse::<krust_podnet::Cidr>(),
    ) else {
        tracing::error!(
            backend,
            cluster_cidr,
            "bad pod network settings: no routes to other nodes"
        );
        return;
    };
    let mut podnet = krust_podnet::PodNetConfig::new(&config.node_name, cidr);
    podnet.bridge = config.bridge.clone();
    podnet.mode = mode;
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = krust_podnet::run(client, podnet, super::shutdown_signal()).await {
            tracing::error!(error = %e, "pod network stopped");
        }
    });
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname")?
        .trim()
        .to_lowercase();
    anyhow::ensure!(
        !name.is_empty(),
        "the machine has no hostname; pass --node-name"
    );
    Ok(name)
}

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig whose credentials may request a node client certificate (a bootstrap
    /// kubeconfig, as the kubelet's `--bootstrap-kubeconfig`); not needed with --token.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// API server URL (https://HOST:PORT), overriding the kubeconfig's; with --token, the
    /// server to join.
    #[arg(long)]
    server: Option<String>,
    /// Join token from `krust token create` (K10<ca-hash>::<id>.<secret>). The agent
    /// learns and checks the cluster CA by the hash, gets its own certificate through a
    /// CSR, and from then on needs neither the token nor any other credentials.
    #[arg(long, env = "KRUST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA hash (sha256:<hex>) for a token given without one (as kubeadm's
    /// --discovery-token-ca-cert-hash).
    #[arg(long)]
    ca_cert_hash: Option<String>,
    /// Directory for containerd, pod logs, image archives and the node's certificates.
    #[arg(long, default_value = "/var/lib/krust/agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    flags: AgentFlags,
    /// Pod addresses, for the service proxy: service traffic from elsewhere is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
}

/// How long the agent keeps trying to reach the server before it gives up on a join.
const JOIN_RETRY: Duration = Duration::from_secs(60);

/// What the agent starts from: a join token, or a kubeconfig.
async fn bootstrap(args: &Args) -> anyhow::Result<Bootstrap> {
    if let Some(token) = &args.token {
        let server = args
            .server
            .as_deref()
            .context("--token needs --server https://HOST:PORT")?;
        let mut token = JoinToken::parse(token)?;
        if let Some(h) = &args.ca_cert_hash {
            token.ca_hash = Some(
                krust_agent::credentials::join::parse_hash(h)
                    .context("--ca-cert-hash is sha256:<64 hex digits>")?,
            );
        }
        return Ok(Bootstrap::Token {
            server: server.parse().context("--server")?,
            token,
        });
    }
    let path = args
        .kubeconfig
        .as_ref()
        .context("the agent needs --server and --token to join, or --kubeconfig")?;
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    if let Some(url) = &args.server {
        config.cluster_url = url.parse().context("--server")?;
    }
    Ok(Bootstrap::Kubeconfig(Box::new(config)))
}

/// The node's credentials; a refused join ends the agent at once, an unreachable server is
/// retried for a while.
async fn credentials(
    args: &Args,
    node_name: &str,
) -> anyhow::Result<std::sync::Arc<NodeCredentials>> {
    let deadline = std::time::Instant::now() + JOIN_RETRY;
    loop {
        match NodeCredentials::establish(bootstrap(args).await?, node_name, &args.data_dir).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_permanent() || std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::from(e).context(format!("node {node_name} cannot join")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot get the node's credentials yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = args.flags.config(args.data_dir.clone())?;
    let creds = credentials(&args, &config.node_name).await?;
    tracing::info!(node = %config.node_name, server = %creds.server, "running as system:node:{}", config.node_name);
    let client = creds.client();
    config.client_ca = creds.ca_der();
    config.serving_cert = Some(creds.serving_cert.clone());
    spawn_node_components(&client, &config, &args.flags, &args.cluster_cidr, &creds);
    krust_agent::run(client, config, super::shutdown_signal())
        .await
        .context("node agent")
}

/// What runs beside every agent: certificate renewal, the service proxy, NetworkPolicy
/// and the pod network's routes to other nodes.
pub fn spawn_node_components(
    client: &kube::Client,
    config: &krust_agent::AgentConfig,
    flags: &AgentFlags,
    cluster_cidr: &str,
    creds: &std::sync::Arc<NodeCredentials>,
) {
    let names = krust_agent::credentials::rotate::ServingNames {
        ips: config.node_ip.parse().into_iter().collect(),
        dns_names: vec![config.node_name.clone()],
    };
    tokio::spawn(krust_agent::credentials::rotate::run(
        creds.clone(),
        names,
        super::shutdown_signal(),
    ));
    if !flags.disable_network_policy {
        super::addons::spawn_network_policy(client.clone(), config.node_name.clone());
    }
    if flags.pod_network_backend != "none" {
        spawn_pod_network(client, config, &flags.pod_network_backend, cluster_cidr);
    }
    if !flags.disable_proxy {
        super::proxy::spawn(
            client.clone(),
            cluster_cidr.to_string(),
            config.node_name.clone(),
        );
    }
}

#[derive(clap::Args)]
pub struct ResetArgs {
    /// The agent's data directory.
    #[arg(long, default_value = "/var/lib/krust/agent")]
    data_dir: PathBuf,
    /// The pod network bridge to delete.
    #[arg(long, default_value = "krust0")]
    bridge: String,
}

pub async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let report = krust_agent::reset(
        &args.data_dir,
        &args.bridge,
        std::path::Path::new("/sys/fs/cgroup"),
    )
    .await;
    if let Err(e) = super::proxy::cleanup().await {
        eprintln!("{e:#}");
    }
    if let Err(e) = super::addons::cleanup_network_policy().await {
        eprintln!("{e:#}");
    }
    if let Err(e) = krust_podnet::cleanup(&krust_podnet::VxlanConfig::default()).await {
        eprintln!("{e:#}");
    }
    println!(
        "removed {} pod sandboxes; containerd {}; bridge {} {}",
        report.sandboxes,
        if report.containerd_stopped {
            "stopped"
        } else {
            "was not running"
        },
        args.bridge,
        if report.bridge_deleted {
            "deleted"
        } else {
            "not present"
        }
    );
    Ok(())
}
