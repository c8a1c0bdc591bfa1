//! An in-memory backend that remembers the last rules and answers whether a new connection
//! would pass, the way the nftables rules decide it: egress of the source and ingress of
//! the destination must both allow it; a pod always reaches itself; traffic from or to the
//! node's own addresses is not policed. Replies need no answer here: they always pass.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{PolicyBackend, PolicyError};
use crate::rules::{PolicyRules, Protocol};

#[derive(Default)]
pub struct FakeBackend {
    installed: Mutex<Option<PolicyRules>>,
    syncs: Mutex<usize>,
    /// The node's own addresses (the host side of the pod network).
    node: Vec<Ipv4Addr>,
}

impl FakeBackend {
    /// A fake on a node with addresses `node`.
    pub fn new(node: Vec<Ipv4Addr>) -> FakeBackend {
        FakeBackend {
            node,
            ..FakeBackend::default()
        }
    }

    pub fn installed(&self) -> Option<PolicyRules> {
        self.installed.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn syncs(&self) -> usize {
        self.syncs.lock().map(|g| *g).unwrap_or_default()
    }

    /// Whether a new connection from `src` to `dst` on `protocol` port `port` passes.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        if src == dst || self.node.contains(&src) || self.node.contains(&dst) {
            return true;
        }
        let Ok(installed) = self.installed.lock() else {
            return false;
        };
        let Some(rules) = installed.as_ref() else {
            return true;
        };
        let egress = rules.pods.get(&src).and_then(|p| p.egress.as_ref());
        let ingress = rules.pods.get(&dst).and_then(|p| p.ingress.as_ref());
        egress.is_none_or(|a| a.allows(dst, protocol, port))
            && ingress.is_none_or(|a| a.allows(src, protocol, port))
    }
}

#[async_trait::async_trait]
impl PolicyBackend for FakeBackend {
    async fn sync(&self, rules: &PolicyRules) -> Result<(), PolicyError> {
        if let Ok(mut g) = self.installed.lock() {
            *g = Some(rules.clone());
        }
        if let Ok(mut g) = self.syncs.lock() {
            *g += 1;
        }
        Ok(())
    }

    async fn cleanup(&self) -> Result<(), PolicyError> {
        if let Ok(mut g) = self.installed.lock() {
            *g = None;
        }
        Ok(())
    }
}
