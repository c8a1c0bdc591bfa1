//! The behaviour every [`PolicyBackend`] must show, as one suite run through a [`Harness`]
//! that knows how to make a connection: the fake answers from its rules; nftables is tried
//! for real in a network namespace of its own, with a bridge and three veth "pods" in
//! namespaces of their own, each serving HTTP with busybox on ports 80 and 8080.
//!
//! The suite writes Pods, Namespaces and NetworkPolicies and runs [`compute`] on them, so
//! it shows the semantics end to end, not only that rules are copied into the kernel.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::fake::FakeBackend;
use super::nftables::Nftables;
use super::PolicyBackend;
use crate::rules::{compute, PolicyRules, Protocol};

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// The pod with this index.
    Pod(usize),
    /// The node itself (the host side of the pod network).
    Node,
}

#[async_trait::async_trait]
pub trait Harness: Sync {
    fn backend(&self) -> &dyn PolicyBackend;
    /// Three pod addresses; each pod serves HTTP on ports 80 and 8080.
    fn pods(&self) -> [Ipv4Addr; 3];
    /// Whether a new TCP connection from `from` to `to` on `port` is answered by `to`.
    /// The node serves port 80 only.
    async fn connect(&self, from: Host, to: Host, port: u16) -> bool;
}

/// Pod 0 `prod/server` (container port `alt` = 8080), pod 1 `prod/client`, pod 2
/// `dev/client`.
fn pods(ips: [Ipv4Addr; 3]) -> Vec<Pod> {
    let pod = |i: usize, ns: &str, app: &str, ports: Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("pod-{i}"), "labels": {"app": app}},
            "spec": {"nodeName": "node", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ips[i].to_string()}]},
        }))
        .expect("pod")
    };
    vec![
        pod(
            0,
            "prod",
            "server",
            json!([{"name": "alt", "containerPort": 8080}]),
        ),
        pod(1, "prod", "client", json!([])),
        pod(2, "dev", "client", json!([])),
    ]
}

fn namespaces() -> Vec<Namespace> {
    ["prod", "dev"]
        .iter()
        .map(|n| {
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"team": n}}}))
                .expect("namespace")
        })
        .collect()
}

fn policy(ns: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
        .expect("policy")
}

fn app(name: &str) -> Value {
    json!({"matchLabels": {"app": name}})
}

/// A policy on prod/server allowing ingress by `rule` (None: denying all ingress).
fn server_ingress(rule: Option<Value>) -> NetworkPolicy {
    policy(
        "prod",
        json!({"podSelector": app("server"), "policyTypes": ["Ingress"],
               "ingress": rule.into_iter().collect::<Vec<_>>()}),
    )
}

/// A policy on prod/client allowing egress by `rule` (None: denying all egress).
fn client_egress(rule: Option<Value>) -> NetworkPolicy {
    policy(
        "prod",
        json!({"podSelector": app("client"), "policyTypes": ["Egress"],
               "egress": rule.into_iter().collect::<Vec<_>>()}),
    )
}

async fn apply(h: &dyn Harness, policies: &[NetworkPolicy]) -> PolicyRules {
    let rules = compute(policies, &pods(h.pods()), &namespaces(), None);
    h.backend().sync(&rules).await.expect("sync");
    rules
}

/// Asserts what each (from, to, port) connection meets.
async fn expect(h: &dyn Harness, what: &str, cases: &[(Host, Host, u16, bool)]) {
    for &(from, to, port, want) in cases {
        let got = h.connect(from, to, port).await;
        assert_eq!(got, want, "{what}: {from:?} -> {to:?}:{port}");
    }
}

use Host::{Node, Pod as P};

async fn ingress(h: &dyn Harness) {
    apply(h, &[server_ingress(None)]).await;
    expect(
        h,
        "default deny ingress",
        &[
            (P(1), P(0), 80, false),
            (P(2), P(0), 80, false),
            (P(0), P(1), 80, true), // its own connection's replies come back
            (P(1), P(2), 80, true), // selected by no policy: open
            (Node, P(0), 80, true), // the node always reaches its pods
        ],
    )
    .await;

    let by_pod = json!({"from": [{"podSelector": app("client")}]});
    apply(h, &[server_ingress(Some(by_pod))]).await;
    expect(
        h,
        "podSelector",
        &[(P(1), P(0), 80, true), (P(2), P(0), 80, false)],
    )
    .await;

    let by_ns = json!({"from": [{"namespaceSelector": {"matchLabels": {"team": "dev"}}}]});
    apply(h, &[server_ingress(Some(by_ns))]).await;
    expect(
        h,
        "namespaceSelector",
        &[(P(2), P(0), 80, true), (P(1), P(0), 80, false)],
    )
    .await;

    let dev = json!({"matchLabels": {"team": "dev"}});
    let both = |pods: Value| json!({"from": [{"namespaceSelector": dev, "podSelector": pods}]});
    apply(h, &[server_ingress(Some(both(app("server"))))]).await;
    expect(h, "both, no pod", &[(P(2), P(0), 80, false)]).await;
    apply(h, &[server_ingress(Some(both(app("client"))))]).await;
    expect(
        h,
        "both",
        &[(P(2), P(0), 80, true), (P(1), P(0), 80, false)],
    )
    .await;

    let [_, _, c] = h.pods();
    let block =
        json!({"from": [{"ipBlock": {"cidr": format!("{c}/24"), "except": [format!("{c}/32")]}}]});
    apply(h, &[server_ingress(Some(block))]).await;
    expect(
        h,
        "ipBlock with except",
        &[(P(1), P(0), 80, true), (P(2), P(0), 80, false)],
    )
    .await;
}

