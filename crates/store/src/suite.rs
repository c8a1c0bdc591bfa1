//! The one behavioural test suite that every [`Store`] backend must pass, so that the API
//! server can rely on the same semantics whichever backend it runs on.
//!
//! Each case is a `pub async fn` taking a store that nobody else writes to while it runs
//! (revision checks assume exclusive use); [`store_suite!`](crate::store_suite) turns them
//! all into `#[tokio::test]`s for one backend. Every wait is bounded by [`WAIT`].
//! [`EtcdCluster`] starts throwaway etcd members for the etcd backend's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::{Event, EventKind, KeyValue, Store, StoreError, WatchStream};

/// Upper bound on every single wait in the suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// Instantiates every suite case as a `#[tokio::test]` for one backend.
///
/// `$make` is an expression evaluated anew in each test; it must give a future whose output
/// is a [`Harness`]. The calling crate needs `tokio` (with `macros`, `rt-multi-thread`).
///
/// ```ignore
/// krust_store::store_suite!(async { Harness::new(MemoryStore::new()) });
/// ```
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@cases $make;
            create_get_list,
            list_pagination,
            list_at_revision,
            list_larger_than_a_message,
            duplicate_create,
            update_compare_and_swap,
            delete_with_and_without_revision,
            revisions_increase_by_one,
            watch_history_then_live,
            watch_while_writing,
            watch_compacted,
            concurrent_writers
        );
    };
    (@cases $make:expr; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let harness: $crate::suite::Harness = $make.await;
                let store = harness.store.clone();
                let run = $crate::suite::$case(&*store);
                match tokio::time::timeout($crate::suite::WAIT * 6, run).await {
                    Ok(()) => {}
                    Err(_) => panic!("suite case {} timed out", stringify!($case)),
                }
                drop(store);
                drop(harness);
            }
        )+
    };
}

/// A store under test plus whatever must live as long as it (a server process, a tempdir).
pub struct Harness {
    // Declaration order is drop order: the store goes before its guard.
    pub store: Arc<dyn Store>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Harness {
    pub fn new(store: impl Store) -> Self {
        Self {
            store: Arc::new(store),
            _guard: None,
        }
    }

    /// `guard` is dropped after the store.
    pub fn with_guard(store: impl Store, guard: impl Send + Sync + 'static) -> Self {
        Self {
            store: Arc::new(store),
            _guard: Some(Box::new(guard)),
        }
    }
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn create(store: &dyn Store, key: &str, v: &str) -> KeyValue {
    bounded("create", store.create(key, val(v)))
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"))
}

async fn revision(store: &dyn Store) -> i64 {
    bounded("current_revision", store.current_revision())
        .await
        .unwrap_or_else(|e| panic!("current_revision: {e}"))
}

/// Next item of a watch stream, failing the test if none comes within [`WAIT`].
pub async fn next_event(w: &mut WatchStream) -> Result<Event, StoreError> {
    match bounded("next watch event", w.next()).await {
        Some(r) => r,
        None => panic!("watch stream ended unexpectedly"),
    }
}

async fn expect_event(w: &mut WatchStream) -> Event {
    next_event(w)
        .await
        .unwrap_or_else(|e| panic!("watch stream error: {e}"))
}

/// Live keys under `prefix`, and the revision reported.
async fn list_all(store: &dyn Store, prefix: &str) -> (Vec<KeyValue>, i64) {
    let r = bounded("list", store.list(prefix, None, 0))
        .await
        .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
    assert!(!r.more(), "unlimited list reports more");
    (r.items, r.revision)
}

/// Create, get and list: values and revisions come back, prefixes do not leak.
pub async fn create_get_list(store: &dyn Store) {
    let r0 = revision(store).await;
    let a = create(store, "/cgl/p/a", "va").await;
    assert_eq!(a.key, "/cgl/p/a");
    assert_eq!(a.value, val("va"));
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(a.mod_revision > r0);
    let b = create(store, "/cgl/p/b", "vb").await;
    create(store, "/cgl/pa/x", "other").await;
    create(store, "/cgl/o", "outside").await;

    let got = bounded("get", store.get("/cgl/p/a")).await.expect("get");
    assert_eq!(got.as_ref(), Some(&a));
    let missing = bounded("get", store.get("/cgl/p/nope")).await.expect("get");
    assert_eq!(missing, None);
    assert_eq!(
        bounded("get", store.get("/cgl/p")).await.expect("get"),
        None,
        "a prefix is not a key"
    );

    let (items, rev) = list_all(store, "/cgl/p/").await;
    assert_eq!(
        items,
        vec![a.clone(), b.clone()],
        "list must be exact and in key order"
    );
    let now = revision(store).await;
    assert_eq!(rev, now, "list reports the current revision");

    let (items, _) = list_all(store, "/cgl/pa/").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, "/cgl/pa/x");
    let (items, _) = list_all(store, "/cgl/").await;
    assert_eq!(items.len(), 4);
    let (items, _) = list_all(store, "/cgl/none/").await;
    assert!(items.is_empty());
}

/// Pagination with `start_after`, `limit` and `more`.
pub async fn list_pagination(store: &dyn Store) {
    let keys: Vec<String> = (0..7).map(|i| format!("/pg/items/k{i:02}")).collect();
    for k in &keys {
        create(store, k, k).await;
    }
    create(store, "/pg/itemsz", "neighbour").await;
    create(store, "/pg/a-before", "before").await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = bounded("list page", store.list("/pg/items/", after.as_deref(), 3))
            .await
            .expect("list page");
        assert!(page.items.len() <= 3);
        pages += 1;
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more() {
            break;
        }
        assert_eq!(page.items.len(), 3, "a page with more must be full");
        assert_eq!(page.remaining as usize, keys.len() - seen.len());
        after = page.items.last().map(|kv| kv.key.clone());
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, keys);
    assert_eq!(pages, 3);

