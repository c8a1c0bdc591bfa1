//! `krust controller-manager`: the controllers of `krust-controllers` against an API server.

use std::path::PathBuf;
use std::time::Duration;

use krust_controllers::ControllerConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to control.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How long a node may be silent before it is marked unreachable (e.g. 40s, 500ms, 2m).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How many terminated (Succeeded or Failed) pods may exist before the pod garbage
    /// collector deletes the oldest; 0 keeps them all.
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// The CIDR from which nodes get their podCIDR.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Controllers to run: `*` for all, `-name` to leave one out (comma separated).
    #[arg(long, default_value = "*", value_delimiter = ',')]
    controllers: Vec<String>,
    /// The cluster CA bundle published to every namespace as the `kube-root-ca.crt`
    /// ConfigMap (as upstream's flag); without it that controller does not run.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The CA certificate that signs approved CSRs of the kubernetes.io signers (with
    /// --cluster-signing-key-file); without it the csrsigning controller does not run.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA key matching --cluster-signing-cert-file.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest lifetime of a signed certificate (a CSR's expirationSeconds may ask
    /// for less).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: Duration,
}

/// The csrsigning controller's CA, read from the two files.
pub fn signing_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    duration: Duration,
) -> anyhow::Result<krust_controllers::csrsigning::SigningConfig> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let mut config = krust_controllers::csrsigning::SigningConfig::new(read(cert)?, read(key)?);
    config.duration = duration;
    Ok(config)
}

/// Parses a Go duration: `40s`, `500ms`, `2m`, `1h30m`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // Go's grammar, as upstream's flags read it; one parser for flags and the API.
    match krust_apiserver::request::parse_duration(s) {
        Some(secs) if secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Some(_) => Err(format!("negative duration {s:?}")),
        None => Err(format!("bad duration {s:?}")),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = super::client(&args.kubeconfig).await?;
    let root_ca = match &args.root_ca_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let config = ControllerConfig {
        node_monitor_grace_period: args.node_monitor_grace_period,
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        controllers: args.controllers,
        root_ca,
        // The LoadBalancer controller is an add-on of `krust server` (as the cloud
        // controller manager's is not part of upstream's controller manager).
        service_lb: None,
        signing: match (
            &args.cluster_signing_cert_file,
            &args.cluster_signing_key_file,
        ) {
            (Some(cert), Some(key)) => {
                Some(signing_config(cert, key, args.cluster_signing_duration)?)
            }
            _ => None,
        },
    };
    krust_controllers::run(client, config, super::shutdown_signal()).await;
    Ok(())
}
