//! The behaviour every [`PodNetBackend`] must show, run through a [`Harness`]: the fake
//! answers from its model; [`IpRoute`] acts in a network namespace of its own with an
//! "underlay" interface (one end of a veth pair) (10.199.0.1/24, and 10.198.0.0/16 behind the router
//! 10.199.0.254), so routes, neighbours, forwarding entries, the VXLAN device and the
//! nftables table are all real. Traffic is the end-to-end test's ([`super::e2e`]).
//!
//! The suite plans with [`compute`] and converges with [`reconcile::apply`], so it shows
//! the whole path from Nodes to kernel state, restarts (a second apply changes nothing)
//! and that routes it did not make are never touched.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fake::FakeBackend;
use super::iproute::IpRoute;
use super::{Masquerade, Neighbour, PodNetBackend, Reach, Route};
use crate::net::{Cidr, Mac};
use crate::plan::{compute, Local, Mode, NodeNet, VxlanConfig};
use crate::reconcile;

#[async_trait::async_trait]
pub trait Harness: Sync {
    fn backend(&self) -> &dyn PodNetBackend;
    /// The interface holding 10.199.0.1/24.
    fn underlay(&self) -> &str;
    /// A route made by someone else (not tagged as ours).
    async fn add_foreign_route(&self, dst: Cidr, via: Ipv4Addr);
    /// Whether any route to `dst` exists, ours or not.
    async fn has_route(&self, dst: Cidr) -> bool;
    /// Whether what leaves `cluster` is masqueraded.
    async fn masquerades(&self, cluster: Cidr) -> bool;
    /// Whether IPv4 forwarding is on.
    async fn forwarding(&self) -> bool;
}

pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

pub(crate) fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

/// The masquerade rules both suites apply: cluster 10.42.0.0/16, bridge `krust0`.
pub(crate) fn masquerade() -> Masquerade {
    Masquerade {
        cluster: cidr("10.42.0.0/16"),
        bridge: "krust0".into(),
    }
}

fn node(name: &str, addr: &str, pod_cidr: Option<&str>, mac: Option<&str>) -> NodeNet {
    NodeNet {
        name: name.into(),
        internal_ip: Some(ip(addr)),
        pod_cidr: pod_cidr.map(cidr),
        vxlan_mac: mac.map(|m| m.parse().expect("mac")),
    }
}

fn local() -> Local {
    Local {
        name: "a".into(),
        internal_ip: ip("10.199.0.1"),
        pod_cidr: cidr("10.42.1.0/24"),
    }
}

/// Plans against the backend's own routing table, as [`crate::run`] does.
async fn plan_and_apply(h: &dyn Harness, nodes: &[NodeNet], mode: Mode) -> reconcile::Applied {
    let b = h.backend();
    let mut reach = std::collections::HashMap::new();
    for n in nodes {
        if let Some(ip) = n.internal_ip {
            reach.insert(ip, b.route_to(ip).await.expect("route_to"));
        }
    }
    let vxlan = VxlanConfig::default();
    let d = compute(&local(), nodes, mode, &vxlan, |ip| {
        reach.get(&ip).cloned().flatten()
    });
    let applied = reconcile::apply(b, &masquerade(), &d).await.expect("apply");
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    assert_eq!(b.routes().await.expect("routes"), d.routes, "{mode:?}");
    assert_eq!(
        b.neighbours(&d.device).await.expect("neighbours"),
        d.neighbours
    );
    assert_eq!(b.fdb(&d.device).await.expect("fdb"), d.fdb);
    assert_eq!(applied.mac.is_some(), d.vxlan.is_some());
    applied
}

async fn reachability(h: &dyn Harness) {
    let b = h.backend();
    let direct = b.route_to(ip("10.199.0.2")).await.expect("route_to");
    let dev = h.underlay().to_string();
    assert_eq!(
        direct,
        Some(Reach {
            dev: dev.clone(),
            direct: true
        })
    );
    let routed = b.route_to(ip("10.198.3.4")).await.expect("route_to");
    assert_eq!(routed, Some(Reach { dev, direct: false }));
    assert_eq!(b.route_to(ip("192.0.2.1")).await.expect("route_to"), None);
}

const MAC_B: &str = "0a:00:00:00:00:02";
const MAC_C: &str = "0a:00:00:00:00:03";

