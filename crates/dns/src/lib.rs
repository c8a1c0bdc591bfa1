//! krust's cluster DNS, in-process in `krust server` (the role CoreDNS plays in a cluster):
//! Services, headless endpoints and pods as DNS names under the cluster domain, everything
//! else forwarded to the host's resolvers.
//!
//! Layout:
//! - [`records`]: the zone, a pure function of Services and EndpointSlices.
//! - [`server`]: the hickory-server listeners (UDP and TCP) and the request handler.
//! - [`resolvconf`]: reading and writing `resolv.conf` (upstreams here, pods' in the agent).
//!
//! [`run`] publishes the `kube-system/kube-dns` Service (a fixed cluster IP, no selector)
//! with an EndpointSlice pointing at this server's address, as upstream's endpoint reconciler
//! does for `kubernetes`, so pods reach it through the service proxy. It watches Services and
//! EndpointSlices and swaps in a new zone within a moment of any change.

pub mod records;
pub mod resolvconf;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use krust_watch::Watched;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::sync::Notify;

pub use records::Zone;
pub use server::{ClusterDns, ZoneHandle};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("publishing the kube-dns Service: {0}")]
    Publish(#[source] kube::Error),
    #[error("watching the API: {0}")]
    Watch(String),
}

/// How the cluster DNS is set up.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where the server listens (port 0: a free one), UDP and TCP.
    pub listen: SocketAddr,
    /// The address pods reach the server at, the kube-dns EndpointSlice's endpoint (the
    /// listen address unless that is unspecified).
    pub advertise: IpAddr,
    /// The `kube-dns` Service's cluster IP (upstream's convention: the service CIDR's tenth).
    pub service_ip: IpAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Servers that names outside the cluster are forwarded to (none: REFUSED).
    pub upstreams: Vec<SocketAddr>,
}

/// The name of the Service (and its slice) pods send their queries to.
pub const SERVICE_NAME: &str = "kube-dns";
pub const NAMESPACE: &str = "kube-system";
const FIELD_MANAGER: &str = "krust-dns";

/// Serves cluster DNS until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: DnsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    let zone = ZoneHandle::new(
        Zone::empty(&config.domain)
            .map_err(|e| DnsError::Config(format!("cluster domain {:?}: {e}", config.domain)))?,
    );
    let forwarder = if config.upstreams.is_empty() {
        None
    } else {
        Some(server::forwarder(&config.upstreams)?)
    };
    let listening = server::listen(config.listen, ClusterDns::new(zone.clone(), forwarder)).await?;
    tracing::info!(addr = %listening.addr, "cluster DNS listening");
    publish(&client, &config, listening.addr.port()).await?;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        r = follow(client, config.domain.clone(), zone) => r?,
    }
    listening.stop().await;
    Ok(())
}

/// Creates or updates the kube-dns Service and its EndpointSlice (server-side apply, so a
/// restart with another port or address rewrites them).
async fn publish(client: &kube::Client, config: &DnsConfig, port: u16) -> Result<(), DnsError> {
    let (service, slice) = kube_dns_objects(config, port);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    services
        .patch(SERVICE_NAME, &params, &Patch::Apply(&service))
        .await
        .map_err(DnsError::Publish)?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    slices
        .patch(SERVICE_NAME, &params, &Patch::Apply(&slice))
        .await
        .map_err(DnsError::Publish)?;
    Ok(())
}

/// The kube-dns Service (ports 53/UDP `dns` and 53/TCP `dns-tcp`, as upstream's manifests)
/// and the slice that sends them to `config.advertise:port`.
pub fn kube_dns_objects(config: &DnsConfig, port: u16) -> (Service, EndpointSlice) {
    let labels: BTreeMap<String, String> = [
        ("k8s-app", "kube-dns"),
        ("kubernetes.io/cluster-service", "true"),
        ("kubernetes.io/name", "CoreDNS"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ports = [("dns", "UDP"), ("dns-tcp", "TCP")];
    let service = Service {
        metadata: ObjectMeta {
            name: Some(SERVICE_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(config.service_ip.to_string()),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, proto)| ServicePort {
                        name: Some(name.to_string()),
                        port: 53,
                        protocol: Some(proto.to_string()),
                        target_port: Some(IntOrString::Int(i32::from(port))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut slice_labels = labels;
    slice_labels.insert("kubernetes.io/service-name".into(), SERVICE_NAME.into());
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "krust-dns".into(),
    );
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(SERVICE_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(slice_labels),
            ..Default::default()
        },
        address_type: if config.advertise.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
        .into(),
        endpoints: vec![Endpoint {
            addresses: vec![config.advertise.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(
            ports
                .iter()
                .map(|(name, proto)| EndpointPort {
                    name: Some(name.to_string()),
                    port: Some(i32::from(port)),
                    protocol: Some(proto.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    (service, slice)
}

/// Changes arriving within this window are applied together; well inside the 1 s in
/// which answers must follow the cluster.
const COALESCE: Duration = Duration::from_millis(50);

/// Rebuilds the zone whenever Services or EndpointSlices change.
async fn follow(client: kube::Client, domain: String, zone: ZoneHandle) -> Result<(), DnsError> {
    let changed = Arc::new(Notify::new());
    let services = Watched::all(Api::<Service>::all(client.clone()), changed.clone());
    let slices = Watched::all(Api::<EndpointSlice>::all(client), changed.clone());
    let (services, slices) = (services.store(), slices.store());
    let (a, b) = tokio::join!(services.wait_until_ready(), slices.wait_until_ready());
    if a.is_err() || b.is_err() {
        return Err(DnsError::Watch("the reflectors stopped".into()));
    }
    loop {
        let started = Instant::now();
        let (svcs, sls) = (services.state(), slices.state());
        match Zone::build(
            &domain,
            svcs.iter().map(|s| s.as_ref()),
            sls.iter().map(|s| s.as_ref()),
        ) {
            Ok(z) => zone.set(z),
            Err(e) => tracing::warn!(error = %e, "building the DNS zone failed"),
        }
        tracing::debug!(services = svcs.len(), took = ?started.elapsed(), "DNS zone rebuilt");
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
    }
}
