//! What the proxy wants the data path to do, computed from Services and EndpointSlices: for
//! each service port, its cluster IP, node port, the endpoints to balance over and whether
//! clients stick to one (`sessionAffinity: ClientIP`). A pure
//! function, so every backend gets the same answer and the tests need no cluster.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub use krust_nft::Protocol;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service: where its traffic arrives and where it goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    /// `namespace/service:port-name` (upstream's service port name), for logs and chains.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub node_port: Option<u16>,
    /// Extra addresses the Service is reachable at on `port`: `spec.externalIPs` and the
    /// load balancer's (`status.loadBalancer.ingress`).
    pub external_ips: Vec<Ipv4Addr>,
    /// Sorted; empty means traffic is rejected, as upstream does.
    pub endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP`: a client's new connections keep going to the endpoint it
    /// last reached, for this many seconds after its last new connection.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`: traffic from outside the cluster (to the node port,
    /// external or load balancer addresses) goes only to these endpoints on this node, and
    /// keeps its source address; none means it is dropped.
    pub local_endpoints: Option<Vec<Endpoint>>,
}

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// The whole data path, sorted by service port name so that equal inputs render equally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    pub ports: Vec<ServicePort>,
}

/// The rules for `services`, with endpoints from `slices` (ready endpoints; when none is
/// ready, the serving ones that are terminating, as upstream falls back to), for the proxy
/// of node `node` (whose endpoints are the local ones).
pub fn compute<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: Option<&str>,
) -> ServiceRules {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let mut ports = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless (None) or not an IPv4 service
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let lb_ips = svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.as_deref());
        let lb_ips = lb_ips.filter(|_| spec.type_.as_deref() == Some("LoadBalancer"));
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(lb_ips)
            .filter_map(|ip| ip.parse().ok())
            .collect();
        external_ips.sort();
        external_ips.dedup();
        let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            ports.push(ServicePort {
                name: format!("{ns}/{name}:{port_name}"),
                cluster_ip,
                port,
                protocol,
                node_port: p
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|n| u16::try_from(n).ok()),
                external_ips: external_ips.clone(),
                endpoints: endpoints_for(
                    slices,
                    &port_name,
                    protocol,
                    p.target_port.as_ref(),
                    None,
                ),
                affinity_seconds,
                local_endpoints: local_only.then(|| {
                    // Without a node name every endpoint counts as local.
                    endpoints_for(slices, &port_name, protocol, p.target_port.as_ref(), node)
                }),
            });
        }
    }
    ports.sort();
    ServiceRules { ports }
}

/// UDP conntrack entries that would keep sending a client where the new rules no longer
/// do: UDP has no connection to end, so without clearing them a client that keeps its source
/// port (a DNS resolver) keeps talking to a gone endpoint, or to nothing, until they time out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleFlow {
    /// Flows to `service:port` that were sent to `endpoint`, which is gone.
    ToEndpoint {
        service: Ipv4Addr,
        port: u16,
        endpoint: Ipv4Addr,
    },
    /// Flows to node port `node_port` that were sent to `endpoint`, which is gone.
    NodePortToEndpoint { node_port: u16, endpoint: Ipv4Addr },
    /// Flows to `service:port` from before it had endpoints (they lead nowhere).
    ToService { service: Ipv4Addr, port: u16 },
    /// Flows to node port `node_port` from before its service had endpoints.
    ToNodePort { node_port: u16 },
}

impl StaleFlow {
    /// Whether a UDP flow to `dst:port` whose replies come from `reply_src` is one of these
    /// (what conntrack's `--orig-dst`, `--orig-port-dst` and `--reply-src` select).
    pub fn matches(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) -> bool {
        match *self {
            StaleFlow::ToEndpoint {
                service,
                port: p,
                endpoint,
            } => (service, p, endpoint) == (dst, port, reply_src),
            StaleFlow::NodePortToEndpoint {
                node_port,
                endpoint,
            } => (node_port, endpoint) == (port, reply_src),
            StaleFlow::ToService { service, port: p } => (service, p) == (dst, port),
            StaleFlow::ToNodePort { node_port } => node_port == port,
        }
    }
}

