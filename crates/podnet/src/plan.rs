//! What the node's kernel should hold, a pure function of the Nodes: [`NodeNet::from_node`]
//! reads what the pod network needs from a Node, and [`compute`] turns the list into a
//! [`Desired`] state, given how the kernel reaches each remote node ([`Reach`], asked of
//! the backend beforehand so this stays pure).
//!
//! Per remote node with a pod CIDR and an InternalIP:
//! - host-gw: `<podCIDR> via <InternalIP> dev <interface reaching it>`, for a node on a
//!   directly connected subnet (no gateway on the kernel's route to it). Chosen in
//!   [`Mode::HostGw`] for every node (one that is not directly connected is skipped, as
//!   the kernel would refuse the route) and in [`Mode::Auto`] where it can be.
//! - VXLAN: `<podCIDR> via <its VTEP> dev <device> onlink`, a neighbour (VTEP address to
//!   its MAC) and a forwarding entry (MAC to its InternalIP). Its VTEP address is its pod
//!   CIDR's network address and its MAC the Node's [`VXLAN_MAC_ANNOTATION`]; until that
//!   annotation is there the node is skipped. Chosen in [`Mode::Vxlan`] always, and in
//!   [`Mode::Auto`] for nodes behind a gateway.
//!
//! The VXLAN device exists in [`Mode::Vxlan`] and [`Mode::Auto`] (so that nodes which must
//! reach this one through VXLAN can), never in [`Mode::HostGw`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

pub use crate::backend::Reach;
use crate::backend::{FdbEntry, Neighbour, Route, VxlanDevice};
use crate::net::{Cidr, Mac};

/// The annotation on which each node publishes the MAC of its VXLAN device.
pub const VXLAN_MAC_ANNOTATION: &str = "krust.io/vxlan-mac";

/// How remote pod CIDRs are reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// host-gw to nodes on a directly connected subnet, VXLAN to the others.
    #[default]
    Auto,
    /// Routes via the nodes' InternalIPs only (every node on one L2 segment).
    HostGw,
    /// VXLAN to every node.
    Vxlan,
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// `auto`, `host-gw` or `vxlan` (flag values).
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "host-gw" => Ok(Mode::HostGw),
            "vxlan" => Ok(Mode::Vxlan),
            other => Err(format!(
                "unknown pod network mode {other:?} (auto, host-gw or vxlan)"
            )),
        }
    }
}

/// The VXLAN device's parameters, the same on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// VXLAN network identifier (default 1, as flannel).
    pub vni: u32,
    /// UDP port (default 8472, as flannel and the Linux default for VXLAN).
    pub port: u16,
    /// Device name (default `krust.vxlan`).
    pub device: String,
    /// Device MTU (default 1450: a 1500-byte underlay less the 50 bytes of encapsulation).
    pub mtu: u32,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        VxlanConfig {
            vni: 1,
            port: 8472,
            device: "krust.vxlan".to_string(),
            mtu: 1450,
        }
    }
}

/// What the pod network reads from one Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNet {
    pub name: String,
    /// The first IPv4 `InternalIP` of `status.addresses`.
    pub internal_ip: Option<Ipv4Addr>,
    /// `spec.podCIDR`, else the first IPv4 prefix of `spec.podCIDRs`.
    pub pod_cidr: Option<Cidr>,
    /// The [`VXLAN_MAC_ANNOTATION`], when it parses.
    pub vxlan_mac: Option<Mac>,
}

impl NodeNet {
    pub fn from_node(node: &Node) -> NodeNet {
        let spec = node.spec.as_ref();
        let pod_cidr = spec.and_then(|s| {
            s.pod_cidr
                .iter()
                .chain(s.pod_cidrs.iter().flatten())
                .find_map(|c| c.parse().ok())
        });
        let internal_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse().ok());
        let vxlan_mac = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VXLAN_MAC_ANNOTATION))
            .and_then(|m| m.parse().ok());
        NodeNet {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ip,
            pod_cidr,
            vxlan_mac,
        }
    }
}

/// The node this runs on, once it has an InternalIP and a pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    pub pod_cidr: Cidr,
}

impl Local {
    /// None while the node lacks an InternalIP or a pod CIDR.
    pub fn from_node(n: &NodeNet) -> Option<Local> {
        Some(Local {
            name: n.name.clone(),
            internal_ip: n.internal_ip?,
            pod_cidr: n.pod_cidr?,
        })
    }
}

