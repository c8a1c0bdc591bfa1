//! The real data path: one nftables table (`ip krust-proxy` by default) replaced whole by
//! each sync, through `nft -f -` (one transaction, so a sync is atomic).
//!
//! Traffic to a cluster IP, external IP or node port jumps to the service's chain, which
//! picks an endpoint with `numgen random` and DNATs to it. Traffic from outside the cluster
//! CIDR, to a node port, or from an endpoint to itself (hairpin) is marked and masqueraded.
//! Services without endpoints are rejected in the filter hooks, as upstream does.
//! Endpoints on 127.0.0.0/8 (an API server on loopback) need `route_localnet`; the table
//! then also drops loopback-addressed packets from other interfaces unless they were
//! DNATed, which is the guard upstream added for the same setting.
//!
//! After a sync, the conntrack entries of UDP flows that the new rules would not send where
//! they went are deleted with the `conntrack` tool ([`crate::rules::stale_udp_flows`]).
//!
//! `sessionAffinity: ClientIP` works as in upstream's nftables mode: each endpoint of such a
//! service has a set of client addresses with a timeout; its chain adds the client, and the
//! service's chain sends a client found in an endpoint's set back to that endpoint before
//! picking at random. The sets must outlive syncs, so after the first sync of a process a
//! sync flushes the table's rules and replaces its chains but keeps the sets still wanted,
//! with their clients; the first sync replaces the whole table, and so does a sync whose
//! update failed (the table was changed behind the proxy's back).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use krust_nft::{NftError, Runner};

use super::{ProxyBackend, ProxyError};
use crate::rules::{stale_udp_flows, Endpoint, ServicePort, ServiceRules, StaleFlow};

/// The packet mark that asks the postrouting chain to masquerade.
const MASQUERADE_MARK: u32 = 0x4000;

pub struct Nftables {
    table: String,
    /// Pod addresses: traffic from elsewhere is masqueraded (None: all of it).
    cluster_cidr: Option<String>,
    /// Where `nft` and `conntrack` run (the host's namespace, or a test's).
    runner: Runner,
    /// Sysctls already written.
    bridge_netfilter: AtomicBool,
    route_localnet: AtomicBool,
    /// What the last successful sync installed (None: nothing yet in this process, so the
    /// next sync replaces the whole table).
    synced: Mutex<Option<Synced>>,
    /// `conntrack` was found missing (said once).
    no_conntrack: AtomicBool,
}

/// The last successful sync: its rules (to find the UDP flows the next one makes stale) and
/// what it declared in the table.
struct Synced {
    rules: ServiceRules,
    installed: Installed,
}

/// The chains and sets one sync installed: the next sync deletes those chains and the sets
/// it no longer wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    chains: Vec<String>,
    sets: BTreeSet<String>,
}

/// The table's text, with the names of what it declares.
#[derive(Default)]
struct Script {
    text: String,
    installed: Installed,
}

impl Script {
    fn chain(&mut self, name: &str, body: &str) {
        let _ = writeln!(self.text, "  chain {name} {{ {body} }}");
        self.installed.chains.push(name.to_string());
    }
}

/// The set of clients stuck to endpoint `e` of service port `p`. Named by what it is
/// rather than by position, so that it survives syncs in which other services come and go;
/// the timeout is part of the name, so that a changed timeout makes a new set.
fn affinity_set(p: &ServicePort, e: &Endpoint, seconds: u32) -> String {
    let mut h = DefaultHasher::new();
    (&p.name, p.protocol, e, seconds).hash(&mut h);
    format!("affinity-{:016x}", h.finish())
}

impl Nftables {
    /// `cluster_cidr` must be an IPv4 CIDR such as `10.42.0.0/16`.
    pub fn new(cluster_cidr: Option<&str>) -> Result<Nftables, ProxyError> {
        if let Some(c) = cluster_cidr {
            let ok = c.split_once('/').is_some_and(|(ip, bits)| {
                ip.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
            });
            if !ok {
                return Err(ProxyError::Config(format!(
                    "cluster CIDR {c:?} is not an IPv4 CIDR"
                )));
            }
        }
        Ok(Nftables {
            table: "krust-proxy".into(),
            cluster_cidr: cluster_cidr.map(str::to_string),
            runner: Runner::host(),
            bridge_netfilter: AtomicBool::new(false),
            route_localnet: AtomicBool::new(false),
            synced: Mutex::new(None),
            no_conntrack: AtomicBool::new(false),
        })
    }

