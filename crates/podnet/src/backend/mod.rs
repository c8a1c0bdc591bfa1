//! Where the pod network goes: the [`PodNetBackend`] trait (the kernel's routes,
//! neighbours, bridge forwarding entries, the VXLAN device and the masquerade table, each
//! as a small idempotent step), the real implementation ([`iproute::IpRoute`]: `ip`,
//! `bridge` and `nft`), an in-memory [`fake::FakeBackend`] that models the same kernel
//! state, and the suite both pass.
//!
//! The backend only reports what it made and changes single entries; deciding what to
//! change is [`crate::reconcile`]'s, so every backend reconciles the same way.

#[cfg(test)]
mod e2e;
pub mod fake;
pub mod iproute;
#[cfg(test)]
pub(crate) mod suite;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::net::{Cidr, Mac};

/// The route protocol number that tags every route this crate installs (`proto 75`), so
/// that a restart finds its own routes and never touches anyone else's.
pub const ROUTE_PROTOCOL: u8 = 0x4b;

/// The nftables table holding the masquerade rule (`ip krust-podnet`); also the comment
/// on the accept rules added to other tables' forward chains.
pub const TABLE: &str = "krust-podnet";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("reading the output of {command}: {what}")]
    Output { command: String, what: String },
    #[error(transparent)]
    Nft(#[from] krust_nft::NftError),
    /// Only from the fake: a step the kernel would refuse.
    #[error("refused: {0}")]
    Refused(String),
}

/// How the node reaches an address, as the kernel's routing table answers (`ip route get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The interface the packet would leave by.
    pub dev: String,
    /// No gateway on the way: the address is on a directly connected subnet.
    pub direct: bool,
}

/// A route to a remote node's pod CIDR, tagged with [`ROUTE_PROTOCOL`] in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Cidr,
    /// host-gw: the remote node's InternalIP; VXLAN: the remote VTEP address (the network
    /// address of its pod CIDR).
    pub via: Ipv4Addr,
    pub dev: String,
    /// Set for VXLAN routes: the gateway is taken as on the device's link.
    pub onlink: bool,
}

/// A permanent neighbour entry on the VXLAN device: remote VTEP address to its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent forwarding entry on the VXLAN device: a remote VTEP MAC to the underlay
/// address its frames are sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// The node's VXLAN device (made with `nolearning`: every entry comes from the API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    /// The UDP destination port.
    pub port: u16,
    /// The node's InternalIP, the source of the encapsulated packets.
    pub local: Ipv4Addr,
    /// The node's VTEP address, held as a /32: the network address of its pod CIDR.
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// What the masquerade table says: traffic from `cluster` to outside it, and not out of
/// the local pod bridge, is masqueraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    pub cluster: Cidr,
    /// The node's pod bridge (`krust0`).
    pub bridge: String,
}

/// One node's kernel state for the pod network. Every step is idempotent; listings return
/// only what this backend made (tagged routes; entries on its own VXLAN device).
#[async_trait::async_trait]
pub trait PodNetBackend: Send + Sync {
    /// How the kernel would reach `ip`; None when it has no route to it.
    async fn route_to(&self, ip: Ipv4Addr) -> Result<Option<Reach>, BackendError>;

    /// Makes the VXLAN device exist, up, as described (recreating it when its VNI, port
    /// or local address differ, which gives it a new MAC), holding only its VTEP address;
    /// returns its MAC.
    async fn ensure_vxlan(&self, device: &VxlanDevice) -> Result<Mac, BackendError>;
    /// Removes the device (and with it its neighbour and forwarding entries); absent is
    /// fine.
    async fn remove_vxlan(&self, name: &str) -> Result<(), BackendError>;

    /// The routes tagged [`ROUTE_PROTOCOL`] in the main table.
    async fn routes(&self) -> Result<BTreeSet<Route>, BackendError>;
    /// Adds the route, replacing any other to the same destination.
    async fn replace_route(&self, route: &Route) -> Result<(), BackendError>;
    /// Deletes the route to `route.dst` if it is tagged [`ROUTE_PROTOCOL`].
    async fn delete_route(&self, route: &Route) -> Result<(), BackendError>;

    /// The permanent neighbours on `dev`; none when it does not exist.
    async fn neighbours(&self, dev: &str) -> Result<BTreeSet<Neighbour>, BackendError>;
    async fn replace_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError>;
    async fn delete_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError>;

    /// The forwarding entries with a remote destination on `dev`; none when it does not
    /// exist.
    async fn fdb(&self, dev: &str) -> Result<BTreeSet<FdbEntry>, BackendError>;
    /// Adds the entry, replacing any other for the same MAC.
    async fn replace_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError>;
    async fn delete_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError>;

    /// Masquerades what leaves the cluster CIDR for outside it, turns IPv4 forwarding on,
    /// and lets cluster traffic through forward chains whose policy drops (see
    /// [`iproute`]).
    async fn sync_masquerade(&self, m: &Masquerade) -> Result<(), BackendError>;
    /// Removes what [`PodNetBackend::sync_masquerade`] added (forwarding stays on).
    async fn remove_masquerade(&self) -> Result<(), BackendError>;
}
