//! Running the node's pods.
//!
//! - [`spec`]: Pod -> CRI sandbox and container configs.
//! - [`volumes`] and [`projection`]: what containers read besides their image (env sources,
//!   volume files, service account tokens); [`claims`]: persistentVolumeClaim volumes.
//! - [`plan`]: the pure per-pod state machine (documented there).
//! - [`status`]: the pure status computation.
//! - [`pull`]: pull policy, imagePullSecrets credentials and pull back-off.
//! - [`probe`]: liveness, readiness and startup probes (one task per container and probe)
//!   and the handlers lifecycle hooks share with them.
//! - [`events`]: Events about a pod's containers (Unhealthy, Killing, failed hooks).
//! - [`worker`]: one task per pod that observes, acts (probes, hooks, kills) and writes status.
//! - this module: the manager. It watches the Pods bound to this node (field selector
//!   `spec.nodeName`), hands each worker the latest Pod, and every second relists the
//!   runtime's sandboxes and containers (one ListPodSandbox and one ListContainers for the
//!   whole node, like kubelet's PLEG) to wake the workers whose pods changed. Sandboxes of
//!   pods the API no longer has (deleted while the agent was down) get a worker that cleans
//!   them up, once the watch's initial list is complete. On a node shutdown
//!   ([`NodeShutdown`], from [`crate::shutdown`]) it orders the workers of regular pods to
//!   stop within the regular grace period, then those of critical pods, and rejects pods that
//!   arrive meanwhile, as upstream's kubelet does.

pub mod claims;
pub mod dns;
pub mod events;
pub mod plan;
pub mod probe;
pub mod projection;
pub mod pull;
pub mod service_env;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::labels;
use crate::runtime::Runtime;
use worker::{Desired, StopOrder, Worker};

/// What the graceful shutdown manager asks of the pods.
#[derive(Debug)]
pub enum NodeShutdown {
    /// Stop regular pods within `regular`, then critical pods within `critical`; answer on
    /// `done` when all are stopped.
    Start {
        regular: Duration,
        critical: Duration,
        done: oneshot::Sender<()>,
    },
    /// The shutdown was cancelled: admit pods again.
    Cancelled,
}

