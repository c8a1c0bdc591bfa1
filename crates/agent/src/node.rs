//! The Node: what the machine offers (capacity from /proc, GPUs from `nvidia-smi -L`), its
//! registration, the Lease renewed every 10 s in `kube-node-lease`, and the status refreshed
//! every minute, and at once when the node starts or stops shutting down (Ready False).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const KUBELET_VERSION: &str = "v1.33.0";
const LEASE_DURATION_SECONDS: i32 = 40;

/// What the machine is and offers, read once at start.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    /// MemTotal in KiB.
    pub memory_kib: u64,
    /// Bytes of the data directory's filesystem.
    pub ephemeral_storage: u64,
    pub gpus: u32,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub architecture: String,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Parses `MemTotal:  24576000 kB` out of /proc/meminfo.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Counts the GPUs in `nvidia-smi -L` output (`GPU 0: NVIDIA H200 (UUID: ...)`).
pub fn count_gpus(listing: &str) -> u32 {
    listing
        .lines()
        .filter(|l| l.trim_start().starts_with("GPU "))
        .count() as u32
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

impl Machine {
    /// Reads the machine's facts. `nvidia-smi` is asked only if it is installed.
    pub fn probe(data_dir: &Path) -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let memory_kib =
            mem_total_kib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
                .unwrap_or(0);
        let ephemeral_storage = rustix::fs::statvfs(data_dir)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        let gpus = std::process::Command::new("nvidia-smi")
            .arg("-L")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| count_gpus(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or(0);
        Machine {
            cpus,
            memory_kib,
            ephemeral_storage,
            gpus,
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            os_image: os_image(),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            architecture: match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
            .to_string(),
        }
    }

    pub fn resources(&self, max_pods: u32) -> BTreeMap<String, Quantity> {
        let mut r = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", self.memory_kib)),
            ),
            ("pods".to_string(), Quantity(max_pods.to_string())),
            (
                "ephemeral-storage".to_string(),
                Quantity(self.ephemeral_storage.to_string()),
            ),
        ]);
        if self.gpus > 0 {
            r.insert(
                "nvidia.com/gpu".to_string(),
                Quantity(self.gpus.to_string()),
            );
        }
        r
    }
}

/// Who this node is.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: String,
    pub max_pods: u32,
    pub machine: Machine,
    /// `containerd://1.6.20~ds1`.
    pub runtime_version: String,
    /// Port of the agent's HTTPS API (`daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
}

pub fn labels(id: &NodeIdentity) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), id.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            id.machine.architecture.clone(),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            id.machine.architecture.clone(),
        ),
    ])
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

/// The Ready condition: True, or False while the node shuts down.
fn ready_condition(shutting_down: bool) -> (&'static str, &'static str, &'static str) {
    if shutting_down {
        (
            "False",
            "KubeletNotReady",
            crate::shutdown::NOT_READY_MESSAGE,
        )
    } else {
        ("True", "KubeletReady", "kubelet is posting ready status")
    }
}

/// The node's status, heartbeat `now`, its conditions unchanged since `since`.
pub fn node_status(
    id: &NodeIdentity,
    now: Timestamp,
    since: Timestamp,
    shutting_down: bool,
) -> NodeStatus {
    let m = &id.machine;
    let (ready, reason, message) = ready_condition(shutting_down);
    NodeStatus {
        capacity: Some(m.resources(id.max_pods)),
        allocatable: Some(m.resources(id.max_pods)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: id.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: id.name.clone(),
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
            condition("Ready", ready, reason, message, now, since),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: m.architecture.clone(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: id.runtime_version.clone(),
            kernel_version: m.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".to_string(),
            os_image: m.os_image.clone(),
            system_uuid: m.machine_id.clone(),
            ..Default::default()
        }),
        phase: Some("Running".to_string()),
        ..Default::default()
    }
}

/// Creates `kube-node-lease` if it is missing.
async fn ensure_lease_namespace(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        // A node's own credentials may not create namespaces; the API server makes this one
        // at start, as upstream's does.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Registers the node (or reconciles the labels of an existing one) and writes its status.
/// Returns the Node as the API server has it (for `spec.podCIDR`).
pub async fn register(
    client: &kube::Client,
    id: &NodeIdentity,
    shutting_down: bool,
) -> Result<Node, kube::Error> {
    ensure_lease_namespace(client).await?;
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels(id)),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(node_status(id, now, now, shutting_down)),
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let patch = json!({"metadata": {"labels": labels(id)}});
            api.patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e),
    }
    update_status(client, id, shutting_down).await
}

