//! The scheduler's in-memory view of the cluster: nodes with the pods on them (bound and
//! assumed), their summed requests and host ports, and two indexes that keep inter-pod
//! affinity and topology spreading independent of the number of pods:
//!
//! - *carried terms*: for every distinct affinity term that existing pods carry, how many
//!   pods carry it per topology value (so "existing pods' anti-affinity" is one lookup per term);
//! - *match counts*: for a (namespaces, selector, topologyKey) an incoming pod asks about, how
//!   many existing pods match per topology value. Built on first use, then kept current as
//!   pods come and go.
//!
//! Both are rebuilt when a node's labels change. Claims, volumes and storage classes are kept
//! beside the nodes for VolumeBinding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, Pod, PodAffinityTerm,
};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_machinery::selector::Selector;

/// Quantities summed in the units the scheduler compares: millicores, bytes, counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    /// Extended and hugepage resources (`nvidia.com/gpu`, ...), by name.
    pub scalar: Vec<(String, i64)>,
}

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Requests assumed for scoring when a container names none (upstream's non-zero defaults).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

impl Resource {
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, quantity_value(name, &q.0));
        }
        r
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pods,
            _ => self
                .scalar
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v),
        }
    }

    pub fn set(&mut self, name: &str, v: i64) {
        match name {
            CPU => self.milli_cpu = v,
            MEMORY => self.memory = v,
            EPHEMERAL_STORAGE => self.ephemeral_storage = v,
            PODS => self.allowed_pods = v,
            _ => match self.scalar.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 = v,
                None => self.scalar.push((name.to_string(), v)),
            },
        }
    }

    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (n, v) in &o.scalar {
            let cur = self.get(n);
            self.set(n, cur + v);
        }
    }

    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (n, v) in &o.scalar {
            let cur = self.get(n);
            self.set(n, cur - v);
        }
    }

    fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (n, v) in &o.scalar {
            let cur = self.get(n);
            self.set(n, cur.max(*v));
        }
    }
}

/// A quantity in the scheduler's units: millicores for cpu, whole units (rounded up) otherwise.
pub fn quantity_value(resource: &str, q: &str) -> i64 {
    let v = parse_quantity(q).unwrap_or(0.0);
    if resource == CPU {
        (v * 1000.0).ceil() as i64
    } else {
        v.ceil() as i64
    }
}

/// Parses a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `2G`, `1e3`) to a number of units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// A host port a container claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's rule: same protocol and port, and the same IP or either is the wildcard.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || wild(&self.ip) || wild(&o.ip))
    }
}

/// Namespace name -> its labels, for terms with a `namespaceSelector`.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// Which namespaces an affinity term looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
    /// The listed namespaces and those whose labels the selector matches (upstream ORs the
    /// term's `namespaces` and `namespaceSelector`).
    Selected(Vec<String>, Selector),
}

impl Namespaces {
    pub fn contains(&self, ns: &str, labels: &NamespaceLabels) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::List(l) => l.iter().any(|n| n == ns),
            Namespaces::Selected(l, sel) => {
                l.iter().any(|n| n == ns) || labels.get(ns).is_some_and(|m| sel.matches(m))
            }
        }
    }
}

/// A parsed pod (anti-)affinity term, or a topology spread constraint's selector.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub namespaces: Namespaces,
    pub selector: Selector,
    pub topology_key: String,
    /// Canonical form, for the indexes.
    pub key: String,
}

impl AffinityTerm {
    pub fn new(namespaces: Namespaces, selector: Selector, topology_key: &str) -> AffinityTerm {
        let ns = match &namespaces {
            Namespaces::All => "*".to_string(),
            Namespaces::List(l) => l.join(","),
            Namespaces::Selected(l, sel) => format!("{}+{{{sel}}}", l.join(",")),
        };
        let key = format!("{ns}|{selector}|{topology_key}");
        AffinityTerm {
            namespaces,
            selector,
            topology_key: topology_key.to_string(),
            key,
        }
    }

