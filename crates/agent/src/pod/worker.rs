//! One task per pod: observes what the runtime holds for the pod, applies the plan, writes
//! the status, and on deletion terminates the pod and deletes the Pod object.
//!
//! The worker wakes when the Pod changes, when the relister sees the pod's containers change,
//! when a probe verdict changes, or when a back-off or retry ends. It keeps one probe task per
//! running container and probe type ([`super::probe`]), kills containers whose liveness or
//! startup probe failed (the plan then restarts them by the restart policy), and runs
//! lifecycle hooks: postStart right after a container starts (a failure kills it), preStop
//! before SIGTERM, within the grace period. When the agent stops, workers stop without
//! touching the containers: they keep running and are re-adopted by the next agent.
//!
//! A [`StopOrder`] (node shutdown) stops the pod's containers within the order's grace and
//! marks the pod Failed with the order's reason; from then on the worker plans the pod as
//! finished, whatever the (possibly stale) Pod it holds says.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::events::EventSink;
use super::plan::{self, Action, CState, Observed, ObservedContainer, ObservedSandbox};
use super::probe::{self, ProbeType};
use super::pull;
use super::service_env;
use super::spec::{self, Kind, PodEnvContext};
use super::status::{self, Inputs};
use super::PodContext;
use super::{claims, projection, volumes};
use crate::labels;
use crate::runtime::{api, container_state, sandbox_ready, Runtime, RuntimeError};

/// What the worker is told about its pod.
#[derive(Clone, Debug)]
pub enum Desired {
    /// The Pod as last seen in the API.
    Pod(Arc<Pod>),
    /// The Pod is gone from the API (or was never there): clean up what is left.
    Gone,
}

/// How often a pod is looked at when nothing wakes it.
const RESYNC: Duration = Duration::from_secs(30);
/// How long a worker waits to retry after a failed action, at most.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Grace period for pods whose Pod object vanished (force deletion).
const GONE_GRACE_SECONDS: i64 = 2;
/// What a container gets after its preStop hook used up the grace period (upstream's).
const MIN_GRACE_AFTER_HOOK: i64 = 2;

/// Tasks aborted when dropped, so a worker that ends takes its probes with it.
struct Tasks<K: std::hash::Hash + Eq>(HashMap<K, JoinHandle<()>>);

impl<K: std::hash::Hash + Eq> Default for Tasks<K> {
    fn default() -> Self {
        Tasks(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> Tasks<K> {
    fn abort_all(&mut self) {
        for (_, t) in self.0.drain() {
            t.abort();
        }
    }
}

impl<K: std::hash::Hash + Eq> Drop for Tasks<K> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Why a pod was stopped by the node rather than by its own containers, and what its status
/// then says (upstream's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReason {
    pub reason: &'static str,
    pub message: &'static str,
    /// Whether the pod gets a `DisruptionTarget` condition (TerminationByKubelet).
    pub disruption: bool,
}

/// A pod stopped for a node shutdown.
pub const SHUTDOWN: StopReason = StopReason {
    reason: "Terminated",
    message: "Pod was terminated in response to imminent node shutdown.",
    disruption: true,
};

/// A pod that arrived while the node was shutting down.
pub const REJECTED: StopReason = StopReason {
    reason: "NodeShutdown",
    message: "Pod was rejected as the node is shutting down.",
    disruption: false,
};

/// Tells a worker to stop its pod for good.
#[derive(Debug)]
pub struct StopOrder {
    /// The most the containers get (the pod's own grace period may be shorter).
    pub grace: Duration,
    pub why: StopReason,
    /// Answered once the containers are stopped and the status written.
    pub done: Option<oneshot::Sender<()>>,
}

impl StopOrder {
    /// An order for a node shutdown, and where its completion is told.
    pub fn shutdown(grace: Duration) -> (StopOrder, oneshot::Receiver<()>) {
        let (done, stopped) = oneshot::channel();
        (
            StopOrder {
                grace,
                why: SHUTDOWN,
                done: Some(done),
            },
            stopped,
        )
    }

    /// An order rejecting a pod that arrived during a node shutdown.
    pub fn rejected() -> StopOrder {
        StopOrder {
            grace: Duration::ZERO,
            why: REJECTED,
            done: None,
        }
    }
}

/// The Pod as the worker plans it: once stopped by the node, Failed with the stop's reason
/// and message (and a DisruptionTarget condition), whatever the API has.
pub fn stopped_pod<'a>(pod: &'a Pod, why: Option<&StopReason>) -> Cow<'a, Pod> {
    let Some(why) = why else {
        return Cow::Borrowed(pod);
    };
    let mut p = pod.clone();
    let st = p.status.get_or_insert_with(PodStatus::default);
    st.phase = Some("Failed".to_string());
    st.reason = Some(why.reason.to_string());
    st.message = Some(why.message.to_string());
    if why.disruption {
        let conds = st.conditions.get_or_insert_with(Vec::new);
        if !conds
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        {
            conds.retain(|c| c.type_ != "DisruptionTarget");
            conds.push(PodCondition {
                type_: "DisruptionTarget".to_string(),
                status: "True".to_string(),
                reason: Some("TerminationByKubelet".to_string()),
                message: Some(why.message.to_string()),
                last_transition_time: Some(Time(Timestamp::now())),
                ..Default::default()
            });
        }
    }
    Cow::Owned(p)
}

