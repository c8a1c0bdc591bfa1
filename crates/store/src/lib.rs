//! The store: a revisioned key-value interface shaped like etcd v3, and its backends.
//!
//! - [`Store`] is the interface the API server uses: one global revision that every write
//!   advances, `mod_revision` compare-and-swap, reads at a revision (`list_at`), watch from
//!   a revision, compaction. No backend request grows with the data: etcd ranges are read
//!   in pages sized by bytes.
//! - `sqlite` is the embedded default (one data directory, durable before a write is
//!   acknowledged, group commit), `etcd` talks to a real etcd v3 cluster, and `memory` is
//!   the in-process fake for unit tests.
//! - `suite` is the one behavioural test suite that every backend runs (public, so that
//!   other crates can run it on their own `Store` wrappers), with an etcd test cluster helper.
//! - [`measure_fsyncs_per_second`] explains the sqlite backend's throughput: with group
//!   commit, creates/s is about (writes per commit) x (fsyncs/s), and writes per commit is
//!   bounded by the number of concurrent writers.

pub mod etcd;
mod fsync;
mod hub;
pub mod memory;
pub mod sqlite;
pub mod suite;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use etcd::{EtcdOptions, EtcdStore};
pub use fsync::measure_fsyncs_per_second;
pub use hub::HistoryLimits;
pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore};

/// A global store revision: every successful write advances it by exactly one.
pub type Revision = i64;

/// One live key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (stays the same across updates).
    pub create_revision: Revision,
    /// Revision of the last write to this key (for a delete event: the deletion's revision).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`: the new value. For `Delete`: the last value the key held, with
    /// `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
    /// The value before this change, when there was one.
    pub prev: Option<KeyValue>,
}

/// The result of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The store revision at which the read was made.
    pub revision: Revision,
    /// How many keys with the prefix follow the last returned one.
    pub remaining: u64,
}

impl ListResult {
    /// Whether more keys with the prefix follow the last returned one.
    pub fn more(&self) -> bool {
        self.remaining > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap failed: the key's mod_revision is not the expected one.
    /// `current` is the key's value now (None when it no longer exists).
    #[error("key {key} was modified (expected revision {expected})")]
    Conflict {
        key: String,
        expected: Revision,
        current: Option<Box<KeyValue>>,
    },
    /// The requested revision is older than the oldest one the store still has.
    #[error("revision {requested} has been compacted (oldest available {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A read at a revision the store has not reached yet.
    #[error("revision {requested} is a future revision (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of watch events in revision order; ends (or yields an error) when the watch breaks.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// The revisioned key-value interface, shaped like etcd v3.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Live keys starting with `prefix`, in key order, strictly after `start_after` when
    /// given, at most `limit` of them (0 = no limit).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        self.list_at(prefix, start_after, limit, 0).await
    }

    /// [`Store::list`] as the keys were at `revision` (0 = now), so that the pages of one
    /// list all show the same moment. `Compacted` when that revision's history is gone,
    /// `FutureRevision` when it has not been written yet. The result's `revision` is the one
    /// read at. However large the range, no single backend request depends on its size.
    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult>;

    /// Creates `key`; fails with `AlreadyExists` if it is live.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its mod_revision is `expected`; `NotFound` if absent, else `Conflict`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key` (only if its mod_revision is `expected`, when given) and returns the
    /// deleted value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Changes to keys starting with `prefix` with revision strictly greater than `after`,
    /// history first and then live. `Compacted` when `after` is older than the history kept.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets history at and below `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
