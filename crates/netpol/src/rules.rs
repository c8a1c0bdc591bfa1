//! What the node must enforce, computed from NetworkPolicies, Pods and Namespaces: for each
//! isolated pod on the node, the peers, protocols and ports it may be reached from
//! (ingress) and may reach (egress). A pure function, so every backend gets the same answer
//! and the tests need no cluster.
//!
//! The semantics are upstream's (`networking.k8s.io/v1`):
//! - A pod is isolated for ingress (egress) once a policy in its namespace selects it and
//!   has `Ingress` (`Egress`) in its `policyTypes`; missing `policyTypes` default to
//!   `Ingress`, plus `Egress` when the policy has egress rules (what the API server fills
//!   in). What an isolated direction allows is the union of those policies' rules.
//! - A peer is a `podSelector` (pods of the policy's namespace), a `namespaceSelector`
//!   (every pod of the matching namespaces), both (matching pods of matching namespaces),
//!   or an `ipBlock` (its CIDR less `except`, whatever the addresses are). An empty
//!   `from`/`to` is every address; a rule without `ports` is every protocol and port.
//! - Ports: `protocol` (TCP by default, UDP, SCTP), a number, a number to `endPort`, or a
//!   name resolved against the container ports of the destination pod (the selected pod
//!   for ingress, each peer pod for egress; a named port never matches an ipBlock peer).
//! - Invalid parts (a bad selector, CIDR or protocol) match nothing: they can only make a
//!   rule allow less, never more.
//!
//! Only pods with an IPv4 address that are neither host-network nor finished take part,
//! as targets or peers. Backends also let a pod always reach itself, which upstream
//! guarantees and is not written into [`Allowed`].

mod ranges;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use krust_machinery::selector::Selector;

pub use ranges::{AddrRange, PortRange};

/// The label the API server puts on every namespace; added here too when missing, so that
/// selecting a namespace by name works whoever created it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub use krust_nft::Protocol;

/// Peers in `peers` may open connections on `protocol` ports `ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRule {
    pub protocol: Protocol,
    pub peers: AddrRange,
    pub ports: PortRange,
}

/// What one direction of one isolated pod lets through, in a normal form (sorted,
/// disjoint, joined) so that equal policies give equal values and nftables gets interval
/// sets without overlaps. Empty: nothing passes (a default-deny policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allowed {
    /// Peers allowed on every protocol and port (a rule without `ports`).
    pub any_port: Vec<AddrRange>,
    /// Peers allowed on some ports, sorted by protocol, then peers.
    pub ports: Vec<PortRule>,
}

impl Allowed {
    /// Whether a new connection with `peer` on `protocol` port `port` is allowed.
    pub fn allows(&self, peer: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        self.any_port.iter().any(|r| r.contains(peer))
            || self
                .ports
                .iter()
                .any(|r| r.protocol == protocol && r.peers.contains(peer) && r.ports.contains(port))
    }
}

/// The enforcement for one pod address. `None`: not isolated in that direction, so
/// everything passes. Shared (`Arc`) between pods whose policies allow the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRules {
    pub ingress: Option<Arc<Allowed>>,
    pub egress: Option<Arc<Allowed>>,
}

/// Everything to enforce on the node: the isolated pods by address. Pods missing here are
/// not isolated at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub pods: BTreeMap<Ipv4Addr, PodRules>,
}

impl PolicyRules {
    /// How many pod addresses are isolated for ingress and for egress (for logs).
    pub fn isolated(&self) -> (usize, usize) {
        let ingress = self.pods.values().filter(|p| p.ingress.is_some()).count();
        let egress = self.pods.values().filter(|p| p.egress.is_some()).count();
        (ingress, egress)
    }
}

/// A pod as the rules see it.
struct PodView<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    ips: Vec<Ipv4Addr>,
    /// Named container ports: (name, protocol, number).
    named_ports: Vec<(&'a str, Protocol, u16)>,
    /// On the node being enforced.
    local: bool,
}

