//! `krust server`: the API server on its store, hosting the other control-plane
//! components unless told not to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum StoreKind {
    /// The embedded store in the data directory (SQLite, durable, no other process).
    Embedded,
    /// An etcd v3 cluster (--etcd-endpoints), shared by several API servers.
    Etcd,
}

/// Components `krust server` hosts beside the API server unless disabled (as k3s's
/// `--disable`); each also runs alone as its own subcommand.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Component {
    /// The controller manager (`krust controller-manager`).
    Controllers,
    /// The scheduler (`krust scheduler`), with upstream's default profile.
    Scheduler,
    /// The node agent (`krust agent`, data in DATA_DIR/agent): makes this machine a node.
    Agent,
    /// The service proxy (`krust proxy`) that runs beside the hosted agent.
    Proxy,
    /// Cluster DNS (the `kube-system/kube-dns` Service), in-process.
    Dns,
    /// Addresses for LoadBalancer Services from --service-lb-pool (as k3s's ServiceLB).
    Servicelb,
    /// The ingress controller, the default IngressClass `krust` (as k3s's Traefik).
    Ingress,
    /// NetworkPolicy enforcement beside the hosted agent (nftables).
    NetworkPolicy,
}

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the embedded store, certificates and kubeconfig.
    #[arg(long, default_value = "/var/lib/krust")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the admin kubeconfig (default: DATA_DIR/admin.kubeconfig).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Which store keeps the cluster's state.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// CIDR that Service cluster IPs come from.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// The address pods and other nodes reach the API server at, published as the
    /// `kubernetes` Service's endpoint (default: the --listen address, 127.0.0.1 when that
    /// is 0.0.0.0; pods on this node reach loopback through the service proxy).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Components not to run in this process (comma separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    disable: Vec<Component>,
    #[command(flatten)]
    agent_flags: super::agent::AgentFlags,
    /// CIDR that nodes' podCIDRs come from (the hosted controller manager's node IPAM).
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How long a node may be silent before it is marked unreachable (e.g. 40s, 500ms, 2m).
    #[arg(long, default_value = "40s", value_parser = super::controllers::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Addresses LoadBalancer Services get, comma separated (default: the nodes'
    /// InternalIPs).
    #[arg(long, value_delimiter = ',')]
    service_lb_pool: Vec<std::net::IpAddr>,
    /// Port the ingress controller serves HTTP on, on every address.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// Port the ingress controller serves HTTPS on, on every address.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
    /// Port the cluster DNS listens on (UDP and TCP) at the advertise address; the
    /// kube-dns Service's port 53 leads there. 0 picks a free port.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// How often the store's history is compacted, keeping one interval of it (as
    /// upstream's flag, for either store; 0 never compacts).
    #[arg(long, default_value = "5m", value_parser = super::controllers::parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// The longest lifetime of a certificate the cluster CA signs for an approved CSR
    /// (nodes' client and serving certificates; they renew at 70-90 % of it).
    #[arg(long, default_value = "8760h", value_parser = super::controllers::parse_duration)]
    cluster_signing_duration: std::time::Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        data_dir,
        listen,
        kubeconfig_out,
        store,
        etcd_endpoints,
        service_cidr,
        tls_sans,
        advertise_address,
        disable,
        agent_flags,
        cluster_cidr,
        node_cidr_mask_size,
        node_monitor_grace_period,
        etcd_compaction_interval,
        dns_port,
        service_lb_pool,
        ingress_http_port,
        ingress_https_port,
        cluster_signing_duration,
    } = args;
    let ingress_ports =
        (!disable.contains(&Component::Ingress)).then_some((ingress_http_port, ingress_https_port));
    let network_policy =
        !disable.contains(&Component::NetworkPolicy) && !agent_flags.disable_network_policy;
    let agent_config = if !disable.contains(&Component::Agent) {
        Some(agent_flags.config(data_dir.join("agent"))?)
    } else {
        None
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store: Arc<dyn krust_store::Store> = match store {
        StoreKind::Embedded => Arc::new(
            krust_store::SqliteStore::open(&data_dir.join("db"))
                .context("opening the embedded store")?,
        ),
        StoreKind::Etcd => {
            anyhow::ensure!(
                !etcd_endpoints.is_empty(),
                "--store etcd needs --etcd-endpoints"
            );
            Arc::new(
                krust_store::EtcdStore::connect(&etcd_endpoints)
                    .await
                    .context("connecting to etcd")?,
            )
        }
    };
    let kubeconfig_out = kubeconfig_out.unwrap_or_else(|| data_dir.join("admin.kubeconfig"));
    let dns = (!disable.contains(&Component::Dns)).then(|| super::addons::DnsArgs {
        listen: std::net::SocketAddr::new(advertise_address.unwrap_or(listen.ip()), dns_port),
        service_cidr: service_cidr.clone(),
        domain: agent_flags.cluster_domain.clone(),
        resolv_conf: agent_flags.resolv_conf.clone(),
    });
    let data_dir_tls = data_dir.join("tls");
    let config = krust_apiserver::Config {
        listen,
        data_dir,
        kubeconfig_out,
        tls_sans,
        service_cidr,
        advertise_address,
        compaction_interval: (!etcd_compaction_interval.is_zero())
            .then_some(etcd_compaction_interval),
    };
    let running = krust_apiserver::start(config, store, super::shutdown_signal()).await?;
    tracing::info!("krust API server listening on https://{}", running.addr);
    // Hosted components talk to the API server through the API, like any client.
    if let Some(dns) = dns {
        super::addons::spawn_dns(super::client(&running.kubeconfig).await?, dns)?;
    }
    if !disable.contains(&Component::Controllers) {
        let client = super::client(&running.kubeconfig).await?;
        let config = krust_controllers::ControllerConfig {
            cluster_cidr: cluster_cidr.clone(),
            node_cidr_mask_size,
            node_monitor_grace_period,
            root_ca: std::fs::read_to_string(data_dir_tls.join("ca.crt")).ok(),
            signing: Some(super::controllers::signing_config(
                &data_dir_tls.join("ca.crt"),
                &data_dir_tls.join("ca.key"),
                cluster_signing_duration,
            )?),
            service_lb: (!disable.contains(&Component::Servicelb)).then(|| {
                krust_controllers::servicelb::LbConfig {
                    pool: service_lb_pool.clone(),
                    // The ingress listens on every address: its ports are never free.
                    reserved: ingress_ports
                        .iter()
                        .flat_map(|(h, s)| [("TCP".to_string(), *h), ("TCP".to_string(), *s)])
                        .collect(),
                }
            }),
            ..Default::default()
        };
        tokio::spawn(krust_controllers::run(
            client,
            config,
            super::shutdown_signal(),
        ));
    }
    if !disable.contains(&Component::Scheduler) {
        let client = super::client(&running.kubeconfig).await?;
        tokio::spawn(async move {
            let config = krust_scheduler::SchedulerConfig::default();
            if let Err(e) = krust_scheduler::run(client, config, super::shutdown_signal()).await {
                tracing::error!(error = ?e, "scheduler stopped");
            }
        });
    }
    if let Some((http, https)) = ingress_ports {
        // The ingress is reached at the node's address (or this server's, without a node).
        let publish = match &agent_config {
            Some(a) => a.node_ip.parse().ok(),
            None => Some(advertise_address.unwrap_or(listen.ip())),
        };
        super::addons::spawn_ingress(
            super::client(&running.kubeconfig).await?,
            http,
            https,
            publish
                .into_iter()
                .filter(|ip: &std::net::IpAddr| !ip.is_unspecified())
                .collect(),
        );
    }
    if let Some(mut config) = agent_config {
        let creds = hosted_agent_credentials(&data_dir_tls, &running.addr, &config).await?;
        let client = creds.client();
        config.client_ca = creds.ca_der();
        config.serving_cert = Some(creds.serving_cert.clone());
        let mut flags = agent_flags.clone();
        flags.disable_network_policy |= !network_policy;
        flags.disable_proxy |= disable.contains(&Component::Proxy);
        super::agent::spawn_node_components(&client, &config, &flags, &cluster_cidr, &creds);
        tokio::spawn(async move {
            if let Err(e) = krust_agent::run(client, config, super::shutdown_signal()).await {
                tracing::error!(error = ?anyhow::Error::from(e), "node agent stopped");
            }
        });
    }
    println!(
        "krust is ready. Point kubectl at it with:\n  export KUBECONFIG={}",
        running.kubeconfig.display()
    );
    running.task.await?;
    Ok(())
}

