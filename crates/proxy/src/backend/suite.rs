//! The behaviour every [`ProxyBackend`] must show, as one suite run through a [`Harness`]
//! that knows how to make a connection: the fake answers from its rules, nftables is
//! tried for real inside a network namespace of its own with two busybox httpd endpoints.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fake::{FakeBackend, Route};
use super::nftables::Nftables;
use super::ProxyBackend;
use crate::rules::{Endpoint, Protocol, ServicePort, ServiceRules};

/// What a new TCP connection met.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint with this index answered.
    Reached(usize),
    Refused,
    NoAnswer,
}

#[async_trait::async_trait]
pub trait Harness: Sync {
    fn backend(&self) -> &dyn ProxyBackend;
    /// Two endpoints that answer with their index.
    fn endpoints(&self) -> [Endpoint; 2];
    /// An address of the node itself, where node ports listen.
    fn node_ip(&self) -> Ipv4Addr;
    async fn connect(&self, ip: Ipv4Addr, port: u16) -> Outcome;
    /// Records a UDP flow from the client to `dst:port` whose replies come from
    /// `reply_src` (an endpoint when the data path DNATed it), as conntrack holds one.
    async fn add_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr);
    /// Whether that flow is still held.
    async fn has_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) -> bool;
}

const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 7, 1);
const NODE_PORT: u16 = 30080;

fn rules(endpoints: &[Endpoint], node_port: bool) -> ServiceRules {
    ServiceRules {
        ports: vec![web(endpoints, node_port, None)],
    }
}

fn web(endpoints: &[Endpoint], node_port: bool, affinity_seconds: Option<u32>) -> ServicePort {
    ServicePort {
        name: "default/web:http".into(),
        cluster_ip: SERVICE_IP,
        port: 80,
        protocol: Protocol::Tcp,
        node_port: node_port.then_some(NODE_PORT),
        external_ips: vec![],
        endpoints: endpoints.to_vec(),
        affinity_seconds,
        local_endpoints: None,
    }
}

/// `web` with ClientIP affinity, and as many other services (without endpoints) beside it.
fn sticky(endpoints: &[Endpoint], others: u8) -> ServiceRules {
    let mut ports: Vec<ServicePort> = (0..others)
        .map(|i| ServicePort {
            name: format!("default/other-{i}:"),
            cluster_ip: Ipv4Addr::new(10, 43, 8, i),
            endpoints: vec![],
            affinity_seconds: None,
            local_endpoints: None,
            ..web(endpoints, false, None)
        })
        .collect();
    ports.push(web(endpoints, false, Some(600)));
    ports.sort();
    ServiceRules { ports }
}

/// Where `n` new connections to the service went; panics on any that reached nothing.
async fn reached(h: &dyn Harness, n: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        match h.connect(SERVICE_IP, 80).await {
            Outcome::Reached(i) => {
                seen.insert(i);
            }
            other => panic!("sticky service: {other:?}"),
        }
    }
    seen
}

/// A UDP service (`default/dns:dns` on port 53) with `endpoints`.
fn udp(endpoints: &[Endpoint]) -> ServiceRules {
    ServiceRules {
        ports: vec![ServicePort {
            name: "default/dns:dns".into(),
            port: 53,
            protocol: Protocol::Udp,
            ..web(endpoints, false, None)
        }],
    }
}

/// UDP flows outlive rules: those a sync makes stale are forgotten, the others kept.
async fn stale_udp_flows_are_cleared(h: &dyn Harness) {
    let [a, b] = h.endpoints();
    let backend = h.backend();
    backend
        .sync(&udp(&[]))
        .await
        .expect("sync udp, no endpoints");
    h.add_udp_flow(SERVICE_IP, 53, SERVICE_IP).await;
    backend.sync(&udp(&[a, b])).await.expect("sync udp");
    assert!(
        !h.has_udp_flow(SERVICE_IP, 53, SERVICE_IP).await,
        "a flow from before the service had endpoints is cleared when it gets some"
    );
    h.add_udp_flow(SERVICE_IP, 53, a.ip).await;
    h.add_udp_flow(SERVICE_IP, 53, b.ip).await;
    backend.sync(&udp(&[b])).await.expect("sync udp without a");
    assert!(
        !h.has_udp_flow(SERVICE_IP, 53, a.ip).await,
        "the flow to the endpoint that went is cleared"
    );
    assert!(
        h.has_udp_flow(SERVICE_IP, 53, b.ip).await,
        "the flow to the endpoint that stays is kept"
    );
    backend
        .sync(&ServiceRules::default())
        .await
        .expect("sync without the service");
    assert!(
        !h.has_udp_flow(SERVICE_IP, 53, b.ip).await,
        "the service went: its flows are cleared"
    );
}