    /// From the API type, relative to the pod that carries it: no `namespaces` and no
    /// `namespaceSelector` means the pod's own namespace, an empty selector `{}` all of them.
    pub fn from_api(t: &PodAffinityTerm, pod_ns: &str) -> AffinityTerm {
        let mut list: Vec<String> = t.namespaces.clone().unwrap_or_default();
        list.sort();
        list.dedup();
        let to_selector = |s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| Selector::from_label_selector(&v).ok())
                .unwrap_or_else(Selector::nothing)
        };
        let ns = match &t.namespace_selector {
            None if list.is_empty() => Namespaces::List(vec![pod_ns.to_string()]),
            None => Namespaces::List(list),
            Some(s) => match to_selector(s) {
                sel if sel.is_everything() => Namespaces::All,
                sel => Namespaces::Selected(list, sel),
            },
        };
        let selector = t
            .label_selector
            .as_ref()
            .map(to_selector)
            .unwrap_or_else(Selector::nothing);
        AffinityTerm::new(ns, selector, &t.topology_key)
    }

    /// Whether the term selects the pod; `ns` gives namespace labels for a `namespaceSelector`.
    pub fn matches(&self, pod: &PodInfo, ns: &NamespaceLabels) -> bool {
        self.namespaces.contains(&pod.namespace, ns) && self.selector.matches(&pod.labels)
    }

    fn uses_namespace_labels(&self) -> bool {
        matches!(self.namespaces, Namespaces::Selected(..))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TermKind {
    RequiredAffinity,
    RequiredAntiAffinity,
    PreferredAffinity,
    PreferredAntiAffinity,
}

/// An affinity term a pod carries, with its weight (1 for required terms).
#[derive(Clone, Debug)]
pub struct CarriedTerm {
    pub kind: TermKind,
    pub weight: i32,
    pub term: AffinityTerm,
}

/// What the scheduler keeps about a pod it counts on a node.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub requests: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub ports: Vec<HostPort>,
    pub priority: i32,
    pub terms: Vec<CarriedTerm>,
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>, priority: i32) -> PodInfo {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let (requests, non_zero_cpu, non_zero_memory) = pod_requests(&pod);
        let mut ports = Vec::new();
        let mut terms = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in &spec.containers {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p.host_ip.clone().unwrap_or_default(),
                            port: hp,
                        });
                    }
                }
            }
            terms = carried_terms(&pod, &namespace);
        }
        PodInfo {
            key: pod_key(&pod),
            pod,
            namespace,
            labels,
            requests,
            non_zero_cpu,
            non_zero_memory,
            ports,
            priority,
            terms,
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.key.split_once('/').map(|(_, n)| n)
    }

    pub fn has_required_anti_affinity(&self) -> bool {
        self.terms
            .iter()
            .any(|t| t.kind == TermKind::RequiredAntiAffinity)
    }
}

/// The pod's affinity terms, required ones with weight 1.
pub fn carried_terms(pod: &Pod, namespace: &str) -> Vec<CarriedTerm> {
    let mut out = Vec::new();
    let Some(aff) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return out;
    };
    if let Some(pa) = &aff.pod_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.push(CarriedTerm {
                kind: TermKind::RequiredAffinity,
                weight: 1,
                term: AffinityTerm::from_api(t, namespace),
            });
        }
        for w in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.push(CarriedTerm {
                kind: TermKind::PreferredAffinity,
                weight: w.weight,
                term: AffinityTerm::from_api(&w.pod_affinity_term, namespace),
            });
        }
    }
    if let Some(pa) = &aff.pod_anti_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.push(CarriedTerm {
                kind: TermKind::RequiredAntiAffinity,
                weight: 1,
                term: AffinityTerm::from_api(t, namespace),
            });
        }
        for w in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            out.push(CarriedTerm {
                kind: TermKind::PreferredAntiAffinity,
                weight: w.weight,
                term: AffinityTerm::from_api(&w.pod_affinity_term, namespace),
            });
        }
    }
    out
}

