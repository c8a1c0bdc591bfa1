//! Backends: an Ingress's `service` backend resolved to endpoint addresses.
//!
//! The Ingress names a Service port by number or name; the EndpointSlice controller has
//! already resolved the Service's `targetPort` (named container ports too) into the slice's
//! port of the same name, so we go straight to pod IP:port and skip the Service's virtual
//! IP, as ingress-nginx does. Ready endpoints are used; when none is ready, serving and
//! terminating ones are (kube-proxy's fallback, so draining pods still answer rather than
//! every request failing).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::IngressServiceBackend;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a backend has nothing to send to; each answers 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The Service does not exist (yet).
    ServiceMissing,
    /// The Service has no port of that number or name.
    PortMissing,
    /// `ExternalName` Services are not proxied (they would need DNS at request time).
    ExternalName,
    /// `resource` backends (and backends naming nothing) are not supported.
    Unsupported,
    /// The Service exists but no endpoint is ready or serving.
    NoEndpoints,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unavailable::ServiceMissing => "service not found",
            Unavailable::PortMissing => "service port not found",
            Unavailable::ExternalName => "ExternalName services are not supported",
            Unavailable::Unsupported => "only service backends are supported",
            Unavailable::NoEndpoints => "no ready endpoints",
        })
    }
}

/// Where requests for one (namespace, service, port) go.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs.
    pub label: String,
    /// Endpoint addresses, sorted; empty when unavailable.
    pub endpoints: Vec<SocketAddr>,
    pub unavailable: Option<Unavailable>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl Backend {
    pub fn new(label: String, endpoints: Vec<SocketAddr>) -> Backend {
        let unavailable = endpoints.is_empty().then_some(Unavailable::NoEndpoints);
        Backend {
            label,
            endpoints,
            unavailable,
            next: AtomicUsize::new(0),
        }
    }

    pub fn unavailable(label: String, why: Unavailable) -> Backend {
        Backend {
            label,
            endpoints: Vec::new(),
            unavailable: Some(why),
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoints in the order to try them: round-robin start, then each other once.
    pub fn attempt_order(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| self.endpoints[(start + i) % n])
    }
}

/// The Service port an Ingress backend names: by name, or by port number.
fn service_port<'a>(svc: &'a Service, backend: &IngressServiceBackend) -> Option<&'a ServicePort> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    let want = backend.port.as_ref()?;
    ports.iter().find(|p| match (&want.name, want.number) {
        (Some(name), _) if !name.is_empty() => p.name.as_deref() == Some(name.as_str()),
        (_, Some(number)) => p.port == number,
        _ => false,
    })
}

/// Resolves an Ingress service backend in `namespace`. `slices` may hold any slices; those
/// of other Services are skipped.
pub fn resolve<'a>(
    namespace: &str,
    backend: &IngressServiceBackend,
    service: Option<&Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Backend {
    let port_label = match &backend.port {
        Some(p) => match (&p.name, p.number) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(n)) => n.to_string(),
            _ => "?".into(),
        },
        None => "?".into(),
    };
    let label = format!("{namespace}/{}:{port_label}", backend.name);
    let Some(svc) = service else {
        return Backend::unavailable(label, Unavailable::ServiceMissing);
    };
    if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Backend::unavailable(label, Unavailable::ExternalName);
    }
    let Some(port) = service_port(svc, backend) else {
        return Backend::unavailable(label, Unavailable::PortMissing);
    };
    let port_name = port.name.as_deref().unwrap_or("");
    let (mut ready, mut fallback) = (BTreeSet::new(), BTreeSet::new());
    for slice in slices {
        if !belongs_to(slice, namespace, &backend.name) {
            continue;
        }
        let Some(target) = slice_port(slice, port_name) else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = endpoint_ip(ep) else { continue };
            match endpoint_state(ep) {
                EndpointState::Ready => ready.insert(SocketAddr::new(ip, target)),
                EndpointState::Terminating => fallback.insert(SocketAddr::new(ip, target)),
                EndpointState::Unusable => false,
            };
        }
    }
    let chosen = if ready.is_empty() { fallback } else { ready };
    Backend::new(label, chosen.into_iter().collect())
}

