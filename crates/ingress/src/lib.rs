//! The krust ingress controller: serves networking.k8s.io/v1 Ingresses of our
//! IngressClass with an HTTP(S) reverse proxy that sends requests straight to ready
//! endpoints.
//!
//! Layout:
//! - [`routes`]: pure host and path matching, precedence and the merge of several
//!   Ingresses (every upstream rule, unit tested; no API types).
//! - [`class`]: which Ingresses are ours (IngressClass, default class, legacy annotation)
//!   and creating our IngressClass at start.
//! - [`backend`]: a service backend resolved through Service and EndpointSlices to
//!   endpoint addresses (ready, else serving-terminating), with round-robin.
//! - [`table`]: the immutable routing table built from one snapshot of the API objects,
//!   and the [`TableHandle`] it is swapped through.
//! - [`tls`]: certificates from `kubernetes.io/tls` Secrets, the SNI resolver and the
//!   self-signed fallback certificate.
//! - [`proxy`]: the hyper data path (HTTP, HTTPS, upgrades, retries, forwarded headers).
//! - [`status`]: `status.loadBalancer` of served Ingresses.
//!
//! [`run`] binds both listeners first (so a port clash fails at once), then watches
//! Ingresses, IngressClasses, Services, EndpointSlices and Secrets with reflectors,
//! coalesces bursts of changes, rebuilds the table and writes status. The data path only
//! ever reads a whole table, so it needs no API server: tests hand it a table directly.

pub mod backend;
pub mod class;
pub mod proxy;
pub mod routes;
pub mod status;
pub mod table;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use krust_watch::Watched;
use kube::runtime::watcher;
use kube::Api;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use table::{Objects, Table, TableHandle};
pub use tls::CertError;

/// Changes arriving within this window are applied in one rebuild.
const COALESCE: Duration = Duration::from_millis(100);
/// The table is rebuilt and status rechecked at least this often (retries failed status
/// writes).
const RESYNC: Duration = Duration::from_secs(30);

/// How the controller listens and which Ingresses it serves.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// The IngressClass we create and serve (`krust`).
    pub class_name: String,
    /// The `spec.controller` of IngressClasses we serve (`krust.io/ingress`).
    pub controller: String,
    /// Addresses written to `status.loadBalancer.ingress`; empty leaves status alone.
    pub publish: Vec<IpAddr>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 443)),
            class_name: "krust".into(),
            controller: "krust.io/ingress".into(),
            publish: Vec::new(),
        }
    }
}

/// What stops the controller.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed")]
    Certificate(#[from] CertError),
    #[error("TLS configuration rejected")]
    Tls(#[source] rustls::Error),
    #[error("API request failed")]
    Api(#[source] Box<kube::Error>),
    #[error("watch failed: {0}")]
    Watch(String),
}

/// Runs the controller until `shutdown`. Listeners close on return; requests in flight on
/// already accepted connections are left to finish.
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngressError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| IngressError::Bind { addr, source })
    };
    let http = bind(config.http_addr).await?;
    let https = bind(config.https_addr).await?;
    let table = TableHandle::default();
    let tls = tls::server_config(table.clone(), tls::fallback_certificate()?)
        .map_err(IngressError::Tls)?;

    // Dropping the set aborts everything in it, on every way out of this function.
    let mut tasks = JoinSet::new();
    tasks.spawn(proxy::serve_http(
        http,
        table.clone(),
        std::future::pending(),
    ));
    tasks.spawn(proxy::serve_https(
        https,
        table.clone(),
        tls,
        std::future::pending(),
    ));
    let classes = Api::<IngressClass>::all(client.clone());
    let (name, controller) = (config.class_name.clone(), config.controller.clone());
    tasks.spawn(async move {
        // Retries until done; serving does not wait for it.
        let _ = class::ensure_class(&classes, &name, &controller).await;
    });
    tracing::info!(http = %config.http_addr, https = %config.https_addr, "ingress listening");
    tokio::select! {
        _ = shutdown => Ok(()),
        r = controller_loop(client, &config, &table) => r,
    }
}