pub async fn run(h: &dyn Harness) {
    stale_udp_flows_are_cleared(h).await;
    let [a, b] = h.endpoints();
    let backend = h.backend();

    backend
        .sync(&rules(&[a], false))
        .await
        .expect("sync one endpoint");
    assert_eq!(
        h.connect(SERVICE_IP, 80).await,
        Outcome::Reached(0),
        "one endpoint"
    );

    backend
        .sync(&rules(&[a, b], true))
        .await
        .expect("sync two endpoints");
    let mut seen = [false, false];
    for _ in 0..24 {
        match h.connect(SERVICE_IP, 80).await {
            Outcome::Reached(i) => seen[i] = true,
            other => panic!("two endpoints: {other:?}"),
        }
    }
    assert_eq!(seen, [true, true], "traffic is spread over both endpoints");
    assert!(
        matches!(h.connect(h.node_ip(), NODE_PORT).await, Outcome::Reached(_)),
        "the node port leads to the endpoints"
    );

    // ClientIP affinity: one client keeps reaching one endpoint, through syncs that change
    // other services, until its endpoint goes.
    backend
        .sync(&sticky(&[a, b], 0))
        .await
        .expect("sync sticky");
    let first = reached(h, 8).await;
    assert_eq!(first.len(), 1, "one client, one endpoint: {first:?}");
    backend
        .sync(&sticky(&[a, b], 3))
        .await
        .expect("sync sticky with other services");
    assert_eq!(reached(h, 8).await, first, "affinity survives syncs");
    let kept = if first.contains(&0) { b } else { a };
    backend
        .sync(&sticky(&[kept], 3))
        .await
        .expect("sync sticky without its endpoint");
    let moved = reached(h, 4).await;
    assert_eq!(moved.len(), 1);
    assert!(
        moved.is_disjoint(&first),
        "the client moved to the endpoint left"
    );

    backend
        .sync(&rules(&[], true))
        .await
        .expect("sync no endpoints");
    assert_eq!(
        h.connect(SERVICE_IP, 80).await,
        Outcome::Refused,
        "no endpoints"
    );
    assert_eq!(
        h.connect(h.node_ip(), NODE_PORT).await,
        Outcome::Refused,
        "node port, no endpoints"
    );

    backend.sync(&rules(&[b], false)).await.expect("sync again");
    assert_eq!(
        h.connect(SERVICE_IP, 80).await,
        Outcome::Reached(1),
        "replaced endpoint"
    );

    backend
        .sync(&ServiceRules::default())
        .await
        .expect("sync nothing");
    assert_eq!(
        h.connect(SERVICE_IP, 80).await,
        Outcome::NoAnswer,
        "service removed"
    );

    backend
        .sync(&rules(&[a], false))
        .await
        .expect("sync after removal");
    backend.cleanup().await.expect("cleanup");
    assert_eq!(
        h.connect(SERVICE_IP, 80).await,
        Outcome::NoAnswer,
        "after cleanup"
    );
    backend.cleanup().await.expect("cleanup twice");
}

/// The fake, with endpoints that exist only as addresses.
pub struct FakeHarness {
    pub backend: FakeBackend,
}

impl FakeHarness {
    pub fn new() -> FakeHarness {
        FakeHarness {
            backend: FakeBackend::default(),
        }
    }
}

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn backend(&self) -> &dyn ProxyBackend {
        &self.backend
    }
    fn endpoints(&self) -> [Endpoint; 2] {
        [
            Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, 5),
                port: 8080,
            },
            Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, 6),
                port: 8080,
            },
        ]
    }
    fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 1)
    }
    async fn connect(&self, ip: Ipv4Addr, port: u16) -> Outcome {
        let client = Ipv4Addr::new(10, 42, 1, 9);
        match self
            .backend
            .route(client, ip, port, Protocol::Tcp, ip == self.node_ip())
        {
            Route::To(e) => {
                let index = self.endpoints().iter().position(|x| *x == e);
                index.map_or(Outcome::NoAnswer, Outcome::Reached)
            }
            Route::Rejected => Outcome::Refused,
            Route::Untouched => Outcome::NoAnswer,
        }
    }
    async fn add_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) {
        self.backend.add_udp_flow(dst, port, reply_src);
    }
    async fn has_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) -> bool {
        self.backend.has_udp_flow(dst, port, reply_src)
    }
}

/// A network namespace with loopback, a veth pair holding the node address (and the
/// default route, so service addresses are routable), and busybox httpd endpoints on
/// 127.0.0.1 and on the node address: the nftables backend acts inside it only.
pub struct NetnsHarness {
    netns: String,
    backend: Nftables,
    servers: Vec<tokio::process::Child>,
    dir: std::path::PathBuf,
}

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