async fn ports(h: &dyn Harness) {
    let named = json!({"ports": [{"port": "alt"}]});
    apply(h, &[server_ingress(Some(named))]).await;
    expect(
        h,
        "named port",
        &[(P(1), P(0), 8080, true), (P(1), P(0), 80, false)],
    )
    .await;
    let range = json!({"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]});
    apply(h, &[server_ingress(Some(range))]).await;
    expect(
        h,
        "endPort",
        &[(P(2), P(0), 8080, true), (P(2), P(0), 80, false)],
    )
    .await;
    let udp = json!({"ports": [{"protocol": "UDP", "port": 80}]});
    apply(h, &[server_ingress(Some(udp))]).await;
    expect(h, "UDP is not TCP", &[(P(1), P(0), 80, false)]).await;
}

async fn egress(h: &dyn Harness) {
    let rules = apply(h, &[client_egress(None)]).await;
    assert_eq!(rules.isolated(), (0, 1));
    expect(
        h,
        "default deny egress",
        &[
            (P(1), P(2), 80, false),
            (P(1), P(0), 80, false),
            (P(2), P(1), 80, true), // pod 1 may open nothing, but its replies pass
            (P(1), Node, 80, true), // the node's own addresses are not policed
        ],
    )
    .await;

    let to_server = json!({"to": [{"podSelector": app("server")}], "ports": [{"port": 80}]});
    apply(h, &[client_egress(Some(to_server.clone()))]).await;
    expect(
        h,
        "egress allow",
        &[
            (P(1), P(0), 80, true),
            (P(1), P(0), 8080, false),
            (P(1), P(2), 80, false),
        ],
    )
    .await;

    let named = json!({"ports": [{"port": "alt"}]});
    apply(h, &[client_egress(Some(named))]).await;
    expect(
        h,
        "egress named port, resolved on the peer",
        &[(P(1), P(0), 8080, true), (P(1), P(2), 8080, false)],
    )
    .await;

    // Egress allows, ingress does not: both must.
    let policies = [client_egress(Some(to_server)), server_ingress(None)];
    apply(h, &policies).await;
    expect(h, "egress and ingress", &[(P(1), P(0), 80, false)]).await;
    let by_pod = json!({"from": [{"podSelector": app("client")}]});
    let policies = [policies[0].clone(), server_ingress(Some(by_pod))];
    apply(h, &policies).await;
    expect(h, "egress and ingress allow", &[(P(1), P(0), 80, true)]).await;
}

pub async fn run(h: &dyn Harness) {
    apply(h, &[]).await;
    expect(
        h,
        "no policies",
        &[(P(1), P(0), 80, true), (P(2), P(0), 8080, true)],
    )
    .await;
    ingress(h).await;
    ports(h).await;
    egress(h).await;

    apply(h, &[]).await;
    expect(
        h,
        "policies removed",
        &[(P(1), P(0), 80, true), (P(1), P(2), 80, true)],
    )
    .await;

    apply(h, &[server_ingress(None)]).await;
    h.backend().cleanup().await.expect("cleanup");
    expect(h, "after cleanup", &[(P(1), P(0), 80, true)]).await;
    h.backend().cleanup().await.expect("cleanup twice");
}

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The fake, with pods that exist only as addresses.
pub struct FakeHarness {
    pub backend: FakeBackend,
}

impl FakeHarness {
    pub fn new() -> FakeHarness {
        FakeHarness {
            backend: FakeBackend::new(vec![NODE_IP]),
        }
    }
}

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn backend(&self) -> &dyn PolicyBackend {
        &self.backend
    }
    fn pods(&self) -> [Ipv4Addr; 3] {
        [10, 11, 12].map(|i| Ipv4Addr::new(10, 77, 0, i))
    }
    async fn connect(&self, from: Host, to: Host, port: u16) -> bool {
        let ip = |h: Host| match h {
            Host::Pod(i) => self.pods()[i],
            Host::Node => NODE_IP,
        };
        let serves = match to {
            Host::Pod(_) => port == 80 || port == 8080,
            Host::Node => port == 80,
        };
        serves && self.backend.allows(ip(from), ip(to), Protocol::Tcp, port)
    }
}

/// A "node" network namespace with a bridge holding the node address, three "pod"
/// namespaces on it through veth pairs, and busybox httpd servers in each (the node's on
/// port 80): the nftables backend acts inside the node namespace only.
pub struct NetnsHarness {
    node: String,
    backend: Nftables,
    servers: Vec<tokio::process::Child>,
    dir: std::path::PathBuf,
}

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
    fn netns(&self, h: Host) -> String {
        match h {
            Host::Pod(i) => format!("{}-{i}", self.node),
            Host::Node => self.node.clone(),
        }
    }

    /// None when this machine cannot run it (not root, or no nft, ip or busybox).
    pub async fn start() -> Option<NetnsHarness> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        if !sh(&["nft", "--version"]).await || !sh(&["busybox", "true"]).await {
            return None;
        }
        let node = format!(
            "knp-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        if !sh(&["ip", "netns", "add", &node]).await {
            return None;
        }
        let mut h = NetnsHarness {
            backend: Nftables::new().in_netns(&node, "krust-netpol-suite"),
            dir: std::env::temp_dir().join(&node),
            node,
            servers: Vec::new(),
        };
        h.wire().await;
        h.serve(Host::Node, NODE_IP, 80).ok()?;
        for (i, ip) in h.pods().into_iter().enumerate() {
            for port in [80, 8080] {
                h.serve(Host::Pod(i), ip, port).ok()?;
            }
        }
        // Wait for the servers (nothing is policed yet).
        for _ in 0..30 {
            if h.connect(Host::Node, Host::Pod(2), 8080).await {
                return Some(h);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }

    /// The bridge, the pods' namespaces and their veth pairs.
    async fn wire(&self) {
        let ns = self.node.clone();
        let node_addr = format!("{NODE_IP}/24");
        for cmd in [
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
            vec!["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"],
            vec!["ip", "-n", &ns, "addr", "add", &node_addr, "dev", "br0"],
            vec!["ip", "-n", &ns, "link", "set", "br0", "up"],
        ] {
            assert!(sh(&cmd).await, "{cmd:?}");
        }
        for (i, ip) in self.pods().into_iter().enumerate() {
            let pod = self.netns(Host::Pod(i));
            let (host_end, pod_end) = (format!("v{i}"), format!("p{i}"));
            let addr = format!("{ip}/24");
            let gateway = NODE_IP.to_string();
            for cmd in [
                vec!["ip", "netns", "add", &pod],
                vec![
                    "ip", "-n", &ns, "link", "add", &host_end, "type", "veth", "peer", "name",
                    &pod_end,
                ],
                vec!["ip", "-n", &ns, "link", "set", &pod_end, "netns", &pod],
                vec!["ip", "-n", &ns, "link", "set", &host_end, "master", "br0"],
                vec!["ip", "-n", &ns, "link", "set", &host_end, "up"],
                vec!["ip", "-n", &pod, "link", "set", "lo", "up"],
                vec!["ip", "-n", &pod, "addr", "add", &addr, "dev", &pod_end],
                vec!["ip", "-n", &pod, "link", "set", &pod_end, "up"],
                vec!["ip", "-n", &pod, "route", "add", "default", "via", &gateway],
            ] {
                assert!(sh(&cmd).await, "{cmd:?}");
            }
        }
    }

    /// A busybox httpd in `host`'s namespace on `ip:port` answering `/id` with `host`.
    fn serve(&mut self, host: Host, ip: Ipv4Addr, port: u16) -> std::io::Result<()> {
        let root = self.dir.join(format!("{host:?}-{port}"));
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("id"), format!("{host:?}"))?;
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns(host), "busybox", "httpd", "-f"])
            .arg("-p")
            .arg(format!("{ip}:{port}"))
            .arg("-h")
            .arg(&root)
            .kill_on_drop(true)
            .spawn()?;
        self.servers.push(child);
        Ok(())
    }
}