/// The caches the table is built from; their watches stop when this is dropped.
struct Caches {
    ingresses: Watched<Ingress>,
    classes: Watched<IngressClass>,
    services: Watched<Service>,
    slices: Watched<EndpointSlice>,
    secrets: Watched<Secret>,
}

impl Caches {
    fn start(client: &kube::Client, changed: &Arc<Notify>) -> Caches {
        let c = || client.clone();
        let n = || changed.clone();
        let slices = watcher::Config::default().labels(backend::SERVICE_NAME_LABEL);
        Caches {
            ingresses: Watched::all(Api::all(c()), n()),
            classes: Watched::all(Api::all(c()), n()),
            services: Watched::all(Api::all(c()), n()),
            slices: Watched::start(Api::all(c()), slices, n(), |_| {}),
            secrets: Watched::start(Api::all(c()), watcher::Config::default(), n(), slim_secret),
        }
    }

    async fn ready(&self) -> Result<(), IngressError> {
        let r = tokio::try_join!(
            self.ingresses.store().wait_until_ready(),
            self.classes.store().wait_until_ready(),
            self.services.store().wait_until_ready(),
            self.slices.store().wait_until_ready(),
            self.secrets.store().wait_until_ready(),
        );
        r.map(|_| ())
            .map_err(|e| IngressError::Watch(e.to_string()))
    }

    fn snapshot(&self) -> Objects {
        Objects {
            ingresses: self.ingresses.store().state(),
            classes: self.classes.store().state(),
            services: self.services.store().state(),
            slices: self.slices.store().state(),
            secrets: self.secrets.store().state(),
        }
    }
}

/// Secrets other than TLS ones are never read: keep neither their data nor their
/// annotations (kubectl's last-applied copy would duplicate the data) in the cache.
fn slim_secret(s: &mut Secret) {
    s.metadata.annotations = None;
    if s.type_.as_deref() != Some(tls::TLS_SECRET_TYPE) {
        s.data = None;
        s.string_data = None;
    }
}

/// Watches until dropped: rebuilds the table after each burst of changes.
async fn controller_loop(
    client: kube::Client,
    config: &IngressConfig,
    table: &TableHandle,
) -> Result<(), IngressError> {
    let changed = Arc::new(Notify::new());
    let caches = Caches::start(&client, &changed);
    caches.ready().await?;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(COALESCE).await,
            _ = resync.tick() => {}
        }
        let built = table::build(&caches.snapshot(), &config.class_name, &config.controller);
        tracing::debug!(served = built.served.len(), "ingress table rebuilt");
        table.store(built.table);
        if let Err(e) = status::sync(&client, &built.served, &config.publish).await {
            tracing::debug!(error = %e, "ingress status incomplete; retrying on resync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let c = IngressConfig::default();
        assert_eq!(c.http_addr.port(), 80);
        assert_eq!(c.https_addr.port(), 443);
        assert_eq!(c.class_name, "krust");
        assert_eq!(c.controller, "krust.io/ingress");
        assert!(c.publish.is_empty());
    }

    #[test]
    fn non_tls_secrets_are_slimmed() {
        let mut s = Secret {
            type_: Some("Opaque".into()),
            data: Some(Default::default()),
            ..Default::default()
        };
        slim_secret(&mut s);
        assert!(s.data.is_none());
        let mut t = Secret {
            type_: Some(tls::TLS_SECRET_TYPE.into()),
            data: Some(Default::default()),
            ..Default::default()
        };
        slim_secret(&mut t);
        assert!(t.data.is_some());
    }

    #[tokio::test]
    async fn run_reports_a_port_clash() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let config = IngressConfig {
            http_addr: addr,
            https_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        };
        // A client that would fail every request: run must fail before using it.
        let kube_config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let client = kube::Client::try_from(kube_config).expect("client");
        let r = run(client, config, std::future::pending()).await;
        assert!(matches!(r, Err(IngressError::Bind { addr: a, .. }) if a == addr));
    }
}
