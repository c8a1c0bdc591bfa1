//! The simulated nodes' identities and the pure construction of their API objects.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::RwLock;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::SimConfig;

/// Namespace of the node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Annotation that marks a node as simulated.
pub const SIM_ANNOTATION: &str = "krust.dev/sim-node";
pub const KUBELET_VERSION: &str = "v1.33.0";

/// What the simulator learns about a node from the API server.
#[derive(Clone, Debug, Default)]
pub struct NodeLive {
    /// The Node's uid, for the Lease's owner reference.
    pub uid: Option<String>,
    /// `spec.podCIDR`, set by whoever allocates node CIDRs.
    pub pod_cidr: Option<String>,
    /// When Ready last turned True, kept across heartbeats.
    pub ready_since: Option<Timestamp>,
    /// The last heartbeat (Lease renewal or status write) that got through.
    pub last_beat: Option<Timestamp>,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub name: String,
    pub index: usize,
    pub ip: Ipv4Addr,
    pub zone: Option<String>,
    pub live: RwLock<NodeLive>,
}

impl SimNode {
    pub fn live(&self) -> NodeLive {
        self.live.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records a heartbeat that got through.
    pub fn beat(&self, now: Timestamp) {
        if let Ok(mut live) = self.live.write() {
            live.last_beat = Some(now);
        }
    }

    /// When Ready turned True, for a status written `now`. If no heartbeat got through for
    /// longer than `grace` (the lease duration), the node lifecycle controller has marked the
    /// node NotReady meanwhile, so Ready turns True again now.
    pub fn ready_since(&self, now: Timestamp, grace: Duration) -> Timestamp {
        let Ok(mut live) = self.live.write() else {
            return now;
        };
        let stale = live
            .last_beat
            .is_some_and(|b| Duration::try_from(now.duration_since(b)).is_ok_and(|d| d > grace));
        if stale || live.ready_since.is_none() {
            live.ready_since = Some(now);
        }
        live.ready_since.unwrap_or(now)
    }

    /// Records what the API server returned for this node.
    pub fn observe(&self, node: &Node, now: Timestamp) {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        if let Ok(mut live) = self.live.write() {
            live.uid = node.metadata.uid.clone().or(live.uid.take());
            live.pod_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            if live.ready_since.is_none() {
                live.ready_since = Some(match ready {
                    Some(c) if c.status == "True" => {
                        c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now)
                    }
                    _ => now,
                });
            }
        }
    }
}

/// All simulated nodes, by index and by name.
#[derive(Debug)]
pub struct NodeSet {
    nodes: Vec<SimNode>,
    by_name: HashMap<String, usize>,
}

impl NodeSet {
    pub fn new(config: &SimConfig) -> NodeSet {
        let nodes: Vec<SimNode> = (0..config.nodes)
            .map(|index| SimNode {
                name: config.node_name(index),
                index,
                ip: node_ip(index),
                zone: (config.zones > 0).then(|| format!("zone-{}", index % config.zones as usize)),
                live: RwLock::new(NodeLive::default()),
            })
            .collect();
        let by_name = nodes.iter().map(|n| (n.name.clone(), n.index)).collect();
        NodeSet { nodes, by_name }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, name: &str) -> Option<&SimNode> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    pub fn at(&self, index: usize) -> &SimNode {
        &self.nodes[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter()
    }
}

/// Node `index`'s InternalIP, from 10.224.0.0/12 (pure data, never routed), skipping .0 and
/// .255 of each /24.
pub fn node_ip(index: usize) -> Ipv4Addr {
    let offset = (index / 254 * 256 + index % 254 + 1) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 224, 0, 0)) + (offset & 0x000f_ffff))
}

/// The node's labels: the kubelet's well-known ones, the zone, and the configured extras.
pub fn node_labels(config: &SimConfig, node: &SimNode) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("kubernetes.io/hostname".to_string(), node.name.clone());
    l.insert("kubernetes.io/os".to_string(), "linux".to_string());
    l.insert("kubernetes.io/arch".to_string(), "amd64".to_string());
    l.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    l.insert("beta.kubernetes.io/arch".to_string(), "amd64".to_string());
    l.insert(
        "node.kubernetes.io/instance-type".to_string(),
        "sim".to_string(),
    );
    if let Some(zone) = &node.zone {
        l.insert("topology.kubernetes.io/zone".to_string(), zone.clone());
    }
    for (k, v) in &config.labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

/// The Node object to register.
pub fn build_node(config: &SimConfig, node: &SimNode, now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node.name.clone()),
            labels: Some(node_labels(config, node)),
            annotations: Some(BTreeMap::from([
                (SIM_ANNOTATION.to_string(), "true".to_string()),
                ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: Some(node_status(config, node, now, now)),
    }
}

fn resources(config: &SimConfig) -> BTreeMap<String, Quantity> {
    let mut r = BTreeMap::from([
        ("cpu".to_string(), Quantity(config.cpu.clone())),
        ("memory".to_string(), Quantity(config.memory.clone())),
        ("pods".to_string(), Quantity(config.pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(config.ephemeral_storage.clone()),
        ),
    ]);
    if config.gpus > 0 {
        r.insert(
            "nvidia.com/gpu".to_string(),
            Quantity(config.gpus.to_string()),
        );
    }
    r
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    since: Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    }
}

/// The node's full status as a healthy kubelet reports it, heartbeat `now`, Ready since `since`.
pub fn node_status(
    config: &SimConfig,
    node: &SimNode,
    now: Timestamp,
    since: Timestamp,
) -> NodeStatus {
    let id = format!("{:032x}", 0x5157_0000_0000_0000_u128 + node.index as u128);
    NodeStatus {
        capacity: Some(resources(config)),
        allocatable: Some(resources(config)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: node.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: node.name.clone(),
            },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
                since,
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now,
                since,
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
                since,
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                now,
                since,
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_string(),
            boot_id: id.clone(),
            container_runtime_version: "sim://1.0.0".to_string(),
            kernel_version: "sim".to_string(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: id.clone(),
            operating_system: "linux".to_string(),
            os_image: "krust simulated node".to_string(),
            system_uuid: id,
            ..Default::default()
        }),
        phase: Some("Running".to_string()),
        ..Default::default()
    }
}