/// Writes the node's status with a fresh heartbeat (Ready's transition time kept while its
/// status stays).
pub async fn update_status(
    client: &kube::Client,
    id: &NodeIdentity,
    shutting_down: bool,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let current = api.get(&id.name).await?;
    let (ready, _, _) = ready_condition(shutting_down);
    let since = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == ready))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let patch = json!({"status": node_status(id, now, since, shutting_down)});
    api.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Renews the node's Lease, creating it if it is missing.
pub async fn renew_lease(
    client: &kube::Client,
    id: &NodeIdentity,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = Timestamp::now();
    let spec = LeaseSpec {
        holder_identity: Some(id.name.clone()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    };
    match api
        .patch(
            &id.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(id.name.clone()),
                    namespace: Some(LEASE_NAMESPACE.to_string()),
                    owner_references: node_uid.map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".to_string(),
                            kind: "Node".to_string(),
                            name: id.name.clone(),
                            uid: uid.to_string(),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Keeps the Lease and the status fresh until dropped. Registers the node again if it was
/// deleted. `shutting_down` turns the node NotReady (written at once when it changes).
pub async fn heartbeat(
    client: kube::Client,
    id: Arc<NodeIdentity>,
    lease_interval: Duration,
    status_interval: Duration,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    let mut node_uid: Option<String> = None;
    let mut lease = tokio::time::interval(lease_interval);
    let mut status = tokio::time::interval(status_interval);
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(e) = renew_lease(&client, &id, node_uid.as_deref()).await {
                    tracing::warn!(error = %e, "renewing the node lease");
                }
            }
            // A failed write is retried at the next tick.
            Ok(()) = shutting_down.changed() => status.reset_immediately(),
            _ = status.tick() => {
                let down = *shutting_down.borrow();
                let res = match update_status(&client, &id, down).await {
                    Err(kube::Error::Api(s)) if s.is_not_found() => {
                        tracing::info!(node = %id.name, "node was deleted; registering it again");
                        register(&client, &id, down).await
                    }
                    other => other,
                };
                match res {
                    Ok(node) => node_uid = node.metadata.uid.clone(),
                    Err(e) => tracing::warn!(error = %e, "updating the node status"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpus: 2,
            memory_kib: 24_576_000,
            ephemeral_storage: 1 << 30,
            gpus: 0,
            kernel_version: "6.18".to_string(),
            os_image: "Debian GNU/Linux 12 (bookworm)".to_string(),
            machine_id: "m".to_string(),
            boot_id: "b".to_string(),
            architecture: "amd64".to_string(),
        }
    }

    #[test]
    fn parses_machine_facts() {
        assert_eq!(
            mem_total_kib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000)
        );
        assert_eq!(
            count_gpus("GPU 0: NVIDIA H200 (UUID: GPU-1)\nGPU 1: NVIDIA H200 (UUID: GPU-2)\n"),
            2
        );
        assert_eq!(count_gpus(""), 0);
        let probed = Machine::probe(Path::new("/"));
        assert!(probed.cpus >= 1 && probed.memory_kib > 0);
    }

    #[test]
    fn status_reports_capacity_addresses_and_ready() {
        let mut m = machine();
        m.gpus = 1;
        let id = NodeIdentity {
            name: "n1".to_string(),
            ip: "127.0.0.1".to_string(),
            max_pods: 110,
            machine: m,
            runtime_version: "containerd://1.6.20".to_string(),
            kubelet_port: 10250,
        };
        let t = Timestamp::from_second(1_700_000_000).expect("ts");
        let st = node_status(&id, t, t, false);
        let cap = st.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "24576000Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["nvidia.com/gpu"].0, "1");
        let addrs = st.addresses.as_ref().expect("addresses");
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "127.0.0.1");
        assert_eq!(addrs[1].type_, "Hostname");
        let ready = st
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("Ready");
        assert_eq!(ready.status, "True");
        let info = st.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);

        let down = node_status(&id, t, t, true);
        let ready = down
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("node is shutting down"));
    }
}
