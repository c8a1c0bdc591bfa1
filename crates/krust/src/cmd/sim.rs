//! `krust sim`: simulated nodes (like kwok) registered with an API server; pods bound to them
//! go through their lifecycle without containers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to register the nodes with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Node names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "sim-")]
    name_prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "128Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "100Gi")]
    ephemeral_storage: String,
    /// nvidia.com/gpu per node (0: none).
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Spread nodes over zone-0..zone-(N-1) (topology.kubernetes.io/zone); 0: no zone label.
    #[arg(long, default_value_t = 3)]
    zones: u32,
    /// Extra node labels, k=v,...
    #[arg(long, default_value = "")]
    labels: String,
    /// Node taints, k=v:Effect,...
    #[arg(long, default_value = "")]
    taints: String,
    /// How long Job pods and pods annotated krust.dev/sim-exit-code run, unless annotated
    /// krust.dev/sim-run-seconds.
    #[arg(long, default_value_t = 0)]
    run_seconds: u64,
    /// Seconds between Lease renewals of each node.
    #[arg(long, default_value_t = 10)]
    lease_renew_seconds: u64,
    /// Seconds between status heartbeats (Ready's lastHeartbeatTime) of each node.
    #[arg(long, default_value_t = 40)]
    status_update_seconds: u64,
    /// Most pod writes in flight at once.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = krust_sim::SimConfig {
        nodes: args.nodes,
        name_prefix: args.name_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        ephemeral_storage: args.ephemeral_storage,
        gpus: args.gpus,
        zones: args.zones,
        labels: krust_sim::parse_labels(&args.labels)?,
        taints: krust_sim::parse_taints(&args.taints)?,
        run_seconds: args.run_seconds,
        lease_interval: Duration::from_secs(args.lease_renew_seconds),
        status_interval: Duration::from_secs(args.status_update_seconds),
        max_in_flight: args.max_in_flight,
        ..Default::default()
    };
    let client = super::client(&args.kubeconfig).await?;
    krust_sim::run(client, config, super::shutdown_signal())
        .await
        .context("simulated nodes")
}