/// The node's Lease, renewed `now`.
pub fn build_lease(config: &SimConfig, name: &str, uid: Option<&str>, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Node".to_string(),
                    name: name.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(lease_spec(config, name, now)),
    }
}

pub fn lease_spec(config: &SimConfig, name: &str, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(config.lease_duration_seconds),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("timestamp")
    }

    #[test]
    fn node_object() {
        let config = SimConfig {
            nodes: 4,
            gpus: 2,
            labels: crate::parse_labels("team=a").expect("labels"),
            taints: crate::parse_taints("gpu=true:NoSchedule").expect("taints"),
            ..Default::default()
        };
        let set = NodeSet::new(&config);
        assert_eq!(set.len(), 4);
        let n3 = set.get("sim-3").expect("sim-3");
        let node = build_node(&config, n3, ts(0));
        let labels = node.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "sim-3");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-0");
        assert_eq!(labels["node.kubernetes.io/instance-type"], "sim");
        assert_eq!(labels["team"], "a");
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .expect("taints");
        assert_eq!(taints[0].key, "gpu");
        let status = node.status.as_ref().expect("status");
        let cap = status.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "32");
        assert_eq!(cap["memory"].0, "128Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["nvidia.com/gpu"].0, "2");
        assert!(cap.contains_key("ephemeral-storage"));
        assert_eq!(status.allocatable, status.capacity);
        let conds = status.conditions.as_ref().expect("conditions");
        let get = |t: &str| {
            conds
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status.as_str())
        };
        assert_eq!(get("Ready"), Some("True"));
        assert_eq!(get("MemoryPressure"), Some("False"));
        assert_eq!(get("DiskPressure"), Some("False"));
        assert_eq!(get("PIDPressure"), Some("False"));
        let info = status.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.kubelet_version, "v1.33.0");
        let addrs = status.addresses.as_ref().expect("addresses");
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.224.0.4");
        // No GPUs, no zones: neither appears.
        let plain = SimConfig {
            zones: 0,
            ..Default::default()
        };
        let n = build_node(&plain, NodeSet::new(&plain).at(0), ts(0));
        assert!(!n
            .metadata
            .labels
            .as_ref()
            .expect("labels")
            .contains_key("topology.kubernetes.io/zone"));
        assert!(!n
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .expect("cap")
            .contains_key("nvidia.com/gpu"));
    }

    #[test]
    fn zones_round_robin_and_ips_unique() {
        let config = SimConfig {
            nodes: 1000,
            zones: 3,
            ..Default::default()
        };
        let set = NodeSet::new(&config);
        let zones: Vec<_> = (0..4)
            .map(|i| set.at(i).zone.clone().unwrap_or_default())
            .collect();
        assert_eq!(zones, ["zone-0", "zone-1", "zone-2", "zone-0"]);
        let ips: std::collections::HashSet<_> = set.iter().map(|n| n.ip).collect();
        assert_eq!(ips.len(), 1000);
        assert!(set.iter().all(|n| {
            let o = n.ip.octets();
            o[0] == 10 && (224..240).contains(&o[1]) && o[3] != 0 && o[3] != 255
        }));
    }

    #[test]
    fn heartbeat_keeps_transition_time() {
        let config = SimConfig::default();
        let set = NodeSet::new(&config);
        let status = node_status(&config, set.at(0), ts(100), ts(5));
        let ready = status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("ready");
        assert_eq!(ready.last_heartbeat_time, Some(Time(ts(100))));
        assert_eq!(ready.last_transition_time, Some(Time(ts(5))));
    }

    #[test]
    fn ready_since_survives_heartbeats_but_not_an_outage() {
        let config = SimConfig::default();
        let set = NodeSet::new(&config);
        let n = set.at(0);
        let grace = Duration::from_secs(40);
        assert_eq!(n.ready_since(ts(0), grace), ts(0));
        n.beat(ts(10));
        assert_eq!(n.ready_since(ts(40), grace), ts(0));
        // No heartbeat for longer than the lease duration: Ready starts over.
        assert_eq!(n.ready_since(ts(100), grace), ts(100));
        n.beat(ts(100));
        assert_eq!(n.ready_since(ts(110), grace), ts(100));
    }

    #[test]
    fn lease_object() {
        let config = SimConfig::default();
        let lease = build_lease(&config, "sim-0", Some("u1"), ts(0));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let owner = &lease.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "u1"));
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.holder_identity.as_deref(), Some("sim-0"));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(0))));
    }
}
