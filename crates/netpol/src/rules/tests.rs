use serde_json::{json, Value};

use super::*;

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// A running pod `ns/name` at `ip` on `node-a`, with `labels` and named TCP ports.
fn pod(ns: &str, name: &str, ip: &str, labels: Value, ports: &[(&str, u16)]) -> Pod {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p}))
        .collect();
    from_json(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
}

fn namespace(name: &str, labels: Value) -> Namespace {
    from_json(json!({"metadata": {"name": name, "labels": labels}}))
}

fn policy(ns: &str, spec: Value) -> NetworkPolicy {
    from_json(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

/// prod/server (10.0.0.1, port "http" 8080), prod/client (10.0.0.2), dev/client (10.0.1.1,
/// port "http" 9090), dev/other (10.0.1.2).
fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
    let pods = vec![
        pod(
            "prod",
            "server",
            "10.0.0.1",
            json!({"app": "server"}),
            &[("http", 8080)],
        ),
        pod("prod", "client", "10.0.0.2", json!({"app": "client"}), &[]),
        pod(
            "dev",
            "client",
            "10.0.1.1",
            json!({"app": "client"}),
            &[("http", 9090)],
        ),
        pod("dev", "other", "10.0.1.2", json!({"app": "other"}), &[]),
    ];
    let namespaces = vec![
        namespace("prod", json!({"team": "prod"})),
        namespace("dev", json!({"team": "dev"})),
    ];
    (pods, namespaces)
}

fn rules_for(policies: &[NetworkPolicy]) -> PolicyRules {
    let (pods, namespaces) = cluster();
    compute(policies, &pods, &namespaces, None)
}

fn ingress(rules: &PolicyRules, pod: &str) -> Arc<Allowed> {
    rules.pods[&ip(pod)]
        .ingress
        .clone()
        .expect("isolated for ingress")
}

fn egress(rules: &PolicyRules, pod: &str) -> Arc<Allowed> {
    rules.pods[&ip(pod)]
        .egress
        .clone()
        .expect("isolated for egress")
}

fn tcp(a: &Allowed, peer: &str, port: u16) -> bool {
    a.allows(ip(peer), Protocol::Tcp, port)
}

fn server_selector() -> Value {
    json!({"matchLabels": {"app": "server"}})
}

#[test]
fn no_policies_isolate_nothing() {
    assert_eq!(rules_for(&[]), PolicyRules::default());
}

#[test]
fn a_default_deny_isolates_the_selected_pods_only() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "policyTypes": ["Ingress"]}),
    )]);
    assert_eq!(rules.pods.len(), 1, "{rules:?}");
    let a = ingress(&rules, "10.0.0.1");
    assert_eq!(*a, Allowed::default());
    assert!(rules.pods[&ip("10.0.0.1")].egress.is_none());
    assert_eq!(rules.isolated(), (1, 0));
}

#[test]
fn a_missing_pod_selector_selects_the_whole_namespace() {
    let rules = rules_for(&[policy("dev", json!({}))]);
    assert_eq!(
        rules.pods.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.0.1.1"), ip("10.0.1.2")]
    );
}

#[test]
fn pod_selector_peers_are_of_the_policy_namespace() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
        }]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "10.0.0.2", 80), "prod/client");
    assert!(a.allows(ip("10.0.0.2"), Protocol::Udp, 53), "no ports: all");
    assert!(!tcp(&a, "10.0.1.1", 80), "dev/client is elsewhere");
}

#[test]
fn namespace_selectors_alone_and_with_pod_selectors() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"team": "dev"}}}],
        }]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "10.0.1.1", 80) && tcp(&a, "10.0.1.2", 80));
    assert!(!tcp(&a, "10.0.0.2", 80));

    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [{
            "from": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}},
                "podSelector": {"matchLabels": {"app": "client"}},
            }],
        }]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "10.0.1.1", 80), "dev/client");
    assert!(!tcp(&a, "10.0.1.2", 80), "dev/other");
    assert!(!tcp(&a, "10.0.0.2", 80), "prod/client");
}