/// How long a postStart hook may run.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Worker {
    ctx: Arc<PodContext>,
    uid: String,
    rx: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    /// Why a container could not be started: name -> (reason, message).
    errors: HashMap<String, (String, String)>,
    /// Consecutive failed syncs, for the retry delay.
    failures: u32,
    /// Status details of exited containers (they never change).
    exited: HashMap<String, CState>,
    grace_seconds: i64,
    /// Failed image pulls, for ImagePullBackOff.
    pull_backoff: pull::PullBackoff,
    /// Probe verdicts of this pod's containers, written by the probe tasks.
    results: Arc<probe::Results>,
    /// Probe tasks by (container id, probe type).
    probes: Tasks<(String, ProbeType)>,
    /// Containers being killed for a failed liveness or startup probe.
    killing: HashMap<String, JoinHandle<()>>,
    /// When the pod's projected service account tokens are due to be replaced.
    token_refresh: Option<SystemTime>,
    /// The host volumes of the pod's claims, once all are bound (a bound claim's volume
    /// source never changes, so they are read once).
    claims: Option<HashMap<String, volumes::Prepared>>,
    /// Stop orders from the manager (node shutdown).
    orders: mpsc::UnboundedReceiver<StopOrder>,
    /// Set once the node stopped the pod: it is Failed for good.
    stopped: Option<StopReason>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Why a sync did not finish.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing the pod: {0}")]
    Api(#[source] Box<kube::Error>),
    #[error("creating {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A container cannot be made (image, config): the reason its status shows.
    #[error("{reason}: {message}")]
    Image { reason: String, message: String },
}

impl From<kube::Error> for SyncError {
    fn from(e: kube::Error) -> Self {
        SyncError::Api(Box::new(e))
    }
}

impl Worker {
    pub fn new(
        ctx: Arc<PodContext>,
        uid: String,
        rx: watch::Receiver<Desired>,
        wake: Arc<Notify>,
        orders: mpsc::UnboundedReceiver<StopOrder>,
    ) -> Worker {
        Worker {
            ctx,
            uid,
            rx,
            wake,
            errors: HashMap::new(),
            failures: 0,
            exited: HashMap::new(),
            grace_seconds: GONE_GRACE_SECONDS,
            pull_backoff: pull::PullBackoff::default(),
            results: Arc::new(probe::Results::default()),
            probes: Tasks::default(),
            killing: HashMap::new(),
            token_refresh: None,
            claims: None,
            orders,
            stopped: None,
        }
    }