impl Drop for NetnsHarness {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.start_kill();
        }
        for ns in (0..3)
            .map(|i| self.netns(Host::Pod(i)))
            .chain([self.node.clone()])
        {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &ns])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait::async_trait]
impl Harness for NetnsHarness {
    fn backend(&self) -> &dyn PolicyBackend {
        &self.backend
    }
    fn pods(&self) -> [Ipv4Addr; 3] {
        [10, 11, 12].map(|i| Ipv4Addr::new(10, 77, 0, i))
    }
    async fn connect(&self, from: Host, to: Host, port: u16) -> bool {
        let ip = match to {
            Host::Pod(i) => self.pods()[i],
            Host::Node => NODE_IP,
        };
        // A dropped SYN is only noticed by the timeout (busybox's own `wget -T` crashes
        // in Debian 12's busybox-static).
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns(from), "timeout", "2"])
            .args(["busybox", "wget", "-q", "-O", "-"])
            .arg(format!("http://{ip}:{port}/id"))
            .stderr(Stdio::null())
            .output()
            .await;
        out.is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout) == format!("{to:?}")
        })
    }
}

#[tokio::test]
async fn the_fake_passes_the_backend_suite() {
    let h = FakeHarness::new();
    run(&h).await;
    assert!(h.backend.syncs() >= 15);
}
