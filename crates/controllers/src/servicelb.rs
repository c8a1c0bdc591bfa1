//! ServiceLBController: the cloud controller manager's service controller for a cluster
//! without a cloud, as k3s's ServiceLB. Every `type: LoadBalancer` Service without a
//! `loadBalancerClass` gets an address from the pool (`--service-lb-pool`, by default the
//! nodes' InternalIPs) on which none of its ports is taken, in
//! `status.loadBalancer.ingress`; the service proxy then sends that address's ports to the
//! endpoints. A Service whose ports are taken on every address stays pending, with a
//! Warning Event that says so. Services of another `loadBalancerClass` are left alone.
//!
//! Addresses are assigned over all Services at once (oldest first, an address a Service
//! holds already kept when it is still free for it), so the outcome does not depend on the
//! order in which changes arrive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::util::{key_of, Recorder};
use crate::{Shared, Shutdown};

/// A port taken on an address: protocol and number.
pub type Port = (String, u16);

/// What the controller is given.
#[derive(Clone, Debug, Default)]
pub struct LbConfig {
    /// Addresses to hand out (empty: the nodes' InternalIPs).
    pub pool: Vec<IpAddr>,
    /// Ports no Service may take on any address (the ingress controller's own).
    pub reserved: Vec<Port>,
}

/// The outcome for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    Address(IpAddr),
    /// No address has all its ports free; the message says which.
    Pending(String),
}

fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn ports_of(svc: &Service) -> Vec<Port> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            u16::try_from(p.port).ok().map(|n| (proto, n))
        })
        .collect()
}

fn held_addresses(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// Assigns pool addresses to every Service of ours among `services`.
pub fn assign<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pool: &[IpAddr],
    reserved: &[Port],
) -> BTreeMap<String, Assignment> {
    let mut ours: Vec<&Service> = services.into_iter().filter(|s| is_ours(s)).collect();
    ours.sort_by_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            key_of(*s),
        )
    });
    let mut taken: HashMap<IpAddr, BTreeSet<Port>> = HashMap::new();
    let mut out = BTreeMap::new();
    for svc in ours {
        let ports = ports_of(svc);
        let free = |ip: &IpAddr, taken: &HashMap<IpAddr, BTreeSet<Port>>| {
            ports
                .iter()
                .all(|p| !reserved.contains(p) && !taken.get(ip).is_some_and(|t| t.contains(p)))
        };
        let requested: Option<IpAddr> = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let candidates: Vec<IpAddr> = match requested {
            Some(ip) => vec![ip]
                .into_iter()
                .filter(|ip| pool.contains(ip))
                .collect(),
            None => held_addresses(svc)
                .into_iter()
                .filter(|ip| pool.contains(ip))
                .chain(pool.iter().copied())
                .collect(),
        };
        let chosen = candidates.into_iter().find(|ip| free(ip, &taken));
        let assignment = match chosen {
            Some(ip) => {
                taken.entry(ip).or_default().extend(ports.iter().cloned());
                Assignment::Address(ip)
            }
            None if pool.is_empty() => {
                Assignment::Pending("the load balancer pool is empty".into())
            }
            None if requested.is_some() => Assignment::Pending(format!(
                "loadBalancerIP {} is not free in the load balancer pool for ports {}",
                requested.map(|i| i.to_string()).unwrap_or_default(),
                describe(&ports)
            )),
            None => Assignment::Pending(format!(
                "no address in the load balancer pool has ports {} free",
                describe(&ports)
            )),
        };
        out.insert(key_of(svc), assignment);
    }
    out
}

