//! The watched caches the node and cluster add-ons keep of API objects (the service proxy,
//! cluster DNS, the ingress controller, NetworkPolicy enforcement): a kube-rs reflector
//! over any API server, without `managedFields` (no component reads them, and they are
//! most of an object's size), that wakes its owner on every change so that it can coalesce
//! bursts and recompute once.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A cache of one kind, kept current by a background watch that stops when this is
/// dropped.
pub struct Watched<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    task: JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Watches `api` with `config` (any resourceVersion: a cache needs no quorum read),
    /// trims each object with `trim` after dropping its managedFields, and wakes `changed`
    /// on every event. Watch errors are retried with backoff.
    pub fn start(
        api: Api<K>,
        config: watcher::Config,
        changed: Arc<Notify>,
        mut trim: impl FnMut(&mut K) + Send + 'static,
    ) -> Watched<K> {
        let (store, writer) = reflector::store::<K>();
        let events = reflector::reflector(
            writer,
            watcher(api, config.any_semantic()).modify(move |o| {
                o.meta_mut().managed_fields = None;
                trim(o);
            }),
        )
        .default_backoff();
        let task = tokio::spawn(async move {
            let mut events = events.boxed();
            while let Some(ev) = events.next().await {
                if let Err(e) = ev {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                }
                changed.notify_one();
            }
        });
        Watched { store, task }
    }

    /// [`Watched::start`] of every object of the kind, untrimmed.
    pub fn all(api: Api<K>, changed: Arc<Notify>) -> Watched<K> {
        Watched::start(api, watcher::Config::default(), changed, |_| {})
    }

    /// The cache (cheap to clone; reads see the latest objects).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Drop for Watched<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
