//! `SqliteStore`: the embedded, durable default backend (one data directory, no server).
//!
//! Why it looks like this:
//! - Durability: SQLite in WAL mode with `synchronous=FULL`; a write is acknowledged only
//!   after its transaction's commit has been fsynced, so it survives `kill -9` and power loss.
//! - Throughput: a disk gives a few hundred fsyncs per second, far below the creates per
//!   second the API server needs, so writes use group commit. One writer thread owns the
//!   connection, drains every queued request, applies them all in one transaction (each one
//!   checked on its own: create-if-absent, compare-and-swap, delete), commits once and then
//!   answers them all and publishes their events.
//! - Reads never touch SQLite: the live keys are kept in memory (loaded at open, updated by
//!   the writer after each commit), so gets and lists cost a map lookup.
//! - One owner: the database is opened in `locking_mode=EXCLUSIVE`, so a second store on the
//!   same directory (in this or another process) fails to open instead of diverging.
//! - Watch history is in memory only (see `hub`): after a restart, watching from a revision
//!   older than the one the store opened at gives `Compacted`, and clients relist.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::hub::{HistoryLimits, Hub};
use crate::memory::{check_compact, list_map};
use crate::{
    Event, EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream,
};

/// The longest the writer waits for more requests to join a batch.
const MAX_GATHER_WAIT: Duration = Duration::from_millis(2);

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "krust.db";

/// Tuning knobs of [`SqliteStore`]; the defaults suit the API server.
#[derive(Clone, Copy, Debug)]
pub struct SqliteOptions {
    /// Bounds of the in-memory watch history.
    pub history: HistoryLimits,
    /// At most this many write requests are committed in one transaction.
    pub max_batch: usize,
    /// WAL size (in pages) after which the writer checkpoints it into the database.
    pub wal_autocheckpoint_pages: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            history: HistoryLimits::default(),
            max_batch: 4096,
            wal_autocheckpoint_pages: 4000,
        }
    }
}

struct State {
    revision: Revision,
    map: BTreeMap<String, KeyValue>,
}

/// Counters of the writer, e.g. to see how many writes each fsync carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Write requests answered (successful or not).
    pub requests: u64,
}

struct Shared {
    state: RwLock<State>,
    hub: Arc<Hub>,
    commits: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

enum Op {
    Create { value: Bytes },
    Update { value: Bytes, expected: Revision },
    Delete { expected: Option<Revision> },
}

struct Request {
    key: String,
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

/// The durable embedded [`Store`], backed by SQLite with group commit.
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
}

fn backend(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("sqlite: {context}: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` with the default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Fails with `Unavailable` when another store (in this process or another one) has the
    /// same directory open.
    pub fn open_with(dir: &Path, options: SqliteOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend(&format!("creating {}", dir.display()), e))?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| backend(&format!("opening {}", path.display()), e))?;
        let in_use = |e: rusqlite::Error| -> StoreError {
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ) {
                StoreError::Unavailable(format!(
                    "{} is in use by another store (open elsewhere in this or another process)",
                    path.display()
                ))
            } else {
                backend(&format!("initialising {}", path.display()), e)
            }
        };
        // Exclusive locking mode first: the WAL index then lives in heap memory (no -shm
        // file) and the file lock taken by the first write below is held until close.
        conn.execute_batch(&format!(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = {};
             PRAGMA journal_size_limit = 67108864;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 1073741824;",
            options.wal_autocheckpoint_pages
        ))
        .map_err(in_use)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(in_use)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend("enabling WAL", format!("journal_mode is {mode}")));
        }
        {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
                .map_err(in_use)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS kv (
                     key TEXT PRIMARY KEY NOT NULL,
                     value BLOB NOT NULL,
                     create_revision INTEGER NOT NULL,
                     mod_revision INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS meta (
                     id INTEGER PRIMARY KEY CHECK (id = 0),
                     revision INTEGER NOT NULL
                 );
                 INSERT OR IGNORE INTO meta (id, revision) VALUES (0, 0);",
            )
            .map_err(in_use)?;
            tx.commit().map_err(in_use)?;
        }
        let (revision, map) = load(&conn)?;
        let shared = Arc::new(Shared {
            state: RwLock::new(State { revision, map }),
            hub: Arc::new(Hub::new(options.history, revision)),
            commits: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            shared: shared.clone(),
            max_batch: options.max_batch.max(1),
        };
        let writer = std::thread::Builder::new()
            .name("krust-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| backend("starting the writer thread", e))?;
        tracing::debug!(dir = %dir.display(), revision, "sqlite store opened");
        Ok(Self {
            shared,
            tx: Some(tx),
            writer: Some(writer),
            dir: dir.to_owned(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.shared.read().map.len()
    }

    /// What the writer has done since the store was opened.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            requests: self.shared.requests.load(Ordering::Relaxed),
        }
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn write(&self, key: &str, op: Op) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        let stopped = || StoreError::Unavailable("sqlite store writer has stopped".into());
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request {
                key: key.to_owned(),
                op,
                reply,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; joining it
        // closes the connection, which releases the directory for the next open.
        self.tx = None;
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("sqlite store writer thread panicked");
            }
        }
        self.shared.hub.close();
    }
}