fn describe(ports: &[Port]) -> String {
    ports
        .iter()
        .map(|(proto, n)| format!("{n}/{proto}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The nodes' InternalIPs, the default pool (sorted, so every sync agrees).
pub fn node_addresses<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = nodes
        .into_iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs the controller until `shutdown`.
pub async fn run(shared: Arc<Shared>, config: LbConfig, shutdown: Shutdown) {
    let changed = Arc::new(Notify::new());
    for stream in [
        shared.services.subscribe().map(|_| ()).boxed(),
        shared.nodes.subscribe().map(|_| ()).boxed(),
    ] {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut s = stream;
            while s.next().await.is_some() {
                changed.notify_one();
            }
        });
    }
    let recorder = Recorder::new(shared.client.clone(), "service-lb-controller");
    let mut warned: HashMap<String, String> = HashMap::new();
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        sync(&shared, &config, &recorder, &mut warned).await;
        tokio::select! {
            _ = shutdown.clone() => return,
            _ = changed.notified() => {}
            _ = resync.tick() => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sync(
    shared: &Shared,
    config: &LbConfig,
    recorder: &Recorder,
    warned: &mut HashMap<String, String>,
) {
    let services = shared.services.store().state();
    let pool = if config.pool.is_empty() {
        node_addresses(shared.nodes.store().state().iter().map(|n| n.as_ref()))
    } else {
        config.pool.clone()
    };
    let wanted = assign(services.iter().map(|s| s.as_ref()), &pool, &config.reserved);
    for svc in &services {
        let key = key_of(svc.as_ref());
        let ingress: Vec<IpAddr> = match wanted.get(&key) {
            Some(Assignment::Address(ip)) => {
                warned.remove(&key);
                vec![*ip]
            }
            Some(Assignment::Pending(message)) => {
                if warned.get(&key) != Some(message) {
                    recorder.warning(svc.as_ref(), "AllocationFailed", message.clone());
                    warned.insert(key.clone(), message.clone());
                }
                vec![]
            }
            // Not ours: a Service that stopped being a LoadBalancer loses the pool address
            // it held; another class's addresses are left alone.
            None if svc
                .spec
                .as_ref()
                .is_some_and(|s| s.load_balancer_class.is_some()) =>
            {
                continue
            }
            None => held_addresses(svc)
                .into_iter()
                .filter(|ip| !pool.contains(ip))
                .collect(),
        };
        if held_addresses(svc) == ingress {
            continue;
        }
        let status: Vec<LoadBalancerIngress> = ingress
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            })
            .collect();
        let api: Api<Service> =
            Api::namespaced(shared.client.clone(), &svc.namespace().unwrap_or_default());
        let patch = json!({"status": {"loadBalancer": {"ingress": status}}});
        if let Err(e) = api
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(service = %key, error = %e, "writing the load balancer status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn lb(name: &str, age_s: i64, ports: &[i32]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(
                    Timestamp::from_second(1_700_000_000 + age_s).expect("time"),
                )),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| ServicePort {
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn services_share_addresses_until_their_ports_collide() {
        let pool = [ip("192.0.2.1"), ip("192.0.2.2")];
        let a = lb("a", 0, &[80]);
        let b = lb("b", 1, &[443]);
        let c = lb("c", 2, &[80]);
        let d = lb("d", 3, &[80, 8080]);
        let out = assign([&d, &c, &b, &a], &pool, &[]);
        assert_eq!(out["default/a"], Assignment::Address(ip("192.0.2.1")));
        assert_eq!(out["default/b"], Assignment::Address(ip("192.0.2.1")));
        assert_eq!(out["default/c"], Assignment::Address(ip("192.0.2.2")));
        assert_eq!(
            out["default/d"],
            Assignment::Pending(
                "no address in the load balancer pool has ports 80/TCP, 8080/TCP free".into()
            )
        );
    }

    #[test]
    fn held_requested_reserved_and_foreign_classes() {
        let pool = [ip("192.0.2.1"), ip("192.0.2.2")];
        let mut held = lb("held", 5, &[80]);
        held.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("192.0.2.2".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        let mut asks = lb("asks", 6, &[81]);
        asks.spec.as_mut().expect("spec").load_balancer_ip = Some("192.0.2.9".into());
        let mut foreign = lb("foreign", 0, &[80]);
        foreign.spec.as_mut().expect("spec").load_balancer_class = Some("example.com/lb".into());
        let https = lb("https", 7, &[443]);
        let out = assign(
            [&held, &asks, &foreign, &https],
            &pool,
            &[("TCP".into(), 443)],
        );
        assert_eq!(
            out["default/held"],
            Assignment::Address(ip("192.0.2.2")),
            "kept"
        );
        assert!(matches!(&out["default/asks"], Assignment::Pending(m) if m.contains("192.0.2.9")));
        assert!(!out.contains_key("default/foreign"));
        assert!(matches!(&out["default/https"], Assignment::Pending(m) if m.contains("443/TCP")));
        let out = assign([&https], &[], &[]);
        assert_eq!(
            out["default/https"],
            Assignment::Pending("the load balancer pool is empty".into())
        );
    }
}
