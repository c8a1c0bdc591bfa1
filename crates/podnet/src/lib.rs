//! krust's pod network across nodes, as flannel's host-gw and VXLAN backends: every pod
//! reaches every pod by its IP with no NAT, every node reaches every pod, and only what
//! leaves the cluster CIDR is masqueraded. Each node's pods sit on its CNI bridge
//! (`krust0`, gateway the first address of the node's `spec.podCIDR`, made by the agent's
//! bridge plugin); this crate adds the routes between the nodes.
//!
//! Layout:
//! - [`net`]: [`Cidr`] and [`Mac`].
//! - [`plan`]: what the kernel should hold, a pure function of the Nodes (routes per
//!   remote pod CIDR, host-gw or VXLAN by [`Mode`]; VXLAN neighbour and forwarding
//!   entries from each node's [`VXLAN_MAC_ANNOTATION`]).
//! - [`reconcile`]: converging a backend to a plan, and removing everything
//!   ([`reconcile::cleanup`]); the same for every backend.
//! - [`backend`]: the [`PodNetBackend`] trait, iproute2 and nftables
//!   ([`backend::iproute::IpRoute`]), an in-memory fake, the suite both pass (in a network
//!   namespace for the real one) and an end-to-end test pinging between two namespaced
//!   "nodes" in host-gw and VXLAN modes.
//!
//! What is installed, all tagged so that a restart reconciles it without touching anything
//! else: routes with `proto 75` ([`backend::ROUTE_PROTOCOL`]); the VXLAN device (default
//! `krust.vxlan`, VNI 1, port 8472, `nolearning`, MTU 1450, holding the node's VTEP
//! address, its pod CIDR's network address, as a /32) with permanent neighbour and
//! forwarding entries; the nftables table `ip krust-podnet` (masquerading); accept rules
//! commented `krust-podnet` in other tables' forward chains that drop by policy; and
//! `net.ipv4.ip_forward=1`. [`cleanup`] removes all of it but the sysctl.
//!
//! [`run`] watches Nodes through the API (so it works against any API server) with the
//! node's own credentials: it reads every Node and writes only its own, publishing its
//! VXLAN MAC there with a merge patch. It coalesces bursts of changes, applies only when
//! the plan changed, and resyncs periodically (rereading the routing table and putting
//! back what someone else removed). The data path is IPv4 only.

pub mod backend;
pub mod net;
pub mod plan;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use krust_watch::Watched;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::sync::Notify;

pub use backend::{BackendError, Masquerade, PodNetBackend};
pub use net::{Cidr, Mac};
pub use plan::{Mode, VxlanConfig, VXLAN_MAC_ANNOTATION};