/// The UDP flows to clear after `next` replaced `previous`, as upstream's kube-proxy clears
/// them: for each endpoint a UDP service port lost (or the whole service), the flows DNATed
/// to it; for each UDP service port that had no endpoints and now has some, all its flows.
pub fn stale_udp_flows(previous: &ServiceRules, next: &ServiceRules) -> Vec<StaleFlow> {
    let mut out = Vec::new();
    for old in previous
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
    {
        let new = next
            .ports
            .iter()
            .find(|p| p.name == old.name && p.protocol == Protocol::Udp);
        let addrs = || std::iter::once(old.cluster_ip).chain(old.external_ips.iter().copied());
        for e in &old.endpoints {
            if new.is_some_and(|n| n.endpoints.iter().any(|x| x.ip == e.ip)) {
                continue;
            }
            out.extend(addrs().map(|service| StaleFlow::ToEndpoint {
                service,
                port: old.port,
                endpoint: e.ip,
            }));
            if let Some(node_port) = old.node_port {
                out.push(StaleFlow::NodePortToEndpoint {
                    node_port,
                    endpoint: e.ip,
                });
            }
        }
    }
    for new in next.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
        let had = previous
            .ports
            .iter()
            .find(|p| p.name == new.name && p.protocol == Protocol::Udp);
        if new.endpoints.is_empty() || had.is_some_and(|p| !p.endpoints.is_empty()) {
            continue;
        }
        out.extend(
            std::iter::once(new.cluster_ip)
                .chain(new.external_ips.iter().copied())
                .map(|service| StaleFlow::ToService {
                    service,
                    port: new.port,
                }),
        );
        if let Some(node_port) = new.node_port {
            out.push(StaleFlow::ToNodePort { node_port });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The endpoints of one service port: each slice's port with the service port's name.
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    target: Option<&IntOrString>,
    node: Option<&str>,
) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find(|sp| {
            sp.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(sp.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        // A slice written without ports for a numeric target (upstream's selectorless
        // services) still means the target port.
        let number = port.port.or(match target {
            Some(IntOrString::Int(n)) => Some(*n),
            _ => None,
        });
        let Some(number) = number.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        for e in &s.endpoints {
            if node.is_some() && e.node_name.as_deref() != node {
                continue;
            }
            let c = e.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for a in &e.addresses {
                let Ok(ip) = a.parse() else { continue };
                let ep = Endpoint { ip, port: number };
                if is_ready && !is_terminating {
                    ready.push(ep);
                } else if serving && is_terminating {
                    terminating.push(ep);
                }
            }
        }
    }
    let mut out = if ready.is_empty() { terminating } else { ready };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as SvcPort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str, type_: &str, ip: &str, ports: &[(&str, i32, Option<i32>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, np)| SvcPort {
                            name: Some(n.to_string()),
                            port: *p,
                            node_port: *np,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(svc: &str, ports: &[(&str, i32)], eps: &[(&str, bool, bool)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-abc")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, ready, terminating)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(true),
                        terminating: Some(*terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().expect("ip"),
            port,
        }
    }

    #[test]
    fn ports_get_their_named_slice_ports_and_ready_endpoints() {
        let svc = service(
            "web",
            "ClusterIP",
            "10.43.0.10",
            &[("http", 80, None), ("admin", 9000, None)],
        );
        let sl = slice(
            "web",
            &[("http", 8080), ("admin", 9090)],
            &[
                ("10.42.0.6", true, false),
                ("10.42.0.5", true, false),
                ("10.42.0.7", false, false),
            ],
        );
        let rules = compute(&[svc], &[sl], None);
        assert_eq!(rules.ports.len(), 2);
        let admin = &rules.ports[0];
        assert_eq!(admin.name, "default/web:admin");
        assert_eq!(
            admin.endpoints,
            vec![ep("10.42.0.5", 9090), ep("10.42.0.6", 9090)]
        );
        let http = &rules.ports[1];
        assert_eq!(
            (http.cluster_ip, http.port),
            ("10.43.0.10".parse().expect("ip"), 80)
        );
        assert_eq!(
            http.endpoints,
            vec![ep("10.42.0.5", 8080), ep("10.42.0.6", 8080)]
        );
        assert_eq!(http.node_port, None);
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
        let svc = service("web", "ClusterIP", "10.43.0.10", &[("", 80, None)]);
        let only_terminating = slice("web", &[("", 80)], &[("10.42.0.5", false, true)]);
        let rules = compute(std::slice::from_ref(&svc), &[only_terminating], None);
        assert_eq!(rules.ports[0].endpoints, vec![ep("10.42.0.5", 80)]);
        let mixed = slice(
            "web",
            &[("", 80)],
            &[("10.42.0.5", false, true), ("10.42.0.6", true, false)],
        );
        let rules = compute(&[svc], &[mixed], None);
        assert_eq!(rules.ports[0].endpoints, vec![ep("10.42.0.6", 80)]);
    }

    #[test]
    fn headless_external_name_and_other_services_slices_are_left_out() {
        let headless = service("db", "ClusterIP", "None", &[("", 5432, None)]);
        let mut external = service("ext", "ExternalName", "", &[("", 80, None)]);
        external.spec.as_mut().expect("spec").external_name = Some("example.com".into());
        let lonely = service("lonely", "ClusterIP", "10.43.0.11", &[("", 80, None)]);
        let other = slice("someone-else", &[("", 80)], &[("10.42.0.5", true, false)]);
        let rules = compute(&[headless, external, lonely], &[other], None);
        assert_eq!(rules.ports.len(), 1);
        assert_eq!(rules.ports[0].name, "default/lonely:");
        assert!(rules.ports[0].endpoints.is_empty());
    }

    #[test]
    fn node_ports_only_for_node_port_and_load_balancer_services() {
        let np = service("np", "NodePort", "10.43.0.12", &[("", 80, Some(30080))]);
        let cip = service("cip", "ClusterIP", "10.43.0.13", &[("", 80, Some(30081))]);
        let rules = compute(&[np, cip], &[], None);
        let by_name: BTreeMap<_, _> = rules.ports.iter().map(|p| (p.name.as_str(), p)).collect();
        assert_eq!(by_name["default/np:"].node_port, Some(30080));
        assert_eq!(by_name["default/cip:"].node_port, None);
    }

    #[test]
    fn stale_udp_flows_of_lost_endpoints_and_of_services_that_gained_some() {
        let port =
            |name: &str, protocol: Protocol, eps: &[&str], node_port: Option<u16>| ServicePort {
                name: name.to_string(),
                cluster_ip: Ipv4Addr::new(10, 43, 0, 10),
                port: 53,
                protocol,
                node_port,
                external_ips: vec![Ipv4Addr::new(192, 0, 2, 7)],
                endpoints: eps.iter().map(|ip| ep(ip, 5353)).collect(),
                affinity_seconds: None,
                local_endpoints: None,
            };
        let rules = |ports: Vec<ServicePort>| ServiceRules { ports };
        let before = rules(vec![
            port(
                "dns:udp",
                Protocol::Udp,
                &["10.42.0.5", "10.42.0.6"],
                Some(30053),
            ),
            port("dns:tcp", Protocol::Tcp, &["10.42.0.5", "10.42.0.6"], None),
        ]);
        let after = rules(vec![
            port("dns:udp", Protocol::Udp, &["10.42.0.6"], Some(30053)),
            port("dns:tcp", Protocol::Tcp, &["10.42.0.6"], None),
        ]);
        let gone = Ipv4Addr::new(10, 42, 0, 5);
        assert_eq!(
            stale_udp_flows(&before, &after),
            vec![
                StaleFlow::ToEndpoint {
                    service: Ipv4Addr::new(10, 43, 0, 10),
                    port: 53,
                    endpoint: gone
                },
                StaleFlow::ToEndpoint {
                    service: Ipv4Addr::new(192, 0, 2, 7),
                    port: 53,
                    endpoint: gone
                },
                StaleFlow::NodePortToEndpoint {
                    node_port: 30053,
                    endpoint: gone
                },
            ],
            "TCP flows end by themselves"
        );
        let stale = stale_udp_flows(&before, &after);
        let svc = Ipv4Addr::new(10, 43, 0, 10);
        assert!(stale[0].matches(svc, 53, gone));
        assert!(!stale[0].matches(svc, 53, Ipv4Addr::new(10, 42, 0, 6)));
        assert!(stale[2].matches(Ipv4Addr::new(10, 0, 0, 1), 30053, gone));
        assert_eq!(stale_udp_flows(&after, &after), vec![]);
        let removed = stale_udp_flows(&after, &ServiceRules::default());
        assert_eq!(removed.len(), 3, "{removed:?}");

        let empty = rules(vec![port("dns:udp", Protocol::Udp, &[], None)]);
        let filled = rules(vec![port("dns:udp", Protocol::Udp, &["10.42.0.6"], None)]);
        assert_eq!(
            stale_udp_flows(&empty, &filled),
            vec![
                StaleFlow::ToService {
                    service: Ipv4Addr::new(10, 43, 0, 10),
                    port: 53
                },
                StaleFlow::ToService {
                    service: Ipv4Addr::new(192, 0, 2, 7),
                    port: 53
                },
            ]
        );
        assert_eq!(
            stale_udp_flows(&ServiceRules::default(), &filled).len(),
            2,
            "a new service"
        );
    }

    #[test]
    fn client_ip_affinity_with_upstreams_default_timeout() {
        use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
        let mut sticky = service("sticky", "ClusterIP", "10.43.0.14", &[("", 80, None)]);
        let mut short = service("short", "ClusterIP", "10.43.0.15", &[("", 80, None)]);
        let plain = service("plain", "ClusterIP", "10.43.0.16", &[("", 80, None)]);
        for (svc, timeout) in [(&mut sticky, None), (&mut short, Some(60))] {
            if let Some(spec) = svc.spec.as_mut() {
                spec.session_affinity = Some("ClientIP".into());
                spec.session_affinity_config = timeout.map(|t| SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(t),
                    }),
                });
            }
        }
        let rules = compute(&[sticky, short, plain], &[], None);
        let by_name: BTreeMap<_, _> = rules.ports.iter().map(|p| (p.name.as_str(), p)).collect();
        assert_eq!(
            by_name["default/sticky:"].affinity_seconds,
            Some(DEFAULT_AFFINITY_SECONDS)
        );
        assert_eq!(by_name["default/short:"].affinity_seconds, Some(60));
        assert_eq!(by_name["default/plain:"].affinity_seconds, None);
    }
}