    // A limit equal to what is left: no more.
    let page = bounded("list", store.list("/pg/items/", Some(&keys[3]), 3))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 3);
    assert!(!page.more());
    assert_eq!(page.remaining, 0);
    // start_after before the prefix starts at the beginning of the prefix.
    let page = bounded("list", store.list("/pg/items/", Some("/pg/a"), 2))
        .await
        .expect("list");
    assert_eq!(
        page.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        vec![keys[0].as_str(), keys[1].as_str()]
    );
    assert!(page.more());
    // start_after the last key: nothing.
    let page = bounded("list", store.list("/pg/items/", Some(&keys[6]), 0))
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert!(!page.more());
    // start_after a key that does not exist.
    let page = bounded("list", store.list("/pg/items/", Some("/pg/items/k03x"), 0))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.items[0].key, keys[4]);
}

/// Reads at an older revision show the keys as they were then, page after page, whatever
/// was written since; a revision not written yet or compacted away is an error.
pub async fn list_at_revision(store: &dyn Store) {
    for k in ["a", "b", "c", "e"] {
        create(store, &format!("/la/{k}"), &format!("{k}1")).await;
    }
    let then = revision(store).await;
    let b = store.get("/la/b").await.expect("get").expect("b");
    bounded(
        "update",
        store.update("/la/b", Bytes::from("b2"), b.mod_revision),
    )
    .await
    .expect("update b");
    bounded("delete", store.delete("/la/c", None))
        .await
        .expect("delete c");
    create(store, "/la/d", "d1").await;
    create(store, "/la/0", "new first").await;
    let now = revision(store).await;

    let values = |r: &crate::ListResult| -> Vec<String> {
        r.items
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .collect()
    };
    let all = bounded("list_at", store.list_at("/la/", None, 0, then))
        .await
        .expect("list at then");
    assert_eq!(values(&all), ["a1", "b1", "c1", "e1"]);
    assert_eq!(all.revision, then);
    assert!(all.items.iter().all(|kv| kv.mod_revision <= then));
    // Paged at that revision: the same keys, once each.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = bounded("page", store.list_at("/la/", after.as_deref(), 1, then))
            .await
            .expect("page at then");
        seen.extend(values(&page));
        after = page.items.last().map(|kv| kv.key.clone());
        if !page.more() {
            break;
        }
        assert!(seen.len() <= 4, "pages at a revision do not end");
    }
    assert_eq!(seen, ["a1", "b1", "c1", "e1"]);
    let latest = bounded("list_at 0", store.list_at("/la/", None, 0, 0))
        .await
        .expect("list now");
    assert_eq!(values(&latest), ["new first", "a1", "b2", "d1", "e1"]);
    assert_eq!(latest.revision, now);

    match store.list_at("/la/", None, 0, now + 10).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, now + 10),
        other => panic!("list at a future revision: expected FutureRevision, got {other:?}"),
    }
    bounded("compact", store.compact(now))
        .await
        .expect("compact");
    match store.list_at("/la/", None, 0, then).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, then),
        other => panic!("list at a compacted revision: expected Compacted, got {other:?}"),
    }
    let at_now = bounded("list at now", store.list_at("/la/", None, 0, now))
        .await
        .expect("list at the compaction revision");
    assert_eq!(values(&at_now), values(&latest));
}

