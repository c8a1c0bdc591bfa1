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

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;

use super::{ProxyBackend, ProxyError};
use crate::rules::{ServicePort, ServiceRules};

/// The packet mark that asks the postrouting chain to masquerade.
const MASQUERADE_MARK: u32 = 0x4000;

pub struct Nftables {
    table: String,
    /// Pod addresses: traffic from elsewhere is masqueraded (None: all of it).
    cluster_cidr: Option<String>,
    /// Run inside this network namespace (`ip netns exec`), for tests.
    netns: Option<String>,
    /// Sysctls already written.
    bridge_netfilter: AtomicBool,
    route_localnet: AtomicBool,
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
            netns: None,
            bridge_netfilter: AtomicBool::new(false),
            route_localnet: AtomicBool::new(false),
        })
    }

    /// The same backend, acting inside network namespace `netns` on table `table`.
    pub fn in_netns(mut self, netns: &str, table: &str) -> Nftables {
        self.netns = Some(netns.into());
        self.table = table.into();
        self
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => tokio::process::Command::new(program),
        }
    }

    async fn run(&self, program: &str, args: &[&str], stdin: &str) -> Result<(), ProxyError> {
        let command = format!("{program} {}", args.join(" "));
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProxyError::Spawn {
                command: command.clone(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .await
                .map_err(|source| ProxyError::Spawn {
                    command: command.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| ProxyError::Spawn {
                command: command.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ProxyError::Command {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Sets `/proc/sys/<key>` to 1 (in the namespace, if any) with the shell rather than
    /// `sysctl`, which a minimal Debian (no procps) lacks.
    async fn set_sysctl(&self, key: &str) -> Result<(), ProxyError> {
        self.run("sh", &["-c", &format!("echo 1 > /proc/sys/{key}")], "")
            .await
    }

    /// The whole table for `rules`, preceded by its deletion, as one `nft -f` script.
    pub fn render(&self, rules: &ServiceRules) -> String {
        let t = &self.table;
        let mut s = String::new();
        // Creating first makes the delete valid when the table does not exist yet.
        let _ = writeln!(s, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
        let _ = writeln!(
            s,
            "  chain mark-for-masquerade {{ meta mark set meta mark | {MASQUERADE_MARK:#x}; }}"
        );
        let _ = writeln!(
            s,
            "  chain masquerading {{ type nat hook postrouting priority 100; policy accept; \
             meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade; }}"
        );
        let _ = writeln!(s, "  chain reject-chain {{ reject; }}");

        let mut services = Vec::new();
        let mut node_ports = Vec::new();
        let mut no_endpoints = Vec::new();
        let mut no_endpoint_node_ports = Vec::new();
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
            services.extend(addrs.map(|ip| format!("{ip} . {proto} . {} : goto svc-{i}", p.port)));
            if let Some(np) = p.node_port {
                node_ports.push(format!("{proto} . {np} : goto nodeport-{i}"));
                let _ = writeln!(
                    s,
                    "  chain nodeport-{i} {{ jump mark-for-masquerade; goto svc-{i}; }}"
                );
            }
            self.render_service(&mut s, i, p);
        }

        let _ = writeln!(s, "  chain services {{");
        if !services.is_empty() {
            let _ = writeln!(
                s,
                "    ip daddr . meta l4proto . th dport vmap {{ {} }}",
                services.join(", ")
            );
        }
        if !node_ports.is_empty() {
            let _ = writeln!(
                s,
                "    fib daddr type local meta l4proto . th dport vmap {{ {} }}",
                node_ports.join(", ")
            );
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  chain no-endpoints {{");
        if !no_endpoints.is_empty() {
            let _ = writeln!(
                s,
                "    ip daddr . meta l4proto . th dport vmap {{ {} }}",
                no_endpoints
                    .iter()
                    .map(|e| format!("{e} : goto reject-chain"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !no_endpoint_node_ports.is_empty() {
            let _ = writeln!(
                s,
                "    fib daddr type local meta l4proto . th dport vmap {{ {} }}",
                no_endpoint_node_ports
                    .iter()
                    .map(|e| format!("{e} : goto reject-chain"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(s, "  }}");
        for (chain, hook) in [("nat-prerouting", "prerouting"), ("nat-output", "output")] {
            let _ = writeln!(
                s,
                "  chain {chain} {{ type nat hook {hook} priority -100; policy accept; jump services; }}"
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
            let _ = writeln!(
                s,
                "  chain {chain} {{ type filter hook {hook} priority filter - 10; policy accept;\n    \
                 ct state new jump no-endpoints{extra}\n  }}"
            );
        }
        let _ = writeln!(s, "}}");
        s
    }

    fn render_service(&self, s: &mut String, i: usize, p: &ServicePort) {
        let _ = writeln!(s, "  chain svc-{i} {{");
        let _ = writeln!(s, "    comment {:?}", p.name);
        match &self.cluster_cidr {
            Some(cidr) => {
                let _ = writeln!(s, "    ip saddr != {cidr} jump mark-for-masquerade");
            }
            None => {
                let _ = writeln!(s, "    jump mark-for-masquerade");
            }
        }
        if p.endpoints.len() == 1 {
            let _ = writeln!(s, "    goto sep-{i}-0");
        } else {
            let arms: Vec<String> = (0..p.endpoints.len())
                .map(|j| format!("{j} : goto sep-{i}-{j}"))
                .collect();
            let _ = writeln!(
                s,
                "    numgen random mod {} vmap {{ {} }}",
                p.endpoints.len(),
                arms.join(", ")
            );
        }
        let _ = writeln!(s, "  }}");
        for (j, e) in p.endpoints.iter().enumerate() {
            let _ = writeln!(
                s,
                "  chain sep-{i}-{j} {{ ip saddr {ip} jump mark-for-masquerade; \
                 meta l4proto {proto} dnat to {ip}:{port}; }}",
                ip = e.ip,
                proto = p.protocol.nft(),
                port = e.port
            );
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
                .set_sysctl("net/bridge/bridge-nf-call-iptables")
                .await
                .is_err()
        {
            tracing::debug!("bridge netfilter is not available");
        }
        if uses_loopback(rules) && !self.route_localnet.load(Ordering::Relaxed) {
            self.set_sysctl("net/ipv4/conf/all/route_localnet").await?;
            self.route_localnet.store(true, Ordering::Relaxed);
        }
        self.run("nft", &["-f", "-"], &self.render(rules)).await
    }

    async fn cleanup(&self) -> Result<(), ProxyError> {
        let t = &self.table;
        self.run(
            "nft",
            &["-f", "-"],
            &format!("table ip {t}\ndelete table ip {t}\n"),
        )
        .await
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
        let s = nft.render(&rules);
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
    fn rejects_a_cluster_cidr_that_is_not_one() {
        assert!(Nftables::new(Some("10.42.0.0")).is_err());
        assert!(Nftables::new(Some("10.42.0.0/33")).is_err());
        assert!(Nftables::new(Some("10.42.0.0/16")).is_ok());
    }

    #[tokio::test]
    async fn nftables_passes_the_backend_suite() {
        let Some(harness) = suite::NetnsHarness::start().await else {
            eprintln!("skipped: needs root, nft, ip and busybox");
            return;
        };
        suite::run(&harness).await;
    }
}