fn load(conn: &Connection) -> Result<(Revision, BTreeMap<String, KeyValue>)> {
    let revision: Revision = conn
        .query_row("SELECT revision FROM meta WHERE id = 0", [], |r| r.get(0))
        .map_err(|e| backend("reading the revision", e))?;
    let mut stmt = conn
        .prepare("SELECT key, value, create_revision, mod_revision FROM kv")
        .map_err(|e| backend("loading keys", e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(KeyValue {
                key: r.get(0)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                create_revision: r.get(2)?,
                mod_revision: r.get(3)?,
            })
        })
        .map_err(|e| backend("loading keys", e))?;
    let mut items = Vec::new();
    let mut max_rev = 0;
    for kv in rows {
        let kv = kv.map_err(|e| backend("loading keys", e))?;
        max_rev = max_rev.max(kv.mod_revision);
        items.push((kv.key.clone(), kv));
    }
    if max_rev > revision {
        return Err(backend(
            "loading keys",
            format!("a key has revision {max_rev}, above the stored revision {revision}"),
        ));
    }
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((revision, items.into_iter().collect()))
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    max_batch: usize,
}

/// What one request did inside the batch transaction.
struct Applied {
    result: Result<KeyValue>,
    event: Option<Event>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::new();
        // Size and duration of the previous commit: the clients it answered are about to
        // send their next requests, and waiting a fraction of a commit for them turns the
        // alternation of one tiny batch and one big batch into full batches.
        let mut last_size = 0usize;
        let mut last_commit = Duration::ZERO;
        while let Ok(first) = rx.recv() {
            batch.push(first);
            self.drain(&rx, &mut batch, self.max_batch);
            let want = last_size.min(self.max_batch);
            if want > 1 && batch.len() < want {
                let deadline = Instant::now() + (last_commit / 2).min(MAX_GATHER_WAIT);
                while batch.len() < want {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(r) => {
                            batch.push(r);
                            self.drain(&rx, &mut batch, want);
                        }
                        Err(_) => break,
                    }
                }
            }
            last_size = batch.len();
            let started = Instant::now();
            self.commit_batch(&mut batch);
            last_commit = started.elapsed();
        }
        // Leave a short WAL behind so that the next open starts fast.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "sqlite checkpoint at close failed");
        }
    }

    /// Moves what is already queued into `batch`, up to `max` requests in all.
    fn drain(&self, rx: &mpsc::Receiver<Request>, batch: &mut Vec<Request>, max: usize) {
        while batch.len() < max {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let outcome = self.apply(batch);
        self.shared
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match outcome {
            Ok((applied, overlay, revision)) => {
                let mut events = Vec::new();
                let mut results = Vec::with_capacity(applied.len());
                for a in applied {
                    if let Some(e) = a.event {
                        events.push(e);
                    }
                    results.push(a.result);
                }
                {
                    let mut st = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
                    for (key, kv) in overlay {
                        match kv {
                            Some(kv) => {
                                st.map.insert(key, kv);
                            }
                            None => {
                                st.map.remove(&key);
                            }
                        }
                    }
                    st.revision = revision;
                    // Published under the map's lock, so a read at an older revision always
                    // finds the history from there to the map it sees.
                    self.shared.hub.publish(events);
                }
                for (req, result) in batch.drain(..).zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite batch commit failed");
                let msg = e.to_string();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    /// Runs the batch in one transaction; on success returns each request's outcome, the
    /// final value of every touched key and the new revision.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        batch: &[Request],
    ) -> Result<(Vec<Applied>, HashMap<String, Option<KeyValue>>, Revision)> {
        let shared = self.shared.clone();
        let st = shared.read();
        let base = st.revision;
        let mut rev = base;
        let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut applied = Vec::with_capacity(batch.len());
        let tx = self
            .conn
            .transaction()
            .map_err(|e| backend("beginning a transaction", e))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO kv (key, value, create_revision, mod_revision)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET
                         value = excluded.value,
                         create_revision = excluded.create_revision,
                         mod_revision = excluded.mod_revision",
                )
                .map_err(|e| backend("preparing", e))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM kv WHERE key = ?1")
                .map_err(|e| backend("preparing", e))?;
            for req in batch {
                let key = req.key.as_str();
                let current = match overlay.get(key) {
                    Some(v) => v.clone(),
                    None => st.map.get(key).cloned(),
                };
                let next = rev + 1;
                let step: Result<(KeyValue, Event)> = match (&req.op, current) {
                    (Op::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists(key.to_owned())),
                    (Op::Create { value }, None) => {
                        let kv = KeyValue {
                            key: key.to_owned(),
                            value: value.clone(),
                            create_revision: next,
                            mod_revision: next,
                        };
                        let ev = Event {
                            kind: EventKind::Put,
                            kv: kv.clone(),
                            prev: None,
                        };
                        Ok((kv, ev))
                    }
                    (Op::Update { .. } | Op::Delete { .. }, None) => {
                        Err(StoreError::NotFound(key.to_owned()))
                    }
                    (Op::Update { expected, .. }, Some(cur)) if cur.mod_revision != *expected => {
                        Err(StoreError::Conflict {
                            key: key.to_owned(),
                            expected: *expected,
                            current: Some(Box::new(cur)),
                        })
                    }
                    (Op::Update { value, .. }, Some(cur)) => {
                        let kv = KeyValue {
                            key: key.to_owned(),
                            value: value.clone(),
                            create_revision: cur.create_revision,
                            mod_revision: next,
                        };
                        let ev = Event {
                            kind: EventKind::Put,
                            kv: kv.clone(),
                            prev: Some(cur),
                        };
                        Ok((kv, ev))
                    }
                    (Op::Delete { expected: Some(e) }, Some(cur)) if cur.mod_revision != *e => {
                        Err(StoreError::Conflict {
                            key: key.to_owned(),
                            expected: *e,
                            current: Some(Box::new(cur)),
                        })
                    }
                    (Op::Delete { .. }, Some(cur)) => {
                        let kv = KeyValue {
                            mod_revision: next,
                            ..cur.clone()
                        };
                        let ev = Event {
                            kind: EventKind::Delete,
                            kv: kv.clone(),
                            prev: Some(cur),
                        };
                        Ok((kv, ev))
                    }
                };
                match step {
                    Ok((kv, ev)) => {
                        // A failed statement may have rolled the whole transaction back, so
                        // it fails the whole batch rather than this request alone.
                        match ev.kind {
                            EventKind::Put => upsert.execute(params![
                                kv.key,
                                &kv.value[..],
                                kv.create_revision,
                                kv.mod_revision
                            ]),
                            EventKind::Delete => delete.execute(params![kv.key]),
                        }
                        .map_err(|e| backend("writing", e))?;
                        rev = next;
                        let live = (ev.kind == EventKind::Put).then(|| kv.clone());
                        overlay.insert(key.to_owned(), live);
                        applied.push(Applied {
                            result: Ok(kv),
                            event: Some(ev),
                        });
                    }
                    Err(e) => applied.push(Applied {
                        result: Err(e),
                        event: None,
                    }),
                }
            }
            if rev != base {
                tx.execute("UPDATE meta SET revision = ?1 WHERE id = 0", params![rev])
                    .map_err(|e| backend("writing the revision", e))?;
            }
        }
        drop(st);
        if rev == base {
            // Nothing changed: no need to sync anything.
            tx.rollback().map_err(|e| backend("rolling back", e))?;
        } else {
            tx.commit().map_err(|e| backend("committing", e))?;
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok((applied, overlay, rev))
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.shared.read().map.get(key).cloned())
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let st = self.shared.read();
        let revs = (revision, st.revision);
        list_map(&st.map, &self.shared.hub, prefix, start_after, limit, revs)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.write(key, Op::Create { value }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.write(key, Op::Update { value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(key, Op::Delete { expected }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.shared.hub.watch(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.read().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        check_compact(revision, self.shared.read().revision)?;
        self.shared.hub.compact(revision);
        Ok(())
    }
}