impl PodView<'_> {
    fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| *n == name && *p == protocol)
            .map(|(_, _, port)| *port)
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The addresses of a pod that takes part: IPv4 only, not host-network, not finished.
fn pod_ips(pod: &Pod) -> Vec<Ipv4Addr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok()),
        );
    }
    ips
}

fn pod_view<'a>(pod: &'a Pod, node: Option<&str>) -> Option<PodView<'a>> {
    let ips = pod_ips(pod);
    if ips.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref();
    let named_ports = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.as_deref()?;
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            Some((name, protocol, u16::try_from(p.container_port).ok()?))
        })
        .collect();
    let local = node.is_none_or(|n| spec.and_then(|s| s.node_name.as_deref()) == Some(n));
    Some(PodView {
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        labels: pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
        ips,
        named_ports,
        local,
    })
}

/// A metav1.LabelSelector as a selector; an invalid one selects nothing.
fn selector(sel: &LabelSelector) -> Selector {
    serde_json::to_value(sel)
        .ok()
        .and_then(|v| Selector::from_label_selector(&v).ok())
        .unwrap_or_else(Selector::nothing)
}

/// (namespace the peer is relative to, the peer as JSON) -> its pods.
type PeerCache = HashMap<(String, String), Rc<Vec<usize>>>;

/// The pods and namespaces, indexed for selectors.
struct Cluster<'a> {
    pods: Vec<PodView<'a>>,
    by_namespace: HashMap<&'a str, Vec<usize>>,
    /// Namespace labels, each with [`NAMESPACE_NAME_LABEL`].
    namespaces: BTreeMap<&'a str, BTreeMap<String, String>>,
    peer_cache: RefCell<PeerCache>,
}