#[test]
fn ip_blocks_leave_out_their_excepts() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}],
        }]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "10.0.0.2", 80));
    assert!(tcp(&a, "10.0.200.7", 80), "any address, pod or not");
    assert!(!tcp(&a, "10.0.1.1", 80), "excepted");
    assert!(!tcp(&a, "10.1.0.1", 80), "outside the block");
}

#[test]
fn empty_from_and_invalid_peers() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [
            {"ports": [{"port": 443}]},
            {"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]},
            {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Bad"}]}}]},
        ]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "192.0.2.1", 443), "empty from: everyone");
    assert!(!tcp(&a, "192.0.2.1", 80), "invalid peers allow nothing");
    assert!(!tcp(&a, "10.0.0.2", 80));
}

#[test]
fn ports_protocols_and_end_ports() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [
            {"ports": [
                {"port": 80},
                {"protocol": "UDP", "port": 53},
                {"protocol": "SCTP"},
                {"port": 8000, "endPort": 8100},
            ]},
            // Entries that cannot match make a rule allow nothing, not everything.
            {"ports": [{"port": 9000, "endPort": 10}, {"protocol": "ICMP", "port": 1}]},
        ]}),
    )]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "1.2.3.4", 80));
    assert!(!tcp(&a, "1.2.3.4", 53));
    assert!(a.allows(ip("1.2.3.4"), Protocol::Udp, 53));
    assert!(!a.allows(ip("1.2.3.4"), Protocol::Udp, 80));
    assert!(
        a.allows(ip("1.2.3.4"), Protocol::Sctp, 1234),
        "no port: all"
    );
    assert!(tcp(&a, "1.2.3.4", 8000) && tcp(&a, "1.2.3.4", 8100));
    assert!(!tcp(&a, "1.2.3.4", 8101) && !tcp(&a, "1.2.3.4", 9000));
    assert!(a.any_port.is_empty());
}

#[test]
fn ingress_named_ports_resolve_on_each_selected_pod() {
    let rules = rules_for(&[
        policy(
            "prod",
            json!({"podSelector": server_selector(), "ingress": [{"ports": [{"port": "http"}]}]}),
        ),
        policy(
            "dev",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        ),
    ]);
    let server = ingress(&rules, "10.0.0.1");
    assert!(tcp(&server, "10.0.1.1", 8080) && !tcp(&server, "10.0.1.1", 9090));
    let dev = ingress(&rules, "10.0.1.1");
    assert!(tcp(&dev, "10.0.0.1", 9090) && !tcp(&dev, "10.0.0.1", 8080));
    let other = ingress(&rules, "10.0.1.2");
    assert_eq!(*other, Allowed::default(), "no such port: nothing");
    let udp = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(),
               "ingress": [{"ports": [{"port": "http", "protocol": "UDP"}]}]}),
    )]);
    assert_eq!(*ingress(&udp, "10.0.0.1"), Allowed::default(), "TCP port");
}

#[test]
fn egress_named_ports_resolve_on_each_peer_pod() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "egress": [
            {"ports": [{"port": "http"}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "dns"}]},
        ]}),
    )]);
    let a = egress(&rules, "10.0.0.2");
    assert!(tcp(&a, "10.0.0.1", 8080), "prod/server's http");
    assert!(tcp(&a, "10.0.1.1", 9090), "dev/client's http");
    assert!(!tcp(&a, "10.0.0.1", 9090) && !tcp(&a, "10.0.1.2", 8080));
    assert_eq!(
        a.ports.len(),
        2,
        "an ipBlock peer has no named ports: {a:?}"
    );
    // Egress rules without policyTypes: both directions isolated.
    assert_eq!(*ingress(&rules, "10.0.0.2"), Allowed::default());
}

