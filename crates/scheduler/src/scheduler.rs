//! The scheduling loop. One task owns the snapshot and the queue: it applies what the
//! watchers saw (nodes, pods, priority classes, claims, volumes, storage classes) and bind
//! results, then runs cycles while pods are waiting. A chosen node is assumed at once (the
//! pod counts there before the bind is confirmed) and PreBind and the bind run in a separate
//! task, at most `bind_concurrency` at a time, so API round trips never stall scheduling. Unschedulable pods get their condition and a
//! FailedScheduling event from separate tasks too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Event as CoreEvent, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::config::SchedulerConfig;
use crate::framework::{ClusterEvent, Status};
use crate::profile::{Outcome, Profile};
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::snapshot::{pod_key, DisruptionBudget, PodInfo, Snapshot};

/// The component name on events and in logs.
pub const COMPONENT: &str = "default-scheduler";

enum Msg {
    Node(Box<Event<Node>>),
    Pod(Box<Event<Pod>>),
    Class(Box<Event<PriorityClass>>),
    Namespace(Box<Event<Namespace>>),
    Budget(Box<Event<PodDisruptionBudget>>),
    Claim(Box<Event<PersistentVolumeClaim>>),
    Volume(Box<Event<PersistentVolume>>),
    StorageClass(Box<Event<StorageClass>>),
    Bound {
        key: String,
        pod: Arc<Pod>,
        priority: i32,
        status: Status,
    },
    Stop,
}

/// Keys seen during a relist, so what vanished meanwhile can be dropped at `InitDone`.
#[derive(Default)]
struct Relist {
    nodes: Option<HashSet<String>>,
    pods: Option<HashSet<String>>,
    namespaces: Option<HashSet<String>>,
    budgets: Option<HashSet<String>>,
    /// Claims, volumes, classes.
    storage: [Option<HashSet<String>>; 3],
    storage_synced: [bool; 3],
    nodes_synced: bool,
    pods_synced: bool,
    namespaces_synced: bool,
}

impl Relist {
    /// Scheduling waits until nodes, pods, namespaces and storage objects were listed once.
    fn synced(&self) -> bool {
        self.nodes_synced
            && self.pods_synced
            && self.namespaces_synced
            && self.storage_synced.iter().all(|s| *s)
    }
}

/// Applies a watch event of a storage kind to its map; `seen` tracks a relist so what
/// vanished meanwhile goes at `InitDone`. Returns whether the map changed.
fn apply_storage<K: kube::Resource>(
    map: &mut HashMap<String, Arc<K>>,
    seen: &mut Option<HashSet<String>>,
    synced: &mut bool,
    ev: Event<K>,
) -> bool {
    let key = |o: &K| match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or_default()),
        None => o.meta().name.clone().unwrap_or_default(),
    };
    match ev {
        Event::Init => {
            *seen = Some(HashSet::new());
            false
        }
        Event::InitApply(mut o) | Event::Apply(mut o) => {
            let k = key(&o);
            if let Some(seen) = seen {
                seen.insert(k.clone());
            }
            o.meta_mut().managed_fields = None;
            map.insert(k, Arc::new(o));
            true
        }
        Event::Delete(o) => map.remove(&key(&o)).is_some(),
        Event::InitDone => {
            *synced = true;
            if let Some(seen) = seen.take() {
                map.retain(|k, _| seen.contains(k));
            }
            true
        }
    }
}

struct Loop {
    client: kube::Client,
    config: SchedulerConfig,
    profiles: HashMap<String, Arc<Profile>>,
    plugin_events: HashMap<&'static str, &'static [ClusterEvent]>,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    assumed: HashMap<String, String>,
    classes: HashMap<String, i32>,
    default_priority: i32,
    start: usize,
    binds: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
    relist: Relist,
    scheduled: u64,
}

