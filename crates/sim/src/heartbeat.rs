//! Node registration and heartbeats.
//!
//! Registration creates each Node (or, if it exists, reconciles its labels as a kubelet does),
//! writes its status and its Lease. Then one loop ticks `lease_interval / 100` apart; node `i`
//! renews its Lease at ticks `i mod 100` and refreshes its status at ticks
//! `i mod (status_interval / tick)`, so writes are spread evenly over each period instead of
//! bursting. A node whose previous heartbeat is still in flight is skipped for that round.
//! A status write that finds the Node gone registers it again; a Lease renewal that finds the
//! Lease gone recreates it. Failures are logged and retried on the next round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::node::{self, NodeSet, SimNode, LEASE_NAMESPACE};
use crate::{SimConfig, SimError};

/// Lease renewal slots per `lease_interval`.
const SLOTS: u32 = 100;

/// Creates `kube-node-lease` if it is missing (upstream's API server makes it at start).
pub async fn ensure_lease_namespace(client: &kube::Client) -> Result<(), SimError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(SimError::api("creating namespace kube-node-lease", e)),
    }
}

/// Registers every node, `max_in_flight` at a time. Failures are logged; heartbeats retry.
pub async fn register_all(client: &kube::Client, nodes: &NodeSet, config: &SimConfig) {
    futures::stream::iter(nodes.iter())
        .map(|n| async move {
            if let Err(e) = register(client, n, config).await {
                tracing::warn!(node = %n.name, error = %e, "registering simulated node");
            }
        })
        .buffer_unordered(config.max_in_flight)
        .collect::<()>()
        .await;
}

async fn register(
    client: &kube::Client,
    n: &SimNode,
    config: &SimConfig,
) -> Result<(), kube::Error> {
    create_node(client, n, config).await?;
    update_status(client, n, config).await?;
    renew_lease(client, n, config).await
}

/// Creates the Node, or reconciles the labels of an existing one.
async fn create_node(
    client: &kube::Client,
    n: &SimNode,
    config: &SimConfig,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let node = match api
        .create(&PostParams::default(), &node::build_node(config, n, now))
        .await
    {
        Ok(node) => node,
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let patch = json!({"metadata": {"labels": node::node_labels(config, n)}});
            api.patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?
        }
        Err(e) => return Err(e),
    };
    n.observe(&node, now);
    Ok(())
}

/// Writes the node's full status with a fresh heartbeat; registers the node again if it was
/// deleted.
async fn update_status(
    client: &kube::Client,
    n: &SimNode,
    config: &SimConfig,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    for attempt in 0..2 {
        let now = Timestamp::now();
        let grace = Duration::from_secs(config.lease_duration_seconds.unsigned_abs().into());
        let since = n.ready_since(now, grace);
        let patch = json!({"status": node::node_status(config, n, now, since)});
        match api
            .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(node) => {
                n.observe(&node, now);
                n.beat(now);
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.is_not_found() && attempt == 0 => {
                tracing::info!(node = %n.name, "simulated node was deleted; registering it again");
                if let Ok(mut live) = n.live.write() {
                    *live = node::NodeLive::default();
                }
                create_node(client, n, config).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renews the node's Lease, creating it if it is missing.
async fn renew_lease(
    client: &kube::Client,
    n: &SimNode,
    config: &SimConfig,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = Timestamp::now();
    let patch = json!({"spec": node::lease_spec(config, &n.name, now)});
    match api
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            n.beat(now);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            let uid = n.live().uid;
            let lease = node::build_lease(config, &n.name, uid.as_deref(), now);
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[derive(Clone, Copy)]
enum Beat {
    Lease,
    Status,
}

/// Which nodes beat at tick `t`: every `slots`-th node starting at `t mod slots`.
fn due(t: u64, slots: u64, nodes: usize) -> impl Iterator<Item = usize> {
    ((t % slots) as usize..nodes).step_by(slots as usize)
}

/// Keeps the heartbeats going until `stop` turns true; in-flight writes are then abandoned.
pub async fn run(
    client: kube::Client,
    nodes: Arc<NodeSet>,
    config: Arc<SimConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let tick = (config.lease_interval / SLOTS).max(Duration::from_millis(1));
    let status_slots = (config.status_interval.as_nanos() / tick.as_nanos()).max(1) as u64;
    let busy: Arc<Vec<[AtomicBool; 2]>> = Arc::new(
        (0..nodes.len())
            .map(|_| [AtomicBool::new(false), AtomicBool::new(false)])
            .collect(),
    );
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut tasks = JoinSet::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut t: u64 = 0;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = interval.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        }
        while tasks.try_join_next().is_some() {}
        let beats = due(t, u64::from(SLOTS), nodes.len())
            .map(|i| (i, Beat::Lease))
            .chain(due(t, status_slots, nodes.len()).map(|i| (i, Beat::Status)));
        for (i, beat) in beats {
            if busy[i][beat as usize].swap(true, Ordering::AcqRel) {
                continue;
            }
            let (client, nodes, config, busy, permits) = (
                client.clone(),
                nodes.clone(),
                config.clone(),
                busy.clone(),
                permits.clone(),
            );
            tasks.spawn(async move {
                let _permit = permits.acquire().await;
                let n = nodes.at(i);
                let res = match beat {
                    Beat::Lease => renew_lease(&client, n, &config).await,
                    Beat::Status => update_status(&client, n, &config).await,
                };
                if let Err(e) = res {
                    tracing::warn!(node = %n.name, error = %e, "simulated node heartbeat");
                }
                busy[i][beat as usize].store(false, Ordering::Release);
            });
        }
        t = t.wrapping_add(1);
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_beats_once_per_period() {
        for nodes in [3usize, 100, 5000] {
            let mut count = vec![0; nodes];
            let mut per_tick_max = 0;
            for t in 0..u64::from(SLOTS) {
                let d: Vec<_> = due(t, u64::from(SLOTS), nodes).collect();
                per_tick_max = per_tick_max.max(d.len());
                for i in d {
                    count[i] += 1;
                }
            }
            assert!(count.iter().all(|&c| c == 1), "{nodes} nodes");
            assert_eq!(per_tick_max, nodes.div_ceil(SLOTS as usize));
        }
    }
}