    /// The same backend, acting inside network namespace `netns` on table `table`.
    pub fn in_netns(mut self, netns: &str, table: &str) -> Nftables {
        self.runner = Runner::in_netns(netns);
        self.table = table.into();
        self
    }

    /// The whole table for `rules` as one `nft -f` script, and what it declares. Without
    /// `previous` the script replaces the table; with it, the script flushes the table's
    /// rules, deletes `previous`'s chains and the sets no longer wanted, and declares the
    /// rest again (existing sets keep their elements).
    pub fn render(
        &self,
        rules: &ServiceRules,
        previous: Option<&Installed>,
    ) -> (String, Installed) {
        let t = &self.table;
        // Creating first makes the delete or flush valid when the table does not exist yet.
        let mut out = format!("table ip {t}\n");
        let mut body = Script::default();
        let mut services = Vec::new();
        let mut node_ports = Vec::new();
        let mut no_endpoints = Vec::new();
        let mut no_endpoint_node_ports = Vec::new();
        body.chain(
            "mark-for-masquerade",
            &format!("meta mark set meta mark | {MASQUERADE_MARK:#x};"),
        );
        body.chain(
            "masquerading",
            &format!(
                "type nat hook postrouting priority 100; policy accept; \
                 meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade;"
            ),
        );
        body.chain("reject-chain", "reject;");
        for (i, p) in rules.ports.iter().enumerate() {
            let proto = p.protocol.nft();
            let addrs = std::iter::once(p.cluster_ip).chain(p.external_ips.iter().copied());
            if p.endpoints.is_empty() {
                no_endpoints.extend(addrs.map(|ip| format!("{ip} . {proto} . {}", p.port)));
                if let Some(np) = p.node_port {
                    no_endpoint_node_ports.push(format!("{proto} . {np}"));
                }
                continue;
            }
            // externalTrafficPolicy: Local sends outside traffic to its own chain.
            let external = if p.local_endpoints.is_some() {
                format!("ext-{i}")
            } else {
                format!("svc-{i}")
            };
            services.push(format!(
                "{} . {proto} . {} : goto svc-{i}",
                p.cluster_ip, p.port
            ));
            services.extend(
                p.external_ips
                    .iter()
                    .map(|ip| format!("{ip} . {proto} . {} : goto {external}", p.port)),
            );
            if let Some(np) = p.node_port {
                node_ports.push(format!("{proto} . {np} : goto nodeport-{i}"));
                let body_text = if p.local_endpoints.is_some() {
                    format!("goto {external};")
                } else {
                    format!("jump mark-for-masquerade; goto svc-{i};")
                };
                body.chain(&format!("nodeport-{i}"), &body_text);
            }
            self.render_service(&mut body, i, p);
            if let Some(local) = &p.local_endpoints {
                self.render_local(&mut body, i, p, local);
            }
        }

        let mut services_rules = String::new();
        if !services.is_empty() {
            let _ = write!(
                services_rules,
                "\n    ip daddr . meta l4proto . th dport vmap {{ {} }}",
                services.join(", ")
            );
        }
        if !node_ports.is_empty() {
            let _ = write!(
                services_rules,
                "\n    fib daddr type local meta l4proto . th dport vmap {{ {} }}",
                node_ports.join(", ")
            );
        }
        body.chain("services", &format!("{services_rules}\n  "));
        let reject_all = |keys: &[String]| {
            keys.iter()
                .map(|e| format!("{e} : goto reject-chain"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut no_endpoint_rules = String::new();
        if !no_endpoints.is_empty() {
            let _ = write!(
                no_endpoint_rules,
                "\n    ip daddr . meta l4proto . th dport vmap {{ {} }}",
                reject_all(&no_endpoints)
            );
        }
        if !no_endpoint_node_ports.is_empty() {
            let _ = write!(
                no_endpoint_rules,
                "\n    fib daddr type local meta l4proto . th dport vmap {{ {} }}",
                reject_all(&no_endpoint_node_ports)
            );
        }
        body.chain("no-endpoints", &format!("{no_endpoint_rules}\n  "));
        for (chain, hook) in [("nat-prerouting", "prerouting"), ("nat-output", "output")] {
            body.chain(
                chain,
                &format!("type nat hook {hook} priority -100; policy accept; jump services;"),
            );
        }
        let guard = if uses_loopback(rules) {
            // Only DNATed packets may reach loopback addresses from outside (route_localnet).
            "\n    iifname != \"lo\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop"
        } else {
            ""
        };
        for (chain, hook, extra) in [
            ("filter-input", "input", guard),
            ("filter-forward", "forward", ""),
            ("filter-output", "output", ""),
        ] {
            body.chain(
                chain,
                &format!(
                    "type filter hook {hook} priority filter - 10; policy accept;\n    \
                     ct state new jump no-endpoints{extra}\n  "
                ),
            );
        }

        match previous {
            None => {
                let _ = writeln!(out, "delete table ip {t}");
            }
            Some(prev) => {
                let _ = writeln!(out, "flush table ip {t}");
                for c in &prev.chains {
                    let _ = writeln!(out, "delete chain ip {t} {c}");
                }
                for set in prev.sets.difference(&body.installed.sets) {
                    let _ = writeln!(out, "delete set ip {t} {set}");
                }
            }
        }
        let _ = writeln!(out, "table ip {t} {{\n{}}}", body.text);
        (out, body.installed)
    }

    /// The chain of outside traffic to a service with `externalTrafficPolicy: Local`, as
    /// upstream's: traffic from pods or from the node itself takes the cluster path
    /// (masqueraded when from the node); the rest goes to an endpoint on this node without
    /// masquerading, so that the endpoint sees the client's address, and is dropped when
    /// this node has none.
    fn render_local(&self, s: &mut Script, i: usize, p: &ServicePort, local: &[Endpoint]) {
        let mut rules = format!("\n    comment {:?}", format!("{} (local)", p.name));
        if let Some(cidr) = &self.cluster_cidr {
            let _ = write!(rules, "\n    ip saddr {cidr} goto svc-{i}");
        }
        let _ = write!(
            rules,
            "\n    fib saddr type local jump mark-for-masquerade\n    fib saddr type local goto svc-{i}"
        );
        let proto = p.protocol.nft();
        match local.len() {
            0 => {
                let _ = write!(rules, "\n    drop");
            }
            1 => {
                let _ = write!(rules, "\n    goto lep-{i}-0");
            }
            n => {
                let arms: Vec<String> = (0..n).map(|j| format!("{j} : goto lep-{i}-{j}")).collect();
                let _ = write!(
                    rules,
                    "\n    numgen random mod {n} vmap {{ {} }}",
                    arms.join(", ")
                );
            }
        }
        s.chain(&format!("ext-{i}"), &format!("{rules}\n  "));
        for (j, e) in local.iter().enumerate() {
            s.chain(
                &format!("lep-{i}-{j}"),
                &format!("meta l4proto {proto} dnat to {}:{};", e.ip, e.port),
            );
        }
    }

    fn render_service(&self, s: &mut Script, i: usize, p: &ServicePort) {
        let mut rules = format!("\n    comment {:?}", p.name);
        match &self.cluster_cidr {
            Some(cidr) => {
                let _ = write!(rules, "\n    ip saddr != {cidr} jump mark-for-masquerade");
            }
            None => {
                let _ = write!(rules, "\n    jump mark-for-masquerade");
            }
        }
        let sets: Vec<Option<String>> = p
            .endpoints
            .iter()
            .map(|e| p.affinity_seconds.map(|secs| affinity_set(p, e, secs)))
            .collect();
        for (j, set) in sets.iter().enumerate() {
            if let (Some(set), Some(secs)) = (set, p.affinity_seconds) {
                // A client seen lately goes back to its endpoint.
                let _ = write!(rules, "\n    ip saddr @{set} goto sep-{i}-{j}");
                let _ = writeln!(
                    s.text,
                    "  set {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {secs}s; }}"
                );
                s.installed.sets.insert(set.clone());
            }
        }
        if p.endpoints.len() == 1 {
            let _ = write!(rules, "\n    goto sep-{i}-0");
        } else {
            let arms: Vec<String> = (0..p.endpoints.len())
                .map(|j| format!("{j} : goto sep-{i}-{j}"))
                .collect();
            let _ = write!(
                rules,
                "\n    numgen random mod {} vmap {{ {} }}",
                p.endpoints.len(),
                arms.join(", ")
            );
        }
        s.chain(&format!("svc-{i}"), &format!("{rules}\n  "));
        for (j, (e, set)) in p.endpoints.iter().zip(&sets).enumerate() {
            let remember = set
                .as_ref()
                .map(|set| format!("update @{set} {{ ip saddr }}; "))
                .unwrap_or_default();
            s.chain(
                &format!("sep-{i}-{j}"),
                &format!(
                    "ip saddr {ip} jump mark-for-masquerade; {remember}\
                     meta l4proto {proto} dnat to {ip}:{port};",
                    ip = e.ip,
                    proto = p.protocol.nft(),
                    port = e.port
                ),
            );
        }
    }
}

/// `conntrack -D` arguments that delete the UDP flows of `flow`.
fn conntrack_filter(flow: &StaleFlow) -> Vec<String> {
    let mut args: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
    let mut add = |k: &str, v: String| {
        args.push(k.to_string());
        args.push(v);
    };
    match flow {
        StaleFlow::ToEndpoint {
            service,
            port,
            endpoint,
        } => {
            add("--orig-dst", service.to_string());
            add("--orig-port-dst", port.to_string());
            add("--reply-src", endpoint.to_string());
        }
        StaleFlow::NodePortToEndpoint {
            node_port,
            endpoint,
        } => {
            add("--orig-port-dst", node_port.to_string());
            add("--reply-src", endpoint.to_string());
        }
        StaleFlow::ToService { service, port } => {
            add("--orig-dst", service.to_string());
            add("--orig-port-dst", port.to_string());
        }
        StaleFlow::ToNodePort { node_port } => {
            add("--orig-port-dst", node_port.to_string());
        }
    }
    args
}

impl Nftables {
    /// Deletes the conntrack entries of stale UDP flows with the `conntrack` tool (as
    /// kube-proxy did before it spoke netlink itself). Failures are logged, not returned:
    /// the rules are in place, and the flows time out in the end.
    async fn clear_udp_flows(&self, flows: &[StaleFlow]) {
        for flow in flows {
            let args = conntrack_filter(flow);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match self.runner.run("conntrack", &args, "").await {
                Ok(()) => tracing::debug!(?flow, "stale UDP flows cleared"),
                // conntrack fails when nothing matched.
                Err(NftError::Command { stderr, .. })
                    if stderr.contains("0 flow entries have been deleted") => {}
                Err(NftError::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    if !self.no_conntrack.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "conntrack is not installed: stale UDP flows are left to time out"
                        );
                    }
                    return;
                }
                Err(e) => tracing::warn!(error = %e, ?flow, "clearing stale UDP flows"),
            }
        }
    }
}

fn uses_loopback(rules: &ServiceRules) -> bool {
    rules
        .ports
        .iter()
        .any(|p| p.endpoints.iter().any(|e| e.ip.is_loopback()))
}

#[async_trait::async_trait]
impl ProxyBackend for Nftables {
    async fn sync(&self, rules: &ServiceRules) -> Result<(), ProxyError> {
        // Pod-to-service-to-pod on one bridge: the reply is bridged, and only bridge
        // netfilter lets conntrack undo the DNAT on it. Best effort: the module may be
        // absent, and upstream only warns too.
        if !self.bridge_netfilter.swap(true, Ordering::Relaxed)
            && self
                .runner
                .enable_sysctl("net/bridge/bridge-nf-call-iptables")
                .await
                .is_err()
        {
            tracing::debug!("bridge netfilter is not available");
        }
        if uses_loopback(rules) && !self.route_localnet.load(Ordering::Relaxed) {
            self.runner
                .enable_sysctl("net/ipv4/conf/all/route_localnet")
                .await?;
            self.route_localnet.store(true, Ordering::Relaxed);
        }
        let previous = self.synced.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (script, installed) = self.render(rules, previous.as_ref().map(|p| &p.installed));
        if let Err(e) = self.runner.nft(&script).await {
            // The table is not what the last sync left (someone changed it): replace it
            // whole. nft applies a script all or nothing, so the old rules still stand.
            if previous.is_none() {
                return Err(e.into());
            }
            tracing::debug!(error = %e, "updating the table failed; replacing it");
            let (script, _) = self.render(rules, None);
            self.runner.nft(&script).await?;
        }
        if let Some(before) = &previous {
            self.clear_udp_flows(&stale_udp_flows(&before.rules, rules))
                .await;
        }
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = Some(Synced {
            rules: rules.clone(),
            installed,
        });
        Ok(())
    }

