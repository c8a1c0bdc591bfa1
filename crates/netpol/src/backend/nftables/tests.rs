use std::sync::Arc;

use super::*;
use crate::backend::suite;
use crate::rules::{PodRules, PortRule, Protocol};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn range(first: &str, last: &str) -> AddrRange {
    AddrRange {
        first: ip(first),
        last: ip(last),
    }
}

#[test]
fn renders_shared_chains_sets_and_verdict_maps() {
    let web = Arc::new(Allowed {
        any_port: vec![AddrRange::one(ip("10.42.0.9"))],
        ports: vec![
            PortRule {
                protocol: Protocol::Tcp,
                peers: range("10.42.1.0", "10.42.1.255"),
                ports: PortRange::one(80),
            },
            PortRule {
                protocol: Protocol::Udp,
                peers: AddrRange::ALL,
                ports: PortRange {
                    first: 53,
                    last: 54,
                },
            },
        ],
    });
    let deny = Arc::new(Allowed::default());
    let mut rules = PolicyRules::default();
    for pod in ["10.42.0.5", "10.42.0.6"] {
        rules.pods.insert(
            ip(pod),
            PodRules {
                ingress: Some(web.clone()),
                egress: None,
            },
        );
    }
    // An equal value behind another Arc still shares the chain.
    rules.pods.insert(
        ip("10.42.0.7"),
        PodRules {
            ingress: Some(Arc::new((*web).clone())),
            egress: Some(deny),
        },
    );
    let s = Nftables::new().render(&rules);
    assert!(
        s.starts_with("table ip krust-netpol\ndelete table ip krust-netpol\n"),
        "{s}"
    );
    assert!(
        s.contains(
            "set ingress-0-any { type ipv4_addr; flags interval; elements = { 10.42.0.9 } }"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "elements = { 10.42.1.0-10.42.1.255 . tcp . 80, 0.0.0.0-255.255.255.255 . udp . 53-54 }"
        ),
        "{s}"
    );
    assert!(s.contains("ip saddr @ingress-0-any return"), "{s}");
    assert!(
        s.contains("ip saddr . meta l4proto . th dport @ingress-0-ports return"),
        "{s}"
    );
    assert!(!s.contains("ingress-1"), "one chain for equal rules: {s}");
    assert!(
        s.contains("elements = { 10.42.0.5 : jump ingress-0, 10.42.0.6 : jump ingress-0, 10.42.0.7 : jump ingress-0 }"),
        "{s}"
    );
    assert!(
        s.contains("chain egress-0 {\n    drop\n  }"),
        "deny all: {s}"
    );
    assert!(s.contains("10.42.0.7 : jump egress-0"), "{s}");
    assert!(s.contains("10.42.0.5 . 10.42.0.5"), "self: {s}");
    let forward = s.split("chain forward").nth(1).expect("forward chain");
    let order = [
        "ct state established,related accept",
        "ip saddr . ip daddr @self accept",
        "ip daddr vmap @ingress-pods",
        "ip saddr vmap @egress-pods",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|r| forward.find(r).unwrap_or_else(|| panic!("{r}: {s}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{s}");
    assert!(!s.contains("hook output"), "the node reaches its pods: {s}");
}

#[test]
fn renders_an_open_table_without_rules() {
    let s = Nftables::new().render(&PolicyRules::default());
    assert!(!s.contains("vmap") && !s.contains("set "), "{s}");
    assert!(s.contains("type filter hook forward priority filter; policy accept;"));
}

#[tokio::test]
async fn nftables_passes_the_backend_suite() {
    let Some(harness) = suite::NetnsHarness::start().await else {
        eprintln!("skipped: needs root, nft, ip and busybox");
        return;
    };
    suite::run(&harness).await;
}

/// A synthetic cluster: `policies` policies over 100 namespaces of 100 pods each (labels
/// `app=a0..a9`, every tenth pod `role=frontend`), mixing pod, namespace and ipBlock
/// peers, numbered and named ports, ingress and egress.
fn synthetic(
    policies: usize,
) -> (
    Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    Vec<k8s_openapi::api::core::v1::Pod>,
    Vec<k8s_openapi::api::core::v1::Namespace>,
) {
    use serde_json::json;
    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("object")
    }
    let namespaces = (0..100)
        .map(|n| from(json!({"metadata": {"name": format!("ns-{n}"), "labels": {"team": format!("t{}", n % 5)}}})))
        .collect();
    let mut pods = Vec::new();
    for n in 0..100 {
        for j in 0..100 {
            let role = if j % 10 == 0 { "frontend" } else { "backend" };
            pods.push(from(json!({
                "metadata": {"namespace": format!("ns-{n}"), "name": format!("p-{j}"),
                             "labels": {"app": format!("a{}", j % 10), "role": role}},
                "spec": {"nodeName": format!("node-{}", j % 10), "containers": [{"name": "c",
                         "ports": [{"name": "http", "containerPort": 8080 + j % 3}]}]},
                "status": {"phase": "Running", "podIP": format!("10.64.{n}.{}", j + 1)},
            })));
        }
    }
    let policies = (0..policies)
        .map(|i| {
            let n = i % 100;
            let mut spec = json!({
                "podSelector": {"matchLabels": {"app": format!("a{}", (i / 100) % 10)}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (i / 100 + 1) % 10)}}}],
                     "ports": [{"port": 8000 + (i / 100) % 50}, {"port": "http"}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}},
                               "podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"port": 9000, "endPort": 9100}]},
                ],
            });
            if i % 4 == 0 {
                spec["egress"] = json!([
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.64.0.0/16"]}}],
                     "ports": [{"port": 443}]},
                    {"to": [{"namespaceSelector": {"matchLabels": {"team": "t0"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]},
                ]);
            }
            from(json!({"metadata": {"namespace": format!("ns-{n}"), "name": format!("np-{i}")},
                        "spec": spec}))
        })
        .collect();
    (policies, pods, namespaces)
}

/// Timings of `compute` and `render` at scale, and (as root with nft) of loading the
/// result into a scratch network namespace:
/// `cargo test -p krust-netpol --release -- --ignored --nocapture scale`.
#[tokio::test]
#[ignore = "a benchmark: run it with --release --ignored --nocapture"]
async fn scale_compute_and_render() {
    for count in [1_000, 10_000] {
        let (policies, pods, namespaces) = synthetic(count);
        for node in [Some("node-0"), None] {
            let t = std::time::Instant::now();
            let rules = crate::rules::compute(&policies, &pods, &namespaces, node);
            let computed = t.elapsed();
            let t = std::time::Instant::now();
            let script = Nftables::new().render(&rules);
            let rendered = t.elapsed();
            let elements = script.matches(" . ").count();
            eprintln!(
                "{count} policies, node {node:?}: {} pods isolated, compute {computed:?}, \
                 render {rendered:?}, {} KiB, ~{elements} concatenated elements",
                rules.pods.len(),
                script.len() / 1024
            );
            let netns = format!("knp-scale-{}", std::process::id());
            let scratch = std::process::Command::new("ip")
                .args(["netns", "add", &netns])
                .status()
                .is_ok_and(|s| s.success());
            if !scratch {
                continue;
            }
            let nft = Nftables::new().in_netns(&netns, "krust-netpol-scale");
            let t = std::time::Instant::now();
            let loaded = nft.sync(&rules).await;
            eprintln!("  nft -f: {:?}", t.elapsed());
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &netns])
                .status();
            loaded.expect("the table loads");
        }
    }
}
