//! The krust service proxy (kube-proxy): watches Services and EndpointSlices and keeps the
//! node's data path sending each service address to the service's endpoints.
//!
//! Layout:
//! - [`rules`]: the wanted data path, computed from Services and EndpointSlices.
//! - [`backend`]: the `ProxyBackend` trait, nftables (real), an in-memory fake, and the
//!   suite both pass.
//!
//! [`run`] watches through the API (so it works against any API server), coalesces bursts
//! of changes, and syncs only when the rules changed, plus a periodic resync that puts back
//! rules someone else removed.

pub mod backend;
pub mod rules;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_watch::Watched;
use kube::Api;
use tokio::sync::Notify;

pub use backend::{ProxyBackend, ProxyError};

/// How the proxy paces its syncs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Changes arriving within this window are applied together (upstream's
    /// `--min-sync-period`, default 1 s there; we keep it short so services work at once).
    pub min_sync_period: Duration,
    /// Rules are rewritten at least this often even without changes.
    pub sync_period: Duration,
    /// The node this proxy runs on: its endpoints are the local ones for
    /// `externalTrafficPolicy: Local` (None: every endpoint is local).
    pub node_name: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            min_sync_period: Duration::from_millis(100),
            sync_period: Duration::from_secs(30),
            node_name: None,
        }
    }
}

/// Runs until `shutdown`, leaving the rules in place (traffic keeps flowing while the
/// proxy restarts, as with upstream's kube-proxy).
pub async fn run(
    client: kube::Client,
    backend: Arc<dyn ProxyBackend>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let changed = Arc::new(Notify::new());
    let services = Watched::all(Api::<Service>::all(client.clone()), changed.clone());
    let slices = Watched::all(Api::<EndpointSlice>::all(client), changed.clone());
    let (services, slices) = (services.store(), slices.store());
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = async { tokio::join!(services.wait_until_ready(), slices.wait_until_ready()) } => {
            if r.0.is_err() || r.1.is_err() {
                return Err(ProxyError::Watch("the reflectors stopped".into()));
            }
        }
    }
    let mut last: Option<rules::ServiceRules> = None;
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
        // The caches' own objects, not copies: a sync reads each once.
        let (svcs, sls) = (services.state(), slices.state());
        let wanted = rules::compute(
            svcs.iter().map(|s| s.as_ref()),
            sls.iter().map(|s| s.as_ref()),
            config.node_name.as_deref(),
        );
        if !forced && last.as_ref() == Some(&wanted) {
            continue;
        }
        match backend.sync(&wanted).await {
            Ok(()) => {
                tracing::debug!(ports = wanted.ports.len(), "proxy rules synced");
                last = Some(wanted);
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy rules could not be written; retrying");
                last = None;
                changed.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