    async fn cleanup(&self) -> Result<(), ProxyError> {
        let t = &self.table;
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.runner
            .nft(&format!("table ip {t}\ndelete table ip {t}\n"))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::suite;
    use crate::rules::{Endpoint, Protocol};

    fn port(name: &str, ip: &str, eps: &[(&str, u16)], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            name: name.into(),
            cluster_ip: ip.parse().expect("ip"),
            port: 80,
            protocol: Protocol::Tcp,
            node_port,
            external_ips: vec![],
            affinity_seconds: None,
            local_endpoints: None,
            endpoints: eps
                .iter()
                .map(|(ip, port)| Endpoint {
                    ip: ip.parse().expect("ip"),
                    port: *port,
                })
                .collect(),
        }
    }

    #[test]
    fn renders_one_chain_per_service_and_endpoint() {
        let nft = Nftables::new(Some("10.42.0.0/16")).expect("cidr");
        let rules = ServiceRules {
            ports: vec![
                port(
                    "default/web:",
                    "10.43.0.10",
                    &[("10.42.0.5", 8080), ("10.42.0.6", 8080)],
                    Some(30080),
                ),
                port("default/empty:", "10.43.0.11", &[], Some(30081)),
            ],
        };
        let (s, _) = nft.render(&rules, None);
        assert!(s.contains("10.43.0.10 . tcp . 80 : goto svc-0"), "{s}");
        assert!(s.contains("tcp . 30080 : goto nodeport-0"), "{s}");
        assert!(
            s.contains("numgen random mod 2 vmap { 0 : goto sep-0-0, 1 : goto sep-0-1 }"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr != 10.42.0.0/16 jump mark-for-masquerade"),
            "{s}"
        );
        assert!(s.contains("meta l4proto tcp dnat to 10.42.0.6:8080"), "{s}");
        assert!(
            s.contains("10.43.0.11 . tcp . 80 : goto reject-chain"),
            "{s}"
        );
        assert!(s.contains("tcp . 30081 : goto reject-chain"), "{s}");
        assert!(
            !s.contains("route_localnet") && !s.contains("127.0.0.0/8"),
            "{s}"
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_outside_clients_on_local_endpoints() {
        let nft = Nftables::new(Some("10.42.0.0/16")).expect("cidr");
        let mut lb = port(
            "default/lb:",
            "10.43.0.30",
            &[("10.42.0.5", 8080), ("10.42.0.6", 8080)],
            Some(30090),
        );
        lb.external_ips = vec!["192.0.2.7".parse().expect("ip")];
        lb.local_endpoints = Some(vec![lb.endpoints[1]]);
        let mut none_here = port("default/far:", "10.43.0.31", &[("10.42.0.9", 80)], None);
        none_here.external_ips = vec!["192.0.2.8".parse().expect("ip")];
        none_here.local_endpoints = Some(vec![]);
        let (s, _) = nft.render(
            &ServiceRules {
                ports: vec![lb, none_here],
            },
            None,
        );
        assert!(
            s.contains("10.43.0.30 . tcp . 80 : goto svc-0"),
            "cluster IP: all endpoints\n{s}"
        );
        assert!(s.contains("192.0.2.7 . tcp . 80 : goto ext-0"), "{s}");
        assert!(s.contains("chain nodeport-0 { goto ext-0; }"), "{s}");
        assert!(s.contains("ip saddr 10.42.0.0/16 goto svc-0"), "{s}");
        assert!(s.contains("fib saddr type local goto svc-0"), "{s}");
        assert!(s.contains("goto lep-0-0"), "{s}");
        assert!(
            s.contains("chain lep-0-0 { meta l4proto tcp dnat to 10.42.0.6:8080; }"),
            "no masquerade mark: the client's address is kept\n{s}"
        );
        assert!(s.contains("192.0.2.8 . tcp . 80 : goto ext-1"), "{s}");
        let ext1 = s.split("chain ext-1 {").nth(1).expect("ext-1");
        assert!(
            ext1.split('}').next().expect("body").contains("drop"),
            "{s}"
        );
    }

    #[test]
    fn affinity_sets_outlive_syncs_and_go_with_their_endpoints() {
        let nft = Nftables::new(Some("10.42.0.0/16")).expect("cidr");
        let mut sticky = port(
            "default/sticky:",
            "10.43.0.20",
            &[("10.42.0.5", 8080), ("10.42.0.6", 8080)],
            None,
        );
        sticky.affinity_seconds = Some(60);
        let set_a = affinity_set(&sticky, &sticky.endpoints[0], 60);
        let set_b = affinity_set(&sticky, &sticky.endpoints[1], 60);
        let first = ServiceRules {
            ports: vec![sticky.clone()],
        };
        let (s, installed) = nft.render(&first, None);
        assert!(s.contains("delete table ip krust-proxy"), "{s}");
        assert!(
            s.contains(&format!(
                "set {set_a} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
            )),
            "{s}"
        );
        assert!(
            s.contains(&format!("ip saddr @{set_b} goto sep-0-1")),
            "{s}"
        );
        assert!(
            s.contains(&format!("update @{set_a} {{ ip saddr }}")),
            "{s}"
        );
        assert!(installed.chains.contains(&"sep-0-1".to_string()));

        // Another service arrives and one endpoint goes: the table's rules are replaced,
        // the surviving endpoint's set is kept (declared again), the other's deleted.
        let mut fewer = sticky.clone();
        fewer.endpoints.truncate(1);
        let second = ServiceRules {
            ports: vec![
                port("default/aaa:", "10.43.0.19", &[("10.42.0.7", 80)], None),
                fewer,
            ],
        };
        let (s, next) = nft.render(&second, Some(&installed));
        assert!(!s.contains("delete table"), "{s}");
        assert!(s.contains("flush table ip krust-proxy"), "{s}");
        assert!(s.contains("delete chain ip krust-proxy sep-0-1"), "{s}");
        assert!(
            s.contains(&format!("delete set ip krust-proxy {set_b}")),
            "{s}"
        );
        assert!(
            !s.contains(&format!("delete set ip krust-proxy {set_a}")),
            "{s}"
        );
        assert!(
            s.contains(&format!("ip saddr @{set_a} goto sep-1-0")),
            "{s}"
        );
        assert_eq!(next.sets, BTreeSet::from([set_a]));
    }

    #[test]
    fn rejects_a_cluster_cidr_that_is_not_one() {
        assert!(Nftables::new(Some("10.42.0.0")).is_err());
        assert!(Nftables::new(Some("10.42.0.0/33")).is_err());
        assert!(Nftables::new(Some("10.42.0.0/16")).is_ok());
    }

    #[tokio::test]
    async fn nftables_passes_the_backend_suite() {
        let Some(harness) = suite::NetnsHarness::start().await else {
            eprintln!("skipped: needs root, nft, ip, busybox and conntrack");
            return;
        };
        suite::run(&harness).await;
    }
}
