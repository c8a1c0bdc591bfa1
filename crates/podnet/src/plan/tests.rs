use serde_json::json;

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn mac(s: &str) -> Mac {
    s.parse().expect("mac")
}

/// A Node as the API serves it.
fn node(name: &str, addr: Option<&str>, pod_cidr: Option<&str>, mac: Option<&str>) -> Node {
    let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {"addresses": [
        {"type": "Hostname", "address": name}
    ]}});
    if let Some(a) = addr {
        v["status"]["addresses"]
            .as_array_mut()
            .expect("addresses")
            .push(json!({"type": "InternalIP", "address": a}));
    }
    if let Some(c) = pod_cidr {
        v["spec"]["podCIDR"] = json!(c);
        v["spec"]["podCIDRs"] = json!([c]);
    }
    if let Some(m) = mac {
        v["metadata"]["annotations"] = json!({VXLAN_MAC_ANNOTATION: m});
    }
    serde_json::from_value(v).expect("node")
}

fn nets(nodes: &[Node]) -> Vec<NodeNet> {
    nodes.iter().map(NodeNet::from_node).collect()
}

fn local() -> Local {
    Local {
        name: "a".into(),
        internal_ip: ip("10.199.0.1"),
        pod_cidr: cidr("10.42.1.0/24"),
    }
}

/// 10.199.0.0/24 is directly connected on `eth0`; 10.198.0.0/16 behind a gateway.
fn reach(ip: Ipv4Addr) -> Option<Reach> {
    if cidr("10.199.0.0/24").contains(ip) {
        Some(Reach {
            dev: "eth0".into(),
            direct: true,
        })
    } else if cidr("10.198.0.0/16").contains(ip) {
        Some(Reach {
            dev: "eth0".into(),
            direct: false,
        })
    } else {
        None
    }
}

fn host_gw(dst: &str, via: &str) -> Route {
    Route {
        dst: cidr(dst),
        via: ip(via),
        dev: "eth0".into(),
        onlink: false,
    }
}

fn vxlan_route(dst: &str) -> Route {
    let dst = cidr(dst);
    Route {
        dst,
        via: dst.network(),
        dev: "krust.vxlan".into(),
        onlink: true,
    }
}

fn plan(nodes: &[Node], mode: Mode) -> Desired {
    compute(&local(), &nets(nodes), mode, &VxlanConfig::default(), reach)
}

#[test]
fn reads_the_node() {
    let n = NodeNet::from_node(&node(
        "b",
        Some("10.199.0.2"),
        Some("10.42.2.0/24"),
        Some("0A:00:00:00:00:02"),
    ));
    assert_eq!(n.internal_ip, Some(ip("10.199.0.2")));
    assert_eq!(n.pod_cidr, Some(cidr("10.42.2.0/24")));
    assert_eq!(n.vxlan_mac, Some(mac("0a:00:00:00:00:02")));
    let bare = NodeNet::from_node(&node("c", Some("fd00::1"), None, Some("junk")));
    assert_eq!(
        (bare.internal_ip, bare.pod_cidr, bare.vxlan_mac),
        (None, None, None)
    );
    assert_eq!(Local::from_node(&bare), None);
    // Dual stack: the IPv4 prefix of podCIDRs.
    let mut dual = node("d", Some("10.199.0.4"), None, None);
    if let Some(s) = dual.spec.as_mut() {
        s.pod_cidrs = Some(vec!["fd42::/64".into(), "10.42.4.0/24".into()]);
    }
    assert_eq!(
        NodeNet::from_node(&dual).pod_cidr,
        Some(cidr("10.42.4.0/24"))
    );
}

#[test]
fn own_node_and_nodes_without_a_pod_cidr_or_address_are_skipped() {
    let d = plan(
        &[
            node("a", Some("10.199.0.1"), Some("10.42.1.0/24"), None),
            node("b", Some("10.199.0.2"), None, None),
            node("c", None, Some("10.42.3.0/24"), None),
            node("d", Some("10.199.0.4"), Some("10.42.4.0/24"), None),
        ],
        Mode::HostGw,
    );
    assert_eq!(
        d.routes,
        BTreeSet::from([host_gw("10.42.4.0/24", "10.199.0.4")])
    );
    assert_eq!(d.skipped.get("b"), Some(&Skip::NoPodCidr));
    assert_eq!(d.skipped.get("c"), Some(&Skip::NoInternalIp));
    assert!(
        !d.skipped.contains_key("a"),
        "its own node is no remote node"
    );
    assert_eq!(d.vxlan, None, "host-gw makes no VXLAN device");
    assert_eq!(d.device, "krust.vxlan");
}