impl<'a> Cluster<'a> {
    fn new(
        pods: impl IntoIterator<Item = &'a Pod>,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        node: Option<&str>,
    ) -> Cluster<'a> {
        let pods: Vec<PodView<'a>> = pods.into_iter().filter_map(|p| pod_view(p, node)).collect();
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut known: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_namespace.entry(p.namespace).or_default().push(i);
            // A pod whose namespace is not (yet) in the cache still has one, by name.
            known.entry(p.namespace).or_default();
        }
        for ns in namespaces {
            let Some(name) = ns.metadata.name.as_deref() else {
                continue;
            };
            known.insert(name, ns.metadata.labels.clone().unwrap_or_default());
        }
        for (name, labels) in &mut known {
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.to_string());
        }
        Cluster {
            pods,
            by_namespace,
            namespaces: known,
            peer_cache: RefCell::default(),
        }
    }

    fn in_namespace(&self, ns: &str) -> &[usize] {
        self.by_namespace.get(ns).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The pods one selector-based peer names (`policy_ns` is the policy's namespace),
    /// sorted. Remembered per peer: many policies name the same peers (a monitoring
    /// namespace, the ingress controller), and matching every pod again for each is what
    /// would make thousands of policies slow.
    fn peer_pods(&self, peer: &NetworkPolicyPeer, policy_ns: &str) -> Rc<Vec<usize>> {
        let scope = if peer.namespace_selector.is_none() {
            policy_ns
        } else {
            ""
        };
        let key = serde_json::to_string(peer).map(|k| (scope.to_string(), k));
        if let Ok(key) = &key {
            if let Some(hit) = self.peer_cache.borrow().get(key) {
                return hit.clone();
            }
        }
        let pods = peer.pod_selector.as_ref().map(selector);
        let matching = |i: &&usize| {
            pods.as_ref()
                .is_none_or(|s| s.matches(self.pods[**i].labels))
        };
        let mut out: Vec<usize> = Vec::new();
        match &peer.namespace_selector {
            None => out.extend(self.in_namespace(policy_ns).iter().filter(matching)),
            Some(ns_sel) => {
                let ns_sel = selector(ns_sel);
                for (name, labels) in &self.namespaces {
                    if ns_sel.matches(labels) {
                        out.extend(self.in_namespace(name).iter().filter(matching));
                    }
                }
            }
        }
        out.sort_unstable();
        let out = Rc::new(out);
        if let Ok(key) = key {
            self.peer_cache.borrow_mut().insert(key, out.clone());
        }
        out
    }

    /// The peers of a rule's `from`/`to`.
    fn peers(&self, peers: Option<&[NetworkPolicyPeer]>, policy_ns: &str) -> Peers {
        let peers = peers.unwrap_or_default();
        if peers.is_empty() {
            return Peers {
                addrs: vec![AddrRange::ALL],
                pods: None,
            };
        }
        let mut pods = Vec::new();
        let mut addrs = Vec::new();
        for peer in peers {
            match &peer.ip_block {
                // An ipBlock stands alone (the API rejects it beside selectors).
                Some(b) if peer.pod_selector.is_none() && peer.namespace_selector.is_none() => {
                    let Some(block) = AddrRange::parse_cidr(&b.cidr) else {
                        continue;
                    };
                    let holes: Option<Vec<AddrRange>> = b
                        .except
                        .iter()
                        .flatten()
                        .map(|c| AddrRange::parse_cidr(c))
                        .collect();
                    // An except that cannot be read: the block is skipped rather than
                    // allowing what it meant to leave out.
                    addrs.extend(
                        holes
                            .map(|h| ranges::subtract(block, &h))
                            .unwrap_or_default(),
                    );
                }
                Some(_) => {}
                None if peer.pod_selector.is_none() && peer.namespace_selector.is_none() => {}
                None => pods.extend_from_slice(&self.peer_pods(peer, policy_ns)),
            }
        }
        pods.sort_unstable();
        pods.dedup();
        addrs.extend(
            pods.iter()
                .flat_map(|i| self.pods[*i].ips.iter().copied().map(AddrRange::one)),
        );
        Peers {
            addrs: ranges::merge(addrs),
            pods: Some(pods),
        }
    }
}

/// A rule's peers as addresses, and which of them are pods (for egress named ports).
struct Peers {
    addrs: Vec<AddrRange>,
    /// None: every address (an empty `from`/`to`), so every pod.
    pods: Option<Vec<usize>>,
}

/// One entry of a rule's `ports`.
enum PortSpec<'a> {
    Numbers(Protocol, PortRange),
    Named(Protocol, &'a str),
}

/// A rule's `ports`; None: every protocol and port. Entries that cannot match (a bad
/// protocol, a port out of range, an `endPort` below `port` or beside a name) are left out,
/// so a rule with only such entries allows nothing.
fn port_specs(ports: Option<&[NetworkPolicyPort]>) -> Option<Vec<PortSpec<'_>>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    Some(ports.iter().filter_map(port_spec).collect())
}

fn port_spec(p: &NetworkPolicyPort) -> Option<PortSpec<'_>> {
    let protocol = Protocol::parse(p.protocol.as_deref())?;
    let number = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0);
    Some(match (&p.port, p.end_port) {
        (None, None) => PortSpec::Numbers(protocol, PortRange::ALL),
        (Some(IntOrString::Int(n)), None) => {
            PortSpec::Numbers(protocol, PortRange::one(number(*n)?))
        }
        (Some(IntOrString::Int(n)), Some(end)) => {
            let (first, last) = (number(*n)?, number(end)?);
            if first > last {
                return None;
            }
            PortSpec::Numbers(protocol, PortRange { first, last })
        }
        (Some(IntOrString::String(name)), None) => PortSpec::Named(protocol, name),
        _ => return None,
    })
}

/// What a rule adds for one pod, before the union is put in normal form.
#[derive(Default)]
struct Contribution {
    any_port: Vec<AddrRange>,
    ports: Vec<(Protocol, AddrRange, PortRange)>,
}