fn belongs_to(slice: &EndpointSlice, namespace: &str, service: &str) -> bool {
    slice.metadata.namespace.as_deref().unwrap_or("") == namespace
        && slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_some_and(|s| s == service)
        && slice.address_type != "FQDN"
}

/// The slice's port for the Service port named `name` ("" for an unnamed port).
fn slice_port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    let port = slice
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == name)?;
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return None;
    }
    u16::try_from(port.port?).ok().filter(|p| *p != 0)
}

/// The first address, as kube-proxy uses (the others are the same pod).
fn endpoint_ip(ep: &Endpoint) -> Option<IpAddr> {
    ep.addresses.first()?.parse().ok()
}

enum EndpointState {
    Ready,
    /// Terminating but still serving: used only when nothing is ready.
    Terminating,
    Unusable,
}

/// Upstream: a missing `ready` or `serving` means unknown and is taken as true; a missing
/// `terminating` as false.
fn endpoint_state(ep: &Endpoint) -> EndpointState {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        EndpointState::Ready
    } else if serving && terminating {
        EndpointState::Terminating
    } else {
        EndpointState::Unusable
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::api::networking::v1::ServiceBackendPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    /// A Service with (name, port, targetPort) ports.
    pub(crate) fn service(ns: &str, name: &str, ports: &[(Option<&str>, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, t)| ServicePort {
                            name: n.map(String::from),
                            port: *p,
                            target_port: Some(match t.parse::<i32>() {
                                Ok(n) => IntOrString::Int(n),
                                Err(_) => IntOrString::String(t.to_string()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Endpoint conditions as (ready, serving, terminating).
    pub(crate) type Conds = (Option<bool>, Option<bool>, Option<bool>);
    pub(crate) const READY: Conds = (Some(true), Some(true), Some(false));

    /// A slice of `service` with (name, port) ports and (ip, conditions) endpoints.
    pub(crate) fn slice(
        ns: &str,
        service: &str,
        ports: &[(Option<&str>, i32)],
        endpoints: &[(&str, Conds)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{service}-{}", endpoints.len())),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_string(),
                    service.to_string(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(String::from),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: endpoints
                .iter()
                .map(|(ip, (r, s, t))| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *r,
                        serving: *s,
                        terminating: *t,
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    pub(crate) fn by_number(name: &str, number: i32) -> IngressServiceBackend {
        IngressServiceBackend {
            name: name.into(),
            port: Some(ServiceBackendPort {
                name: None,
                number: Some(number),
            }),
        }
    }

    pub(crate) fn by_name(name: &str, port: &str) -> IngressServiceBackend {
        IngressServiceBackend {
            name: name.into(),
            port: Some(ServiceBackendPort {
                name: Some(port.into()),
                number: None,
            }),
        }
    }

    fn addrs(b: &Backend) -> Vec<String> {
        b.endpoints.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn port_by_number_maps_to_the_named_slice_port() {
        let svc = service(
            "ns",
            "web",
            &[(Some("http"), 80, "http-alt"), (Some("admin"), 81, "9000")],
        );
        let sl = slice(
            "ns",
            "web",
            &[(Some("http"), 8080), (Some("admin"), 9000)],
            &[("10.0.0.1", READY)],
        );
        let b = resolve("ns", &by_number("web", 80), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.1:8080"]);
        assert_eq!(b.label, "ns/web:80");
        let b = resolve("ns", &by_number("web", 81), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.1:9000"]);
    }

    #[test]
    fn port_by_name() {
        let svc = service(
            "ns",
            "web",
            &[(Some("http"), 80, "8080"), (Some("admin"), 81, "9000")],
        );
        let sl = slice(
            "ns",
            "web",
            &[(Some("http"), 8080), (Some("admin"), 9000)],
            &[("10.0.0.1", READY)],
        );
        let b = resolve("ns", &by_name("web", "admin"), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.1:9000"]);
        let b = resolve("ns", &by_name("web", "nope"), Some(&svc), [&sl]);
        assert_eq!(b.unavailable, Some(Unavailable::PortMissing));
    }

    #[test]
    fn unnamed_single_port() {
        let svc = service("ns", "web", &[(None, 80, "8080")]);
        let sl = slice(
            "ns",
            "web",
            &[(None, 8080)],
            &[("10.0.0.2", READY), ("10.0.0.1", READY)],
        );
        let b = resolve("ns", &by_number("web", 80), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        let b = resolve("ns", &by_number("web", 81), Some(&svc), [&sl]);
        assert_eq!(b.unavailable, Some(Unavailable::PortMissing));
    }

    #[test]
    fn missing_service_and_other_services_slices() {
        let sl = slice("ns", "web", &[(None, 8080)], &[("10.0.0.1", READY)]);
        let b = resolve("ns", &by_number("web", 80), None, [&sl]);
        assert_eq!(b.unavailable, Some(Unavailable::ServiceMissing));
        let svc = service("ns", "web", &[(None, 80, "8080")]);
        let other_ns = slice("other", "web", &[(None, 8080)], &[("10.0.0.9", READY)]);
        let other_svc = slice("ns", "api", &[(None, 8080)], &[("10.0.0.8", READY)]);
        let b = resolve(
            "ns",
            &by_number("web", 80),
            Some(&svc),
            [&other_ns, &other_svc],
        );
        assert_eq!(b.unavailable, Some(Unavailable::NoEndpoints));
        assert!(b.endpoints.is_empty());
    }

    #[test]
    fn ready_endpoints_first_then_serving_terminating() {
        let svc = service("ns", "web", &[(None, 80, "8080")]);
        let term = (Some(false), Some(true), Some(true));
        let not_ready = (Some(false), Some(false), Some(false));
        let unknown = (None, None, None);
        let sl = slice(
            "ns",
            "web",
            &[(None, 8080)],
            &[
                ("10.0.0.1", READY),
                ("10.0.0.2", term),
                ("10.0.0.3", not_ready),
                ("10.0.0.4", unknown),
            ],
        );
        let b = resolve("ns", &by_number("web", 80), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.1:8080", "10.0.0.4:8080"]);
        let sl = slice(
            "ns",
            "web",
            &[(None, 8080)],
            &[("10.0.0.2", term), ("10.0.0.3", not_ready)],
        );
        let b = resolve("ns", &by_number("web", 80), Some(&svc), [&sl]);
        assert_eq!(addrs(&b), ["10.0.0.2:8080"]);
        let draining = (Some(false), Some(false), Some(true));
        let sl = slice("ns", "web", &[(None, 8080)], &[("10.0.0.2", draining)]);
        let b = resolve("ns", &by_number("web", 80), Some(&svc), [&sl]);
        assert_eq!(b.unavailable, Some(Unavailable::NoEndpoints));
    }

    #[test]
    fn endpoints_merge_across_slices_without_duplicates() {
        let svc = service("ns", "web", &[(None, 80, "8080")]);
        let a = slice("ns", "web", &[(None, 8080)], &[("10.0.0.1", READY)]);
        let b = slice(
            "ns",
            "web",
            &[(None, 8080)],
            &[("10.0.0.1", READY), ("10.0.0.2", READY)],
        );
        let be = resolve("ns", &by_number("web", 80), Some(&svc), [&a, &b]);
        assert_eq!(addrs(&be), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    }

    #[test]
    fn external_name_is_unavailable() {
        let mut svc = service("ns", "web", &[(None, 80, "80")]);
        if let Some(s) = svc.spec.as_mut() {
            s.type_ = Some("ExternalName".into());
        }
        let b = resolve("ns", &by_number("web", 80), Some(&svc), []);
        assert_eq!(b.unavailable, Some(Unavailable::ExternalName));
    }

    #[test]
    fn round_robin_tries_every_endpoint_once() {
        let eps: Vec<SocketAddr> = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let b = Backend::new("x".into(), eps.clone());
        let first: Vec<_> = b.attempt_order().collect();
        let second: Vec<_> = b.attempt_order().collect();
        assert_eq!(first, eps);
        assert_eq!(second, vec![eps[1], eps[2], eps[0]]);
        let empty = Backend::new("x".into(), vec![]);
        assert_eq!(empty.attempt_order().count(), 0);
    }
}
