//! Two nodes for real: network namespaces `A` and `B` joined by a veth pair (10.199.0.1/24
//! and 10.199.0.2/24), each with a `krust0` bridge holding its pod CIDR's gateway
//! (10.42.1.1/24, 10.42.2.1/24) and a pod namespace behind it (10.42.1.5, 10.42.2.5).
//! Each node's backend converges to the plan for the two Nodes, and then:
//! - a pod pings the other node's pod, and the other pod saw the first pod's address
//!   (an nftables counter in its namespace; no NAT between pods);
//! - the node pings the other node's pod;
//! - a pod pings the other node's own address, outside the cluster CIDR, which drops
//!   pod sources: only a masqueraded ping passes;
//! - each node also has a foreign forward chain dropping by policy, which the backend
//!   must open for the cluster CIDR;
//! - after cleanup the pods no longer reach each other.
//!
//! In VXLAN mode the nodes first make their devices, then learn each other's MAC (as the
//! annotation would carry it).

use std::net::Ipv4Addr;

use super::iproute::IpRoute;
use super::suite::{cidr, ip, ip_in, missing_tools, sh, Namespaces};
use super::PodNetBackend;
use crate::net::Mac;
use crate::plan::{compute, Local, Mode, NodeNet, VxlanConfig};
use crate::reconcile;

struct Node {
    ns: String,
    pod_ns: String,
    addr: Ipv4Addr,
    pod: Ipv4Addr,
    local: Local,
    backend: IpRoute,
}

async fn must(cmd: &[&str]) -> String {
    match sh(cmd).await {
        Some(out) => out,
        None => panic!("{cmd:?} failed"),
    }
}

/// `nft -f -` of `script` in `ns`.
async fn nft(ns: &str, script: &str) {
    krust_nft::Runner::in_netns(ns)
        .nft(script)
        .await
        .expect("nft");
}

/// Node `i` (1 or 2): its namespaces, bridge and pod, a foreign forward chain that drops,
/// and an input chain that drops pings from pods (so only masqueraded ones arrive).
async fn node(i: u8, tag: &str, namespaces: &mut Namespaces) -> Node {
    let ns = Namespaces::name(&format!("{tag}{i}"));
    let pod_ns = format!("{ns}p");
    namespaces.add(&ns).await;
    namespaces.add(&pod_ns).await;
    let (gw, pod) = (format!("10.42.{i}.1"), format!("10.42.{i}.5"));
    for cmd in [
        "link add krust0 type bridge".to_string(),
        format!("addr add {gw}/24 dev krust0"),
        "link set krust0 up".to_string(),
        format!("link add vpod type veth peer name eth0 netns {pod_ns}"),
        "link set vpod master krust0 up".to_string(),
    ] {
        ip_in(&ns, &cmd).await;
    }
    for cmd in [
        format!("addr add {pod}/24 dev eth0"),
        "link set eth0 up".to_string(),
        format!("route add default via {gw}"),
    ] {
        ip_in(&pod_ns, &cmd).await;
    }
    nft(
        &ns,
        "table inet kpn-fw {\n  chain forward { type filter hook forward priority filter; policy drop; }\n  \
         chain input { type filter hook input priority filter; ip saddr 10.42.0.0/16 icmp type echo-request drop; }\n}\n",
    )
    .await;
    let addr = Ipv4Addr::new(10, 199, 0, i);
    Node {
        backend: IpRoute::in_netns(&ns),
        local: Local {
            name: format!("node-{i}"),
            internal_ip: addr,
            pod_cidr: cidr(&format!("10.42.{i}.0/24")),
        },
        ns,
        pod_ns,
        addr,
        pod: ip(&pod),
    }
}

/// The two nodes joined by a veth pair.
async fn topology(tag: &str, namespaces: &mut Namespaces) -> [Node; 2] {
    let a = node(1, tag, namespaces).await;
    let b = node(2, tag, namespaces).await;
    let pair = format!("link add under0 type veth peer name under0 netns {}", b.ns);
    ip_in(&a.ns, &pair).await;
    for n in [&a, &b] {
        ip_in(&n.ns, &format!("addr add {}/24 dev under0", n.addr)).await;
        ip_in(&n.ns, "link set under0 up").await;
    }
    [a, b]
}

/// The Nodes as the API would list them, with the MACs known so far.
fn nodes(pair: &[Node; 2], macs: [Option<Mac>; 2]) -> Vec<NodeNet> {
    pair.iter()
        .zip(macs)
        .map(|(n, mac)| NodeNet {
            name: n.local.name.clone(),
            internal_ip: Some(n.addr),
            pod_cidr: Some(n.local.pod_cidr),
            vxlan_mac: mac,
        })
        .collect()
}

/// Plans and applies on both nodes; their MACs.
async fn converge(pair: &[Node; 2], mode: Mode, macs: [Option<Mac>; 2]) -> [Option<Mac>; 2] {
    let all = nodes(pair, macs);
    let mut out = [None; 2];
    for (i, n) in pair.iter().enumerate() {
        let peer = &pair[1 - i];
        let reach = n.backend.route_to(peer.addr).await.expect("route_to");
        let d = compute(&n.local, &all, mode, &VxlanConfig::default(), |ip| {
            (ip == peer.addr).then(|| reach.clone()).flatten()
        });
        let applied = reconcile::apply(&n.backend, &super::suite::masquerade(), &d)
            .await
            .expect("apply");
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
        out[i] = applied.mac;
    }
    out
}