/// A range far larger than one gRPC message (4 MiB by default) comes back whole, and in
/// pages at one revision.
pub async fn list_larger_than_a_message(store: &dyn Store) {
    let value = "x".repeat(300 << 10);
    let n = 30; // 9 MiB in all
    for i in 0..n {
        create(store, &format!("/big/k{i:03}"), &value).await;
    }
    let all = bounded("list", store.list("/big/", None, 0))
        .await
        .expect("list everything");
    assert_eq!(all.items.len(), n);
    assert!(!all.more());
    let page = bounded("list", store.list("/big/", None, 20))
        .await
        .expect("list a page");
    assert_eq!(page.items.len(), 20);
    assert!(page.more());
    assert_eq!(page.remaining, (n - 20) as u64);
    let rest = bounded(
        "list",
        store.list_at("/big/", Some(&page.items[19].key), 0, page.revision),
    )
    .await
    .expect("list the rest");
    assert_eq!(rest.items.len(), n - 20);
    assert!(rest.items.iter().all(|kv| kv.value.len() == value.len()));
}

/// Creating a live key fails with `AlreadyExists` and changes nothing.
pub async fn duplicate_create(store: &dyn Store) {
    let first = create(store, "/dup/a", "one").await;
    let rev = revision(store).await;
    match bounded("create", store.create("/dup/a", val("two"))).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, "/dup/a"),
        other => panic!("duplicate create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        revision(store).await,
        rev,
        "a failed create must not advance the revision"
    );
    let got = bounded("get", store.get("/dup/a")).await.expect("get");
    assert_eq!(got, Some(first));
}

/// Update with the right revision succeeds (keeping create_revision); a stale one gives
/// `Conflict` with the current value; a missing key gives `NotFound`.
pub async fn update_compare_and_swap(store: &dyn Store) {
    let a = create(store, "/cas/a", "v1").await;
    let b = bounded("update", store.update("/cas/a", val("v2"), a.mod_revision))
        .await
        .expect("update with the right revision");
    assert_eq!(b.value, val("v2"));
    assert_eq!(b.create_revision, a.create_revision);
    assert_eq!(b.mod_revision, a.mod_revision + 1);
    assert_eq!(
        bounded("get", store.get("/cas/a")).await.expect("get"),
        Some(b.clone())
    );

    let rev = revision(store).await;
    match bounded(
        "update",
        store.update("/cas/a", val("stale"), a.mod_revision),
    )
    .await
    {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!(key, "/cas/a");
            assert_eq!(expected, a.mod_revision);
            assert_eq!(current.as_deref(), Some(&b));
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    match bounded("update", store.update("/cas/missing", val("x"), 1)).await {
        Err(StoreError::NotFound(k)) => assert_eq!(k, "/cas/missing"),
        other => panic!("update of a missing key: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        revision(store).await,
        rev,
        "failed updates must not advance the revision"
    );

    let c = bounded("update", store.update("/cas/a", val("v3"), b.mod_revision))
        .await
        .expect("second update");
    assert_eq!(
        c.create_revision, a.create_revision,
        "create_revision survives updates"
    );
    assert_eq!(c.mod_revision, b.mod_revision + 1);
}

/// Delete with and without an expected revision; the deleted value comes back with the
/// deletion's revision; a recreated key gets a new create_revision.
pub async fn delete_with_and_without_revision(store: &dyn Store) {
    let a = create(store, "/del/a", "va").await;
    let d = bounded("delete", store.delete("/del/a", None))
        .await
        .expect("delete without revision");
    assert_eq!(d.key, "/del/a");
    assert_eq!(d.value, val("va"));
    assert_eq!(d.create_revision, a.create_revision);
    assert_eq!(d.mod_revision, a.mod_revision + 1);
    assert_eq!(revision(store).await, d.mod_revision);
    assert_eq!(
        bounded("get", store.get("/del/a")).await.expect("get"),
        None
    );

    let rev = revision(store).await;
    match bounded("delete", store.delete("/del/a", None)).await {
        Err(StoreError::NotFound(k)) => assert_eq!(k, "/del/a"),
        other => panic!("delete of a missing key: expected NotFound, got {other:?}"),
    }
    match bounded("delete", store.delete("/del/a", Some(d.mod_revision))).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("delete of a missing key with revision: expected NotFound, got {other:?}"),
    }

    let b = create(store, "/del/b", "vb").await;
    let b2 = bounded("update", store.update("/del/b", val("vb2"), b.mod_revision))
        .await
        .expect("update");
    let rev2 = revision(store).await;
    assert_eq!(rev2, rev + 2);
    match bounded("delete", store.delete("/del/b", Some(b.mod_revision))).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current.as_deref(), Some(&b2)),
        other => panic!("delete with a stale revision: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        revision(store).await,
        rev2,
        "failed deletes must not advance the revision"
    );
    let d2 = bounded("delete", store.delete("/del/b", Some(b2.mod_revision)))
        .await
        .expect("delete with the right revision");
    assert_eq!(d2.value, val("vb2"));
    assert_eq!(d2.mod_revision, rev2 + 1);

    let again = create(store, "/del/a", "reborn").await;
    assert_eq!(again.create_revision, again.mod_revision);
    assert!(again.create_revision > d.mod_revision);
}