/// Why a remote node gets no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NoPodCidr,
    NoInternalIp,
    /// VXLAN was chosen and the node has not published its MAC yet.
    NoVxlanMac,
    /// [`Mode::HostGw`] and the kernel has no route to its InternalIP.
    Unreachable,
    /// [`Mode::HostGw`] and its InternalIP is behind a gateway: host-gw needs the nodes
    /// on directly connected subnets (a route via an off-link address is refused).
    NotDirect,
    /// Its pod CIDR overlaps this node's or another node's (named first in order).
    Overlaps,
}

/// The kernel state [`crate::reconcile::apply`] converges to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// The VXLAN device's name, present or not (to remove it when not wanted).
    pub device: String,
    pub vxlan: Option<VxlanDevice>,
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neighbour>,
    pub fdb: BTreeSet<FdbEntry>,
    /// Remote nodes left out, and why.
    pub skipped: BTreeMap<String, Skip>,
}

/// The desired state for `local` given every Node (`nodes` may include `local` itself,
/// which is skipped), `reach` answering for remote InternalIPs.
pub fn compute(
    local: &Local,
    nodes: &[NodeNet],
    mode: Mode,
    vxlan: &VxlanConfig,
    reach: impl Fn(Ipv4Addr) -> Option<Reach>,
) -> Desired {
    let mut d = Desired {
        device: vxlan.device.clone(),
        vxlan: (mode != Mode::HostGw).then(|| VxlanDevice {
            name: vxlan.device.clone(),
            vni: vxlan.vni,
            port: vxlan.port,
            local: local.internal_ip,
            address: local.pod_cidr.network(),
            mtu: vxlan.mtu,
        }),
        ..Desired::default()
    };
    let mut taken = vec![local.pod_cidr];
    let mut sorted: Vec<&NodeNet> = nodes.iter().filter(|n| n.name != local.name).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for node in sorted {
        match plan_node(node, mode, &vxlan.device, &taken, &reach) {
            Ok((cidr, entries)) => {
                taken.push(cidr);
                d.routes.insert(entries.route);
                d.neighbours.extend(entries.neighbour);
                d.fdb.extend(entries.fdb);
            }
            Err(why) => {
                d.skipped.insert(node.name.clone(), why);
            }
        }
    }
    d
}

struct Entries {
    route: Route,
    neighbour: Option<Neighbour>,
    fdb: Option<FdbEntry>,
}

fn plan_node(
    node: &NodeNet,
    mode: Mode,
    device: &str,
    taken: &[Cidr],
    reach: &impl Fn(Ipv4Addr) -> Option<Reach>,
) -> Result<(Cidr, Entries), Skip> {
    let cidr = node.pod_cidr.ok_or(Skip::NoPodCidr)?;
    let ip = node.internal_ip.ok_or(Skip::NoInternalIp)?;
    if taken.iter().any(|t| t.overlaps(&cidr)) {
        return Err(Skip::Overlaps);
    }
    let reached = match mode {
        Mode::Vxlan => None,
        Mode::HostGw | Mode::Auto => reach(ip),
    };
    let host_gw = match (mode, &reached) {
        (Mode::HostGw, Some(r)) if r.direct => Some(r.dev.clone()),
        (Mode::HostGw, Some(_)) => return Err(Skip::NotDirect),
        (Mode::HostGw, None) => return Err(Skip::Unreachable),
        (Mode::Auto, Some(r)) if r.direct => Some(r.dev.clone()),
        _ => None,
    };
    if let Some(dev) = host_gw {
        let route = Route {
            dst: cidr,
            via: ip,
            dev,
            onlink: false,
        };
        let entries = Entries {
            route,
            neighbour: None,
            fdb: None,
        };
        return Ok((cidr, entries));
    }
    let mac = node.vxlan_mac.ok_or(Skip::NoVxlanMac)?;
    let vtep = cidr.network();
    let entries = Entries {
        route: Route {
            dst: cidr,
            via: vtep,
            dev: device.to_string(),
            onlink: true,
        },
        neighbour: Some(Neighbour { ip: vtep, mac }),
        fdb: Some(FdbEntry { mac, dst: ip }),
    };
    Ok((cidr, entries))
}

#[cfg(test)]
mod tests;