pub async fn run(h: &dyn Harness) {
    reachability(h).await;
    let foreign = cidr("10.50.0.0/16");
    h.add_foreign_route(foreign, ip("10.199.0.254")).await;

    let nodes = vec![
        node("a", "10.199.0.1", Some("10.42.1.0/24"), None),
        node("b", "10.199.0.2", Some("10.42.2.0/24"), Some(MAC_B)),
        node("c", "10.198.0.3", Some("10.42.3.0/24"), Some(MAC_C)),
        node("d", "10.199.0.4", None, None),
    ];
    let first = plan_and_apply(h, &nodes, Mode::Auto).await;
    assert_eq!(
        first.changes, 4,
        "a host-gw route, a VXLAN route and its two entries"
    );
    let mac = first.mac.expect("a VXLAN device");
    let b = h.backend();
    let routes = b.routes().await.expect("routes");
    assert!(routes
        .iter()
        .any(|r| r.dst == cidr("10.42.2.0/24") && !r.onlink));
    assert!(routes
        .iter()
        .any(|r| r.dst == cidr("10.42.3.0/24") && r.onlink));
    assert!(h.masquerades(cidr("10.42.0.0/16")).await && h.forwarding().await);

    let again = plan_and_apply(h, &nodes, Mode::Auto).await;
    assert_eq!(
        (again.changes, again.mac),
        (0, Some(mac)),
        "a restart changes nothing"
    );

    // b moves, c goes, d gets a pod CIDR but no MAC yet.
    let moved = vec![
        node("b", "10.199.0.9", Some("10.42.2.0/24"), Some(MAC_B)),
        node("d", "10.198.0.4", Some("10.42.4.0/24"), None),
    ];
    let changed = plan_and_apply(h, &moved, Mode::Vxlan).await;
    assert_eq!(changed.mac, Some(mac), "the same device");
    let fdb = b.fdb("krust.vxlan").await.expect("fdb");
    let mac_b: Mac = MAC_B.parse().expect("mac");
    assert_eq!(
        fdb.iter().map(|e| (e.mac, e.dst)).collect::<Vec<_>>(),
        [(mac_b, ip("10.199.0.9"))]
    );
    assert!(
        !h.has_route(cidr("10.42.3.0/24")).await,
        "c's route is gone"
    );
    assert!(!h.has_route(cidr("10.42.4.0/24")).await, "d has no MAC yet");

    // host-gw only: the device and its entries go.
    plan_and_apply(h, &moved, Mode::HostGw).await;
    assert_eq!(
        b.neighbours("krust.vxlan").await.expect("neighbours").len(),
        0
    );
    assert!(
        !h.has_route(cidr("10.42.4.0/24")).await,
        "d is behind a router"
    );
    assert!(h.has_route(cidr("10.42.2.0/24")).await);
    assert!(h.has_route(foreign).await, "a route we did not make stays");

    reconcile::cleanup(b, "krust.vxlan").await.expect("cleanup");
    assert!(b.routes().await.expect("routes").is_empty());
    assert!(!h.masquerades(cidr("10.42.0.0/16")).await);
    assert!(h.has_route(foreign).await, "cleanup leaves others' routes");
    reconcile::cleanup(b, "krust.vxlan")
        .await
        .expect("cleanup twice");
}

/// A route via an address off every connected subnet is refused by both backends (why
/// host-gw skips nodes behind a router, [`crate::plan::Skip::NotDirect`]), and so is a
/// neighbour on a VXLAN device that does not exist.
pub async fn refuses_what_the_kernel_refuses(h: &dyn Harness) {
    let r = Route {
        dst: cidr("10.42.9.0/24"),
        via: ip("10.198.0.9"),
        dev: h.underlay().to_string(),
        onlink: false,
    };
    let b = h.backend();
    assert!(b.replace_route(&r).await.is_err());
    let n = Neighbour {
        ip: ip("10.42.9.0"),
        mac: MAC_B.parse().expect("mac"),
    };
    assert!(b.replace_neighbour("krust.nothing", &n).await.is_err());
    assert!(b
        .neighbours("krust.nothing")
        .await
        .expect("neighbours")
        .is_empty());
}

const FAKE_DEV: &str = "eth0";

/// The fake, on a node with the suite's addresses.
pub struct FakeHarness {
    pub backend: FakeBackend,
}

impl FakeHarness {
    pub fn new() -> FakeHarness {
        FakeHarness {
            backend: FakeBackend::new(
                vec![(cidr("10.199.0.0/24"), FAKE_DEV.into())],
                vec![(cidr("10.198.0.0/16"), ip("10.199.0.254"), FAKE_DEV.into())],
            ),
        }
    }
}

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn backend(&self) -> &dyn PodNetBackend {
        &self.backend
    }
    fn underlay(&self) -> &str {
        FAKE_DEV
    }
    async fn add_foreign_route(&self, dst: Cidr, via: Ipv4Addr) {
        let dev = FAKE_DEV.into();
        self.backend.add_foreign_route(Route {
            dst,
            via,
            dev,
            onlink: false,
        });
    }
    async fn has_route(&self, dst: Cidr) -> bool {
        self.backend.route(dst).is_some()
    }
    async fn masquerades(&self, cluster: Cidr) -> bool {
        self.backend
            .masquerade()
            .is_some_and(|m| m.cluster == cluster)
    }
    async fn forwarding(&self) -> bool {
        self.backend.forwarding()
    }
}

