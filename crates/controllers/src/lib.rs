//! krust's controller manager: the control loops that turn desired state into actual state,
//! talking to the API server only through its API.
//!
//! Layout, as upstream's `pkg/controller/`: one module per controller, each a kube-rs
//! [`Controller`](kube::runtime::Controller) whose handlers only enqueue keys and whose
//! `reconcile` is idempotent, reads from shared caches and writes through the API.
//! - [`informer`]: one watch and cache per kind, shared by every controller.
//! - [`util`]: errors, per-key retry backoff, expectations, events, pod and node predicates
//!   (tolerations, node selectors).
//! - [`history`]: ControllerRevisions, the template history of StatefulSets and DaemonSets.
//! - the controllers, each with `run(shared, shutdown)` and named as upstream's
//!   `--controllers`: [`namespace`], [`serviceaccount`], [`replicaset`] (and
//!   `replicationcontroller`), [`deployment`], [`statefulset`], [`daemonset`], [`job`],
//!   [`cronjob`] (with its schedule parser), [`garbagecollector`], [`endpoints`]
//!   (`endpoint` and `endpointslice`), [`nodelifecycle`] (health, condition taints and
//!   taint-based eviction), [`nodeipam`] (pod CIDRs), [`disruption`]
//!   (PodDisruptionBudget status), [`podgc`] (pods no kubelet will finish),
//!   [`persistentvolume`] (`persistentvolume-binder`: binds claims to volumes),
//!   [`pvcprotection`] and [`pvprotection`] (`pvc-protection`, `pv-protection`: claims in
//!   use and bound volumes stay until released) and [`rootcacertpublisher`]
//!   (`root-ca-cert-publisher`: the `kube-root-ca.crt` ConfigMap in every namespace),
//!   [`csrapproving`] (approves kubelets' client and serving certificate requests),
//!   [`csrsigning`] (issues approved requests' certificates with the cluster CA; only with
//!   [`ControllerConfig::signing`]) and [`tokencleaner`] (deletes expired bootstrap
//!   tokens). [`certificates`] holds what the two CSR controllers share (signer names, the
//!   parsed request, the kubelet signers' constraints) and [`authority`] the CA that signs.
//!
//! [`run`] starts the caches, waits until they are filled, then runs every enabled controller
//! until `shutdown` resolves.

pub mod authority;
pub mod certificates;
pub mod cronjob;
pub mod csrapproving;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbagecollector;
pub mod history;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod pvcprotection;
pub mod pvprotection;
pub mod replicaset;
pub mod rootcacertpublisher;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod tokencleaner;
pub mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, Pod, ReplicationController, Service, ServiceAccount,
};
use kube::{Api, Client};

use informer::Informer;

/// A shutdown signal every controller can wait on.
pub type Shutdown = SharedFuture<BoxFuture<'static, ()>>;

/// Flags of the controller manager.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// How long a node may be silent before it is marked Ready=Unknown (upstream: 40 s).
    pub node_monitor_grace_period: Duration,
    /// Terminated pods beyond this many are deleted, oldest first (0: never).
    /// The tolerationSeconds pods get against unreachable/not-ready taints are admission's,
    /// in the API server; the controllers only read the tolerations pods carry.
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CIDR from which nodes get their podCIDR.
    pub cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    pub node_cidr_mask_size: u8,
    /// Which controllers run: names as upstream's `--controllers`, `*` for all.
    pub controllers: Vec<String>,
    /// The cluster CA (PEM) that `root-ca-cert-publisher` publishes; without it that
    /// controller does not run.
    pub root_ca: Option<String>,
    /// The LoadBalancer Service controller's pool and reserved ports (None: not run, as
    /// when a cloud provider or another load balancer serves them).
    pub service_lb: Option<servicelb::LbConfig>,
    /// The cluster CA that `csrsigning` issues certificates with (upstream's
    /// `--cluster-signing-*` flags); without it that controller does not run.
    pub signing: Option<csrsigning::SigningConfig>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_monitor_grace_period: Duration::from_secs(40),
            terminated_pod_gc_threshold: 12500,
            cluster_cidr: "10.42.0.0/16".to_string(),
            node_cidr_mask_size: 24,
            controllers: vec!["*".to_string()],
            root_ca: None,
            service_lb: None,
            signing: None,
        }
    }
}

impl ControllerConfig {
    pub fn enabled(&self, name: &str) -> bool {
        let mut on = false;
        for c in &self.controllers {
            if c == "*" || c == name {
                on = true;
            } else if c.strip_prefix('-') == Some(name) {
                return false;
            }
        }
        on
    }
}

/// The caches, client and flags every controller shares.
pub struct Shared {
    pub client: Client,
    pub config: ControllerConfig,
    pub pods: Informer<Pod>,
    pub replicasets: Informer<ReplicaSet>,
    pub replicationcontrollers: Informer<ReplicationController>,
    pub deployments: Informer<Deployment>,
    pub namespaces: Informer<Namespace>,
    pub serviceaccounts: Informer<ServiceAccount>,
    pub services: Informer<Service>,
    pub jobs: Informer<Job>,
    pub statefulsets: Informer<StatefulSet>,
    pub daemonsets: Informer<DaemonSet>,
    pub controllerrevisions: Informer<ControllerRevision>,
    pub cronjobs: Informer<CronJob>,
    pub nodes: Informer<Node>,
    /// Node Leases (namespace `kube-node-lease` only).
    pub leases: Informer<Lease>,
}