/// Every successful write advances the global revision by exactly one.
pub async fn revisions_increase_by_one(store: &dyn Store) {
    let mut rev = revision(store).await;
    for i in 0..10 {
        let key = format!("/rev/k{i}");
        let kv = create(store, &key, "x").await;
        assert_eq!(kv.mod_revision, rev + 1);
        rev += 1;
        let kv = bounded("update", store.update(&key, val("y"), kv.mod_revision))
            .await
            .expect("update");
        assert_eq!(kv.mod_revision, rev + 1);
        rev += 1;
        if i % 2 == 0 {
            let kv = bounded("delete", store.delete(&key, None))
                .await
                .expect("delete");
            assert_eq!(kv.mod_revision, rev + 1);
            rev += 1;
        }
        assert_eq!(revision(store).await, rev);
    }
    let (_, listed) = list_all(store, "/rev/").await;
    assert_eq!(listed, rev);
}

fn same_event(got: &Event, kind: EventKind, kv: &KeyValue, prev: Option<&KeyValue>) {
    assert_eq!(got.kind, kind, "event kind for {}", kv.key);
    assert_eq!(&got.kv, kv, "event kv");
    assert_eq!(got.prev.as_ref(), prev, "event prev for {}", kv.key);
}

/// Watch from a past revision: history first, then live, in order, exactly once, only for
/// the prefix; delete events carry the last value and the previous one.
pub async fn watch_history_then_live(store: &dyn Store) {
    let r0 = revision(store).await;
    let a = create(store, "/w/p/a", "a1").await;
    create(store, "/w/other/x", "noise").await;
    let a2 = bounded("update", store.update("/w/p/a", val("a2"), a.mod_revision))
        .await
        .expect("update");
    let b = create(store, "/w/p/b", "b1").await;
    let del = bounded("delete", store.delete("/w/p/a", None))
        .await
        .expect("delete");

    let mut w = bounded("watch", store.watch("/w/p/", r0))
        .await
        .expect("watch");
    same_event(&expect_event(&mut w).await, EventKind::Put, &a, None);
    same_event(&expect_event(&mut w).await, EventKind::Put, &a2, Some(&a));
    same_event(&expect_event(&mut w).await, EventKind::Put, &b, None);
    let ev = expect_event(&mut w).await;
    same_event(&ev, EventKind::Delete, &del, Some(&a2));
    assert_eq!(
        ev.kv.value,
        val("a2"),
        "a delete event carries the last value"
    );

    // Live events.
    create(store, "/w/other/y", "noise").await;
    let c = create(store, "/w/p/c", "c1").await;
    let b2 = bounded("update", store.update("/w/p/b", val("b2"), b.mod_revision))
        .await
        .expect("update");
    let bdel = bounded("delete", store.delete("/w/p/b", Some(b2.mod_revision)))
        .await
        .expect("delete");
    same_event(&expect_event(&mut w).await, EventKind::Put, &c, None);
    same_event(&expect_event(&mut w).await, EventKind::Put, &b2, Some(&b));
    same_event(
        &expect_event(&mut w).await,
        EventKind::Delete,
        &bdel,
        Some(&b2),
    );
    let last = create(store, "/w/p/z-sentinel", "end").await;
    same_event(&expect_event(&mut w).await, EventKind::Put, &last, None);

    // A watch from the middle starts right after the given revision.
    let mut w2 = bounded("watch", store.watch("/w/p/", a2.mod_revision))
        .await
        .expect("watch from the middle");
    same_event(&expect_event(&mut w2).await, EventKind::Put, &b, None);
    same_event(
        &expect_event(&mut w2).await,
        EventKind::Delete,
        &del,
        Some(&a2),
    );
    same_event(&expect_event(&mut w2).await, EventKind::Put, &c, None);

    // A watch from now sees only what comes next.
    let now = revision(store).await;
    let mut w3 = bounded("watch", store.watch("/w/", now))
        .await
        .expect("watch from now");
    let x = create(store, "/w/other/z", "live").await;
    same_event(&expect_event(&mut w3).await, EventKind::Put, &x, None);
}

