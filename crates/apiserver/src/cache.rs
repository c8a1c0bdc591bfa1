//! The watch cache: every object's latest encoding and a window of recent changes, kept in
//! memory and fed by one watch on the store. Lists (their first page) and watches are
//! served from here, so they never hammer the store; gets, writes and the later pages of a
//! list (read at the first page's revision, see `rest`) go to the store.
//!
//! States: `Filling` (first list from the store) -> `Live` (applying watch events). When the
//! store watch breaks (compaction, lost connection) the cache relists and goes live again;
//! watchers of the cache see their streams end and resume from their last revision.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use krust_store::{EventKind, Revision, Store};
use tokio::sync::{broadcast, watch};

/// How many recent events watchers may resume from.
const HISTORY: usize = 100_000;
/// Keys per read while filling (upstream's watch cache reads 10,000 at a time).
const FILL_PAGE: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Cached {
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it. For deletions `value` is the last state.
#[derive(Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: String,
    pub value: Bytes,
    pub prev: Option<Bytes>,
    pub revision: Revision,
}

struct State {
    objects: BTreeMap<String, Cached>,
    history: VecDeque<Arc<Change>>,
    /// Watches may resume from any revision >= this one.
    oldest: Revision,
}

pub struct Cache {
    state: RwLock<State>,
    changes: broadcast::Sender<Arc<Change>>,
    revision: watch::Sender<Revision>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        requested: Revision,
        oldest: Revision,
    },
    #[error("timed out waiting for the cache to reach revision {0}")]
    Timeout(Revision),
}

/// Changes still in the window, and a receiver for every later one.
pub type Replay = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// A snapshot of matching objects at one revision.
pub struct Snapshot {
    pub items: Vec<(String, Cached)>,
    pub revision: Revision,
    /// The key to continue after, when the page was cut by a limit.
    pub next: Option<String>,
    /// How many objects follow the page, when it was cut and the caller asked for the count.
    pub remaining: Option<u64>,
}