impl Shared {
    /// The cached pods of one namespace.
    pub fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.pods
            .store()
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect()
    }

    /// Starts every cache and waits until each has listed once.
    pub async fn start(client: Client, config: ControllerConfig) -> Arc<Shared> {
        let shared = Shared {
            pods: Informer::start(Api::all(client.clone())),
            replicasets: Informer::start(Api::all(client.clone())),
            replicationcontrollers: Informer::start(Api::all(client.clone())),
            deployments: Informer::start(Api::all(client.clone())),
            namespaces: Informer::start(Api::all(client.clone())),
            serviceaccounts: Informer::start(Api::all(client.clone())),
            services: Informer::start(Api::all(client.clone())),
            jobs: Informer::start(Api::all(client.clone())),
            statefulsets: Informer::start(Api::all(client.clone())),
            daemonsets: Informer::start(Api::all(client.clone())),
            controllerrevisions: Informer::start(Api::all(client.clone())),
            cronjobs: Informer::start(Api::all(client.clone())),
            nodes: Informer::start(Api::all(client.clone())),
            leases: Informer::start(Api::namespaced(
                client.clone(),
                nodelifecycle::LEASE_NAMESPACE,
            )),
            client,
            config,
        };
        let stores = (
            shared.pods.store(),
            shared.replicasets.store(),
            shared.replicationcontrollers.store(),
            shared.deployments.store(),
            shared.namespaces.store(),
            shared.serviceaccounts.store(),
            shared.services.store(),
            shared.jobs.store(),
        );
        let more = (
            shared.statefulsets.store(),
            shared.daemonsets.store(),
            shared.controllerrevisions.store(),
            shared.cronjobs.store(),
            shared.nodes.store(),
            shared.leases.store(),
        );
        let _ = futures::join!(
            stores.0.wait_until_ready(),
            stores.1.wait_until_ready(),
            stores.2.wait_until_ready(),
            stores.3.wait_until_ready(),
            stores.4.wait_until_ready(),
            stores.5.wait_until_ready(),
            stores.6.wait_until_ready(),
            stores.7.wait_until_ready(),
        );
        let _ = futures::join!(
            more.0.wait_until_ready(),
            more.1.wait_until_ready(),
            more.2.wait_until_ready(),
            more.3.wait_until_ready(),
            more.4.wait_until_ready(),
            more.5.wait_until_ready(),
        );
        Arc::new(shared)
    }
}

/// Runs the enabled controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown: Shutdown = shutdown.boxed().shared();
    let shared = tokio::select! {
        s = Shared::start(client, config) => s,
        _ = shutdown.clone() => return,
    };
    tracing::info!("controller caches synced; starting controllers");
    let mut tasks = tokio::task::JoinSet::new();
    let cfg = shared.config.clone();
    if cfg.enabled("namespace") {
        tasks.spawn(namespace::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("serviceaccount") {
        tasks.spawn(serviceaccount::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("replicaset") {
        tasks.spawn(replicaset::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("replicationcontroller") {
        tasks.spawn(replicaset::run_rc(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("deployment") {
        tasks.spawn(deployment::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("endpoint") || cfg.enabled("endpointslice") {
        tasks.spawn(endpoints::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("job") {
        tasks.spawn(job::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("disruption") {
        tasks.spawn(disruption::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("statefulset") {
        tasks.spawn(statefulset::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("daemonset") {
        tasks.spawn(daemonset::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("cronjob") {
        tasks.spawn(cronjob::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("nodelifecycle") {
        tasks.spawn(nodelifecycle::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("nodeipam") {
        tasks.spawn(nodeipam::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("persistentvolume-binder") {
        tasks.spawn(persistentvolume::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("pvc-protection") {
        tasks.spawn(pvcprotection::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("pv-protection") {
        tasks.spawn(pvprotection::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("podgc") {
        tasks.spawn(podgc::run(shared.clone(), shutdown.clone()));
    }
    match cfg.root_ca.clone() {
        Some(ca) if cfg.enabled("root-ca-cert-publisher") => {
            tasks.spawn(rootcacertpublisher::run(
                shared.clone(),
                ca,
                shutdown.clone(),
            ));
        }
        Some(_) => {}
        None => tracing::info!("no root CA given: root-ca-cert-publisher does not run"),
    }
    match cfg.service_lb.clone() {
        Some(lb) if cfg.enabled("service-lb") => {
            tasks.spawn(servicelb::run(shared.clone(), lb, shutdown.clone()));
        }
        _ => {}
    }
    let signing = cfg.signing.clone().filter(|_| cfg.enabled("csrsigning"));
    if cfg.signing.is_none() {
        tracing::info!("no cluster signing CA given: csrsigning does not run");
    }
    if cfg.enabled("csrapproving") || signing.is_some() {
        // One CSR cache for both, outside Shared::start: an API server that does not serve
        // CSRs yet delays only these two.
        let csrs: Informer<CertificateSigningRequest> =
            Informer::start(Api::all(shared.client.clone()));
        if cfg.enabled("csrapproving") {
            tasks.spawn(csrapproving::run(
                shared.clone(),
                csrs.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(signing) = signing {
            tasks.spawn(csrsigning::run(
                shared.clone(),
                csrs,
                signing,
                shutdown.clone(),
            ));
        }
    }
    if cfg.enabled("tokencleaner") {
        tasks.spawn(tokencleaner::run(shared.clone(), shutdown.clone()));
    }
    if cfg.enabled("garbagecollector") {
        tasks.spawn(garbagecollector::run(shared.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}