/// Priority at and above which a pod is critical (upstream's SystemCriticalPriority).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Whether the pod is critical to the node or cluster: it stops last on a node shutdown.
pub fn is_critical(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    matches!(
        spec.priority_class_name.as_deref(),
        Some("system-cluster-critical" | "system-node-critical")
    ) || spec.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// Whether the API shows the pod as finished (Succeeded or Failed).
fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What every pod worker shares.
pub struct PodContext {
    pub client: kube::Client,
    pub runtime: Arc<dyn Runtime>,
    pub node_name: String,
    pub node_ip: String,
    /// Container logs go under `<logs_root>/<namespace>_<name>_<uid>/`.
    pub logs_root: PathBuf,
    /// Prefix of container ids in statuses (`containerd`).
    pub runtime_name: String,
    /// Where cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Pod volumes go under `<volumes_root>/<uid>/<volume>/`.
    pub volumes_root: PathBuf,
    /// Sandboxes started at once. When many pods arrive together, a few sandboxes at a time
    /// (in arrival order: the semaphore is fair) finish sooner than all of them interleaved
    /// in runc and the CNI plugins, so the first pods are not held back by the last.
    pub sandbox_starts: Arc<tokio::sync::Semaphore>,
    /// Every Service, for containers' service environment variables.
    pub services: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service>,
    /// The node's DNS settings; with no `--cluster-dns`, the cluster DNS is the
    /// `kube-system/kube-dns` Service's cluster IP (see [`PodContext::node_dns`]).
    pub dns: dns::NodeDns,
    /// The node's own `/etc/hosts`, for host-network pods.
    pub host_hosts: String,
}

impl PodContext {
    /// The DNS settings pods get now: the configured cluster DNS, or the kube-dns Service's
    /// address once the Service exists.
    pub fn node_dns(&self) -> dns::NodeDns {
        let mut out = self.dns.clone();
        if out.cluster_dns.is_empty() {
            let key = kube::runtime::reflector::ObjectRef::new(krust_dns::SERVICE_NAME)
                .within(krust_dns::NAMESPACE);
            if let Some(svc) = self.services.get(&key) {
                out.cluster_dns = svc
                    .spec
                    .iter()
                    .flat_map(|s| s.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .collect();
            }
        }
        out
    }
}

/// Default for [`PodContext::sandbox_starts`].
pub const SANDBOX_STARTS: usize = 4;

/// How often the runtime is relisted.
const RELIST: Duration = Duration::from_secs(1);

struct Handle {
    tx: watch::Sender<Desired>,
    wake: Arc<Notify>,
    orders: mpsc::UnboundedSender<StopOrder>,
    task: JoinHandle<()>,
}

struct Manager {
    ctx: Arc<PodContext>,
    workers: HashMap<String, Handle>,
    /// Pods the API has for this node, by uid.
    known: HashMap<String, Arc<Pod>>,
    /// Uids seen during a watch (re)list, to find pods deleted meanwhile.
    relisting: HashSet<String>,
    synced: bool,
    fingerprints: HashMap<String, u64>,
    /// The node is shutting down: new pods are rejected.
    shutting_down: bool,
}

impl Manager {
    fn dispatch(&mut self, uid: &str, desired: Desired) {
        if let Some(h) = self.workers.get(uid) {
            if !h.task.is_finished() {
                h.tx.send_replace(desired);
                return;
            }
        }
        let (orders, orders_rx) = mpsc::unbounded_channel();
        // A pod that arrives while the node shuts down is rejected before it runs anything.
        let reject = self.shutting_down
            && matches!(&desired, Desired::Pod(p) if !finished(p) && p.metadata.deletion_timestamp.is_none());
        if reject {
            let _ = orders.send(StopOrder::rejected());
        }
        let (tx, rx) = watch::channel(desired);
        let wake = Arc::new(Notify::new());
        let w = Worker::new(
            self.ctx.clone(),
            uid.to_string(),
            rx,
            wake.clone(),
            orders_rx,
        );
        let task = tokio::spawn(w.run());
        self.workers.insert(
            uid.to_string(),
            Handle {
                tx,
                wake,
                orders,
                task,
            },
        );
    }

    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        self.known.insert(uid.clone(), pod.clone());
        self.dispatch(&uid, Desired::Pod(pod));
    }

    /// Starts stopping the node's pods for a shutdown: regular ones, then critical ones, in
    /// the background; `done` is answered when both groups stopped or ran out of time.
    fn node_shutdown(&mut self, request: NodeShutdown) {
        let (regular, critical, done) = match request {
            NodeShutdown::Cancelled => {
                self.shutting_down = false;
                return;
            }
            NodeShutdown::Start {
                regular,
                critical,
                done,
            } => (regular, critical, done),
        };
        self.shutting_down = true;
        let mut groups: (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for (uid, pod) in &self.known {
            if finished(pod) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(h) = self.workers.get(uid).filter(|h| !h.task.is_finished()) {
                let group = if is_critical(pod) {
                    &mut groups.1
                } else {
                    &mut groups.0
                };
                group.push(h.orders.clone());
            }
        }
        tracing::info!(
            regular = groups.0.len(),
            critical = groups.1.len(),
            "stopping pods for the node shutdown"
        );
        tokio::spawn(async move {
            stop_group(groups.0, regular).await;
            stop_group(groups.1, critical).await;
            let _ = done.send(());
        });
    }
}

/// Orders every worker of a group to stop its pod within `grace`; waits for them, at most
/// `grace` (and a moment for the status writes).
async fn stop_group(workers: Vec<mpsc::UnboundedSender<StopOrder>>, grace: Duration) {
    let mut waits = Vec::new();
    for w in workers {
        let (order, stopped) = StopOrder::shutdown(grace);
        if w.send(order).is_ok() {
            waits.push(stopped);
        }
    }
    let all = futures::future::join_all(waits);
    if tokio::time::timeout(grace + Duration::from_secs(1), all)
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "pods still stopping at the end of their grace period"
        );
    }
}

