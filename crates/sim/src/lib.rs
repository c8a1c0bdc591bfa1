//! Simulated nodes, like kwok: N fake Node objects that keep their Leases and Ready condition
//! fresh, and a fake kubelet that moves the pods bound to them through their lifecycle without
//! running any container. Everything goes through the Kubernetes API, so the simulator works
//! against krust or an upstream kube-apiserver alike.
//!
//! Layout:
//! - [`config`]: [`SimConfig`] and the parsers for `--labels` and `--taints`.
//! - `node`: pure construction of the Node, its status and its Lease.
//! - `heartbeat`: registers the nodes, then renews each Lease every `lease_interval` and
//!   refreshes the Ready condition every `status_interval`, spread over time in slots.
//! - `lifecycle`: pure pod state machine (Pending -> Running -> Succeeded/Failed, deletion).
//! - `ipam`: fake pod IPs from the node's podCIDR, or from 10.244.0.0/14.
//! - `pods`: one kube-runtime controller over all pods that applies the lifecycle to the pods
//!   bound to simulated nodes, with bounded concurrency.

pub mod config;
mod heartbeat;
mod ipam;
mod lifecycle;
mod node;
mod pods;

use std::future::Future;
use std::sync::Arc;

pub use config::{parse_labels, parse_taint, parse_taints, SimConfig};
pub use lifecycle::{ANNOTATION_EXIT_CODE, ANNOTATION_RUN_SECONDS};

/// What can go wrong running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A flag or configuration value is not valid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A request to the API server failed in a way the simulator cannot recover from.
    #[error("{context}")]
    Api {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl SimError {
    pub(crate) fn api(context: impl Into<String>, source: kube::Error) -> SimError {
        SimError::Api {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// Runs the simulated nodes until `shutdown` resolves.
///
/// Registers `config.nodes` nodes, then keeps their heartbeats going and drives their pods.
/// When `shutdown` resolves, heartbeats stop (the node lifecycle controller then marks the
/// nodes NotReady); nodes and pods are left as they are.
pub async fn run(
    client: kube::Client,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    config.validate()?;
    let config = Arc::new(config);
    let nodes = Arc::new(node::NodeSet::new(&config));
    heartbeat::ensure_lease_namespace(&client).await?;

    let (stop_heartbeats, heartbeats_stopped) = tokio::sync::watch::channel(false);
    let (stop_pods, pods_stopped) = futures::channel::oneshot::channel::<()>();
    let work = async {
        heartbeat::register_all(&client, &nodes, &config).await;
        tracing::info!(nodes = nodes.len(), "simulated nodes registered");
        tokio::join!(
            heartbeat::run(
                client.clone(),
                nodes.clone(),
                config.clone(),
                heartbeats_stopped
            ),
            pods::run(client.clone(), nodes.clone(), config.clone(), pods_stopped),
        );
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut work => return Ok(()),
        () = &mut shutdown => {}
    }
    tracing::info!("simulated nodes stopping");
    let _ = stop_heartbeats.send(true);
    let _ = stop_pods.send(());
    // In-flight reconciles finish; bounded so a hung API server cannot hold shutdown.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), work).await;
    Ok(())
}