fn spawn_watch<K, F>(
    api: Api<K>,
    tx: mpsc::UnboundedSender<Msg>,
    wrap: F,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(Event<K>) -> Msg + Send + 'static,
{
    tokio::spawn(async move {
        let mut s = watcher::watcher(api, watcher::Config::default().page_size(5000))
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
            }
        }
    })
}

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut profiles = HashMap::new();
    let mut plugin_events = HashMap::new();
    for p in &config.profiles {
        let prof = Profile::build(p, config.percentage_of_nodes_to_score)?;
        for pl in &prof.all {
            plugin_events.insert(pl.name(), pl.events());
        }
        profiles.insert(prof.scheduler_name.clone(), Arc::new(prof));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = vec![
        spawn_watch(Api::<Node>::all(client.clone()), tx.clone(), |e| {
            Msg::Node(Box::new(e))
        }),
        spawn_watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
            Msg::Pod(Box::new(e))
        }),
        spawn_watch(Api::<PriorityClass>::all(client.clone()), tx.clone(), |e| {
            Msg::Class(Box::new(e))
        }),
        spawn_watch(Api::<Namespace>::all(client.clone()), tx.clone(), |e| {
            Msg::Namespace(Box::new(e))
        }),
        spawn_watch(
            Api::<PodDisruptionBudget>::all(client.clone()),
            tx.clone(),
            |e| Msg::Budget(Box::new(e)),
        ),
        spawn_watch(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            tx.clone(),
            |e| Msg::Claim(Box::new(e)),
        ),
        spawn_watch(
            Api::<PersistentVolume>::all(client.clone()),
            tx.clone(),
            |e| Msg::Volume(Box::new(e)),
        ),
        spawn_watch(Api::<StorageClass>::all(client.clone()), tx.clone(), |e| {
            Msg::StorageClass(Box::new(e))
        }),
    ];
    {
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::SeqCst);
            let _ = tx.send(Msg::Stop);
        });
    }
    let mut l = Loop {
        client,
        queue: SchedulingQueue::new(config.pod_initial_backoff, config.pod_max_backoff),
        binds: Arc::new(Semaphore::new(config.bind_concurrency.max(1))),
        config,
        profiles,
        plugin_events,
        snapshot: Snapshot::default(),
        assumed: HashMap::new(),
        classes: HashMap::new(),
        default_priority: 0,
        start: 0,
        tx,
        relist: Relist::default(),
        scheduled: 0,
    };
    tracing::info!(profiles = ?l.profiles.keys().collect::<Vec<_>>(), "scheduler starting");
    let mut cycles: u64 = 0;
    'outer: loop {
        while let Ok(m) = rx.try_recv() {
            if matches!(m, Msg::Stop) {
                break 'outer;
            }
            l.handle(m);
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let next = l.queue.flush();
        if l.relist.synced() {
            if let Some((key, qp)) = l.queue.pop() {
                l.schedule_one(key, qp).await;
                cycles += 1;
                if cycles.is_multiple_of(32) {
                    tokio::task::yield_now().await;
                }
                continue;
            }
        }
        let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            m = rx.recv() => match m {
                Some(Msg::Stop) | None => break,
                Some(m) => l.handle(m),
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    for w in watchers {
        w.abort();
    }
    tracing::info!(scheduled = l.scheduled, "scheduler stopped");
    Ok(())
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or(COMPONENT)
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|s| !s.is_empty())
}

/// What the snapshot keeps of a bound pod's object beside its [`PodInfo`]: enough to name it
/// when it is preempted (delete, event). Spec and status are summed up in the PodInfo, so
/// tens of thousands of cached pods cost a few hundred bytes each, not the whole object.
fn placed(pod: &Pod) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

