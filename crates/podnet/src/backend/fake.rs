//! An in-memory backend modelling the kernel state the real one changes, with the
//! kernel's refusals that matter: a route needs its device (a connected interface or the
//! VXLAN device), a gateway off every connected subnet needs `onlink`, neighbour and
//! forwarding entries need the VXLAN device, and removing the device removes its entries.
//! Routes someone else made (tests add them with [`FakeBackend::add_foreign_route`]) are
//! kept apart from ours, as the kernel's route protocol keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use super::VxlanDevice;
use super::{BackendError, FdbEntry, Masquerade, Neighbour, PodNetBackend, Reach, Route};
use crate::net::{Cidr, Mac};

#[derive(Default)]
struct Kernel {
    /// Directly connected subnets and their interfaces.
    connected: Vec<(Cidr, String)>,
    /// Prefixes reached through a gateway, and the interface.
    gateways: Vec<(Cidr, Ipv4Addr, String)>,
    /// By destination: the route and whether we made it.
    routes: BTreeMap<Cidr, (Route, bool)>,
    vxlan: Option<(VxlanDevice, Mac)>,
    neighbours: BTreeMap<Ipv4Addr, Mac>,
    fdb: BTreeMap<Mac, Ipv4Addr>,
    masquerade: Option<Masquerade>,
    forwarding: bool,
    /// MACs handed out so far (each new device gets the next).
    devices_made: u8,
}

#[derive(Default)]
pub struct FakeBackend {
    kernel: Mutex<Kernel>,
}

fn refused(what: String) -> BackendError {
    BackendError::Refused(what)
}

impl FakeBackend {
    /// A node whose interfaces are `connected` (subnet, interface), reaching `gateways`
    /// (prefix, gateway, interface) through routers.
    pub fn new(connected: Vec<(Cidr, String)>, gateways: Vec<(Cidr, Ipv4Addr, String)>) -> Self {
        FakeBackend {
            kernel: Mutex::new(Kernel {
                connected,
                gateways,
                ..Kernel::default()
            }),
        }
    }

    fn kernel(&self) -> Result<MutexGuard<'_, Kernel>, BackendError> {
        self.kernel
            .lock()
            .map_err(|_| refused("the fake's lock is poisoned".into()))
    }

    /// A route someone else made (not ours: listings skip it, deletes leave it).
    pub fn add_foreign_route(&self, route: Route) {
        if let Ok(mut k) = self.kernel() {
            k.routes.insert(route.dst, (route, false));
        }
    }

    /// Every route to `dst`, ours or not.
    pub fn route(&self, dst: Cidr) -> Option<Route> {
        self.kernel().ok()?.routes.get(&dst).map(|(r, _)| r.clone())
    }

    /// The masquerade rules, if any.
    pub fn masquerade(&self) -> Option<Masquerade> {
        self.kernel().ok()?.masquerade.clone()
    }

    pub fn forwarding(&self) -> bool {
        self.kernel().is_ok_and(|k| k.forwarding)
    }

    /// The VXLAN device, if there is one.
    pub fn vxlan(&self) -> Option<VxlanDevice> {
        self.kernel().ok()?.vxlan.as_ref().map(|(d, _)| d.clone())
    }
}

impl Kernel {
    fn has_vxlan(&self, dev: &str) -> bool {
        self.vxlan.as_ref().is_some_and(|(d, _)| d.name == dev)
    }

    fn check_route(&self, r: &Route) -> Result<(), BackendError> {
        if self.has_vxlan(&r.dev) && r.onlink {
            return Ok(());
        }
        let on_link = self
            .connected
            .iter()
            .any(|(c, dev)| *dev == r.dev && c.contains(r.via));
        let dev_exists = self.connected.iter().any(|(_, dev)| *dev == r.dev);
        match (dev_exists, on_link || r.onlink) {
            (true, true) => Ok(()),
            (false, _) => Err(refused(format!("{r:?}: no device {}", r.dev))),
            (true, false) => Err(refused(format!("{r:?}: nexthop has invalid gateway"))),
        }
    }
}