/// Runs `args`; whether it succeeded (its output when it did).
pub(crate) async fn sh(args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the real backend cannot be tried here, if it cannot: it needs root, `ip`, `bridge`
/// and `nft`.
pub(crate) async fn missing_tools() -> Option<String> {
    if sh(&["id", "-u"]).await.as_deref().map(str::trim) != Some("0") {
        return Some("not root".into());
    }
    for tool in [["ip", "-V"], ["bridge", "-V"], ["nft", "--version"]] {
        if sh(&tool).await.is_none() {
            return Some(format!("no {}", tool[0]));
        }
    }
    None
}

/// `ip -n ns <words>` (words split on spaces), which must succeed.
pub(crate) async fn ip_in(ns: &str, words: &str) {
    let cmd: Vec<&str> = ["ip", "-n", ns]
        .into_iter()
        .chain(words.split(' '))
        .collect();
    assert!(sh(&cmd).await.is_some(), "{cmd:?} failed");
}

/// Network namespaces deleted on drop (also when a test panics).
pub(crate) struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// A fresh name `kpn-<tag>-<pid>-<n>`.
    pub fn name(tag: &str) -> String {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        format!("kpn-{tag}-{}-{n}", std::process::id())
    }

    pub async fn add(&mut self, name: &str) {
        assert!(
            sh(&["ip", "netns", "add", name]).await.is_some(),
            "ip netns add {name}"
        );
        self.0.push(name.to_string());
        assert!(sh(&["ip", "-n", name, "link", "set", "lo", "up"])
            .await
            .is_some());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", ns])
                .status();
        }
    }
}

/// A namespace with an underlay interface and a router, the real backend acting inside it.
pub struct NetnsHarness {
    ns: String,
    backend: IpRoute,
    _namespaces: Namespaces,
}

impl NetnsHarness {
    pub async fn start() -> Result<NetnsHarness, String> {
        if let Some(why) = missing_tools().await {
            return Err(why);
        }
        let ns = Namespaces::name("suite");
        let mut namespaces = Namespaces(Vec::new());
        namespaces.add(&ns).await;
        // A veth pair rather than a dummy: not every kernel has the dummy driver.
        for cmd in [
            "link add under0 type veth peer name under1",
            "addr add 10.199.0.1/24 dev under0",
            "link set under1 up",
            "link set under0 up",
            "route add 10.198.0.0/16 via 10.199.0.254",
        ] {
            ip_in(&ns, cmd).await;
        }
        Ok(NetnsHarness {
            backend: IpRoute::in_netns(&ns),
            ns,
            _namespaces: namespaces,
        })
    }
}

#[async_trait::async_trait]
impl Harness for NetnsHarness {
    fn backend(&self) -> &dyn PodNetBackend {
        &self.backend
    }
    fn underlay(&self) -> &str {
        "under0"
    }
    async fn add_foreign_route(&self, dst: Cidr, via: Ipv4Addr) {
        let (dst, via) = (dst.to_string(), via.to_string());
        let cmd = ["ip", "-n", &self.ns, "route", "add", &dst, "via", &via];
        assert!(sh(&cmd).await.is_some(), "{cmd:?}");
    }
    async fn has_route(&self, dst: Cidr) -> bool {
        let dst = dst.to_string();
        let out = sh(&["ip", "-n", &self.ns, "route", "show", "exact", &dst]).await;
        out.is_some_and(|o| !o.trim().is_empty())
    }
    async fn masquerades(&self, cluster: Cidr) -> bool {
        let table = [
            "ip",
            "netns",
            "exec",
            &self.ns,
            "nft",
            "list",
            "table",
            "ip",
            "krust-podnet",
        ];
        let out = sh(&table).await;
        out.is_some_and(|o| o.contains(&format!("ip saddr {cluster} masquerade")))
    }
    async fn forwarding(&self) -> bool {
        let cat = [
            "ip",
            "netns",
            "exec",
            &self.ns,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ];
        sh(&cat).await.is_some_and(|o| o.trim() == "1")
    }
}

#[tokio::test]
async fn the_fake_passes_the_backend_suite() {
    let h = FakeHarness::new();
    run(&h).await;
    refuses_what_the_kernel_refuses(&h).await;
}

#[tokio::test]
async fn iproute_passes_the_backend_suite() {
    let h = match NetnsHarness::start().await {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: {why} (needs root, ip, bridge and nft)");
            return;
        }
    };
    run(&h).await;
    refuses_what_the_kernel_refuses(&h).await;
}