impl Manager {
    fn gone(&mut self, uid: &str) {
        self.known.remove(uid);
        if self.workers.contains_key(uid) {
            self.dispatch(uid, Desired::Gone);
        }
    }

    /// Relists the runtime: wakes workers whose pods changed; starts clean-up of pods the API
    /// does not have.
    async fn relist(&mut self) {
        self.workers.retain(|_, h| !h.task.is_finished());
        let rt = &self.ctx.runtime;
        let selector = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::NODE.to_string(), self.ctx.node_name.clone()),
        ]);
        let (sandboxes, containers) = match tokio::try_join!(
            rt.list_pod_sandboxes(selector.clone()),
            rt.list_containers(selector)
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "relisting the runtime");
                return;
            }
        };
        let mut state: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                state
                    .entry(uid.clone())
                    .or_default()
                    .push((s.id.clone(), s.state));
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                state
                    .entry(uid.clone())
                    .or_default()
                    .push((c.id.clone(), 10 + c.state));
            }
        }
        let mut seen = HashMap::new();
        for (uid, mut items) in state {
            items.sort();
            let mut h = DefaultHasher::new();
            items.hash(&mut h);
            let fp = h.finish();
            if self.fingerprints.get(&uid) != Some(&fp) {
                if let Some(w) = self.workers.get(&uid) {
                    w.wake.notify_one();
                }
            }
            seen.insert(uid, fp);
        }
        // Pods whose containers all disappeared changed too.
        for uid in self.fingerprints.keys() {
            if !seen.contains_key(uid) {
                if let Some(w) = self.workers.get(uid) {
                    w.wake.notify_one();
                }
            }
        }
        if self.synced {
            let orphans: Vec<String> = seen
                .keys()
                .filter(|uid| !self.known.contains_key(*uid) && !self.workers.contains_key(*uid))
                .cloned()
                .collect();
            for uid in orphans {
                tracing::info!(uid, "cleaning up a pod the API no longer has");
                self.dispatch(&uid, Desired::Gone);
            }
        }
        self.fingerprints = seen;
    }
}

/// Runs the node's pods until `shutdown` resolves, stopping them when `node_shutdown` says
/// the machine goes down. Containers keep running when the agent stops.
pub async fn run(
    ctx: Arc<PodContext>,
    shutdown: impl Future<Output = ()>,
    mut node_shutdown: mpsc::Receiver<NodeShutdown>,
) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    // Nothing here reads who last wrote which field; the entries are most of a small pod's
    // size, held for as long as it runs.
    let mut events = watcher::watcher(api, config)
        .modify(|p| p.metadata.managed_fields = None)
        .default_backoff()
        .boxed();
    let mut m = Manager {
        ctx,
        workers: HashMap::new(),
        known: HashMap::new(),
        relisting: HashSet::new(),
        synced: false,
        fingerprints: HashMap::new(),
        shutting_down: false,
    };
    let mut relist = tokio::time::interval(RELIST);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(pod))) => m.apply(pod),
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        m.gone(uid);
                    }
                }
                Some(Ok(Event::Init)) => m.relisting.clear(),
                Some(Ok(Event::InitApply(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        m.relisting.insert(uid);
                    }
                    m.apply(pod);
                }
                Some(Ok(Event::InitDone)) => {
                    let stale: Vec<String> = m
                        .known
                        .keys()
                        .filter(|uid| !m.relisting.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in stale {
                        m.gone(&uid);
                    }
                    m.synced = true;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching pods"),
                None => break,
            },
            _ = relist.tick() => m.relist().await,
            Some(request) = node_shutdown.recv() => m.node_shutdown(request),
        }
    }
    // Dropping the senders stops the workers; containers are left running.
    for (_, h) in m.workers.drain() {
        drop(h.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), h.task).await;
    }
}
