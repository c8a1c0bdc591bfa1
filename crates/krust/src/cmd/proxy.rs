//! `krust proxy`: the service proxy (kube-proxy) alone; `krust agent` and the agent that
//! `krust server` hosts run it too unless told not to.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig with the API server and credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Pod addresses: service traffic from anywhere else is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The node this proxy serves: its endpoints are the local ones for
    /// `externalTrafficPolicy: Local` (upstream's `--hostname-override`).
    #[arg(long)]
    node_name: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = super::client(&args.kubeconfig).await?;
    serve(client, &args.cluster_cidr, args.node_name).await
}

/// Runs the nftables proxy until shutdown.
pub async fn serve(
    client: kube::Client,
    cluster_cidr: &str,
    node_name: Option<String>,
) -> anyhow::Result<()> {
    let backend = krust_proxy::backend::nftables::Nftables::new(Some(cluster_cidr))
        .context("--cluster-cidr")?;
    krust_proxy::run(
        client,
        Arc::new(backend),
        krust_proxy::ProxyConfig {
            node_name,
            ..Default::default()
        },
        super::shutdown_signal(),
    )
    .await
    .context("service proxy")
}

/// Runs the proxy in the background, logging if it stops.
pub fn spawn(client: kube::Client, cluster_cidr: String, node_name: String) {
    tokio::spawn(async move {
        if let Err(e) = serve(client, &cluster_cidr, Some(node_name)).await {
            tracing::error!(error = ?e, "service proxy stopped");
        }
    });
}

/// Removes the proxy's rules (`krust agent-reset`).
pub async fn cleanup() -> anyhow::Result<()> {
    let backend = krust_proxy::backend::nftables::Nftables::new(None)?;
    use krust_proxy::ProxyBackend;
    backend
        .cleanup()
        .await
        .context("removing the proxy's rules")
}