    /// Runs until the pod is terminated and gone, or the manager stops.
    ///
    /// Syncs, stops and terminations are boxed: their futures (9 KB) exist only while they
    /// run, and the task of a pod that is just running stays small (1.3 KB). Inside a sync the
    /// status write and postStart hook are boxed too, so that the many pods of a burst that
    /// wait for a sandbox start hold 9 KB each rather than 17 KB.
    pub async fn run(mut self) {
        let mut order: Option<StopOrder> = None;
        loop {
            let desired = self.rx.borrow_and_update().clone();
            if let Some(o) = order.take().or_else(|| self.orders.try_recv().ok()) {
                Box::pin(self.stop(&desired, o)).await;
            }
            let wait = match &desired {
                Desired::Gone => match Box::pin(self.terminate(None)).await {
                    Ok(()) => return,
                    Err(e) => self.failed("terminating", &e),
                },
                Desired::Pod(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    match Box::pin(self.terminate(Some(pod))).await {
                        Ok(()) => return,
                        Err(e) => self.failed("terminating", &e),
                    }
                }
                Desired::Pod(pod) => match Box::pin(self.sync(pod)).await {
                    Ok(next) => {
                        self.failures = 0;
                        next
                    }
                    Err(e) => {
                        let retry = self.failed("syncing", &e);
                        match &e {
                            // ErrImagePull stays visible a while; the next sync falls inside
                            // the pull back-off and shows ImagePullBackOff until it ends.
                            SyncError::Image { reason, .. } if reason == "ErrImagePull" => {
                                pull::PULL_ERROR_SHOWN
                            }
                            SyncError::Image { reason, .. } if reason == "ImagePullBackOff" => self
                                .pull_backoff
                                .next_retry(std::time::Instant::now())
                                .unwrap_or(retry),
                            _ => retry,
                        }
                    }
                },
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    changed = self.rx.changed() => {
                        if changed.is_err() {
                            // The manager stopped: leave everything running.
                            return;
                        }
                        // The agent's own status writes come back as Pod updates; like the
                        // kubelet, only a change to what the pod should be starts a sync.
                        if !status_only_change(&desired, &self.rx.borrow()) {
                            break;
                        }
                    }
                    _ = self.wake.notified() => break,
                    Some(o) = self.orders.recv() => {
                        order = Some(o);
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    /// Carries out a stop order: the containers are stopped (preStop hooks, SIGTERM) within
    /// the order's grace, then the status says Failed with the order's reason. A pod being
    /// deleted (or gone) is left to its termination.
    async fn stop(&mut self, desired: &Desired, order: StopOrder) {
        if let Desired::Pod(pod) = desired {
            if pod.metadata.deletion_timestamp.is_none() && self.stopped.is_none() {
                let own = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0);
                let grace = own.min(i64::try_from(order.grace.as_secs()).unwrap_or(i64::MAX));
                tracing::info!(uid = %self.uid, reason = order.why.reason, grace, "stopping the pod for the node");
                self.stopped = Some(order.why);
                let result = match self.kill_all(Some(pod), grace).await {
                    Ok(_) => self.sync(pod).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.failed("stopping", &e);
                }
            }
        }
        if let Some(done) = order.done {
            let _ = done.send(());
        }
    }

    fn failed(&mut self, what: &str, e: &SyncError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(uid = %self.uid, error = %e, "{what} pod");
        Duration::from_millis(500)
            .saturating_mul(1 << self.failures.min(8))
            .min(MAX_RETRY)
    }

    /// Rewrites the pod's volumes with fresh tokens (and current ConfigMaps and Secrets).
    async fn refresh_volumes(&mut self, pod: &Pod) -> Result<(), SyncError> {
        let mut fetched = volumes::fetch(&self.ctx.client, pod).await?;
        fetched.claims = self.claims.clone().unwrap_or_default();
        let root = self.ctx.volumes_root.join(&self.uid);
        volumes::plan_volumes(pod, &fetched)
            .and_then(|planned| volumes::prepare(&root, &planned))
            .map_err(|e| SyncError::Image {
                reason: "FailedMount".to_string(),
                message: e.to_string(),
            })?;
        self.token_refresh = projection::next_refresh(&fetched.tokens);
        tracing::debug!(uid = %self.uid, "projected tokens refreshed");
        Ok(())
    }

    /// What the runtime holds for this pod.
    async fn observe(&mut self) -> Result<Observed, RuntimeError> {
        let rt = &self.ctx.runtime;
        let selector = HashMap::from([(labels::POD_UID.to_string(), self.uid.clone())]);
        let sandboxes = rt.list_pod_sandboxes(selector.clone()).await?;
        let newest_ready = sandboxes
            .iter()
            .filter(|s| sandbox_ready(s.state))
            .max_by_key(|s| (s.metadata.as_ref().map(|m| m.attempt), s.created_at))
            .map(|s| s.id.clone());
        let mut obs = Observed::default();
        for s in sandboxes {
            let ready = sandbox_ready(s.state);
            let ip = if ready && Some(&s.id) == newest_ready.as_ref() {
                match rt.pod_sandbox_status(&s.id).await {
                    Ok(st) => st.network.map(|n| n.ip).unwrap_or_default(),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            } else {
                String::new()
            };
            obs.sandboxes.push(ObservedSandbox {
                attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                id: s.id,
                ready,
                ip,
                created_at: s.created_at,
            });
        }
        for c in rt.list_containers(selector).await? {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .or_else(|| c.labels.get(labels::CONTAINER_NAME).cloned())
                .unwrap_or_default();
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            let state = match container_state(c.state) {
                api::ContainerState::ContainerCreated => CState::Created,
                api::ContainerState::ContainerUnknown => CState::Unknown,
                api::ContainerState::ContainerRunning | api::ContainerState::ContainerExited => {
                    if let Some(st) = self.exited.get(&c.id) {
                        st.clone()
                    } else {
                        match rt.container_status(&c.id).await {
                            Ok(st) => {
                                let mut cs = from_status(&st);
                                while oom_event_pending(&cs, now_nanos()) {
                                    tokio::time::sleep(OOM_EVENT_POLL).await;
                                    match rt.container_status(&c.id).await {
                                        Ok(st) => cs = from_status(&st),
                                        Err(_) => break,
                                    }
                                }
                                if matches!(cs, CState::Exited { .. }) {
                                    self.exited.insert(c.id.clone(), cs.clone());
                                }
                                cs
                            }
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(e),
                        }
                    }
                }
            };
            obs.containers.push(ObservedContainer {
                id: c.id,
                sandbox_id: c.pod_sandbox_id,
                name,
                attempt,
                state,
                image_ref: c.image_ref,
            });
        }
        self.exited
            .retain(|id, _| obs.containers.iter().any(|c| &c.id == id));
        Ok(obs)
    }

    /// Brings the pod one step nearer to its spec (a few actions at most) and writes its
    /// status. Returns when to look again if nothing wakes the worker.
    async fn sync(&mut self, api_pod: &Pod) -> Result<Duration, SyncError> {
        let effective = stopped_pod(api_pod, self.stopped.as_ref());
        let pod: &Pod = &effective;
        self.grace_seconds = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        if self.token_refresh.is_some_and(|at| SystemTime::now() >= at) {
            self.refresh_volumes(pod).await?;
        }
        // Nothing starts until every claim is bound: the status is still written (containers
        // waiting in ContainerCreating) and the sync retried.
        let mut failure = None;
        if self.claims.is_none() {
            match claims::resolve(&self.ctx.client, pod).await {
                Ok(c) => self.claims = Some(c),
                Err(e) => {
                    let message = e.to_string();
                    EventSink::new(self.ctx.client.clone(), pod, &self.ctx.node_name).warning(
                        "",
                        "FailedMount",
                        message.clone(),
                    );
                    failure = Some(SyncError::Image {
                        reason: "FailedMount".to_string(),
                        message,
                    });
                }
            }
        }
        for _round in 0..8 {
            let obs = self.observe().await?;
            self.kill_unhealthy(pod, &obs);
            let plan = plan::plan(pod, &obs, now_nanos());
            let done = plan.actions.is_empty() || failure.is_some();
            if !done {
                if let Err(e) = self.execute(pod, &obs, &plan.actions).await {
                    failure = Some(e);
                }
                continue;
            }
            self.reconcile_probes(pod, &obs);
            Box::pin(self.write_status(api_pod, &obs, &plan)).await?;
            if let Some(e) = failure {
                return Err(e);
            }
            return Ok(plan.requeue_after.unwrap_or(RESYNC).min(RESYNC));
        }
        // Still acting after several rounds: write what is there and come back soon.
        let obs = self.observe().await?;
        let plan = plan::plan(pod, &obs, now_nanos());
        self.reconcile_probes(pod, &obs);
        Box::pin(self.write_status(api_pod, &obs, &plan)).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(Duration::from_millis(100)),
        }
    }

    /// The pod's sandbox config with its DNS settings.
    fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
        log_dir: &std::path::Path,
    ) -> api::PodSandboxConfig {
        let mut config = spec::sandbox_config(pod, &self.ctx.node_name, attempt, log_dir);
        config.dns_config = Some(super::dns::dns_config(pod, &self.ctx.node_dns()));
        config
    }

    /// `mounts` plus the pod's `/etc/hosts` (written beside its volumes, under a name no
    /// volume can have), unless the container mounts its own.
    fn with_hosts_file(
        &self,
        pod: &Pod,
        pod_ip: &str,
        mut mounts: Vec<api::Mount>,
    ) -> Result<Vec<api::Mount>, volumes::SourceError> {
        if super::dns::mounts_own_hosts(&mounts) {
            return Ok(mounts);
        }
        let dir = self.ctx.volumes_root.join(&self.uid);
        let path = dir.join(".etc-hosts");
        let text = super::dns::hosts_file(
            pod,
            pod_ip,
            &self.ctx.dns.cluster_domain,
            &self.ctx.host_hosts,
        );
        // Every container of the pod mounts the same file: write it once, not per start.
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                if unchanged {
                    Ok(())
                } else {
                    std::fs::write(&path, text)
                }
            })
            .map_err(|e| volumes::SourceError::Volume {
                volume: "etc-hosts".to_string(),
                message: e.to_string(),
            })?;
        mounts.push(api::Mount {
            container_path: "/etc/hosts".to_string(),
            host_path: path.display().to_string(),
            ..Default::default()
        });
        Ok(mounts)
    }