#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("watching Nodes: the watch stopped")]
    Watch,
    #[error("publishing the VXLAN MAC on Node {node}: {source}")]
    Publish {
        node: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// What the pod network is and how syncs are paced.
#[derive(Clone, Debug)]
pub struct PodNetConfig {
    /// This node's Node name.
    pub node_name: String,
    /// Every node's pod CIDR lies in it (e.g. 10.42.0.0/16).
    pub cluster_cidr: Cidr,
    /// The pod bridge (default `krust0`): what leaves by it is never masqueraded.
    pub bridge: String,
    pub mode: Mode,
    pub vxlan: VxlanConfig,
    /// Changes arriving within this window are applied together (default 100 ms).
    pub min_sync_period: Duration,
    /// The kernel is reconciled at least this often (default 30 s).
    pub sync_period: Duration,
}

impl PodNetConfig {
    /// Defaults for the rest: bridge `krust0`, [`Mode::Auto`], [`VxlanConfig::default`].
    pub fn new(node_name: &str, cluster_cidr: Cidr) -> PodNetConfig {
        PodNetConfig {
            node_name: node_name.to_string(),
            cluster_cidr,
            bridge: "krust0".to_string(),
            mode: Mode::Auto,
            vxlan: VxlanConfig::default(),
            min_sync_period: Duration::from_millis(100),
            sync_period: Duration::from_secs(30),
        }
    }

    fn masquerade(&self) -> Masquerade {
        Masquerade {
            cluster: self.cluster_cidr,
            bridge: self.bridge.clone(),
        }
    }
}

/// Runs on the host's network namespace until `shutdown`, leaving routes and rules in
/// place (pods keep their network while the agent restarts).
pub async fn run(
    client: kube::Client,
    config: PodNetConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PodNetError> {
    let backend = Arc::new(backend::iproute::IpRoute::host());
    run_with(client, backend, config, shutdown).await
}

/// Removes everything [`run`] installed on the host (`krust agent-reset`): its routes,
/// the VXLAN device named in `vxlan`, the masquerade table and the forward accept rules.
pub async fn cleanup(vxlan: &VxlanConfig) -> Result<(), PodNetError> {
    let backend = backend::iproute::IpRoute::host();
    Ok(reconcile::cleanup(&backend, &vxlan.device).await?)
}

/// [`run`] with any backend.
pub async fn run_with(
    client: kube::Client,
    backend: Arc<dyn PodNetBackend>,
    config: PodNetConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PodNetError> {
    let changed = Arc::new(Notify::new());
    let api = Api::<Node>::all(client);
    let nodes = Watched::all(api.clone(), changed.clone());
    let store = nodes.store().clone();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = store.wait_until_ready() => r.map_err(|_| PodNetError::Watch)?,
    }
    let mut state = SyncState::default();
    let mut resync = tokio::time::interval(config.sync_period);
    loop {
        let forced = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = changed.notified() => false,
            _ = resync.tick() => true,
        };
        if !forced {
            tokio::time::sleep(config.min_sync_period).await;
        }
        let listed: Vec<plan::NodeNet> = store
            .state()
            .iter()
            .map(|n| plan::NodeNet::from_node(n))
            .collect();
        match sync(&*backend, &api, &config, &listed, forced, &mut state).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "pod network not synced; retrying");
                state.last = None;
                changed.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What [`sync`] keeps between rounds.
#[derive(Default)]
struct SyncState {
    /// The last plan applied without errors.
    last: Option<plan::Desired>,
    /// How the kernel reaches each remote InternalIP; emptied on every resync.
    reach: HashMap<Ipv4Addr, Option<backend::Reach>>,
    /// Reported skips, so that each is logged once.
    skipped: BTreeMap<String, plan::Skip>,
}

/// One round: plan from `nodes`, converge the kernel, publish the VXLAN MAC.
async fn sync(
    backend: &dyn PodNetBackend,
    api: &Api<Node>,
    config: &PodNetConfig,
    nodes: &[plan::NodeNet],
    forced: bool,
    state: &mut SyncState,
) -> Result<(), PodNetError> {
    let own = nodes.iter().find(|n| n.name == config.node_name);
    let Some(local) = own.and_then(plan::Local::from_node) else {
        tracing::debug!(node = %config.node_name, "waiting for this Node's InternalIP and podCIDR");
        return Ok(());
    };
    if forced {
        state.reach.clear();
    }
    if config.mode != Mode::Vxlan {
        for ip in nodes
            .iter()
            .filter(|n| n.name != local.name)
            .filter_map(|n| n.internal_ip)
        {
            if let std::collections::hash_map::Entry::Vacant(e) = state.reach.entry(ip) {
                e.insert(backend.route_to(ip).await?);
            }
        }
    }
    let reach = &state.reach;
    let desired = plan::compute(&local, nodes, config.mode, &config.vxlan, |ip| {
        reach.get(&ip).cloned().flatten()
    });
    log_skips(&desired.skipped, &mut state.skipped);
    if !forced && state.last.as_ref() == Some(&desired) {
        return Ok(());
    }
    let applied = reconcile::apply(backend, &config.masquerade(), &desired).await?;
    let own_mac = own.and_then(|n| n.vxlan_mac);
    if let Some(mac) = applied.mac.filter(|m| Some(*m) != own_mac) {
        publish_mac(api, &config.node_name, mac).await?;
    }
    if let Some(first) = applied.errors.into_iter().next() {
        return Err(first.into());
    }
    if applied.changes > 0 {
        tracing::info!(
            routes = desired.routes.len(),
            changes = applied.changes,
            "pod network routes synced"
        );
    }
    state.last = Some(desired);
    Ok(())
}

fn log_skips(now: &BTreeMap<String, plan::Skip>, logged: &mut BTreeMap<String, plan::Skip>) {
    for (node, why) in now {
        if logged.get(node) != Some(why) {
            tracing::info!(%node, reason = ?why, "no route to this node's pods yet");
        }
    }
    *logged = now.clone();
}

/// Sets [`VXLAN_MAC_ANNOTATION`] on this node's own Node (a merge patch, which the node's
/// own credentials may make).
async fn publish_mac(api: &Api<Node>, node: &str, mac: Mac) -> Result<(), PodNetError> {
    let patch = serde_json::json!({
        "metadata": {"annotations": {VXLAN_MAC_ANNOTATION: mac.to_string()}}
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| PodNetError::Publish {
            node: node.to_string(),
            source: Box::new(e),
        })?;
    tracing::info!(%node, %mac, "published the VXLAN MAC");
    Ok(())
}