async fn sh(args: &[&str]) -> bool {
    tokio::process::Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

impl NetnsHarness {
    /// None when this machine cannot run it (not root, or no nft, ip, busybox or conntrack).
    pub async fn start() -> Option<NetnsHarness> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        if !sh(&["nft", "--version"]).await
            || !sh(&["busybox", "true"]).await
            || !sh(&["conntrack", "--version"]).await
        {
            return None;
        }
        let netns = format!(
            "kp-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        if !sh(&["ip", "netns", "add", &netns]).await {
            return None;
        }
        let dir = std::env::temp_dir().join(&netns);
        let mut h = NetnsHarness {
            backend: Nftables::new(Some("10.42.0.0/16"))
                .ok()?
                .in_netns(&netns, "krust-proxy-suite"),
            netns,
            servers: Vec::new(),
            dir,
        };
        let ns = h.netns.clone();
        let node = format!("{NODE_IP}/24");
        for cmd in [
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", &ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ],
            vec!["ip", "-n", &ns, "addr", "add", &node, "dev", "d0"],
            vec!["ip", "-n", &ns, "link", "set", "d0", "up"],
            vec!["ip", "-n", &ns, "link", "set", "d1", "up"],
            vec!["ip", "-n", &ns, "route", "add", "default", "dev", "d0"],
        ] {
            assert!(sh(&cmd).await, "{cmd:?}");
        }
        for (i, e) in h.endpoints().iter().enumerate() {
            let root = h.dir.join(i.to_string());
            std::fs::create_dir_all(&root).ok()?;
            std::fs::write(root.join("id"), i.to_string()).ok()?;
            let child = tokio::process::Command::new("ip")
                .args(["netns", "exec", &ns, "busybox", "httpd", "-f"])
                .arg("-p")
                .arg(format!("{}:{}", e.ip, e.port))
                .arg("-h")
                .arg(&root)
                .kill_on_drop(true)
                .spawn()
                .ok()?;
            h.servers.push(child);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Some(h)
    }
}

impl Drop for NetnsHarness {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.start_kill();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait::async_trait]
impl Harness for NetnsHarness {
    fn backend(&self) -> &dyn ProxyBackend {
        &self.backend
    }
    fn endpoints(&self) -> [Endpoint; 2] {
        [
            Endpoint {
                ip: Ipv4Addr::LOCALHOST,
                port: 18081,
            },
            Endpoint {
                ip: NODE_IP,
                port: 18082,
            },
        ]
    }
    fn node_ip(&self) -> Ipv4Addr {
        NODE_IP
    }
    async fn connect(&self, ip: Ipv4Addr, port: u16) -> Outcome {
        // busybox's own `wget -T` crashes (Debian 12's busybox-static): `timeout` instead.
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "timeout",
                "3",
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
            ])
            .arg(format!("http://{ip}:{port}/id"))
            .output()
            .await;
        let Ok(out) = out else {
            return Outcome::NoAnswer;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match stdout.trim().parse::<usize>() {
            Ok(i) if out.status.success() => Outcome::Reached(i),
            _ if stderr.contains("refused") => Outcome::Refused,
            _ => Outcome::NoAnswer,
        }
    }
    async fn add_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) {
        // Each flow from its own client port: conntrack holds one entry per original tuple.
        static CLIENT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(40000);
        let sport = CLIENT_PORT.fetch_add(1, Ordering::Relaxed).to_string();
        let (client, port) = (NODE_IP.to_string(), port.to_string());
        let inserted = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns, "conntrack", "-I", "-p", "udp"])
            .args(["-s", &client, "-d", &dst.to_string()])
            .args(["--sport", &sport, "--dport", &port])
            .args(["-r", &reply_src.to_string(), "-q", &client])
            .args(["--reply-port-src", &port, "--reply-port-dst", &sport])
            .args(["-t", "120", "-u", "SEEN_REPLY"])
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        assert!(inserted, "conntrack -I {dst}:{port} via {reply_src}");
    }
    async fn has_udp_flow(&self, dst: Ipv4Addr, port: u16, reply_src: Ipv4Addr) -> bool {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns, "conntrack", "-L", "-p", "udp"])
            .args(["--orig-dst", &dst.to_string()])
            .args(["--orig-port-dst", &port.to_string()])
            .args(["--reply-src", &reply_src.to_string()])
            .output()
            .await;
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("udp"))
    }
}

#[tokio::test]
async fn the_fake_passes_the_backend_suite() {
    let h = FakeHarness::new();
    run(&h).await;
    assert!(h.backend.syncs() >= 6);
}
