//! The real data path: one nftables table (`ip krust-netpol` by default) replaced whole by
//! each sync, through `nft -f -` (one transaction, so a sync is atomic and a failed one
//! leaves the previous rules standing).
//!
//! Everything is decided in the `forward` hook, which pod-to-pod traffic passes: routed
//! traffic always, bridged traffic (pods on one bridge) when bridge netfilter hands it to
//! the IP hooks, which is why a sync turns `net.bridge.bridge-nf-call-iptables` on. The
//! chain runs after the service proxy's DNAT (prerouting), so it sees the endpoint a
//! service address was sent to. Per packet:
//!
//! ```text
//! ct state established,related accept          replies and related ICMP always pass
//! ip saddr . ip daddr @self accept             a pod always reaches itself (hairpin)
//! ip daddr vmap @ingress-pods                  isolated destination: jump to its chain
//! ip saddr vmap @egress-pods                   isolated source: jump to its chain
//! ```
//!
//! Each chain `ingress-N` (`egress-N`) returns when the peer is in its set of peers allowed
//! on any port, or when `peer . protocol . port` is in its set of intervals, and drops
//! otherwise; returning lets a packet between two isolated pods meet both checks. Pods
//! whose rules are equal share one chain and its sets, so the cost per packet is two hash
//! lookups and at most two small set lookups, however many policies there are, and a
//! policy that selects many pods renders its sets once.
//!
//! Not policed, on purpose: traffic from the node itself to its pods (it leaves through
//! the `output` hook, not `forward`; probes and the kubelet need it, and upstream lets the
//! node reach its pods too), so the table has no output chain; and traffic from pods to
//! the node's own addresses (the `input` hook), which includes anything the service proxy
//! DNATs to the host, such as cluster DNS served in-process.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

use krust_nft::Runner;

use super::{PolicyBackend, PolicyError};
use crate::rules::{AddrRange, Allowed, PolicyRules, PortRange};

pub struct Nftables {
    table: String,
    /// Where `nft` runs (the host's namespace, or a test's).
    runner: Runner,
    /// Bridge netfilter was turned on (or found missing) already.
    bridge_netfilter: AtomicBool,
}

impl Default for Nftables {
    fn default() -> Self {
        Nftables::new()
    }
}

/// `a` or `a-b`, as nftables interval sets write them.
fn addr(r: &AddrRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}-{}", r.first, r.last)
    }
}

fn port(r: &PortRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}-{}", r.first, r.last)
    }
}

/// One direction's chains: each distinct [`Allowed`] once, and which pod jumps where.
struct Direction<'a> {
    /// `ingress` or `egress`: the prefix of chain, set and map names.
    name: &'static str,
    /// The peer's field: the source for ingress, the destination for egress.
    peer: &'static str,
    chains: Vec<&'a Allowed>,
    by_value: HashMap<&'a Allowed, usize>,
    /// Pods share `Arc`s: most lookups end here, without hashing the rules.
    by_pointer: HashMap<*const Allowed, usize>,
    pods: Vec<(Ipv4Addr, usize)>,
}