#[test]
fn auto_mode_routes_directly_where_it_can_and_through_vxlan_elsewhere() {
    let d = plan(
        &[
            node(
                "b",
                Some("10.199.0.2"),
                Some("10.42.2.0/24"),
                Some("0a:00:00:00:00:02"),
            ),
            node(
                "c",
                Some("10.198.0.3"),
                Some("10.42.3.0/24"),
                Some("0a:00:00:00:00:03"),
            ),
            node(
                "e",
                Some("192.0.2.9"),
                Some("10.42.5.0/24"),
                Some("0a:00:00:00:00:05"),
            ),
        ],
        Mode::Auto,
    );
    let want = [
        host_gw("10.42.2.0/24", "10.199.0.2"),
        vxlan_route("10.42.3.0/24"),
        // No route to its address at all: VXLAN still tries (the kernel may learn one).
        vxlan_route("10.42.5.0/24"),
    ];
    assert_eq!(d.routes, BTreeSet::from(want));
    assert!(d.neighbours.contains(&Neighbour {
        ip: ip("10.42.3.0"),
        mac: mac("0a:00:00:00:00:03")
    }));
    assert!(d.fdb.contains(&FdbEntry {
        mac: mac("0a:00:00:00:00:03"),
        dst: ip("10.198.0.3")
    }));
    assert_eq!(d.neighbours.len(), 2, "none for the host-gw node");
    let dev = d.vxlan.expect("auto makes the VXLAN device");
    assert_eq!(
        (dev.vni, dev.port, dev.local, dev.address, dev.mtu),
        (1, 8472, ip("10.199.0.1"), ip("10.42.1.0"), 1450)
    );
}

#[test]
fn host_gw_routes_via_every_directly_connected_node_and_skips_the_others() {
    let d = plan(
        &[
            node("b", Some("10.199.0.2"), Some("10.42.2.0/24"), None),
            node(
                "c",
                Some("10.198.0.3"),
                Some("10.42.3.0/24"),
                Some("0a:00:00:00:00:03"),
            ),
            node("e", Some("192.0.2.9"), Some("10.42.5.0/24"), None),
        ],
        Mode::HostGw,
    );
    assert_eq!(
        d.routes,
        BTreeSet::from([host_gw("10.42.2.0/24", "10.199.0.2")])
    );
    assert_eq!(
        d.skipped.get("c"),
        Some(&Skip::NotDirect),
        "never VXLAN in host-gw"
    );
    assert_eq!(d.skipped.get("e"), Some(&Skip::Unreachable));
    assert!(d.neighbours.is_empty() && d.fdb.is_empty());
}

#[test]
fn vxlan_entries_need_the_mac_annotation() {
    let d = plan(
        &[
            node(
                "b",
                Some("10.199.0.2"),
                Some("10.42.2.0/24"),
                Some("0a:00:00:00:00:02"),
            ),
            node("c", Some("10.199.0.3"), Some("10.42.3.0/24"), None),
        ],
        Mode::Vxlan,
    );
    assert_eq!(d.routes, BTreeSet::from([vxlan_route("10.42.2.0/24")]));
    assert_eq!(d.skipped.get("c"), Some(&Skip::NoVxlanMac));
    assert_eq!(
        d.fdb,
        BTreeSet::from([FdbEntry {
            mac: mac("0a:00:00:00:00:02"),
            dst: ip("10.199.0.2")
        }])
    );
}

#[test]
fn a_changed_address_changes_the_route_and_a_removed_node_drops_it() {
    let b = |addr| {
        node(
            "b",
            Some(addr),
            Some("10.42.2.0/24"),
            Some("0a:00:00:00:00:02"),
        )
    };
    let c = node("c", Some("10.199.0.3"), Some("10.42.3.0/24"), None);
    let before = plan(&[b("10.199.0.2"), c], Mode::HostGw);
    assert_eq!(before.routes.len(), 2);
    let after = plan(&[b("10.199.0.9")], Mode::HostGw);
    assert_eq!(
        after.routes,
        BTreeSet::from([host_gw("10.42.2.0/24", "10.199.0.9")])
    );
    let vx = plan(&[b("10.199.0.9")], Mode::Vxlan);
    assert_eq!(
        vx.fdb.iter().map(|e| e.dst).collect::<Vec<_>>(),
        [ip("10.199.0.9")]
    );
}

#[test]
fn overlapping_pod_cidrs_are_skipped() {
    let d = plan(
        &[
            node("b", Some("10.199.0.2"), Some("10.42.1.0/25"), None),
            node("c", Some("10.199.0.3"), Some("10.42.3.0/24"), None),
            node("d", Some("10.199.0.4"), Some("10.42.3.0/24"), None),
        ],
        Mode::HostGw,
    );
    assert_eq!(
        d.skipped.get("b"),
        Some(&Skip::Overlaps),
        "overlaps our own"
    );
    assert_eq!(d.skipped.get("d"), Some(&Skip::Overlaps), "c came first");
    assert_eq!(
        d.routes,
        BTreeSet::from([host_gw("10.42.3.0/24", "10.199.0.3")])
    );
}

#[test]
fn modes_parse_from_flag_values() {
    assert_eq!("host-gw".parse::<Mode>(), Ok(Mode::HostGw));
    assert_eq!("vxlan".parse::<Mode>(), Ok(Mode::Vxlan));
    assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
    assert!("hostgw".parse::<Mode>().is_err());
}