/// The hosted agent's identity, issued here from the cluster CA (as k3s's server does for
/// its own agent): `system:node:<name>` and a serving certificate for the node's address,
/// so that it runs with a node's rights and the API server verifies it like any node.
async fn hosted_agent_credentials(
    tls_dir: &std::path::Path,
    api: &SocketAddr,
    config: &krust_agent::AgentConfig,
) -> anyhow::Result<Arc<krust_agent::credentials::NodeCredentials>> {
    use krust_agent::credentials::{csr, Bootstrap, Issued, NodeCredentials};
    let read = |f: &str| {
        std::fs::read_to_string(tls_dir.join(f))
            .with_context(|| format!("reading {}", tls_dir.join(f).display()))
    };
    let (ca_pem, ca_key) = (read("ca.crt")?, read("ca.key")?);
    let user = format!("{}{}", csr::NODE_USER_PREFIX, config.node_name);
    let (cert, key) =
        krust_apiserver::pki::client_cert(&ca_pem, &ca_key, &user, &[csr::NODES_GROUP])?;
    let (serving_cert, serving_key) = krust_apiserver::pki::serving_cert(
        &ca_pem,
        &ca_key,
        &user,
        &[csr::NODES_GROUP],
        &[config.node_ip.clone(), config.node_name.clone()],
    )?;
    let host = if api.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        api.ip()
    };
    let server = format!("https://{}", SocketAddr::new(host, api.port())).parse()?;
    let bootstrap = Bootstrap::Issued {
        server,
        ca_pem,
        client: Issued::new(cert, key)?,
        serving: Issued::new(serving_cert, serving_key)?,
    };
    Ok(NodeCredentials::establish(bootstrap, &config.node_name, &config.data_dir).await?)
}
