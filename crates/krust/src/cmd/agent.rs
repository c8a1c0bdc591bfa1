//! `krust agent`: the node agent (kubelet) against an API server; `krust agent-reset`: remove
//! what an agent left on this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

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

/// The cluster CA of a kubeconfig (DER): the agent's API accepts client certificates it
/// signed.
pub async fn cluster_ca(kubeconfig: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    config.root_cert.context(
        "the kubeconfig has no certificate-authority(-data); the agent's API needs the cluster CA",
    )
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
    /// Kubeconfig with the API server and credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// API server URL, overriding the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// Directory for containerd, pod logs and image archives.
    #[arg(long, default_value = "/var/lib/krust/agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    flags: AgentFlags,
    /// Pod addresses, for the service proxy: service traffic from elsewhere is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = match &args.server {
        None => super::client(&args.kubeconfig).await?,
        Some(url) => {
            let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
                .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
            let mut config = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            config.cluster_url = url.parse().context("--server")?;
            kube::Client::try_from(config)?
        }
    };
    let mut config = args.flags.config(args.data_dir)?;
    config.client_ca = cluster_ca(&args.kubeconfig).await?;
    if !args.flags.disable_network_policy {
        super::addons::spawn_network_policy(client.clone(), config.node_name.clone());
    }
    if !args.flags.disable_proxy {
        super::proxy::spawn(
            client.clone(),
            args.cluster_cidr.clone(),
            config.node_name.clone(),
        );
    }
    krust_agent::run(client, config, super::shutdown_signal())
        .await
        .context("node agent")
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
