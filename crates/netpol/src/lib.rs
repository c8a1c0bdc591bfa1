//! krust NetworkPolicy enforcement: watches NetworkPolicies, Pods and Namespaces and keeps
//! the node's data path letting through only what the policies allow to and from its pods.
//!
//! Layout:
//! - [`rules`]: what to enforce, a pure function of the API objects: per isolated pod
//!   address, the (peers, protocol, ports) allowed in and out, in a normal form.
//! - [`backend`]: the `PolicyBackend` trait, nftables (real: one table replaced per sync,
//!   verdict maps keyed by pod address), an in-memory fake, and the suite both pass (the
//!   nftables run uses network namespaces, a bridge and busybox servers).
//!
//! Semantics are upstream's `networking.k8s.io/v1`: a pod is isolated for ingress (egress)
//! once a policy of its namespace selects it with `Ingress` (`Egress`) in `policyTypes`
//! (defaulted as the API server does); an isolated direction lets through the union of
//! those policies' rules; replies to allowed connections always pass (conntrack); pods no
//! policy selects are open; a pod always reaches itself. Peers, ports (numbers, ranges,
//! names) and their edge cases are described in [`rules`].
//!
//! Deviations, both about the node's own traffic (upstream leaves it to the plugin, and
//! most plugins do the same):
//! - Traffic from the node itself to its pods is always allowed (kubelet probes need it);
//!   it never meets the policy chain, which hooks `forward` only.
//! - Egress from pods to the node's own addresses is not policed: it arrives through the
//!   `input` hook, including what the service proxy DNATs to the host (cluster DNS served
//!   in-process, an API server on the host).
//!
//! The data path is IPv4 only, as the rest of krust's pod network is.
//!
//! [`run`] watches through the API (so it works against any API server), coalesces bursts
//! of changes, syncs only when the computed rules changed, and resyncs periodically to put
//! back rules someone else removed. For timing, [`rules::compute`] and
//! [`backend::nftables::Nftables::render`] are pure and public.

pub mod backend;
pub mod rules;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use krust_watch::Watched;
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::Notify;

pub use backend::{PolicyBackend, PolicyError};

/// What to enforce and how the syncs are paced.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Only pods on this node are enforced (their peers may be anywhere); None: every pod,
    /// for a single-node cluster or a test.
    pub node_name: Option<String>,
    /// Changes arriving within this window are applied together.
    pub min_sync_period: Duration,
    /// Rules are rewritten at least this often even without changes.
    pub sync_period: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            node_name: None,
            min_sync_period: Duration::from_millis(100),
            sync_period: Duration::from_secs(30),
        }
    }
}

fn drop_annotations<K: kube::Resource>(o: &mut K) {
    o.meta_mut().annotations = None;
}

/// Runs until `shutdown`, leaving the rules in place: pods stay isolated while the agent
/// restarts, rather than opening up.
pub async fn run(
    client: kube::Client,
    backend: Arc<dyn PolicyBackend>,
    config: PolicyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PolicyError> {
    let changed = Arc::new(Notify::new());
    // The rules read neither managedFields nor annotations: the caches do without.
    let trim = || watcher::Config::default();
    let policies = Watched::start(
        Api::<NetworkPolicy>::all(client.clone()),
        trim(),
        changed.clone(),
        drop_annotations,
    );
    let pods = Watched::start(
        Api::<Pod>::all(client.clone()),
        trim(),
        changed.clone(),
        drop_annotations,
    );
    let namespaces = Watched::start(
        Api::<Namespace>::all(client),
        trim(),
        changed.clone(),
        drop_annotations,
    );
    let (policies, pods, namespaces) = (policies.store(), pods.store(), namespaces.store());
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = async { tokio::join!(
            policies.wait_until_ready(), pods.wait_until_ready(), namespaces.wait_until_ready()
        ) } => {
            if r.0.is_err() || r.1.is_err() || r.2.is_err() {
                return Err(PolicyError::Watch("the reflectors stopped".into()));
            }
        }
    }
    let mut last: Option<rules::PolicyRules> = None;
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
        let started = Instant::now();
        let (nps, ps, nss) = (policies.state(), pods.state(), namespaces.state());
        let wanted = rules::compute(
            nps.iter().map(|p| p.as_ref()),
            ps.iter().map(|p| p.as_ref()),
            nss.iter().map(|n| n.as_ref()),
            config.node_name.as_deref(),
        );
        let unchanged = last.as_ref() == Some(&wanted);
        if !forced && unchanged {
            continue;
        }
        match backend.sync(&wanted).await {
            Ok(()) => {
                let (ingress, egress) = wanted.isolated();
                let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if unchanged {
                    tracing::debug!(took_ms, "network policy rules resynced");
                } else {
                    tracing::info!(
                        policies = nps.len(),
                        isolated_ingress = ingress,
                        isolated_egress = egress,
                        took_ms,
                        "network policy rules synced"
                    );
                }
                last = Some(wanted);
            }
            Err(e) => {
                tracing::warn!(error = %e, "network policy rules could not be written; retrying");
                last = None;
                changed.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