    async fn execute(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        actions: &[Action],
    ) -> Result<(), SyncError> {
        let rt = self.ctx.runtime.clone();
        let log_dir = spec::log_directory(&self.ctx.logs_root, pod);
        let mut sources: Option<volumes::Sources> = None;
        for action in actions {
            match action {
                Action::RunSandbox { attempt } => {
                    std::fs::create_dir_all(&log_dir).map_err(|source| SyncError::Io {
                        path: log_dir.display().to_string(),
                        source,
                    })?;
                    let config = self.sandbox_config(pod, *attempt, &log_dir);
                    let started = std::time::Instant::now();
                    let permit = self.ctx.sandbox_starts.clone().acquire_owned().await;
                    let id = rt.run_pod_sandbox(config).await?;
                    drop(permit);
                    tracing::debug!(uid = %self.uid, sandbox = %id, elapsed = ?started.elapsed(), "sandbox running");
                }
                Action::StartContainer {
                    kind,
                    index,
                    attempt,
                } => {
                    let Some(sandbox) = obs.sandbox().filter(|s| s.ready) else {
                        continue;
                    };
                    let list = match kind {
                        Kind::Init => plan::init_containers(pod),
                        Kind::App => plan::app_containers(pod),
                    };
                    let Some(c) = list.get(*index) else {
                        continue;
                    };
                    if let Err((reason, message)) = self.ensure_image(pod, c).await {
                        self.errors
                            .insert(c.name.clone(), (reason.clone(), message.clone()));
                        return Err(SyncError::Image { reason, message });
                    }
                    let sandbox_config = self.sandbox_config(pod, sandbox.attempt, &log_dir);
                    let env_ctx = PodEnvContext {
                        pod_ip: sandbox.ip.clone(),
                        host_ip: self.ctx.node_ip.clone(),
                        node_name: self.ctx.node_name.clone(),
                        service_env: self.service_env(pod),
                    };
                    if sources.is_none() {
                        let mut fetched = volumes::fetch(&self.ctx.client, pod).await?;
                        fetched.claims = self.claims.clone().unwrap_or_default();
                        self.token_refresh = projection::next_refresh(&fetched.tokens);
                        sources = Some(fetched);
                    }
                    let srcs = sources.clone().unwrap_or_default();
                    let volume_root = self.ctx.volumes_root.join(&self.uid);
                    let config = volumes::plan_volumes(pod, &srcs)
                        .and_then(|planned| volumes::prepare(&volume_root, &planned))
                        .and_then(|paths| {
                            volumes::mounts(c, &paths, &volumes::read_only_volumes(pod))
                        })
                        .and_then(|mounts| self.with_hosts_file(pod, &sandbox.ip, mounts))
                        .and_then(|mounts| {
                            spec::container_config(pod, c, *kind, *attempt, &env_ctx, &srcs, mounts)
                        });
                    let config = match config {
                        Ok(config) => config,
                        Err(e) => {
                            let message = e.to_string();
                            self.errors.insert(
                                c.name.clone(),
                                ("CreateContainerConfigError".to_string(), message.clone()),
                            );
                            return Err(SyncError::Image {
                                reason: "CreateContainerConfigError".to_string(),
                                message,
                            });
                        }
                    };
                    let _ = std::fs::create_dir_all(log_dir.join(&c.name));
                    let id = match rt
                        .create_container(&sandbox.id, config, sandbox_config)
                        .await
                    {
                        Ok(id) => id,
                        Err(e) => {
                            self.errors.insert(
                                c.name.clone(),
                                ("CreateContainerError".to_string(), e.to_string()),
                            );
                            return Err(e.into());
                        }
                    };
                    if let Err(e) = rt.start_container(&id).await {
                        self.errors.insert(
                            c.name.clone(),
                            ("RunContainerError".to_string(), e.to_string()),
                        );
                        return Err(e.into());
                    }
                    self.errors.remove(&c.name);
                    Box::pin(self.post_start(pod, c, &id, &sandbox.ip)).await;
                    tracing::debug!(uid = %self.uid, container = %c.name, attempt, "container started");
                }
                Action::StartCreated { id } => rt.start_container(id).await?,
                Action::StopSandbox { id } => match rt.stop_pod_sandbox(id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                },
                Action::RemoveContainer { id } => rt.remove_container(id).await?,
            }
        }
        Ok(())
    }