/// A watch opened while writes are going on sees every write after its revision exactly
/// once and in order (history and live meet without gap or duplicate).
pub async fn watch_while_writing(store: &dyn Store) {
    const N: usize = 400;
    let start = revision(store).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let writes = async {
        for i in 0..N {
            let kv = create(store, &format!("/ww/k{i:04}"), "v").await;
            let _ = tx.send(kv.mod_revision);
        }
    };
    let watches = async {
        // Open watches at several points of the write stream, from the very beginning.
        let mut streams = Vec::new();
        for at in [0, N / 4, N / 2, 3 * N / 4] {
            while let Some(rev) = rx.recv().await {
                if rev - start >= at as i64 {
                    break;
                }
            }
            streams.push(
                bounded("watch", store.watch("/ww/", start))
                    .await
                    .expect("watch"),
            );
        }
        streams
    };
    let ((), streams) = tokio::join!(writes, watches);
    for (i, mut w) in streams.into_iter().enumerate() {
        for n in 0..N {
            let ev = expect_event(&mut w).await;
            assert_eq!(ev.kind, EventKind::Put);
            assert_eq!(
                ev.kv.mod_revision,
                start + 1 + n as i64,
                "watch {i}: event {n} out of order, missing or repeated"
            );
            assert_eq!(ev.kv.key, format!("/ww/k{n:04}"));
        }
    }
}

/// After compaction, watching from before it fails with `Compacted` (from `watch` itself
/// or as the stream's first item); watching from after it works.
pub async fn watch_compacted(store: &dyn Store) {
    let mut last = None;
    for i in 0..6 {
        last = Some(create(store, &format!("/wc/k{i}"), "v").await);
    }
    let last = last.expect("created");
    let before = last.mod_revision - 5;
    bounded("compact", store.compact(last.mod_revision - 1))
        .await
        .expect("compact");
    // Compacting again (or lower) is not an error.
    bounded("compact", store.compact(last.mod_revision - 2))
        .await
        .expect("compact again");
    expect_compacted(store, "/wc/", before).await;
    expect_compacted(store, "/", before - 1).await;

    let mut w = bounded("watch", store.watch("/wc/", last.mod_revision))
        .await
        .expect("watch after the compaction");
    let next = create(store, "/wc/after", "v").await;
    same_event(&expect_event(&mut w).await, EventKind::Put, &next, None);
}

/// Asserts that a watch from `after` reports `Compacted`.
pub async fn expect_compacted(store: &dyn Store, prefix: &str, after: i64) {
    match bounded("watch", store.watch(prefix, after)).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, after);
            assert!(
                oldest > after,
                "oldest {oldest} must be above the requested {after}"
            );
        }
        Err(e) => panic!("watch from a compacted revision: expected Compacted, got {e}"),
        Ok(mut w) => match next_event(&mut w).await {
            Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, after),
            other => panic!("watch from a compacted revision: expected Compacted, got {other:?}"),
        },
    }
}