/// Effective requests: the sum over containers, at least each init container's, plus overhead;
/// and the cpu/memory sums with upstream's non-zero defaults, for scoring.
pub fn pod_requests(pod: &Pod) -> (Resource, i64, i64) {
    let mut total = Resource::default();
    let (mut nz_cpu, mut nz_mem) = (0, 0);
    let Some(spec) = &pod.spec else {
        return (total, 0, 0);
    };
    for c in &spec.containers {
        let r = Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        let has = |n: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(n))
        };
        nz_cpu += if has(CPU) {
            r.milli_cpu
        } else {
            DEFAULT_MILLI_CPU_REQUEST
        };
        nz_mem += if has(MEMORY) {
            r.memory
        } else {
            DEFAULT_MEMORY_REQUEST
        };
        total.add(&r);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        total.max_with(&r);
    }
    if let Some(o) = &spec.overhead {
        total.add(&Resource::from_list(Some(o)));
    }
    (total, nz_cpu, nz_mem)
}

/// A node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub node: Arc<Node>,
    pub labels: BTreeMap<String, String>,
    pub pods: Vec<Arc<PodInfo>>,
    pub allocatable: Resource,
    pub requested: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub used_ports: Vec<HostPort>,
    /// Normalised image name to size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: BTreeMap::new(),
            node: node.clone(),
            pods: Vec::new(),
            allocatable: Resource::default(),
            requested: Resource::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            used_ports: Vec::new(),
            images: HashMap::new(),
        };
        info.set_node(node);
        info
    }

    fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let status = node.status.as_ref();
        self.allocatable = Resource::from_list(
            status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        self.images.clear();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for n in img.names.iter().flatten() {
                self.images
                    .insert(normalize_image(n), img.size_bytes.unwrap_or(0));
            }
        }
        self.node = node;
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.requested.allowed_pods += 1;
        self.non_zero_cpu += p.non_zero_cpu;
        self.non_zero_memory += p.non_zero_memory;
        self.used_ports.extend(p.ports.iter().cloned());
        self.pods.push(p);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.requested.allowed_pods -= 1;
        self.non_zero_cpu -= p.non_zero_cpu;
        self.non_zero_memory -= p.non_zero_memory;
        for port in &p.ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == port) {
                self.used_ports.swap_remove(j);
            }
        }
        Some(p)
    }

    pub fn taints(&self) -> &[k8s_openapi::api::core::v1::Taint] {
        self.node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
    }
}

/// `nginx` -> `docker.io/library/nginx:latest`, as the runtime reports names.
pub fn normalize_image(name: &str) -> String {
    let mut n = name.to_string();
    let last = n.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        n.push_str(":latest");
    }
    let first = n.split('/').next().unwrap_or_default();
    let has_registry =
        n.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        if n.contains('/') {
            n = format!("docker.io/{n}");
        } else {
            n = format!("docker.io/library/{n}");
        }
    }
    n
}

/// Pods per topology value for one term or selector.
#[derive(Debug)]
pub struct TermCounts {
    pub term: AffinityTerm,
    /// Shared with cycle states that read it; copied on write only while one holds it.
    pub counts: Arc<HashMap<String, i64>>,
}

