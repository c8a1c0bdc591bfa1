//! The simulated kubelets' pod work: one kube-runtime controller over all pods (one watch),
//! filtered in memory to the pods bound to simulated nodes. Each reconcile looks at the pod's
//! [`lifecycle::next_step`] and does at most one write (status through `pods/status`, or a
//! delete), so the controller's concurrency bounds the requests in flight. A write that
//! conflicts re-reads the pod and decides again; a pod that finishes later is requeued for
//! that moment, so no task waits per pod.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::ipam::{self, Cidr, IpAllocator};
use crate::lifecycle::{self, Step};
use crate::node::{NodeSet, SimNode};
use crate::SimConfig;

/// Why a reconcile failed; the pod is looked at again shortly.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("writing pod: {0}")]
    Api(#[source] Box<kube::Error>),
    #[error("no free pod address in {0:?}")]
    NoAddress(Cidr),
}

impl From<kube::Error> for PodError {
    fn from(e: kube::Error) -> Self {
        PodError::Api(Box::new(e))
    }
}

struct Ctx {
    client: kube::Client,
    nodes: Arc<NodeSet>,
    config: Arc<SimConfig>,
    ips: Mutex<IpAllocator>,
    store: Store<Pod>,
    seeded: tokio::sync::OnceCell<()>,
}

impl Ctx {
    fn ips(&self) -> std::sync::MutexGuard<'_, IpAllocator> {
        self.ips.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_our_node(&self, pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| self.nodes.get(n).is_some())
    }

    /// Before the first address is handed out, learn the addresses pods already hold (pods
    /// started by an earlier run of the simulator).
    async fn seed(&self) {
        self.seeded
            .get_or_init(|| async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), self.store.wait_until_ready())
                        .await;
                let mut ips = self.ips();
                for pod in self.store.state() {
                    if let Some(ip) = held_ip(&pod) {
                        if self.on_our_node(&pod) && !lifecycle::is_terminal(&pod) {
                            ips.observe(&pod.uid().unwrap_or_default(), ip);
                        }
                    }
                }
            })
            .await;
    }

    /// Frees the addresses of pods that are gone or finished.
    fn reclaim(&self) {
        let live: HashSet<String> = self
            .store
            .state()
            .iter()
            .filter(|p| self.on_our_node(p) && !lifecycle::is_terminal(p))
            .filter_map(|p| p.uid())
            .collect();
        self.ips().retain(&live);
    }
}

fn held_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Drives the pods of the simulated nodes until `stop` fires.
pub async fn run(
    client: kube::Client,
    nodes: Arc<NodeSet>,
    config: Arc<SimConfig>,
    stop: futures::channel::oneshot::Receiver<()>,
) {
    let concurrency = u16::try_from(config.max_in_flight).unwrap_or(u16::MAX);
    let controller = Controller::new(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop.map(|_| ()));
    let ctx = Arc::new(Ctx {
        client,
        nodes,
        config,
        ips: Mutex::new(IpAllocator::default()),
        store: controller.store(),
        seeded: tokio::sync::OnceCell::new(),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) | Err(controller::Error::ObjectNotFound(_)) => {}
                Err(e) => tracing::warn!(error = %e, "simulated pod lifecycle"),
            }
        })
        .await;
}

fn error_policy(pod: Arc<Pod>, err: &PodError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(pod = %pod.name_any(), error = %err, "simulated pod; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, PodError> {
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| ctx.nodes.get(n))
    else {
        return Ok(Action::await_change());
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let mut current = pod;
    for _ in 0..5 {
        match act(&ctx, &api, node, &current).await {
            Err(PodError::Api(e)) if is_conflict(&e) => {
                match api.get_opt(&current.name_any()).await? {
                    Some(fresh) => current = Arc::new(fresh),
                    None => return Ok(Action::await_change()),
                }
            }
            other => return other,
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict())
}

/// Takes the pod's next step: at most one write.
async fn act(ctx: &Ctx, api: &Api<Pod>, node: &SimNode, pod: &Pod) -> Result<Action, PodError> {
    let now = Timestamp::now();
    let uid = pod.uid().unwrap_or_default();
    let name = pod.name_any();
    match lifecycle::next_step(pod, now, ctx.config.run_seconds) {
        Step::Wait | Step::FinishIn(_) if lifecycle::is_terminal(pod) => {
            ctx.ips().release(&uid);
            Ok(Action::await_change())
        }
        Step::Wait => {
            if let Some(ip) = held_ip(pod) {
                ctx.ips().observe(&uid, ip);
            }
            Ok(Action::await_change())
        }
        Step::FinishIn(left) => {
            if let Some(ip) = held_ip(pod) {
                ctx.ips().observe(&uid, ip);
            }
            Ok(Action::requeue(left))
        }
        Step::Delete => {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            ctx.ips().release(&uid);
            Ok(Action::await_change())
        }
        Step::Start => {
            ctx.seed().await;
            let cidr = node
                .live()
                .pod_cidr
                .as_deref()
                .and_then(Cidr::parse)
                .unwrap_or(ipam::FALLBACK);
            let mut ip = ctx.ips().allocate(&uid, cidr);
            if ip.is_none() {
                ctx.reclaim();
                ip = ctx.ips().allocate(&uid, cidr);
            }
            let ip = ip.ok_or(PodError::NoAddress(cidr))?;
            let mut started = pod.clone();
            started.status = Some(lifecycle::running_status(pod, node.ip, ip, now));
            api.replace_status(&name, &PostParams::default(), &started)
                .await?;
            Ok(Action::await_change())
        }
        Step::Finish { exit_code } => {
            let mut finished = pod.clone();
            finished.status = Some(lifecycle::finished_status(pod, exit_code, now));
            api.replace_status(&name, &PostParams::default(), &finished)
                .await?;
            ctx.ips().release(&uid);
            Ok(Action::await_change())
        }
    }
}
