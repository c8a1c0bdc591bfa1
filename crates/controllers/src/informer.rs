//! Shared informers: one watch and one cache per kind, fanned out to every controller that
//! cares about the kind.
//!
//! Each [`Informer`] runs kube-rs's `watcher` (which relists and rewatches by itself after
//! errors, with backoff) into a reflector [`Store`], and forwards every object it sees, added,
//! modified or deleted, to its subscribers. A subscriber that joins late first receives every
//! object in the cache, so no controller misses the initial state. Deleted objects are
//! forwarded too (kube-rs's shared reflector drops them), because an owner must hear that its
//! pod went away.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

type Subscribers<K> = Arc<Mutex<Vec<mpsc::UnboundedSender<K>>>>;

/// One kind's cache and its subscribers.
pub struct Informer<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    subs: Subscribers<K>,
}

impl<K> Clone for Informer<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            subs: self.subs.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts watching `api` in the background; the task ends when the runtime does.
    pub fn start(api: Api<K>) -> Informer<K> {
        let (store, mut writer) = reflector::store::<K>();
        let subs: Subscribers<K> = Arc::default();
        let task_subs = subs.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(error = %e, kind = %<K as Resource>::kind(&()), "watch failed; retrying");
                        continue;
                    }
                };
                let mut subs = task_subs.lock().unwrap_or_else(|p| p.into_inner());
                writer.apply_watcher_event(&ev);
                let obj = match &ev {
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o) => Some(o),
                    _ => None,
                };
                if let Some(obj) = obj {
                    subs.retain(|tx| tx.send(obj.clone()).is_ok());
                }
            }
        });
        Informer { store, subs }
    }

    /// The cache, filled by the watch.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object in the cache now, then every object the watch reports from here on.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        for obj in self.store.state() {
            let _ = tx.send((*obj).clone());
        }
        subs.push(tx);
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|o| (Ok(o), rx)) },
        )
    }
}