/// `ping -c1 -W1 [-I src] dst` in `ns` (iputils' or busybox's); its output on success.
async fn ping(ns: &str, src: Option<Ipv4Addr>, dst: Ipv4Addr) -> Option<String> {
    let (src, dst) = (src.map(|s| s.to_string()), dst.to_string());
    let mut args = vec!["-c1", "-W1"];
    if let Some(s) = &src {
        args.extend(["-I", s]);
    }
    args.push(&dst);
    let iputils = [&["ip", "netns", "exec", ns, "ping"], &args[..]].concat();
    let busybox = [&["ip", "netns", "exec", ns, "busybox", "ping"], &args[..]].concat();
    // Three tries: the first packet may wait for neighbour resolution.
    for _ in 0..3 {
        for cmd in [&iputils, &busybox] {
            if let Some(out) = sh(cmd).await {
                return Some(out);
            }
        }
    }
    None
}

/// Why this cannot run here, if it cannot.
async fn unable() -> Option<String> {
    if let Some(why) = missing_tools().await {
        return Some(why);
    }
    let busybox = sh(&["busybox", "--list"]).await;
    let have_ping = sh(&["ping", "-V"]).await.is_some()
        || busybox.is_some_and(|l| l.lines().any(|a| a == "ping"));
    (!have_ping).then(|| "no ping (iputils-ping or busybox)".to_string())
}

/// The counter of echo requests from `src` seen by the pod in `pod_ns`.
async fn count_requests_from(pod_ns: &str, src: Ipv4Addr) -> u64 {
    let list = [
        "ip",
        "netns",
        "exec",
        pod_ns,
        "nft",
        "-j",
        "list",
        "table",
        "ip",
        "kpn-probe",
    ];
    let out = must(&list).await;
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    let rules = v["nftables"].as_array().cloned().unwrap_or_default();
    let rule = rules
        .iter()
        .filter_map(|o| o.get("rule"))
        .find(|r| r["expr"].to_string().contains(&src.to_string()));
    let counted = rule.and_then(|r| {
        r["expr"]
            .as_array()?
            .iter()
            .find_map(|e| e["counter"]["packets"].as_u64())
    });
    counted.expect("the probe's counter")
}

async fn pods_reach_pods(mode: Mode, tag: &str) {
    if let Some(why) = unable().await {
        eprintln!("skipped: {why}");
        return;
    }
    let mut namespaces = Namespaces(Vec::new());
    let pair = topology(tag, &mut namespaces).await;
    let [a, b] = &pair;
    let probe = format!(
        "table ip kpn-probe {{\n  chain input {{ type filter hook input priority filter; ip saddr {} icmp type echo-request counter; }}\n}}\n",
        a.pod
    );
    nft(&b.pod_ns, &probe).await;

    let macs = converge(&pair, mode, [None, None]).await;
    if mode == Mode::Vxlan {
        assert!(macs.iter().all(Option::is_some), "{macs:?}");
        assert!(
            ping(&a.pod_ns, Some(a.pod), b.pod).await.is_none(),
            "no MAC known yet: no route"
        );
        converge(&pair, mode, macs).await;
    }
    let reply = ping(&a.pod_ns, Some(a.pod), b.pod).await;
    let reply = reply.unwrap_or_else(|| panic!("{mode:?}: pod {} -> pod {}", a.pod, b.pod));
    assert!(
        reply.contains(&format!("from {}", b.pod)),
        "the reply comes from the pod: {reply}"
    );
    assert!(
        count_requests_from(&b.pod_ns, a.pod).await >= 1,
        "the pod saw the other pod's address"
    );
    assert!(
        ping(&a.ns, None, b.pod).await.is_some(),
        "{mode:?}: node -> remote pod"
    );
    assert!(
        ping(&b.pod_ns, Some(b.pod), a.pod).await.is_some(),
        "{mode:?}: and back"
    );
    assert!(
        ping(&a.pod_ns, Some(a.pod), b.addr).await.is_some(),
        "{mode:?}: masqueraded out"
    );

    for n in &pair {
        reconcile::cleanup(&n.backend, "krust.vxlan")
            .await
            .expect("cleanup");
        let fw = must(&[
            "ip", "netns", "exec", &n.ns, "nft", "list", "table", "inet", "kpn-fw",
        ])
        .await;
        assert!(
            !fw.contains("krust-podnet"),
            "cleanup removes its accept rules: {fw}"
        );
    }
    assert!(
        ping(&a.pod_ns, Some(a.pod), b.pod).await.is_none(),
        "{mode:?}: gone after cleanup"
    );
}

#[tokio::test]
async fn host_gw_pods_reach_pods_across_nodes() {
    pods_reach_pods(Mode::HostGw, "hg").await;
}

#[tokio::test]
async fn vxlan_pods_reach_pods_across_nodes() {
    pods_reach_pods(Mode::Vxlan, "vx").await;
}