    /// Kills running app containers whose liveness or startup probe failed, in the
    /// background (preStop, then the grace period); the plan restarts them once they exited.
    fn kill_unhealthy(&mut self, pod: &Pod, obs: &Observed) {
        self.killing.retain(|_, t| !t.is_finished());
        let Some(sandbox) = obs.sandbox().filter(|s| s.ready) else {
            return;
        };
        for c in plan::app_containers(pod) {
            let Some(oc) = obs.latest_in(&c.name, &sandbox.id) else {
                continue;
            };
            if !matches!(oc.state, CState::Running { .. }) || self.killing.contains_key(&oc.id) {
                continue;
            }
            let Some(kind) = [ProbeType::Liveness, ProbeType::Startup]
                .into_iter()
                .find(|k| self.results.get(&oc.id, *k) == Some(false))
            else {
                continue;
            };
            // A probe may carry its own grace period for this kill.
            let grace = kind
                .of(c)
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or(self.grace_seconds);
            let message = format!(
                "Container {} failed {} probe, will be restarted",
                c.name,
                kind.as_str().to_lowercase()
            );
            tracing::info!(uid = %self.uid, container = %c.name, "{message}");
            let task = tokio::spawn(kill_logged(
                self.ctx.runtime.clone(),
                oc.id.clone(),
                Some(c.clone()),
                sandbox.ip.clone(),
                grace,
                Some(EventSink::new(
                    self.ctx.client.clone(),
                    pod,
                    &self.ctx.node_name,
                )),
                Some(message),
            ));
            self.killing.insert(oc.id.clone(), task);
        }
    }