#[test]
fn policy_types_choose_the_isolated_directions() {
    let rules = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "policyTypes": ["Egress"],
               "ingress": [{}]}),
    )]);
    let p = &rules.pods[&ip("10.0.0.1")];
    assert!(p.ingress.is_none(), "Egress only: ingress rules ignored");
    assert_eq!(p.egress.as_deref(), Some(&Allowed::default()));
    let both = rules_for(&[policy(
        "prod",
        json!({"podSelector": server_selector(), "policyTypes": ["Ingress", "Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.1.0/24"}}]}]}),
    )]);
    let e = egress(&both, "10.0.0.1");
    assert!(tcp(&e, "10.0.1.9", 1) && !tcp(&e, "10.0.0.2", 1));
}

#[test]
fn policies_add_up() {
    let rules = rules_for(&[
        policy(
            "prod",
            json!({"podSelector": server_selector(), "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                "ports": [{"port": 80}],
            }]}),
        ),
        policy(
            "prod",
            json!({"podSelector": {}, "ingress": [{
                "from": [{"namespaceSelector": {}}], "ports": [{"port": 81}],
            }]}),
        ),
    ]);
    let a = ingress(&rules, "10.0.0.1");
    assert!(tcp(&a, "10.0.0.2", 80) && tcp(&a, "10.0.0.2", 81));
    assert!(!tcp(&a, "10.0.1.1", 80) && tcp(&a, "10.0.1.1", 81));
    let client = ingress(&rules, "10.0.0.2");
    assert!(!tcp(&client, "10.0.0.1", 80) && tcp(&client, "10.0.0.1", 81));
}

#[test]
fn equal_policies_share_one_allowed() {
    let rules = rules_for(&[policy(
        "dev",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    )]);
    let (a, b) = (ingress(&rules, "10.0.1.1"), ingress(&rules, "10.0.1.2"));
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn only_local_pods_are_targets_but_all_pods_are_peers() {
    let (mut pods, namespaces) = cluster();
    if let Some(spec) = pods[1].spec.as_mut() {
        spec.node_name = Some("node-b".into());
    }
    let policies = [policy(
        "prod",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )];
    let rules = compute(&policies, &pods, &namespaces, Some("node-a"));
    assert_eq!(
        rules.pods.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.0.0.1")]
    );
    assert!(tcp(&ingress(&rules, "10.0.0.1"), "10.0.0.2", 80));
    assert_eq!(compute(&policies, &pods, &namespaces, None).pods.len(), 2);
}

#[test]
fn host_network_finished_and_addressless_pods_take_no_part() {
    let (mut pods, namespaces) = cluster();
    if let Some(spec) = pods[1].spec.as_mut() {
        spec.host_network = Some(true);
    }
    if let Some(status) = pods[2].status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    if let Some(status) = pods[3].status.as_mut() {
        status.pod_ip = None;
        status.pod_ips = None;
    }
    let policies = [policy(
        "prod",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )];
    let rules = compute(&policies, &pods, &namespaces, None);
    assert_eq!(
        rules.pods.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.0.0.1")]
    );
    let a = ingress(&rules, "10.0.0.1");
    assert_eq!(a.any_port, vec![AddrRange::one(ip("10.0.0.1"))], "{a:?}");
}

#[test]
fn pod_ips_fall_back_to_pod_ip_and_skip_ipv6() {
    let mut p = pod("prod", "x", "10.0.0.9", json!({}), &[]);
    if let Some(status) = p.status.as_mut() {
        status.pod_ips = Some(vec![from_json(json!({"ip": "fd00::1"}))]);
    }
    assert_eq!(pod_ips(&p), vec![ip("10.0.0.9")]);
}

#[test]
fn namespaces_missing_from_the_cache_still_have_their_name() {
    let (pods, _) = cluster();
    let policies = [policy(
        "prod",
        json!({"podSelector": server_selector(), "ingress": [{"from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}},
        }]}]}),
    )];
    let rules = compute(&policies, &pods, [], None);
    assert!(tcp(&ingress(&rules, "10.0.0.1"), "10.0.1.2", 80));
}