impl TermCounts {
    fn bump(&mut self, value: Option<&String>, by: i64) {
        if let Some(v) = value {
            let counts = Arc::make_mut(&mut self.counts);
            let e = counts.entry(v.clone()).or_insert(0);
            *e += by;
            if *e == 0 {
                counts.remove(v);
            }
        }
    }
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct DisruptionBudget {
    pub namespace: String,
    /// `None` for a null or empty selector: the scheduler, like upstream's, counts such a
    /// budget against no pod.
    pub selector: Option<Selector>,
    /// `status.disruptionsAllowed`, kept current by the disruption controller.
    pub disruptions_allowed: i32,
    /// `status.disruptedPods`: evictions already admitted, not to be counted twice.
    pub disrupted: Vec<String>,
}

impl DisruptionBudget {
    pub fn from_api(pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> DisruptionBudget {
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| Selector::from_label_selector(&v).ok())
            .filter(|s| !s.is_everything());
        let status = pdb.status.as_ref();
        DisruptionBudget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            disruptions_allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Whether evicting `pod` takes from this budget.
    pub fn covers(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
            && !self
                .disrupted
                .iter()
                .any(|n| Some(n.as_str()) == pod.name())
    }
}

/// Largest number of distinct queries the match-count index keeps before starting over.
const MAX_MATCH_ENTRIES: usize = 512;

/// The cluster as the scheduler sees it.
#[derive(Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pod key -> node name, for every pod counted on a node.
    pods: HashMap<String, String>,
    /// Pods bound to nodes not seen yet.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    /// Normalised image -> number of nodes that have it.
    image_nodes: HashMap<String, usize>,
    carried: HashMap<(TermKind, i32, String), TermCounts>,
    matches: Mutex<HashMap<String, TermCounts>>,
    /// Labels of every namespace, for terms with a namespaceSelector.
    namespaces: NamespaceLabels,
    /// PodDisruptionBudgets by namespace/name, for preemption.
    budgets: HashMap<String, DisruptionBudget>,
    /// Nodes holding a pod with required anti-affinity (upstream's HavePodsWithRequiredAntiAffinity).
    pub anti_affinity_pods: usize,
    /// Claims, volumes and storage classes, for VolumeBinding.
    pub volumes: Volumes,
}

/// The storage objects VolumeBinding reads: claims by `namespace/name`, volumes and classes
/// by name. A few per pod that uses them, so whole objects (less managedFields) are kept.
#[derive(Default)]
pub struct Volumes {
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

impl Snapshot {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(String::as_str)
    }

    pub fn image_spread(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Adds or replaces a node. Returns whether it is new.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            let old_labels = self.nodes[i].labels.clone();
            self.image_index(i, -1);
            self.nodes[i].set_node(node);
            self.image_index(i, 1);
            if self.nodes[i].labels != old_labels {
                self.rebuild_indexes();
            }
            return false;
        }
        let mut info = NodeInfo::new(node);
        let orphans = self.orphans.remove(&name).unwrap_or_default();
        for p in &orphans {
            info.add_pod(p.clone());
        }
        self.index.insert(name.clone(), self.nodes.len());
        self.nodes.push(info);
        self.image_index(self.nodes.len() - 1, 1);
        for p in orphans {
            self.index_pod(&p, &name, 1);
        }
        true
    }