#[async_trait::async_trait]
impl PodNetBackend for FakeBackend {
    async fn route_to(&self, ip: Ipv4Addr) -> Result<Option<Reach>, BackendError> {
        let k = self.kernel()?;
        let direct = k.connected.iter().find(|(c, _)| c.contains(ip));
        let routed = k.gateways.iter().find(|(c, _, _)| c.contains(ip));
        Ok(match (direct, routed) {
            (Some((_, dev)), _) => Some(Reach {
                dev: dev.clone(),
                direct: true,
            }),
            (None, Some((_, _, dev))) => Some(Reach {
                dev: dev.clone(),
                direct: false,
            }),
            (None, None) => None,
        })
    }

    async fn ensure_vxlan(&self, d: &VxlanDevice) -> Result<Mac, BackendError> {
        let mut k = self.kernel()?;
        let same = |old: &VxlanDevice| {
            (old.name.as_str(), old.vni, old.port, old.local)
                == (d.name.as_str(), d.vni, d.port, d.local)
        };
        match &mut k.vxlan {
            Some((old, mac)) if same(old) => {
                *old = d.clone();
                return Ok(*mac);
            }
            _ => {}
        }
        // A new device: what hung off the old one goes with it.
        k.devices_made = k.devices_made.wrapping_add(1);
        let mac = Mac([0x0a, 0x58, 0, 0, 0, k.devices_made]);
        k.neighbours.clear();
        k.fdb.clear();
        k.routes.retain(|_, (r, _)| r.dev != d.name);
        k.vxlan = Some((d.clone(), mac));
        Ok(mac)
    }

    async fn remove_vxlan(&self, name: &str) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        if k.has_vxlan(name) {
            k.vxlan = None;
            k.neighbours.clear();
            k.fdb.clear();
            k.routes.retain(|_, (r, _)| r.dev != name);
        }
        Ok(())
    }

    async fn routes(&self) -> Result<BTreeSet<Route>, BackendError> {
        let k = self.kernel()?;
        Ok(k.routes
            .values()
            .filter(|(_, ours)| *ours)
            .map(|(r, _)| r.clone())
            .collect())
    }

    async fn replace_route(&self, r: &Route) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        k.check_route(r)?;
        k.routes.insert(r.dst, (r.clone(), true));
        Ok(())
    }

    async fn delete_route(&self, r: &Route) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        match k.routes.get(&r.dst) {
            Some((_, true)) => {
                k.routes.remove(&r.dst);
                Ok(())
            }
            _ => Err(refused(format!("no route of ours to {}", r.dst))),
        }
    }

    async fn neighbours(&self, dev: &str) -> Result<BTreeSet<Neighbour>, BackendError> {
        let k = self.kernel()?;
        if !k.has_vxlan(dev) {
            return Ok(BTreeSet::new());
        }
        Ok(k.neighbours
            .iter()
            .map(|(&ip, &mac)| Neighbour { ip, mac })
            .collect())
    }

    async fn replace_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        if !k.has_vxlan(dev) {
            return Err(refused(format!("no device {dev}")));
        }
        k.neighbours.insert(n.ip, n.mac);
        Ok(())
    }

    async fn delete_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        match k.has_vxlan(dev) && k.neighbours.remove(&n.ip).is_some() {
            true => Ok(()),
            false => Err(refused(format!("no neighbour {} on {dev}", n.ip))),
        }
    }

    async fn fdb(&self, dev: &str) -> Result<BTreeSet<FdbEntry>, BackendError> {
        let k = self.kernel()?;
        if !k.has_vxlan(dev) {
            return Ok(BTreeSet::new());
        }
        Ok(k.fdb
            .iter()
            .map(|(&mac, &dst)| FdbEntry { mac, dst })
            .collect())
    }

    async fn replace_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        if !k.has_vxlan(dev) {
            return Err(refused(format!("no device {dev}")));
        }
        k.fdb.insert(e.mac, e.dst);
        Ok(())
    }

    async fn delete_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        let present = k.has_vxlan(dev) && k.fdb.get(&e.mac) == Some(&e.dst);
        if !present {
            return Err(refused(format!("no fdb entry {} on {dev}", e.mac)));
        }
        k.fdb.remove(&e.mac);
        Ok(())
    }

    async fn sync_masquerade(&self, m: &Masquerade) -> Result<(), BackendError> {
        let mut k = self.kernel()?;
        k.masquerade = Some(m.clone());
        k.forwarding = true;
        Ok(())
    }

    async fn remove_masquerade(&self) -> Result<(), BackendError> {
        self.kernel()?.masquerade = None;
        Ok(())
    }
}
