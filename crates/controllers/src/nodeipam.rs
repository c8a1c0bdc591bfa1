//! NodeIpamController with upstream's RangeAllocator: every node without `spec.podCIDR` gets
//! the lowest free subnet of `--node-cidr-mask-size` bits from `--cluster-cidr` (IPv4), written
//! to `spec.podCIDR` and `spec.podCIDRs`; a deleted node's subnet is free again. When the range
//! is full a node gets one CIDRNotAvailable event and is retried every minute. The allocator
//! is filled from the nodes in the cache before the first allocation, so a restart never hands
//! out a subnet twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::util::{is_not_found, Backoff, Error, Recorder, Result};
use crate::{Shared, Shutdown};

/// The subnets of one cluster CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    base: u32,
    prefix: u8,
    mask: u8,
}

impl Range {
    /// Parses `a.b.c.d/n` (the first IPv4 one of a comma-separated list) and the mask size.
    pub fn parse(cidr: &str, mask: u8) -> Result<Range> {
        let bad = |why: &str| Error::Invalid(format!("cluster CIDR {cidr:?}: {why}"));
        let v4 = cidr
            .split(',')
            .map(str::trim)
            .find(|c| !c.contains(':'))
            .ok_or_else(|| bad("no IPv4 range"))?;
        let (addr, len) = v4.split_once('/').ok_or_else(|| bad("no prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix > 32 || mask > 32 || mask < prefix {
            return Err(bad(
                "node mask size must lie between the prefix length and 32",
            ));
        }
        if mask - prefix > 24 {
            return Err(bad("more than 2^24 node subnets"));
        }
        let host_mask = if prefix == 0 {
            u32::MAX
        } else {
            (1u32 << (32 - prefix)) - 1
        };
        Ok(Range {
            base: u32::from(addr) & !host_mask,
            prefix,
            mask,
        })
    }

    /// How many node subnets the range holds.
    pub fn len(&self) -> u32 {
        1 << (self.mask - self.prefix)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th subnet as `a.b.c.d/mask`.
    pub fn subnet(&self, i: u32) -> String {
        let shift = 32 - u32::from(self.mask);
        let addr = self.base | i.checked_shl(shift).unwrap_or(0);
        format!("{}/{}", Ipv4Addr::from(addr), self.mask)
    }

    /// The index of `cidr` if it is one of this range's subnets.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (addr, len) = cidr.split_once('/')?;
        if len.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let a = u32::from(addr.parse::<Ipv4Addr>().ok()?);
        let shift = 32 - u32::from(self.mask);
        let i = a.wrapping_sub(self.base).checked_shr(shift).unwrap_or(0);
        (i < self.len() && self.subnet(i) == cidr).then_some(i)
    }
}

/// Which subnet each node holds.
#[derive(Default)]
pub struct Allocator {
    used: BTreeMap<u32, String>,
    by_node: HashMap<String, u32>,
    filled: bool,
}

impl Allocator {
    /// Records that `node` holds subnet `i`.
    pub fn occupy(&mut self, node: &str, i: u32) {
        self.used.insert(i, node.to_string());
        self.by_node.insert(node.to_string(), i);
    }

    /// Takes the lowest free subnet for `node` (its own if it has one).
    pub fn allocate(&mut self, node: &str, range: &Range) -> Option<u32> {
        if let Some(i) = self.by_node.get(node) {
            return Some(*i);
        }
        let mut want = 0u32;
        for used in self.used.keys() {
            if *used != want {
                break;
            }
            want += 1;
        }
        if want >= range.len() {
            return None;
        }
        self.occupy(node, want);
        Some(want)
    }

    pub fn release(&mut self, node: &str) {
        if let Some(i) = self.by_node.remove(node) {
            self.used.remove(&i);
        }
    }
}

struct Ctx {
    shared: Arc<Shared>,
    range: Range,
    alloc: Mutex<Allocator>,
    /// Nodes already told that no subnet is left (one event each, not one per retry).
    warned: Mutex<HashSet<String>>,
    backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let range = match Range::parse(
        &shared.config.cluster_cidr,
        shared.config.node_cidr_mask_size,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "node IPAM disabled");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        range,
        alloc: Mutex::default(),
        warned: Mutex::default(),
        backoff: Backoff::default(),
        recorder: Recorder::new(shared.client.clone(), "node-ipam-controller"),
    });
    Controller::for_stream(shared.nodes.subscribe(), shared.nodes.store())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |n, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&n.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = node.name_any();
    let allocated = {
        let mut a = ctx.alloc.lock().unwrap_or_else(|p| p.into_inner());
        if !a.filled {
            for n in ctx.shared.nodes.store().state() {
                if let Some(i) = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_deref())
                    .and_then(|c| ctx.range.index_of(c))
                {
                    a.occupy(&n.name_any(), i);
                }
            }
            a.filled = true;
        }
        if ctx
            .shared
            .nodes
            .store()
            .get(&ObjectRef::from_obj(&*node))
            .is_none()
        {
            a.release(&name);
            ctx.warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            return Ok(Action::await_change());
        }
        if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
            if let Some(i) = ctx.range.index_of(cidr) {
                a.occupy(&name, i);
            }
            return Ok(Action::await_change());
        }
        a.allocate(&name, &ctx.range)
    };
    let Some(i) = allocated else {
        if ctx
            .warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone())
        {
            ctx.recorder.warning(
                &*node,
                "CIDRNotAvailable",
                format!("Node {name} status is now: CIDRNotAvailable"),
            );
        }
        return Ok(Action::requeue(std::time::Duration::from_secs(60)));
    };
    let cidr = ctx.range.subnet(i);
    let api: Api<Node> = Api::all(ctx.shared.client.clone());
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = %name, %cidr, "allocated pod CIDR");
            ctx.backoff.forget(&name);
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.alloc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(&name);
            if is_not_found(&e) {
                return Ok(Action::await_change());
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_of_a_range() {
        let r = Range::parse("10.42.0.0/16", 24).expect("range");
        assert_eq!(r.len(), 256);
        assert_eq!(r.subnet(0), "10.42.0.0/24");
        assert_eq!(r.subnet(5), "10.42.5.0/24");
        assert_eq!(r.index_of("10.42.5.0/24"), Some(5));
        assert_eq!(r.index_of("10.43.5.0/24"), None);
        assert_eq!(r.index_of("10.42.5.1/24"), None);
        assert_eq!(r.index_of("10.42.5.0/25"), None);
        let r = Range::parse("fd00::/48, 10.0.0.0/8", 26).expect("dual");
        assert_eq!(r.subnet(1), "10.0.0.64/26");
        assert!(Range::parse("10.0.0.0/24", 16).is_err());
        assert!(Range::parse("fd00::/48", 64).is_err());
        assert!(Range::parse("nonsense", 24).is_err());
    }

    #[test]
    fn allocation_takes_the_lowest_free_and_releases() {
        let r = Range::parse("10.42.0.0/30", 31).expect("range");
        let mut a = Allocator::default();
        assert_eq!(a.allocate("a", &r), Some(0));
        assert_eq!(a.allocate("b", &r), Some(1));
        assert_eq!(a.allocate("a", &r), Some(0), "a node keeps its subnet");
        assert_eq!(a.allocate("c", &r), None, "full");
        a.release("a");
        assert_eq!(a.allocate("c", &r), Some(0));
    }
}