impl<'a> Direction<'a> {
    fn new(name: &'static str, peer: &'static str) -> Direction<'a> {
        Direction {
            name,
            peer,
            chains: Vec::new(),
            by_value: HashMap::new(),
            by_pointer: HashMap::new(),
            pods: Vec::new(),
        }
    }

    fn add(&mut self, ip: Ipv4Addr, allowed: &'a Allowed) {
        let ptr: *const Allowed = allowed;
        let chain = match self.by_pointer.get(&ptr) {
            Some(c) => *c,
            None => {
                let next = self.chains.len();
                let c = *self.by_value.entry(allowed).or_insert(next);
                if c == next {
                    self.chains.push(allowed);
                }
                self.by_pointer.insert(ptr, c);
                c
            }
        };
        self.pods.push((ip, chain));
    }

    /// The sets and chains, then the map from pod to chain.
    fn render(&self, out: &mut String) {
        let (name, peer) = (self.name, self.peer);
        for (i, allowed) in self.chains.iter().enumerate() {
            let mut rules = String::new();
            if !allowed.any_port.is_empty() {
                let elements: Vec<String> = allowed.any_port.iter().map(addr).collect();
                let _ = writeln!(
                    out,
                    "  set {name}-{i}-any {{ type ipv4_addr; flags interval; elements = {{ {} }} }}",
                    elements.join(", ")
                );
                let _ = write!(rules, "\n    ip {peer} @{name}-{i}-any return");
            }
            if !allowed.ports.is_empty() {
                let elements: Vec<String> = allowed
                    .ports
                    .iter()
                    .map(|r| {
                        format!(
                            "{} . {} . {}",
                            addr(&r.peers),
                            r.protocol.nft(),
                            port(&r.ports)
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  set {name}-{i}-ports {{ type ipv4_addr . inet_proto . inet_service; \
                     flags interval; elements = {{ {} }} }}",
                    elements.join(", ")
                );
                let _ = write!(
                    rules,
                    "\n    ip {peer} . meta l4proto . th dport @{name}-{i}-ports return"
                );
            }
            let _ = writeln!(out, "  chain {name}-{i} {{{rules}\n    drop\n  }}");
        }
        if !self.pods.is_empty() {
            let elements: Vec<String> = self
                .pods
                .iter()
                .map(|(ip, c)| format!("{ip} : jump {name}-{c}"))
                .collect();
            let _ = writeln!(
                out,
                "  map {name}-pods {{ type ipv4_addr : verdict; elements = {{ {} }} }}",
                elements.join(", ")
            );
        }
    }
}

impl Nftables {
    pub fn new() -> Nftables {
        Nftables {
            table: "krust-netpol".into(),
            runner: Runner::host(),
            bridge_netfilter: AtomicBool::new(false),
        }
    }

    /// The same backend, acting inside network namespace `netns` on table `table`.
    pub fn in_netns(mut self, netns: &str, table: &str) -> Nftables {
        self.runner = Runner::in_netns(netns);
        self.table = table.into();
        self
    }

    /// The whole table for `rules` as one `nft -f` script that replaces the table (creating
    /// it first makes the delete valid when it does not exist yet). Pure, so that it can be
    /// timed and tested without nftables.
    pub fn render(&self, rules: &PolicyRules) -> String {
        let t = &self.table;
        let mut ingress = Direction::new("ingress", "saddr");
        let mut egress = Direction::new("egress", "daddr");
        let mut own = Vec::new();
        for (ip, p) in &rules.pods {
            if let Some(a) = &p.ingress {
                ingress.add(*ip, a);
            }
            if let Some(a) = &p.egress {
                egress.add(*ip, a);
            }
            own.push(format!("{ip} . {ip}"));
        }
        let mut body = String::new();
        ingress.render(&mut body);
        egress.render(&mut body);
        let mut forward = String::from(
            "\n    type filter hook forward priority filter; policy accept;\
             \n    ct state established,related accept",
        );
        if !own.is_empty() {
            let _ = writeln!(
                body,
                "  set self {{ type ipv4_addr . ipv4_addr; elements = {{ {} }} }}",
                own.join(", ")
            );
            forward.push_str("\n    ip saddr . ip daddr @self accept");
        }
        for (d, field) in [(&ingress, "daddr"), (&egress, "saddr")] {
            if !d.pods.is_empty() {
                let _ = write!(forward, "\n    ip {field} vmap @{}-pods", d.name);
            }
        }
        let _ = writeln!(body, "  chain forward {{{forward}\n  }}");
        format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n{body}}}\n")
    }

    /// Bridged pod-to-pod traffic reaches the `forward` hook only with bridge netfilter on.
    /// Best effort, once: the module may be built in (no modprobe needed) or absent (then
    /// only routed traffic is policed, which is said in the log).
    async fn bridge_netfilter(&self) {
        if self.bridge_netfilter.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = self.runner.run("modprobe", &["br_netfilter"], "").await;
        if let Err(e) = self
            .runner
            .enable_sysctl("net/bridge/bridge-nf-call-iptables")
            .await
        {
            tracing::warn!(error = %e, "bridge netfilter is not available: traffic between pods on one bridge is not policed");
        }
    }
}

#[async_trait::async_trait]
impl PolicyBackend for Nftables {
    async fn sync(&self, rules: &PolicyRules) -> Result<(), PolicyError> {
        self.bridge_netfilter().await;
        Ok(self.runner.nft(&self.render(rules)).await?)
    }

    async fn cleanup(&self) -> Result<(), PolicyError> {
        let t = &self.table;
        self.runner
            .nft(&format!("table ip {t}\ndelete table ip {t}\n"))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
