//! The shared suite on `MemoryStore`, plus the watch hub's lag and eviction handling.

use std::time::Duration;

use bytes::Bytes;
use krust_store::suite::{self, Harness};
use krust_store::{HistoryLimits, MemoryStore, Store, StoreError};

krust_store::store_suite!(async { Harness::new(MemoryStore::new()) });

/// A watcher that falls behind the broadcast catches up from the history, losing nothing.
#[tokio::test]
async fn lagging_watcher_catches_up_from_history() {
    let store = MemoryStore::with_limits(HistoryLimits {
        max_events: 10_000,
        max_bytes: 1 << 30,
        broadcast_capacity: 2,
    });
    let mut w = store.watch("/lag/", 0).await.expect("watch");
    for i in 0..500 {
        store
            .create(&format!("/lag/{i:04}"), Bytes::from_static(b"v"))
            .await
            .expect("create");
    }
    for i in 0..500 {
        let ev = suite::next_event(&mut w).await.expect("event");
        assert_eq!(ev.kv.mod_revision, i + 1);
    }
}

/// A watcher that falls behind both the broadcast and the history gets `Compacted` and
/// then its stream ends: it never silently misses events.
#[tokio::test]
async fn watcher_behind_the_history_gets_compacted() {
    let store = MemoryStore::with_limits(HistoryLimits {
        max_events: 10,
        max_bytes: 1 << 30,
        broadcast_capacity: 2,
    });
    let mut w = store.watch("/lag/", 0).await.expect("watch");
    for i in 0..100 {
        store
            .create(&format!("/lag/{i:04}"), Bytes::from_static(b"v"))
            .await
            .expect("create");
    }
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut w))
            .await
            .expect("stream item")
        {
            Some(Ok(ev)) => got.push(ev.kv.mod_revision),
            Some(Err(StoreError::Compacted { requested, oldest })) => {
                assert!(requested < oldest);
                break;
            }
            other => panic!("expected events then Compacted, got {other:?}"),
        }
    }
    // Whatever was delivered is a gap-free prefix of the history.
    assert_eq!(got, (1..=got.len() as i64).collect::<Vec<_>>());
    let end = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut w))
        .await
        .expect("stream end");
    assert!(end.is_none(), "the stream must end after Compacted");
    // A new watch from too far back is refused at once.
    suite::expect_compacted(&store, "/lag/", 5).await;
}

/// Dropping the store ends its watch streams.
#[tokio::test]
async fn dropping_the_store_ends_watches() {
    let store = MemoryStore::new();
    let mut w = store.watch("/", 0).await.expect("watch");
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut w))
        .await
        .expect("stream end");
    assert!(end.is_none());
}