/// 16 tasks x 200 creates at once: all acknowledged, each revision used once, all listed.
pub async fn concurrent_writers(store: &dyn Store) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 200;
    let start = revision(store).await;
    let tasks = (0..TASKS).map(|t| async move {
        let mut revs = Vec::with_capacity(PER_TASK);
        for i in 0..PER_TASK {
            let key = format!("/cw/t{t:02}/k{i:04}");
            let kv = create(store, &key, &format!("{t}-{i}")).await;
            assert_eq!(kv.create_revision, kv.mod_revision);
            revs.push(kv.mod_revision);
        }
        revs
    });
    let all: Vec<i64> = futures::future::join_all(tasks).await.concat();
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), TASKS * PER_TASK, "a revision was given twice");
    let expected: BTreeSet<i64> = (start + 1..=start + (TASKS * PER_TASK) as i64).collect();
    assert_eq!(unique, expected, "revisions must be contiguous");
    let (items, rev) = list_all(store, "/cw/").await;
    assert_eq!(items.len(), TASKS * PER_TASK);
    assert_eq!(rev, start + (TASKS * PER_TASK) as i64);
    let by_key: BTreeMap<&str, &KeyValue> = items.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    for t in 0..TASKS {
        for i in [0, PER_TASK / 2, PER_TASK - 1] {
            let kv = by_key
                .get(format!("/cw/t{t:02}/k{i:04}").as_str())
                .unwrap_or_else(|| panic!("key of task {t} #{i} missing"));
            assert_eq!(kv.value, val(&format!("{t}-{i}")));
        }
    }
}

/// A throwaway etcd cluster on loopback (Debian's `/usr/bin/etcd`), killed on drop.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    dir: PathBuf,
}

struct EtcdMember {
    name: String,
    client_url: String,
    child: Option<Child>,
}

/// Where the etcd binary is looked for (`KRUST_ETCD_BIN` overrides).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("KRUST_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts `size` members and waits (bounded) until every one answers.
    ///
    /// Panics with a clear message when the etcd binary is missing: tests that need etcd
    /// must fail, not silently skip.
    pub async fn start(size: usize) -> Self {
        let bin = etcd_binary();
        assert!(
            bin.exists(),
            "etcd binary {} not found: install Debian's etcd-server package (apt-get install \
             etcd-server) or set KRUST_ETCD_BIN",
            bin.display()
        );
        let mut last_err = String::new();
        for attempt in 0..3 {
            match Self::try_start(&bin, size).await {
                Ok(c) => return c,
                Err(e) => {
                    last_err = e;
                    eprintln!("etcd start attempt {attempt} failed: {last_err}");
                }
            }
        }
        panic!("could not start etcd: {last_err}");
    }

    async fn try_start(bin: &Path, size: usize) -> Result<Self, String> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "krust-etcd-{}-{seq}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("tempdir: {e}"))?;
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("free port: {e}"))?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut cluster = Self {
            members: Vec::new(),
            dir: dir.clone(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.join(format!("{name}.log")))
                .map_err(|e| format!("log file: {e}"))?;
            let child = Command::new(bin)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("krust-test-{seq}")])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
            cluster.members.push(EtcdMember {
                name,
                client_url,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + WAIT;
        for i in 0..size {
            loop {
                let ep = vec![cluster.members[i].client_url.clone()];
                let ok = async {
                    let mut c = etcd_client::Client::connect(&ep, None).await.ok()?;
                    c.get("/ready", None).await.ok()
                };
                if tokio::time::timeout(Duration::from_secs(2), ok)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    break;
                }
                if let Some(status) = cluster.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(format!(
                        "etcd member {i} exited with {status}: {}",
                        cluster.log_tail(i)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {i} did not answer within {WAIT:?}: {}",
                        cluster.log_tail(i)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(cluster)
    }

    fn log_tail(&self, i: usize) -> String {
        let path = self.dir.join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// Client URLs of all members (including killed ones).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills member `i` with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Index of the current leader, as seen by the first live member that answers.
    pub async fn leader(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let status = async {
                let mut c = etcd_client::Client::connect([&m.client_url], None)
                    .await
                    .ok()?;
                c.status().await.ok()
            };
            if let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(2), status).await {
                let leader = s.leader();
                let mut c = etcd_client::Client::connect([&m.client_url], None)
                    .await
                    .ok()?;
                let list = tokio::time::timeout(Duration::from_secs(2), c.member_list())
                    .await
                    .ok()?
                    .ok()?;
                let member = list.members().iter().find(|x| x.id() == leader)?;
                return self.members.iter().position(|x| x.name == member.name());
            }
        }
        None
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