/// Collects, per pod address and direction, which contributions apply. Contributions are
/// interned, and pods with the same list get one shared [`Allowed`], so a policy selecting
/// a thousand pods costs one normalisation, not a thousand.
#[derive(Default)]
struct Builder {
    contributions: Vec<Contribution>,
    /// (rule id, the ports resolved for the target) -> contribution, for ingress rules
    /// whose named ports resolve differently per selected pod.
    interned: HashMap<(usize, Vec<(Protocol, PortRange)>), usize>,
    /// Per address: contribution ids for ingress and egress (None: not isolated).
    pods: BTreeMap<Ipv4Addr, Applied>,
    next_rule: usize,
}

/// The contributions applying to one pod address, per direction (None: not isolated).
#[derive(Default)]
struct Applied {
    ingress: Option<Vec<usize>>,
    egress: Option<Vec<usize>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Builder {
    /// The contribution list of `ip` in `dir`, created (isolating it) if missing.
    fn slot(&mut self, ip: Ipv4Addr, dir: Direction) -> &mut Vec<usize> {
        let entry = self.pods.entry(ip).or_default();
        match dir {
            Direction::Ingress => entry.ingress.get_or_insert_with(Vec::new),
            Direction::Egress => entry.egress.get_or_insert_with(Vec::new),
        }
    }

    fn isolate(&mut self, pod: &PodView<'_>, dir: Direction) {
        for ip in &pod.ips {
            self.slot(*ip, dir);
        }
    }

    fn add(&mut self, pod: &PodView<'_>, dir: Direction, contribution: usize) {
        for ip in &pod.ips {
            self.slot(*ip, dir).push(contribution);
        }
    }

    fn ingress_rule(
        &mut self,
        cluster: &Cluster<'_>,
        targets: &[usize],
        peers: &Peers,
        ports: &Option<Vec<PortSpec<'_>>>,
    ) {
        let rule = self.next_rule;
        self.next_rule += 1;
        for &t in targets {
            let pod = &cluster.pods[t];
            let resolved: Option<Vec<(Protocol, PortRange)>> = ports.as_ref().map(|specs| {
                specs
                    .iter()
                    .filter_map(|s| match s {
                        PortSpec::Numbers(p, r) => Some((*p, *r)),
                        PortSpec::Named(p, name) => {
                            pod.named_port(name, *p).map(|n| (*p, PortRange::one(n)))
                        }
                    })
                    .collect()
            });
            let key = (rule, resolved.clone().unwrap_or_default());
            let id = match (self.interned.get(&key), resolved) {
                (Some(id), _) => *id,
                (None, resolved) => {
                    let c = match resolved {
                        None => Contribution {
                            any_port: peers.addrs.clone(),
                            ports: Vec::new(),
                        },
                        Some(resolved) => Contribution {
                            any_port: Vec::new(),
                            ports: resolved
                                .iter()
                                .flat_map(|(p, r)| peers.addrs.iter().map(|a| (*p, *a, *r)))
                                .collect(),
                        },
                    };
                    self.contributions.push(c);
                    let id = self.contributions.len() - 1;
                    self.interned.insert(key, id);
                    id
                }
            };
            self.add(pod, Direction::Ingress, id);
        }
    }

    fn egress_rule(
        &mut self,
        cluster: &Cluster<'_>,
        targets: &[usize],
        peers: &Peers,
        ports: &Option<Vec<PortSpec<'_>>>,
    ) {
        let mut c = Contribution::default();
        match ports {
            None => c.any_port = peers.addrs.clone(),
            Some(specs) => {
                for spec in specs {
                    match spec {
                        PortSpec::Numbers(p, r) => {
                            c.ports.extend(peers.addrs.iter().map(|a| (*p, *a, *r)));
                        }
                        // Resolved on each destination pod; ipBlock peers have no names.
                        PortSpec::Named(p, name) => {
                            let all: Vec<usize>;
                            let pods = match &peers.pods {
                                Some(pods) => pods,
                                None => {
                                    all = (0..cluster.pods.len()).collect();
                                    &all
                                }
                            };
                            for pod in pods.iter().map(|i| &cluster.pods[*i]) {
                                if let Some(n) = pod.named_port(name, *p) {
                                    let r = PortRange::one(n);
                                    c.ports.extend(
                                        pod.ips.iter().map(|ip| (*p, AddrRange::one(*ip), r)),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        self.contributions.push(c);
        let id = self.contributions.len() - 1;
        for &t in targets {
            self.add(&cluster.pods[t], Direction::Egress, id);
        }
    }

    fn policy(&mut self, cluster: &Cluster<'_>, policy: &NetworkPolicy) {
        let empty = NetworkPolicySpec::default();
        let spec = policy.spec.as_ref().unwrap_or(&empty);
        let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
        // A missing podSelector is the empty one: every pod of the namespace.
        let select = spec
            .pod_selector
            .as_ref()
            .map_or_else(Selector::everything, selector);
        let targets: Vec<usize> = cluster
            .in_namespace(ns)
            .iter()
            .copied()
            .filter(|i| cluster.pods[*i].local && select.matches(cluster.pods[*i].labels))
            .collect();
        if targets.is_empty() {
            return;
        }
        let (ingress, egress) = policy_types(spec);
        if ingress {
            for &t in &targets {
                self.isolate(&cluster.pods[t], Direction::Ingress);
            }
            for rule in spec.ingress.iter().flatten() {
                let peers = cluster.peers(rule.from.as_deref(), ns);
                let ports = port_specs(rule.ports.as_deref());
                self.ingress_rule(cluster, &targets, &peers, &ports);
            }
        }
        if egress {
            for &t in &targets {
                self.isolate(&cluster.pods[t], Direction::Egress);
            }
            for rule in spec.egress.iter().flatten() {
                let peers = cluster.peers(rule.to.as_deref(), ns);
                let ports = port_specs(rule.ports.as_deref());
                self.egress_rule(cluster, &targets, &peers, &ports);
            }
        }
    }

    /// The union of contributions `ids`, in normal form.
    fn allowed(&self, ids: &[usize]) -> Allowed {
        let mut any_port = Vec::new();
        let mut by_protocol: BTreeMap<Protocol, Vec<(AddrRange, PortRange)>> = BTreeMap::new();
        for c in ids.iter().filter_map(|i| self.contributions.get(*i)) {
            any_port.extend_from_slice(&c.any_port);
            for (p, a, r) in &c.ports {
                by_protocol.entry(*p).or_default().push((*a, *r));
            }
        }
        let ports = by_protocol
            .into_iter()
            .flat_map(|(protocol, rects)| {
                ranges::disjoint_rects(&rects)
                    .into_iter()
                    .map(move |(peers, ports)| PortRule {
                        protocol,
                        peers,
                        ports,
                    })
            })
            .collect();
        Allowed {
            any_port: ranges::merge(any_port),
            ports,
        }
    }

    fn finish(self) -> PolicyRules {
        let mut shared: HashMap<Vec<usize>, Arc<Allowed>> = HashMap::new();
        let mut get = |ids: Option<Vec<usize>>| {
            let mut ids = ids?;
            ids.sort_unstable();
            ids.dedup();
            Some(
                shared
                    .entry(ids)
                    .or_insert_with_key(|ids| Arc::new(self.allowed(ids)))
                    .clone(),
            )
        };
        let pods = self
            .pods
            .iter()
            .map(|(ip, Applied { ingress, egress })| {
                let rules = PodRules {
                    ingress: get(ingress.clone()),
                    egress: get(egress.clone()),
                };
                (*ip, rules)
            })
            .collect();
        PolicyRules { pods }
    }
}

/// Which directions a policy isolates: its `policyTypes`, or when it has none, what the
/// API server defaults them to (Ingress, plus Egress when there are egress rules).
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// The rules for the pods on `node` (None: every pod) under `policies`, with peers taken
/// from all of `pods` and `namespaces`. Two pods with one address (a brief overlap) share
/// its rules: isolated if either is, allowed what either allows.
pub fn compute<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    node: Option<&str>,
) -> PolicyRules {
    let cluster = Cluster::new(pods, namespaces, node);
    let mut b = Builder::default();
    for p in policies {
        b.policy(&cluster, p);
    }
    b.finish()
}

#[cfg(test)]
mod tests;
