//! The shared suite on `EtcdStore` against a real etcd started by the test (Debian's
//! `/usr/bin/etcd`; the tests fail if it is missing), plus failover across members.

use std::time::{Duration, Instant};

use bytes::Bytes;
use krust_store::suite::{EtcdCluster, Harness};
use krust_store::{EtcdStore, Store, StoreError};

async fn make() -> Harness {
    let cluster = EtcdCluster::start(1).await;
    let store = EtcdStore::connect(&cluster.endpoints())
        .await
        .expect("connect to the test etcd");
    Harness::with_guard(store, cluster)
}

krust_store::store_suite!(make());

#[test]
fn etcd_binary_is_installed() {
    let bin = krust_store::suite::etcd_binary();
    assert!(
        bin.exists(),
        "{} is missing: the etcd backend cannot be tested (apt-get install etcd-server)",
        bin.display()
    );
}

#[tokio::test]
async fn connect_to_nothing_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    match EtcdStore::connect(&[format!("http://127.0.0.1:{port}")]).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to a port nobody listens on"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

async fn write_and_read(store: &EtcdStore, key: &str) -> Result<(), StoreError> {
    let kv = match store.create(key, Bytes::from_static(b"v")).await {
        // An earlier attempt that timed out may have been applied after all.
        Err(StoreError::AlreadyExists(_)) => store
            .get(key)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))?,
        other => other?,
    };
    let got = store.get(key).await?;
    assert_eq!(got.as_ref().map(|g| g.mod_revision), Some(kv.mod_revision));
    store.list("/failover/", None, 5).await?;
    Ok(())
}

/// Three members, all three endpoints given; killing the leader moves requests to the
/// others within seconds, and after that every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_when_the_leader_dies() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = EtcdStore::connect(&cluster.endpoints())
        .await
        .expect("connect to the cluster");
    for i in 0..30 {
        write_and_read(&store, &format!("/failover/before/{i}"))
            .await
            .expect("writes before the failure");
    }
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let killed = Instant::now();

    let mut i = 0;
    let recovered = loop {
        i += 1;
        let r = tokio::time::timeout(
            Duration::from_secs(6),
            write_and_read(&store, &format!("/failover/during/{i}")),
        )
        .await;
        if matches!(r, Ok(Ok(()))) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no successful write within 20s of killing the leader (last: {r:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("first successful write+read {recovered:?} after killing member {leader}");
    assert!(
        recovered < Duration::from_secs(10),
        "recovery took {recovered:?}"
    );

    // From now on, requests must not keep landing on the dead member.
    let steady = Instant::now();
    for i in 0..100 {
        tokio::time::timeout(
            Duration::from_secs(10),
            write_and_read(&store, &format!("/failover/after/{i}")),
        )
        .await
        .expect("request after failover hung")
        .unwrap_or_else(|e| panic!("request {i} after failover failed: {e}"));
    }
    eprintln!(
        "100 write+read rounds after failover took {:?}",
        steady.elapsed()
    );
    let (before, after) = (
        store
            .list("/failover/before/", None, 0)
            .await
            .expect("list"),
        store.list("/failover/after/", None, 0).await.expect("list"),
    );
    assert_eq!(before.items.len(), 30);
    assert_eq!(after.items.len(), 100);
}

/// A dead endpoint listed first does not stop the client from using the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_endpoint_in_the_list() {
    let mut cluster = EtcdCluster::start(3).await;
    cluster.kill(0);
    let store = tokio::time::timeout(
        Duration::from_secs(20),
        EtcdStore::connect(&cluster.endpoints()),
    )
    .await
    .expect("connect hung")
    .expect("connect with one dead endpoint");
    for i in 0..50 {
        tokio::time::timeout(
            Duration::from_secs(10),
            write_and_read(&store, &format!("/failover/dead-first/{i}")),
        )
        .await
        .expect("request hung")
        .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
    }
}