    fn image_index(&mut self, i: usize, by: isize) {
        for img in self.nodes[i].images.keys() {
            let e = self.image_nodes.entry(img.clone()).or_insert(0);
            *e = e.saturating_add_signed(by);
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.image_index(i, -1);
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
        // Pods stay counted against the name until they are deleted, as upstream.
        for p in &info.pods {
            self.index_pod_labels(p, &info.labels, -1);
        }
        self.orphans.insert(name.to_string(), info.pods);
    }

    /// Counts a pod on a node (bound or assumed). A pod already counted elsewhere moves.
    pub fn add_pod(&mut self, p: Arc<PodInfo>, node: &str) {
        if let Some(prev) = self.pods.get(&p.key).cloned() {
            self.remove_pod(&p.key);
            let _ = prev;
        }
        self.pods.insert(p.key.clone(), node.to_string());
        match self.index.get(node) {
            Some(&i) => {
                self.nodes[i].add_pod(p.clone());
                self.index_pod(&p, node, 1);
            }
            None => self.orphans.entry(node.to_string()).or_default().push(p),
        }
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.pods.remove(key)?;
        match self.index.get(&node) {
            Some(&i) => {
                let p = self.nodes[i].remove_pod(key)?;
                self.index_pod(&p, &node, -1);
                Some(p)
            }
            None => {
                let list = self.orphans.get_mut(&node)?;
                let j = list.iter().position(|p| p.key == key)?;
                Some(list.swap_remove(j))
            }
        }
    }

    fn index_pod(&mut self, p: &PodInfo, node: &str, by: i64) {
        let Some(&i) = self.index.get(node) else {
            return;
        };
        let labels = self.nodes[i].labels.clone();
        self.index_pod_labels(p, &labels, by);
    }

    fn index_pod_labels(&mut self, p: &PodInfo, labels: &BTreeMap<String, String>, by: i64) {
        if p.has_required_anti_affinity() {
            self.anti_affinity_pods = self.anti_affinity_pods.saturating_add_signed(by as isize);
        }
        for t in &p.terms {
            let e = self
                .carried
                .entry((t.kind, t.weight, t.term.key.clone()))
                .or_insert_with(|| TermCounts {
                    term: t.term.clone(),
                    counts: Arc::default(),
                });
            e.bump(labels.get(&t.term.topology_key), by);
            if e.counts.is_empty() {
                self.carried.remove(&(t.kind, t.weight, t.term.key.clone()));
            }
        }
        let mut m = self.matches_lock();
        for e in m.values_mut() {
            if e.term.matches(p, &self.namespaces) {
                e.bump(labels.get(&e.term.topology_key), by);
            }
        }
    }

    /// Records a PodDisruptionBudget (`None`: it is gone).
    pub fn set_budget(&mut self, key: &str, budget: Option<DisruptionBudget>) {
        match budget {
            Some(b) => self.budgets.insert(key.to_string(), b),
            None => self.budgets.remove(key),
        };
    }

    pub fn budgets(&self) -> impl Iterator<Item = &DisruptionBudget> {
        self.budgets.values()
    }

    pub fn budget_keys(&self) -> Vec<String> {
        self.budgets.keys().cloned().collect()
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// Whether `term` selects `pod`, with the namespace labels the snapshot knows.
    pub fn term_matches(&self, term: &AffinityTerm, pod: &PodInfo) -> bool {
        term.matches(pod, &self.namespaces)
    }

    /// Records a namespace's labels (`None`: the namespace is gone). Returns whether they
    /// changed; the indexes are rebuilt when a term that selects namespaces by label exists.
    pub fn set_namespace(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) -> bool {
        let changed = match labels {
            Some(l) => self.namespaces.insert(name.to_string(), l.clone()) != Some(l),
            None => self.namespaces.remove(name).is_some(),
        };
        let selecting = self
            .carried
            .values()
            .any(|c| c.term.uses_namespace_labels())
            || self
                .matches_lock()
                .values()
                .any(|c| c.term.uses_namespace_labels());
        if changed && selecting {
            self.rebuild_indexes();
        }
        changed
    }

    fn rebuild_indexes(&mut self) {
        self.carried.clear();
        self.matches_lock().clear();
        self.anti_affinity_pods = 0;
        let all: Vec<(Arc<PodInfo>, BTreeMap<String, String>)> = self
            .nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(|p| (p.clone(), n.labels.clone())))
            .collect();
        for (p, labels) in all {
            self.index_pod_labels(&p, &labels, 1);
        }
    }

    fn matches_lock(&self) -> MutexGuard<'_, HashMap<String, TermCounts>> {
        self.matches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Existing pods' carried terms: (kind, weight, term, pods per topology value).
    pub fn carried_terms(&self) -> impl Iterator<Item = (TermKind, i32, &TermCounts)> {
        self.carried.iter().map(|((k, w, _), c)| (*k, *w, c))
    }

    /// Existing pods matching an already-indexed term (see `with_match_counts`) at one value.
    pub fn match_count(&self, term_key: &str, value: &str) -> i64 {
        self.matches_lock()
            .get(term_key)
            .and_then(|c| c.counts.get(value).copied())
            .unwrap_or(0)
    }

    /// The match counts for `term` (built on first use), shared: hold them only within a
    /// cycle, as the snapshot copies them if they are still held when it changes.
    pub fn match_counts(&self, term: &AffinityTerm) -> Arc<HashMap<String, i64>> {
        self.with_match_counts(term, |_| ());
        self.matches_lock()
            .get(&term.key)
            .map(|c| c.counts.clone())
            .unwrap_or_default()
    }

    /// Existing pods carrying a term at one topology value.
    pub fn carried_count(&self, kind: TermKind, weight: i32, term_key: &str, value: &str) -> i64 {
        self.carried
            .get(&(kind, weight, term_key.to_string()))
            .and_then(|c| c.counts.get(value).copied())
            .unwrap_or(0)
    }

    /// Calls `f` with the number of existing pods that `term` matches, per topology value.
    pub fn with_match_counts<R>(
        &self,
        term: &AffinityTerm,
        f: impl FnOnce(&HashMap<String, i64>) -> R,
    ) -> R {
        let mut m = self.matches_lock();
        if !m.contains_key(&term.key) {
            if m.len() >= MAX_MATCH_ENTRIES {
                m.clear();
            }
            let mut counts = HashMap::new();
            for n in &self.nodes {
                let Some(v) = n.labels.get(&term.topology_key) else {
                    continue;
                };
                let k = n
                    .pods
                    .iter()
                    .filter(|p| term.matches(p, &self.namespaces))
                    .count() as i64;
                if k > 0 {
                    counts.insert(v.clone(), k);
                }
            }
            let c = TermCounts {
                term: term.clone(),
                counts: Arc::new(counts),
            };
            m.insert(term.key.clone(), c);
        }
        f(&m[&term.key].counts)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for nodes and pods in unit tests.
    use super::*;
    use serde_json::{json, Value};

    pub fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> Arc<Node> {
        let mut l = labels;
        if l.is_null() {
            l = json!({});
        }
        l["kubernetes.io/hostname"] = json!(name);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": l},
                "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    pub fn node_json(v: Value) -> Arc<Node> {
        Arc::new(serde_json::from_value(v).expect("node"))
    }

    pub fn pod(name: &str, spec: Value) -> Arc<Pod> {
        pod_labels(name, json!({}), spec)
    }

    pub fn pod_labels(name: &str, labels: Value, spec: Value) -> Arc<Pod> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": labels, "uid": name},
                "spec": spec
            }))
            .expect("pod"),
        )
    }

    pub fn req_pod(name: &str, cpu: &str, mem: &str) -> Arc<Pod> {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
        )
    }

    pub fn snapshot(nodes: &[Arc<Node>]) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            s.upsert_node(n.clone());
        }
        s
    }

    pub fn place(s: &mut Snapshot, pod: Arc<Pod>, node: &str) {
        s.add_pod(Arc::new(PodInfo::new(pod, 0)), node);
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(quantity_value(CPU, "100m"), 100);
        assert_eq!(quantity_value(CPU, "1.5"), 1500);
        assert_eq!(quantity_value(MEMORY, "128Mi"), 128 * 1024 * 1024);
        assert_eq!(quantity_value(MEMORY, "1G"), 1_000_000_000);
        assert_eq!(quantity_value(MEMORY, "1e3"), 1000);
        assert_eq!(quantity_value("nvidia.com/gpu", "2"), 2);
    }

    #[test]
    fn requests_take_init_containers_and_defaults() {
        let p = pod(
            "p",
            json!({"containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}}],
              "initContainers": [{"name": "i", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        let (r, nz_cpu, nz_mem) = pod_requests(&p);
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(nz_cpu, 500);
        assert_eq!(nz_mem, DEFAULT_MEMORY_REQUEST + (1 << 30));
    }

    #[test]
    fn add_remove_keeps_sums_and_indexes() {
        let mut s = snapshot(&[node("n1", "4", "8Gi", json!({"zone": "a"}))]);
        let p = pod_labels(
            "p",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        place(&mut s, p, "n1");
        assert_eq!(s.anti_affinity_pods, 1);
        assert_eq!(s.carried_terms().count(), 1);
        let term = AffinityTerm::new(
            Namespaces::List(vec!["default".into()]),
            Selector::parse("app=web").expect("selector"),
            "zone",
        );
        assert_eq!(s.with_match_counts(&term, |c| c.get("a").copied()), Some(1));
        s.remove_pod("default/p");
        assert_eq!(s.carried_terms().count(), 0);
        assert_eq!(s.with_match_counts(&term, |c| c.get("a").copied()), None);
        assert_eq!(s.node("n1").map(|n| n.requested.allowed_pods), Some(0));
    }

    #[test]
    fn pods_before_their_node_are_kept() {
        let mut s = Snapshot::default();
        place(&mut s, req_pod("p", "1", "1Gi"), "late");
        s.upsert_node(node("late", "4", "8Gi", json!({})));
        assert_eq!(s.node("late").map(|n| n.requested.milli_cpu), Some(1000));
    }

    #[test]
    fn images_normalise() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(normalize_image("reg.io/x/y:2"), "reg.io/x/y:2");
    }
}
