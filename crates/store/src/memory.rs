//! `MemoryStore`: the in-process fake for unit tests. Same semantics as the durable
//! backends (one global revision, CAS, watch history, compaction), nothing persisted.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::hub::{HistoryLimits, Hub};
use crate::{
    Event, EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream,
};

struct State {
    revision: Revision,
    map: BTreeMap<String, KeyValue>,
}

/// An in-memory [`Store`]: a `BTreeMap`, a revision counter and a bounded watch history.
pub struct MemoryStore {
    state: Mutex<State>,
    hub: Arc<Hub>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0 with the default history bounds.
    pub fn new() -> Self {
        Self::with_limits(HistoryLimits::default())
    }

    /// An empty store whose watch history is bounded by `limits`.
    pub fn with_limits(limits: HistoryLimits) -> Self {
        Self {
            state: Mutex::new(State {
                revision: 0,
                map: BTreeMap::new(),
            }),
            hub: Arc::new(Hub::new(limits, 0)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}

/// Keys of `map` (the live keys at `current`) under `prefix`, strictly after `start_after`,
/// at most `limit` (0 = all), as they were at `revision` (0 = now): the hub's history after
/// `revision` is undone on the fly, so nothing is copied but the page itself.
pub(crate) fn list_map(
    map: &BTreeMap<String, KeyValue>,
    hub: &Hub,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    (revision, current): (Revision, Revision),
) -> Result<ListResult> {
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    let at = if revision == 0 { current } else { revision };
    let before = if at < current {
        hub.rewind(prefix, start_after, at)?
    } else {
        BTreeMap::new()
    };
    let lower = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let live = map
        .range::<str, _>((lower, Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter(|(k, _)| !before.contains_key(k.as_str()))
        .map(|(_, v)| v);
    let old = before.values().flatten();
    // Both are in key order and share no key: merge them.
    let mut merged = merge_by_key(live, old);
    let items: Vec<KeyValue> = match limit {
        0 => merged.by_ref().cloned().collect(),
        n => merged.by_ref().take(n).cloned().collect(),
    };
    let remaining = merged.count() as u64;
    Ok(ListResult {
        items,
        revision: at,
        remaining,
    })
}

/// Merges two key-ordered iterators of distinct keys.
fn merge_by_key<'a>(
    a: impl Iterator<Item = &'a KeyValue>,
    b: impl Iterator<Item = &'a KeyValue>,
) -> impl Iterator<Item = &'a KeyValue> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.key < x.key => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.state().map.get(key).cloned())
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let st = self.state();
        let revs = (revision, st.revision);
        list_map(&st.map, &self.hub, prefix, start_after, limit, revs)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let mut st = self.state();
        if st.map.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        st.revision += 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: st.revision,
            mod_revision: st.revision,
        };
        st.map.insert(key.to_owned(), kv.clone());
        self.hub.publish(vec![Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: None,
        }]);
        Ok(kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let mut st = self.state();
        let prev = match st.map.get(key) {
            None => return Err(StoreError::NotFound(key.to_owned())),
            Some(cur) if cur.mod_revision != expected => {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Some(Box::new(cur.clone())),
                })
            }
            Some(cur) => cur.clone(),
        };
        st.revision += 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.create_revision,
            mod_revision: st.revision,
        };
        st.map.insert(key.to_owned(), kv.clone());
        self.hub.publish(vec![Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: Some(prev),
        }]);
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let mut st = self.state();
        let prev = match st.map.get(key) {
            None => return Err(StoreError::NotFound(key.to_owned())),
            Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected: expected.unwrap_or_default(),
                    current: Some(Box::new(cur.clone())),
                })
            }
            Some(cur) => cur.clone(),
        };
        st.revision += 1;
        st.map.remove(key);
        let kv = KeyValue {
            mod_revision: st.revision,
            ..prev.clone()
        };
        self.hub.publish(vec![Event {
            kind: EventKind::Delete,
            kv: kv.clone(),
            prev: Some(prev),
        }]);
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.hub.watch(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.state().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let st = self.state();
        check_compact(revision, st.revision)?;
        self.hub.compact(revision);
        Ok(())
    }
}

/// Refuses to compact a revision that has not been written yet (as etcd does).
pub(crate) fn check_compact(revision: Revision, current: Revision) -> Result<()> {
    if revision > current {
        return Err(StoreError::Backend(format!(
            "cannot compact revision {revision}: the current revision is {current}"
        )));
    }
    Ok(())
}
