//! The watch hub shared by the in-process backends (`memory`, `sqlite`): a bounded ring of
//! recent events for watch-from-revision plus a broadcast channel for live events.
//!
//! Publishing and subscribing both happen under one mutex, so a new watcher's history
//! snapshot and its live subscription meet exactly: no gap and no duplicate. A watcher that
//! lags behind the broadcast catches up from the ring the same way, and only gets
//! `Compacted` (and its stream ends) when the ring no longer covers what it missed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream;
use tokio::sync::broadcast;

use crate::{Event, KeyValue, Revision, StoreError, WatchStream};

/// Bounds of the in-memory watch history.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// At most this many events are kept for watch-from-revision.
    pub max_events: usize,
    /// At most about this many bytes (keys and values of the events) are kept.
    pub max_bytes: usize,
    /// Capacity of the live broadcast channel, in write batches; a watcher further behind
    /// than this catches up from the history ring (or gets `Compacted`).
    pub broadcast_capacity: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_bytes: 256 << 20,
            broadcast_capacity: 4096,
        }
    }
}

/// Events of one write batch, in revision order.
type Batch = Arc<Vec<Arc<Event>>>;

struct HubInner {
    ring: VecDeque<Arc<Event>>,
    bytes: usize,
    /// History at and below this revision is gone: `watch(after)` needs `after >= floor`.
    floor: Revision,
    /// None once the store has shut down.
    tx: Option<broadcast::Sender<Batch>>,
}

pub(crate) struct Hub {
    limits: HistoryLimits,
    inner: Mutex<HubInner>,
}

fn event_bytes(e: &Event) -> usize {
    // Counts the event's own key and value, plus the previous value when there is one;
    // values are usually shared with the live map, so this overestimates memory use.
    64 + e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len())
}

fn lock(m: &Mutex<HubInner>) -> MutexGuard<'_, HubInner> {
    // A panic while holding the lock cannot leave the ring inconsistent in a way that
    // matters more than stopping every watcher, so keep going with the data as is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub whose history starts after `floor` (the store's revision when it opened).
    pub(crate) fn new(limits: HistoryLimits, floor: Revision) -> Self {
        let (tx, _) = broadcast::channel(limits.broadcast_capacity.max(1));
        Self {
            limits,
            inner: Mutex::new(HubInner {
                ring: VecDeque::new(),
                bytes: 0,
                floor,
                tx: Some(tx),
            }),
        }
    }

    /// Records and broadcasts the events of one committed batch (in revision order).
    pub(crate) fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut inner = lock(&self.inner);
        for e in &batch {
            inner.bytes += event_bytes(e);
            inner.ring.push_back(e.clone());
        }
        while inner.ring.len() > self.limits.max_events
            || (inner.bytes > self.limits.max_bytes && inner.ring.len() > 1)
        {
            let Some(old) = inner.ring.pop_front() else {
                break;
            };
            inner.bytes = inner.bytes.saturating_sub(event_bytes(&old));
            inner.floor = inner.floor.max(old.kv.mod_revision);
        }
        if let Some(tx) = &inner.tx {
            // An error only means nobody is watching right now.
            let _ = tx.send(Arc::new(batch));
        }
    }

    /// Forgets history at and below `revision`.
    pub(crate) fn compact(&self, revision: Revision) {
        let mut inner = lock(&self.inner);
        inner.floor = inner.floor.max(revision);
        while inner
            .ring
            .front()
            .is_some_and(|e| e.kv.mod_revision <= revision)
        {
            if let Some(old) = inner.ring.pop_front() {
                inner.bytes = inner.bytes.saturating_sub(event_bytes(&old));
            }
        }
    }

    /// For each key under `prefix` after `start_after` that changed after `revision`, its
    /// state at `revision` (None: absent then). The caller holds the lock of the live map at
    /// the newest published revision, so the ring ends where that map is.
    pub(crate) fn rewind(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        revision: Revision,
    ) -> crate::Result<BTreeMap<String, Option<KeyValue>>> {
        let inner = lock(&self.inner);
        if revision < inner.floor {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest: inner.floor,
            });
        }
        let start = inner
            .ring
            .partition_point(|e| e.kv.mod_revision <= revision);
        let mut before = BTreeMap::new();
        for e in inner.ring.range(start..) {
            let key = &e.kv.key;
            if !key.starts_with(prefix) || start_after.is_some_and(|s| key.as_str() <= s) {
                continue;
            }
            // The first change after `revision` tells what the key was at `revision`.
            if !before.contains_key(key) {
                before.insert(key.clone(), e.prev.clone());
            }
        }
        Ok(before)
    }

    /// Ends every watch stream once the events already sent have been read.
    pub(crate) fn close(&self) {
        lock(&self.inner).tx = None;
    }

    /// Takes the history after `after` for `prefix` and a live subscription, atomically.
    fn snapshot(
        &self,
        prefix: &str,
        after: Revision,
    ) -> crate::Result<(
        VecDeque<Event>,
        Revision,
        Option<broadcast::Receiver<Batch>>,
    )> {
        let inner = lock(&self.inner);
        if after < inner.floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: inner.floor,
            });
        }
        let start = inner.ring.partition_point(|e| e.kv.mod_revision <= after);
        let mut history = VecDeque::new();
        let mut last = after;
        for e in inner.ring.range(start..) {
            last = e.kv.mod_revision;
            if e.kv.key.starts_with(prefix) {
                history.push_back(Event::clone(e));
            }
        }
        let rx = inner.tx.as_ref().map(broadcast::Sender::subscribe);
        Ok((history, last, rx))
    }

    /// A watch stream: history after `after`, then live events, for keys under `prefix`.
    pub(crate) fn watch(
        self: &Arc<Self>,
        prefix: &str,
        after: Revision,
    ) -> crate::Result<WatchStream> {
        let (buf, last, rx) = self.snapshot(prefix, after)?;
        let state = WatchState {
            hub: self.clone(),
            prefix: prefix.to_owned(),
            buf,
            last,
            rx,
            failed: false,
        };
        Ok(Box::pin(stream::unfold(state, WatchState::next)))
    }
}

struct WatchState {
    hub: Arc<Hub>,
    prefix: String,
    buf: VecDeque<Event>,
    /// Highest revision already looked at (delivered or filtered out).
    last: Revision,
    rx: Option<broadcast::Receiver<Batch>>,
    failed: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(crate::Result<Event>, Self)> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some((Ok(e), self));
            }
            if self.failed {
                return None;
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(batch) => {
                    for e in batch.iter() {
                        if e.kv.mod_revision <= self.last {
                            continue;
                        }
                        self.last = e.kv.mod_revision;
                        if e.kv.key.starts_with(&self.prefix) {
                            self.buf.push_back(Event::clone(e));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match self.hub.snapshot(&self.prefix, self.last) {
                        Ok((buf, last, rx)) => {
                            self.buf = buf;
                            self.last = last;
                            self.rx = rx;
                        }
                        Err(e) => {
                            self.failed = true;
                            return Some((Err(e), self));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
