//! Converging a backend to a [`Desired`] state, the same for every backend: read what it
//! made (tagged routes, entries on its VXLAN device), remove what is no longer wanted,
//! add or replace what differs. Nothing else in the kernel is touched, so this is also
//! what a restart does.
//!
//! Order keeps traffic flowing while entries change: the device first, then neighbours
//! and forwarding entries, then routes (a route never points at a VTEP whose entries are
//! missing); removal in the opposite order. A changed route is replaced in one step.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::{BackendError, Masquerade, PodNetBackend};
use crate::net::{Cidr, Mac};
use crate::plan::Desired;

/// What one [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The VXLAN device's MAC, when there is one.
    pub mac: Option<Mac>,
    /// Entries added, replaced or removed (0: the kernel already matched).
    pub changes: usize,
    /// Steps that failed; the others were still made. A later apply retries them.
    pub errors: Vec<BackendError>,
}

impl Applied {
    fn step(&mut self, r: Result<(), BackendError>) {
        match r {
            Ok(()) => self.changes += 1,
            Err(e) => self.errors.push(e),
        }
    }
}

/// Makes the backend hold `desired` plus the masquerade rules `masquerade`. Fails only
/// when it cannot read the backend's state; single failed steps are in
/// [`Applied::errors`].
pub async fn apply(
    b: &dyn PodNetBackend,
    masquerade: &Masquerade,
    desired: &Desired,
) -> Result<Applied, BackendError> {
    let mut done = Applied::default();
    if let Err(e) = b.sync_masquerade(masquerade).await {
        done.errors.push(e);
    }
    match &desired.vxlan {
        Some(dev) => match b.ensure_vxlan(dev).await {
            Ok(mac) => done.mac = Some(mac),
            Err(e) => done.errors.push(e),
        },
        None => {
            if let Err(e) = b.remove_vxlan(&desired.device).await {
                done.errors.push(e);
            }
        }
    }
    let dev = desired.device.as_str();
    let routes = b.routes().await?;
    let (neighbours, fdb) = (b.neighbours(dev).await?, b.fdb(dev).await?);

    // Routes no longer wanted go first: they may point at entries removed below.
    let wanted: BTreeMap<Cidr, _> = desired.routes.iter().map(|r| (r.dst, r)).collect();
    for r in routes.iter().filter(|r| !wanted.contains_key(&r.dst)) {
        done.step(b.delete_route(r).await);
    }
    let wanted_ips: BTreeSet<_> = desired.neighbours.iter().map(|n| n.ip).collect();
    for n in neighbours.iter().filter(|n| !wanted_ips.contains(&n.ip)) {
        done.step(b.delete_neighbour(dev, n).await);
    }
    let wanted_macs: BTreeSet<_> = desired.fdb.iter().map(|e| e.mac).collect();
    for e in fdb.iter().filter(|e| !wanted_macs.contains(&e.mac)) {
        done.step(b.delete_fdb(dev, e).await);
    }

    for e in desired.fdb.difference(&fdb) {
        done.step(b.replace_fdb(dev, e).await);
    }
    for n in desired.neighbours.difference(&neighbours) {
        done.step(b.replace_neighbour(dev, n).await);
    }
    for r in desired.routes.difference(&routes) {
        done.step(b.replace_route(r).await);
    }
    Ok(done)
}

/// Removes everything [`apply`] made: its routes, the VXLAN device `device` (with its
/// entries) and the masquerade rules. Idempotent; the first failure is returned after
/// every step was tried.
pub async fn cleanup(b: &dyn PodNetBackend, device: &str) -> Result<(), BackendError> {
    let mut first = None;
    match b.routes().await {
        Ok(routes) => {
            for r in &routes {
                if let Err(e) = b.delete_route(r).await {
                    first.get_or_insert(e);
                }
            }
        }
        Err(e) => {
            first.get_or_insert(e);
        }
    }
    if let Err(e) = b.remove_vxlan(device).await {
        first.get_or_insert(e);
    }
    if let Err(e) = b.remove_masquerade().await {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}
