//! An in-memory backend that remembers the last rules and answers where a connection would
//! go, the way the nftables rules decide it: round robin instead of at random, and clients
//! of a ClientIP-affinity service kept on their endpoint while it stays; UDP flows kept as
//! conntrack would keep them, and forgotten when a sync makes them stale.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{ProxyBackend, ProxyError};
use crate::rules::{stale_udp_flows, Endpoint, Protocol, ServiceRules};

#[derive(Default)]
pub struct FakeBackend {
    installed: Mutex<Option<ServiceRules>>,
    syncs: Mutex<usize>,
    turn: AtomicUsize,
    /// (service port name, client) -> the endpoint the client sticks to.
    affinity: Mutex<HashMap<(String, Ipv4Addr), Endpoint>>,
    /// UDP flows as conntrack holds them: (address, port) -> where the replies come from.
    udp_flows: Mutex<Vec<(Ipv4Addr, u16, Ipv4Addr)>>,
}

/// What the data path does with a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Sent to this endpoint.
    To(Endpoint),
    /// Refused: the service exists but has no endpoints.
    Rejected,
    /// Not a service address: left alone.
    Untouched,
}

impl FakeBackend {
    pub fn installed(&self) -> Option<ServiceRules> {
        self.installed.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Records a UDP flow to `dst:port` whose replies come from `reply_src`.
    pub fn add_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) {
        if let Ok(mut f) = self.udp_flows.lock() {
            f.push((dst, port, reply_src));
        }
    }

    pub fn has_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) -> bool {
        self.udp_flows
            .lock()
            .is_ok_and(|f| f.contains(&(dst, port, reply_src)))
    }

    pub fn syncs(&self) -> usize {
        self.syncs.lock().map(|g| *g).unwrap_or_default()
    }

    /// Where a new connection from `client` to `ip:port` goes; `local` says whether `ip` is
    /// one of the node's own addresses (node ports listen there).
    pub fn route(
        &self,
        client: Ipv4Addr,
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        local: bool,
    ) -> Route {
        let Some(rules) = self.installed() else {
            return Route::Untouched;
        };
        let hit = rules.ports.iter().find(|p| {
            p.protocol == protocol
                && ((p.port == port && (p.cluster_ip == ip || p.external_ips.contains(&ip)))
                    || (local && p.node_port == Some(port)))
        });
        match hit {
            None => Route::Untouched,
            Some(p) if p.endpoints.is_empty() => Route::Rejected,
            Some(p) => {
                let mut affinity = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
                let key = (p.name.clone(), client);
                if p.affinity_seconds.is_some() {
                    if let Some(e) = affinity.get(&key).filter(|e| p.endpoints.contains(e)) {
                        return Route::To(*e);
                    }
                }
                let e = p.endpoints[self.turn.fetch_add(1, Ordering::Relaxed) % p.endpoints.len()];
                if p.affinity_seconds.is_some() {
                    affinity.insert(key, e);
                }
                Route::To(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl ProxyBackend for FakeBackend {
    async fn sync(&self, rules: &ServiceRules) -> Result<(), ProxyError> {
        if let Ok(mut g) = self.installed.lock() {
            if let Some(before) = g.as_ref() {
                let stale = stale_udp_flows(before, rules);
                if let Ok(mut flows) = self.udp_flows.lock() {
                    flows.retain(|(dst, port, src)| {
                        !stale.iter().any(|s| s.matches(*dst, *port, *src))
                    });
                }
            }
            *g = Some(rules.clone());
        }
        if let Ok(mut g) = self.syncs.lock() {
            *g += 1;
        }
        Ok(())
    }

    async fn cleanup(&self) -> Result<(), ProxyError> {
        if let Ok(mut g) = self.installed.lock() {
            *g = None;
        }
        Ok(())
    }
}