fn budget_key(b: &PodDisruptionBudget) -> String {
    format!(
        "{}/{}",
        b.metadata.namespace.as_deref().unwrap_or_default(),
        b.metadata.name.as_deref().unwrap_or_default()
    )
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Loop {
    fn priority(&self, pod: &Pod) -> i32 {
        let spec = pod.spec.as_ref();
        if let Some(p) = spec.and_then(|s| s.priority) {
            if p != 0 || spec.and_then(|s| s.priority_class_name.as_ref()).is_none() {
                return p;
            }
        }
        match spec.and_then(|s| s.priority_class_name.as_deref()) {
            Some(name) if !name.is_empty() => self.classes.get(name).copied().unwrap_or(0),
            _ => self.default_priority,
        }
    }

    fn event(&mut self, ev: ClusterEvent) {
        let pe = &self.plugin_events;
        self.queue
            .on_event(ev, |p, e| pe.get(p).is_some_and(|evs| evs.contains(&e)));
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Node(ev) => match *ev {
                Event::Init => self.relist.nodes = Some(HashSet::new()),
                Event::InitApply(n) | Event::Apply(n) => {
                    if let Some(seen) = &mut self.relist.nodes {
                        seen.insert(n.metadata.name.clone().unwrap_or_default());
                    }
                    self.on_node(n);
                }
                Event::Delete(n) => {
                    self.snapshot
                        .remove_node(n.metadata.name.as_deref().unwrap_or_default());
                }
                Event::InitDone => {
                    if let Some(seen) = self.relist.nodes.take() {
                        let gone: Vec<String> = self
                            .snapshot
                            .nodes()
                            .iter()
                            .filter(|n| !seen.contains(&n.name))
                            .map(|n| n.name.clone())
                            .collect();
                        for g in gone {
                            self.snapshot.remove_node(&g);
                        }
                    }
                    self.relist.nodes_synced = true;
                }
            },
            Msg::Pod(ev) => match *ev {
                Event::Init => self.relist.pods = Some(HashSet::new()),
                Event::InitApply(p) | Event::Apply(p) => {
                    if let Some(seen) = &mut self.relist.pods {
                        seen.insert(pod_key(&p));
                    }
                    self.on_pod(p);
                }
                Event::Delete(p) => self.on_pod_delete(&pod_key(&p)),
                Event::InitDone => {
                    if let Some(seen) = self.relist.pods.take() {
                        let gone: Vec<String> = self
                            .snapshot
                            .nodes()
                            .iter()
                            .flat_map(|n| n.pods.iter().map(|p| p.key.clone()))
                            .filter(|k| !seen.contains(k) && !self.assumed.contains_key(k))
                            .collect();
                        for g in gone {
                            self.on_pod_delete(&g);
                        }
                    }
                    self.relist.pods_synced = true;
                }
            },
            Msg::Class(ev) => match *ev {
                Event::InitApply(c) | Event::Apply(c) => {
                    let name = c.metadata.name.clone().unwrap_or_default();
                    if c.global_default == Some(true) {
                        self.default_priority = c.value;
                    }
                    self.classes.insert(name, c.value);
                }
                Event::Delete(c) => {
                    self.classes
                        .remove(c.metadata.name.as_deref().unwrap_or_default());
                }
                Event::Init | Event::InitDone => {}
            },
            Msg::Namespace(ev) => match *ev {
                Event::Init => self.relist.namespaces = Some(HashSet::new()),
                Event::InitApply(n) | Event::Apply(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    if let Some(seen) = &mut self.relist.namespaces {
                        seen.insert(name.clone());
                    }
                    let labels = n.metadata.labels.unwrap_or_default();
                    if self.snapshot.set_namespace(&name, Some(labels)) {
                        self.event(ClusterEvent::NamespaceChange);
                    }
                }
                Event::Delete(n) => {
                    let name = n.metadata.name.unwrap_or_default();
                    self.snapshot.set_namespace(&name, None);
                }
                Event::InitDone => {
                    if let Some(seen) = self.relist.namespaces.take() {
                        for g in self.snapshot.namespace_names() {
                            if !seen.contains(&g) {
                                self.snapshot.set_namespace(&g, None);
                            }
                        }
                    }
                    self.relist.namespaces_synced = true;
                }
            },
            Msg::Budget(ev) => match *ev {
                Event::Init => self.relist.budgets = Some(HashSet::new()),
                Event::InitApply(b) | Event::Apply(b) => {
                    let key = budget_key(&b);
                    if let Some(seen) = &mut self.relist.budgets {
                        seen.insert(key.clone());
                    }
                    self.snapshot
                        .set_budget(&key, Some(DisruptionBudget::from_api(&b)));
                }
                Event::Delete(b) => self.snapshot.set_budget(&budget_key(&b), None),
                Event::InitDone => {
                    if let Some(seen) = self.relist.budgets.take() {
                        for g in self.snapshot.budget_keys() {
                            if !seen.contains(&g) {
                                self.snapshot.set_budget(&g, None);
                            }
                        }
                    }
                }
            },
            Msg::Claim(ev) => {
                let r = &mut self.relist;
                let v = &mut self.snapshot.volumes;
                if apply_storage(
                    &mut v.claims,
                    &mut r.storage[0],
                    &mut r.storage_synced[0],
                    *ev,
                ) {
                    self.event(ClusterEvent::VolumeChange);
                }
            }
            Msg::Volume(ev) => {
                let r = &mut self.relist;
                let v = &mut self.snapshot.volumes;
                if apply_storage(
                    &mut v.volumes,
                    &mut r.storage[1],
                    &mut r.storage_synced[1],
                    *ev,
                ) {
                    self.event(ClusterEvent::VolumeChange);
                }
            }
            Msg::StorageClass(ev) => {
                let r = &mut self.relist;
                let v = &mut self.snapshot.volumes;
                if apply_storage(
                    &mut v.classes,
                    &mut r.storage[2],
                    &mut r.storage_synced[2],
                    *ev,
                ) {
                    self.event(ClusterEvent::VolumeChange);
                }
            }
            Msg::Bound {
                key,
                pod,
                priority,
                status,
            } => {
                if status.is_success() {
                    self.scheduled += 1;
                    return;
                }
                tracing::warn!(pod = %key, error = %status.message(), "bind failed");
                if self.assumed.remove(&key).is_some() {
                    self.snapshot.remove_pod(&key);
                    let msg = status.message();
                    let gone =
                        msg.contains("NotFound") || msg.contains("404") || msg.contains("already");
                    if !gone {
                        self.queue.add_backoff(key, pod, priority);
                    }
                }
            }
            Msg::Stop => {}
        }
    }

    fn on_node(&mut self, n: Node) {
        let name = n.metadata.name.clone().unwrap_or_default();
        let before = self
            .snapshot
            .node(&name)
            .map(|i| (i.labels.clone(), i.allocatable.clone(), i.node.spec.clone()));
        let new = self.snapshot.upsert_node(Arc::new(n));
        if new {
            self.event(ClusterEvent::NodeAdd);
            return;
        }
        let after = self
            .snapshot
            .node(&name)
            .map(|i| (i.labels.clone(), i.allocatable.clone(), i.node.spec.clone()));
        if before != after {
            self.event(ClusterEvent::NodeUpdate);
        }
    }

    fn on_pod(&mut self, mut pod: Pod) {
        // what the scheduler never reads is not kept for every pod in the cluster
        pod.metadata.managed_fields = None;
        pod.metadata.annotations = None;
        let key = pod_key(&pod);
        let priority = self.priority(&pod);
        if let Some(node) = node_name(&pod).map(String::from) {
            self.queue.done(&key);
            let was_assumed = self.assumed.remove(&key).is_some();
            if terminal(&pod) {
                if self.snapshot.remove_pod(&key).is_some() {
                    self.event(ClusterEvent::PodDelete);
                }
                return;
            }
            let unchanged = !was_assumed
                && self.snapshot.pod_node(&key) == Some(node.as_str())
                && self
                    .snapshot
                    .node(&node)
                    .and_then(|n| n.pods.iter().find(|p| p.key == key))
                    .is_some_and(|p| {
                        Some(&p.labels) == pod.metadata.labels.as_ref()
                            || (p.labels.is_empty() && pod.metadata.labels.is_none())
                    });
            if unchanged {
                return;
            }
            let fresh = self.snapshot.pod_node(&key).is_none();
            let mut info = PodInfo::new(Arc::new(pod), priority);
            info.pod = Arc::new(placed(&info.pod));
            self.snapshot.add_pod(Arc::new(info), &node);
            if fresh && !was_assumed {
                self.event(ClusterEvent::PodAdd);
            }
            return;
        }
        if terminal(&pod) || pod.metadata.deletion_timestamp.is_some() {
            self.queue.delete(&key);
            return;
        }
        if self.assumed.contains_key(&key) || !self.profiles.contains_key(scheduler_name(&pod)) {
            return;
        }
        self.queue.add(key, Arc::new(pod), priority);
    }

    fn on_pod_delete(&mut self, key: &str) {
        self.queue.delete(key);
        self.assumed.remove(key);
        if self.snapshot.remove_pod(key).is_some() {
            self.event(ClusterEvent::PodDelete);
        }
    }

    async fn schedule_one(&mut self, key: String, qp: QueuedPod) {
        let Some(profile) = self.profiles.get(scheduler_name(&qp.pod)).cloned() else {
            self.queue.done(&key);
            return;
        };
        match profile.schedule(&qp.pod, qp.priority, &self.snapshot, &mut self.start) {
            Outcome::Scheduled { node, state } => {
                for r in &profile.reserve {
                    if let Some(rp) = r.as_reserve() {
                        let s = rp.reserve(&state, &qp.pod, &node);
                        if !s.is_success() {
                            for u in &profile.reserve {
                                if let Some(up) = u.as_reserve() {
                                    up.unreserve(&state, &qp.pod, &node);
                                }
                            }
                            self.queue.backoff(&key);
                            return;
                        }
                    }
                }
                // The cycle state may share index maps with the snapshot: release them before
                // the snapshot changes, so they are not copied.
                drop(state);
                let info = Arc::new(PodInfo::new(qp.pod.clone(), qp.priority));
                self.snapshot.add_pod(info, &node);
                self.assumed.insert(key.clone(), node.clone());
                self.queue.done(&key);
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return;
                };
                let client = self.client.clone();
                let tx = self.tx.clone();
                let events = self.config.scheduled_events;
                tokio::spawn(async move {
                    let mut status = Status::success();
                    for p in &profile.pre_bind {
                        if let Some(pb) = p.as_pre_bind() {
                            status = pb.pre_bind(&client, &qp.pod, &node).await;
                            if !status.is_success() {
                                break;
                            }
                        }
                    }
                    if status.is_success() {
                        status = Status::error("no bind plugin");
                        for b in &profile.bind {
                            if let Some(bp) = b.as_bind() {
                                status = bp.bind(&client, &qp.pod, &node).await;
                                break;
                            }
                        }
                    }
                    drop(permit);
                    if status.is_success() && events {
                        let msg = format!("Successfully assigned {key} to {node}");
                        emit_event(&client, &qp.pod, "Normal", "Scheduled", &msg).await;
                    }
                    let _ = tx.send(Msg::Bound {
                        key,
                        pod: qp.pod,
                        priority: qp.priority,
                        status,
                    });
                });
            }
            Outcome::Unschedulable(fit) => {
                let msg = fit.to_string();
                tracing::debug!(pod = %key, %msg, "unschedulable");
                let nominated = fit.preemption.nominated_node.clone();
                let victims = fit.preemption.victims.clone();
                if nominated.is_some() {
                    self.queue.backoff(&key);
                } else {
                    self.queue.park(&key, fit.rejectors.clone());
                }
                let client = self.client.clone();
                let pod = qp.pod.clone();
                tokio::spawn(async move {
                    for v in &victims {
                        let ns = v.metadata.namespace.as_deref().unwrap_or("default");
                        let name = v.metadata.name.as_deref().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                        let by = format!(
                            "Preempted by pod {} on node {}",
                            pod.metadata.uid.as_deref().unwrap_or_default(),
                            nominated.as_deref().unwrap_or_default()
                        );
                        emit_event(&client, v, "Normal", "Preempted", &by).await;
                        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
                            tracing::warn!(pod = %name, error = %e, "deleting preemption victim");
                        }
                    }
                    report_unschedulable(&client, &pod, &msg, nominated.as_deref()).await;
                });
            }
            Outcome::Error(s) => {
                tracing::warn!(pod = %key, plugin = s.plugin, error = %s.message(), "scheduling error");
                self.queue.backoff(&key);
            }
        }
    }
}

/// Sets `PodScheduled=False/Unschedulable` (unless it already says the same) and records a
/// FailedScheduling event.
async fn report_unschedulable(
    client: &kube::Client,
    pod: &Pod,
    msg: &str,
    nominated: Option<&str>,
) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let same = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(msg)
        });
    if !same || nominated.is_some() {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let mut status = json!({"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastTransitionTime": now_rfc3339(),
        }]});
        if let Some(n) = nominated {
            status["nominatedNodeName"] = json!(n);
        }
        let patch = json!({"status": status});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::warn!(pod = %name, error = %e, "updating PodScheduled condition");
        }
    }
    emit_event(client, pod, "Warning", "FailedScheduling", msg).await;
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Records a core/v1 Event about the pod from this scheduler.
pub async fn emit_event(client: &kube::Client, pod: &Pod, type_: &str, reason: &str, msg: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let now = now_rfc3339();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                           "uid": pod.metadata.uid},
        "reason": reason,
        "message": msg,
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let Ok(ev) = serde_json::from_value::<CoreEvent>(ev) else {
        return;
    };
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording event");
    }
}