    /// Keeps one probe task per running app container and probe type; stops the others.
    fn reconcile_probes(&mut self, pod: &Pod, obs: &Observed) {
        let mut want = std::collections::HashSet::new();
        let now = now_nanos();
        if let Some(sandbox) = obs.sandbox().filter(|s| s.ready) {
            for c in plan::app_containers(pod) {
                let Some(oc) = obs.latest_in(&c.name, &sandbox.id) else {
                    continue;
                };
                let CState::Running { started_at } = oc.state else {
                    continue;
                };
                for kind in ProbeType::ALL {
                    let Some(p) = kind.of(c) else {
                        continue;
                    };
                    let key = (oc.id.clone(), kind);
                    want.insert(key.clone());
                    // A finished task (a liveness verdict of failure) stays, so the
                    // container is not probed again before it is killed.
                    if self.probes.0.contains_key(&key) {
                        continue;
                    }
                    let handler = match probe::probe_handler(p, c, &sandbox.ip) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::debug!(uid = %self.uid, container = %c.name, error = %e, "probe not run");
                            continue;
                        }
                    };
                    let task = probe::Task {
                        runtime: self.ctx.runtime.clone(),
                        container_id: oc.id.clone(),
                        container_name: c.name.clone(),
                        kind,
                        handler,
                        settings: probe::Settings::of(p, kind),
                        has_startup: c.startup_probe.is_some(),
                        running_for: Duration::from_nanos(
                            u64::try_from(now.saturating_sub(started_at)).unwrap_or(0),
                        ),
                        results: self.results.clone(),
                        wake: self.wake.clone(),
                        events: EventSink::new(self.ctx.client.clone(), pod, &self.ctx.node_name),
                    };
                    self.probes.0.insert(key, tokio::spawn(probe::run(task)));
                }
            }
        }
        self.probes.0.retain(|k, t| {
            let keep = want.contains(k);
            if !keep {
                t.abort();
            }
            keep
        });
        self.results
            .retain(&|id| want.iter().any(|(wanted, _)| wanted == id));
    }

    /// Runs the container's postStart hook, if any, right after it started; a hook that
    /// fails kills the container (the plan restarts it by the restart policy).
    async fn post_start(&mut self, pod: &Pod, c: &Container, id: &str, pod_ip: &str) {
        let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return;
        };
        let rt = self.ctx.runtime.clone();
        let outcome = match probe::hook_handler(hook, c, pod_ip) {
            Ok(h) => probe::check(rt.as_ref(), id, &h, POST_START_TIMEOUT).await,
            Err(e) => probe::Outcome::Failure(e.to_string()),
        };
        let message = match outcome {
            probe::Outcome::Success => return,
            probe::Outcome::Failure(m) | probe::Outcome::Error(m) => m,
        };
        let events = EventSink::new(self.ctx.client.clone(), pod, &self.ctx.node_name);
        events.warning(
            &c.name,
            "FailedPostStartHook",
            format!("PostStartHook failed: {}", message.trim_end()),
        );
        tracing::info!(uid = %self.uid, container = %c.name, message, "postStart hook failed");
        kill_logged(
            rt,
            id.to_string(),
            Some(c.clone()),
            pod_ip.to_string(),
            self.grace_seconds,
            Some(events),
            Some(format!(
                "FailedPostStartHook: container {} is killed",
                c.name
            )),
        )
        .await;
    }

    /// Makes the container's image present per its pull policy, or says why not.
    /// The pod's Service variables, from the agent's Service cache.
    fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = self.ctx.services.state();
        service_env::service_env(ns, links, services.iter().map(|s| s.as_ref()))
    }

    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
    ) -> Result<(), (String, String)> {
        let rt = self.ctx.runtime.clone();
        pull::ensure_image(
            rt.as_ref(),
            &self.ctx.client,
            pod,
            c,
            &mut self.pull_backoff,
        )
        .await
    }

    async fn write_status(
        &self,
        pod: &Pod,
        obs: &Observed,
        plan: &plan::Plan,
    ) -> Result<(), SyncError> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut current = pod.clone();
        for _ in 0..3 {
            let st = status::pod_status(
                &stopped_pod(&current, self.stopped.as_ref()),
                &Inputs {
                    obs,
                    plan,
                    host_ip: &self.ctx.node_ip,
                    runtime_name: &self.ctx.runtime_name,
                    errors: &self.errors,
                    probes: &self.results.snapshot(),
                    now: Timestamp::now(),
                },
            );
            let same = serde_json::to_value(&st).ok()
                == current
                    .status
                    .as_ref()
                    .and_then(|s| serde_json::to_value(s).ok());
            if same {
                return Ok(());
            }
            let mut next = current.clone();
            next.status = Some(st);
            match api
                .replace_status(&name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => match api.get_opt(&name).await? {
                    Some(fresh) if fresh.metadata.uid.as_deref() == Some(&self.uid) => {
                        current = fresh;
                    }
                    _ => return Ok(()),
                },
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Stops the pod's containers within the grace period, removes its sandboxes, logs and
    /// cgroups, then deletes the Pod object (grace period 0) if there is one.
    async fn terminate(&mut self, pod: Option<&Pod>) -> Result<(), SyncError> {
        let grace = match pod {
            Some(p) => p
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30),
            None => self.grace_seconds.min(GONE_GRACE_SECONDS),
        }
        .max(0);
        let obs = self.kill_all(pod, grace).await?;
        let rt = self.ctx.runtime.clone();
        for s in &obs.sandboxes {
            match rt.stop_pod_sandbox(&s.id).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            rt.remove_pod_sandbox(&s.id).await?;
        }
        cleanup_cgroups(&self.ctx.cgroup_root, &self.uid);
        let _ = std::fs::remove_dir_all(self.ctx.volumes_root.join(&self.uid));
        if let Some(p) = pod {
            let _ = std::fs::remove_dir_all(spec::log_directory(&self.ctx.logs_root, p));
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                p.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api
                .delete(p.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        } else if let Ok(rd) = std::fs::read_dir(&self.ctx.logs_root) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_{}", self.uid))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        tracing::info!(uid = %self.uid, grace, "pod terminated");
        Ok(())
    }
}

impl Worker {
    /// Stops the pod's probes and running containers (preStop hooks, then SIGTERM, SIGKILL
    /// after `grace` seconds), all at once. Returns what the runtime held before.
    async fn kill_all(&mut self, pod: Option<&Pod>, grace: i64) -> Result<Observed, SyncError> {
        self.probes.abort_all();
        let obs = self.observe().await?;
        let rt = self.ctx.runtime.clone();
        let pod_ip = obs.sandbox().map(|s| s.ip.clone()).unwrap_or_default();
        let events = pod.map(|p| EventSink::new(self.ctx.client.clone(), p, &self.ctx.node_name));
        let stops = obs
            .containers
            .iter()
            .filter(|c| matches!(c.state, CState::Running { .. } | CState::Unknown))
            .map(|oc| {
                let spec = pod.and_then(|p| spec_of(p, &oc.name)).cloned();
                kill_container(
                    rt.clone(),
                    oc.id.clone(),
                    spec,
                    pod_ip.clone(),
                    grace,
                    events.clone(),
                    None,
                )
            });
        for r in futures::future::join_all(stops).await {
            r?;
        }
        Ok(obs)
    }
}

/// Whether `new` differs from `old` only in status (or bookkeeping such as resourceVersion).
fn status_only_change(old: &Desired, new: &Desired) -> bool {
    match (old, new) {
        (Desired::Pod(a), Desired::Pod(b)) => {
            a.spec == b.spec
                && a.metadata.uid == b.metadata.uid
                && a.metadata.labels == b.metadata.labels
                && a.metadata.annotations == b.metadata.annotations
                && a.metadata.deletion_timestamp == b.metadata.deletion_timestamp
                && a.metadata.deletion_grace_period_seconds
                    == b.metadata.deletion_grace_period_seconds
        }
        _ => false,
    }
}

/// The spec of the app or init container `name`.
fn spec_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    plan::app_containers(pod)
        .iter()
        .chain(plan::init_containers(pod).iter())
        .find(|c| c.name == name)
}