impl Cache {
    pub fn new() -> Arc<Cache> {
        let (changes, _) = broadcast::channel(16 * 1024);
        let (revision, _) = watch::channel(0);
        Arc::new(Cache {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 0,
            }),
            changes,
            revision,
        })
    }

    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the cache has applied every write up to `rev`.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> Result<(), CacheError> {
        let mut rx = self.revision.subscribe();
        let reached =
            tokio::time::timeout(timeout, async { rx.wait_for(|r| *r >= rev).await.is_ok() }).await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(CacheError::Timeout(rev)),
        }
    }

    /// Objects whose key starts with `prefix`, after `start_after`, at most `limit` (0 = all)
    /// of those `keep` accepts. With `count_rest`, a cut page also counts the objects under
    /// `prefix` after it (without asking `keep`: the count is only wanted when it takes all).
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        count_rest: bool,
        mut keep: impl FnMut(&Cached) -> bool,
    ) -> Snapshot {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut range = state.objects.range((lower, Bound::Unbounded));
        for (k, v) in range.by_ref() {
            if !k.starts_with(prefix) {
                break;
            }
            if !keep(v) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                next = items.last().map(|(k, _): &(String, Cached)| k.clone());
                break;
            }
            items.push((k.clone(), v.clone()));
        }
        // The object that cut the page, and those after it.
        let remaining = (next.is_some() && count_rest)
            .then(|| 1 + range.take_while(|(k, _)| k.starts_with(prefix)).count() as u64);
        Snapshot {
            items,
            revision: self.revision(),
            next,
            remaining,
        }
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .get(key)
            .cloned()
    }

    /// Changes after `after` still in the window, plus a receiver for later ones. Holding
    /// the lock while subscribing means nothing falls between the two.
    pub fn changes_since(&self, after: Revision) -> Result<Replay, CacheError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if after < state.oldest {
            return Err(CacheError::TooOld {
                requested: after,
                oldest: state.oldest,
            });
        }
        let rx = self.changes.subscribe();
        let start = state.history.partition_point(|c| c.revision <= after);
        Ok((state.history.iter().skip(start).cloned().collect(), rx))
    }

    /// Current objects under `prefix` and a receiver of everything after them.
    pub fn snapshot_and_subscribe(
        &self,
        prefix: &str,
    ) -> (
        Vec<(String, Cached)>,
        Revision,
        broadcast::Receiver<Arc<Change>>,
    ) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let rx = self.changes.subscribe();
        let items = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (items, self.revision(), rx)
    }

    fn reset(&self, items: Vec<krust_store::KeyValue>, revision: Revision) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.objects = items
            .into_iter()
            .map(|kv| {
                (
                    kv.key,
                    Cached {
                        value: kv.value,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                    },
                )
            })
            .collect();
        state.history.clear();
        state.oldest = revision;
        drop(state);
        self.revision.send_replace(revision);
    }

    fn apply(&self, ev: krust_store::Event) {
        let revision = ev.kv.mod_revision;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let prev = ev.prev.map(|p| p.value);
        let change = match ev.kind {
            EventKind::Put => {
                let cached = Cached {
                    value: ev.kv.value.clone(),
                    create_revision: ev.kv.create_revision,
                    mod_revision: revision,
                };
                let old = state.objects.insert(ev.kv.key.clone(), cached);
                let kind = if old.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                let prev = prev.or(old.map(|o| o.value));
                Change {
                    kind,
                    key: ev.kv.key,
                    value: ev.kv.value,
                    prev,
                    revision,
                }
            }
            EventKind::Delete => {
                let old = state.objects.remove(&ev.kv.key);
                let prev = prev.or(old.map(|o| o.value));
                Change {
                    kind: ChangeKind::Deleted,
                    key: ev.kv.key,
                    value: ev.kv.value,
                    prev,
                    revision,
                }
            }
        };
        let change = Arc::new(change);
        state.history.push_back(change.clone());
        if state.history.len() > HISTORY {
            if let Some(dropped) = state.history.pop_front() {
                state.oldest = dropped.revision;
            }
        }
        // Sent under the lock so that subscribers in `changes_since` see each change once.
        let _ = self.changes.send(change);
        drop(state);
        self.revision.send_replace(revision);
    }

    /// Fills the cache from the store and keeps it current until the process ends.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, prefix: String) {
        loop {
            match self.fill_and_follow(&store, &prefix).await {
                Ok(()) => tracing::warn!("store watch ended; relisting"),
                Err(e) => tracing::warn!("watch cache: {e}; relisting"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lists everything, then follows the store's watch from that revision.
    pub async fn fill(
        &self,
        store: &Arc<dyn Store>,
        prefix: &str,
    ) -> Result<Revision, krust_store::StoreError> {
        // In pages, each read at the first one's revision, so that what is filled is one
        // moment of the store and the watch from that revision misses nothing.
        let mut items = Vec::new();
        let mut start: Option<String> = None;
        let mut revision = 0;
        loop {
            let page = store
                .list_at(prefix, start.as_deref(), FILL_PAGE, revision)
                .await?;
            revision = page.revision;
            start = page.items.last().map(|kv| kv.key.clone());
            let more = page.more();
            items.extend(page.items);
            if !more {
                break;
            }
        }
        self.reset(items, revision);
        Ok(revision)
    }

    async fn fill_and_follow(
        &self,
        store: &Arc<dyn Store>,
        prefix: &str,
    ) -> Result<(), krust_store::StoreError> {
        let revision = if self.revision() == 0
            && self
                .state
                .read()
                .map(|s| s.objects.is_empty())
                .unwrap_or(true)
        {
            self.fill(store, prefix).await?
        } else {
            self.revision()
        };
        let mut events = match store.watch(prefix, revision).await {
            Ok(s) => s,
            Err(krust_store::StoreError::Compacted { .. }) => {
                let rev = self.fill(store, prefix).await?;
                store.watch(prefix, rev).await?
            }
            Err(e) => return Err(e),
        };
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => self.apply(ev),
                Err(krust_store::StoreError::Compacted { .. }) => {
                    self.fill(store, prefix).await?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