/// [`kill_container`] for background kills: failures are logged.
async fn kill_logged(
    rt: Arc<dyn Runtime>,
    id: String,
    spec: Option<Container>,
    pod_ip: String,
    grace: i64,
    events: Option<EventSink>,
    message: Option<String>,
) {
    if let Err(e) = kill_container(rt, id.clone(), spec, pod_ip, grace, events, message).await {
        tracing::warn!(container = %id, error = %e, "killing a container");
    }
}

/// Stops a container as upstream's killContainer does: a `Killing` event, the preStop hook
/// (if the spec is known) within the grace period, then SIGTERM and SIGKILL after what is
/// left of the grace period (at least 2 s after a hook).
pub async fn kill_container(
    rt: Arc<dyn Runtime>,
    id: String,
    spec: Option<Container>,
    pod_ip: String,
    grace: i64,
    events: Option<EventSink>,
    message: Option<String>,
) -> Result<(), RuntimeError> {
    let grace = grace.max(0);
    let name = spec.as_ref().map(|c| c.name.clone()).unwrap_or_default();
    if let Some(ev) = &events {
        ev.normal(
            &name,
            "Killing",
            message.unwrap_or_else(|| format!("Stopping container {name}")),
        );
    }
    let mut left = grace;
    let hook = spec.as_ref().and_then(|c| {
        c.lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .map(|h| (c, h))
    });
    if let Some((c, hook)) = hook {
        let started = std::time::Instant::now();
        let limit = Duration::from_secs(grace.unsigned_abs().max(1));
        let failure = match probe::hook_handler(hook, c, &pod_ip) {
            Ok(h) => {
                match tokio::time::timeout(limit, probe::check(rt.as_ref(), &id, &h, limit)).await {
                    Ok(probe::Outcome::Success) => None,
                    Ok(probe::Outcome::Failure(m) | probe::Outcome::Error(m)) => Some(m),
                    Err(_) => Some(format!("PreStopHook did not finish within {grace}s")),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        if let (Some(m), Some(ev)) = (failure, &events) {
            ev.warning(
                &name,
                "FailedPreStopHook",
                format!("PreStopHook failed: {}", m.trim_end()),
            );
        }
        let used = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        left = grace.saturating_sub(used).max(MIN_GRACE_AFTER_HOOK);
    }
    match rt.stop_container(&id, left).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// How long after a container's SIGKILL exit containerd may still learn that the kernel's
/// OOM killer sent it: the shim publishes the OOM event apart from the exit event, and under
/// load it arrives second. containerd then changes the reason from Error to OOMKilled; a
/// status read once, at the exit, would keep Error.
const OOM_EVENT_WAIT: Duration = Duration::from_secs(2);
/// How often the status is read again meanwhile.
const OOM_EVENT_POLL: Duration = Duration::from_millis(100);

/// Whether `cs` is a SIGKILL exit reported as Error less than [`OOM_EVENT_WAIT`] before
/// `now` (nanoseconds), whose reason may still turn into OOMKilled.
fn oom_event_pending(cs: &CState, now: i64) -> bool {
    let wait = i64::try_from(OOM_EVENT_WAIT.as_nanos()).unwrap_or(i64::MAX);
    matches!(cs, CState::Exited { exit_code: 137, reason, finished_at, .. }
        if reason == "Error" && now < finished_at.saturating_add(wait))
}

fn from_status(st: &api::ContainerStatus) -> CState {
    match container_state(st.state) {
        api::ContainerState::ContainerCreated => CState::Created,
        api::ContainerState::ContainerRunning => CState::Running {
            started_at: st.started_at,
        },
        api::ContainerState::ContainerExited => CState::Exited {
            exit_code: st.exit_code,
            reason: st.reason.clone(),
            message: st.message.clone(),
            started_at: st.started_at,
            finished_at: st.finished_at,
        },
        api::ContainerState::ContainerUnknown => CState::Unknown,
    }
}

/// Removes the pod's cgroup directories (runc leaves them, under every hierarchy).
pub fn cleanup_cgroups(root: &std::path::Path, uid: &str) {
    let parent = spec::cgroup_parent(uid);
    let rel = parent.trim_start_matches('/');
    let mut candidates = vec![root.join(rel)];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            candidates.push(e.path().join(rel));
        }
    }
    for dir in candidates {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    #[test]
    fn status_writes_do_not_start_a_sync() {
        let pod = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let mut with_status = pod.clone();
        with_status.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        with_status.metadata.resource_version = Some("7".into());
        let old = Desired::Pod(Arc::new(pod.clone()));
        assert!(status_only_change(
            &old,
            &Desired::Pod(Arc::new(with_status))
        ));
        let mut deleted = pod.clone();
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert!(!status_only_change(&old, &Desired::Pod(Arc::new(deleted))));
        let mut labelled = pod;
        labelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(!status_only_change(&old, &Desired::Pod(Arc::new(labelled))));
        assert!(!status_only_change(&old, &Desired::Gone));
    }

    #[test]
    fn a_pod_stopped_by_the_node_is_failed_with_a_disruption_condition() {
        let pod = Pod {
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(stopped_pod(&pod, None), Cow::Borrowed(_)));
        let stopped = stopped_pod(&pod, Some(&SHUTDOWN));
        let st = stopped.status.as_ref().expect("status");
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("Terminated"));
        assert_eq!(
            st.message.as_deref(),
            Some("Pod was terminated in response to imminent node shutdown.")
        );
        let cond = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget")
            .expect("DisruptionTarget");
        assert_eq!(cond.status, "True");
        assert_eq!(cond.reason.as_deref(), Some("TerminationByKubelet"));
        // Applied again (to the Pod as written), the condition keeps its transition time.
        let again = stopped_pod(&stopped, Some(&SHUTDOWN));
        assert_eq!(again.status, stopped.status);
        let rejected = stopped_pod(&pod, Some(&REJECTED));
        let st = rejected.status.as_ref().expect("status");
        assert_eq!(st.reason.as_deref(), Some("NodeShutdown"));
        assert!(st.conditions.is_none());
    }

    #[test]
    fn critical_pods_by_class_or_priority() {
        let with = |class: Option<&str>, priority: Option<i32>| Pod {
            spec: Some(PodSpec {
                priority_class_name: class.map(str::to_string),
                priority,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(super::super::is_critical(&with(
            Some("system-node-critical"),
            None
        )));
        assert!(super::super::is_critical(&with(
            Some("system-cluster-critical"),
            None
        )));
        assert!(super::super::is_critical(&with(None, Some(2_000_001_000))));
        assert!(!super::super::is_critical(&with(Some("high"), Some(1000))));
        assert!(!super::super::is_critical(&Pod::default()));
    }
}

#[cfg(test)]
mod oom_event {
    use super::*;

    fn exited(exit_code: i32, reason: &str, finished_at: i64) -> CState {
        CState::Exited {
            exit_code,
            reason: reason.to_string(),
            message: String::new(),
            started_at: 0,
            finished_at,
        }
    }

    #[test]
    fn only_a_fresh_sigkill_error_waits_for_the_oom_event() {
        let sec = 1_000_000_000;
        assert!(oom_event_pending(&exited(137, "Error", 10 * sec), 11 * sec));
        assert!(!oom_event_pending(
            &exited(137, "Error", 10 * sec),
            13 * sec
        ));
        assert!(!oom_event_pending(
            &exited(137, "OOMKilled", 10 * sec),
            11 * sec
        ));
        assert!(!oom_event_pending(&exited(1, "Error", 10 * sec), 11 * sec));
        assert!(!oom_event_pending(
            &exited(143, "Error", 10 * sec),
            11 * sec
        ));
        assert!(!oom_event_pending(
            &CState::Running { started_at: 0 },
            11 * sec
        ));
    }
}

#[cfg(test)]
mod task_size {
    /// The size of the future a function returns, without calling it.
    fn future_size<A, F, Fut>(_: F) -> usize
    where
        F: FnOnce(A) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Each running pod holds a worker task and one task per probe for as long as it runs;
    /// their resting state stays small (their syncs and checks are boxed while they run).
    #[test]
    fn pod_tasks_stay_small() {
        assert!(future_size(super::Worker::run) < 4096);
        assert!(future_size(super::super::probe::run) < 4096);
    }
}
