//! Several stateless API servers on one etcd cluster.

mod common;

use std::time::Duration;

use common::{wait_line, Server, KUBECTL_129};
use krust_store::suite::EtcdCluster;

fn etcd(size: usize) -> (tokio::runtime::Runtime, EtcdCluster) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = rt.block_on(EtcdCluster::start(size));
    (rt, cluster)
}

#[test]
fn a_write_through_one_server_is_seen_by_a_watch_on_another() {
    let (_rt, cluster) = etcd(1);
    let endpoints = cluster.endpoints().join(",");
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let args = ["--store", "etcd", "--etcd-endpoints", endpoints.as_str()];
    let a = Server::start_in(dir_a.path(), &args);
    // One controller manager and scheduler per cluster: the second API server hosts none.
    let b_args = [&args[..], &["--disable", "controllers,scheduler"]].concat();
    let b = Server::start_in(dir_b.path(), &b_args);

    let (mut watcher, rx) =
        b.kubectl_stream(&["get", "configmaps", "-n", "default", "-w", "-o", "name"]);
    std::thread::sleep(Duration::from_millis(500));
    a.kubectl_ok(
        KUBECTL_129,
        &["create", "configmap", "through-a", "--from-literal=k=v"],
        None,
    );
    let seen = wait_line(&rx, Duration::from_secs(10), |l| l == "configmap/through-a");
    let _ = watcher.kill();
    assert!(
        seen.is_some(),
        "server B's watch did not see a write made through server A"
    );
    // And a plain read through B sees it too.
    assert_eq!(
        b.kubectl(&["get", "configmap", "through-a", "-o", "jsonpath={.data.k}"]),
        "v"
    );
}

#[test]
fn objects_on_etcd_survive_a_server_restart() {
    let (_rt, cluster) = etcd(1);
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--store", "etcd", "--etcd-endpoints", endpoints.as_str()];
    let mut s = Server::start_in(dir.path(), &args);
    s.kubectl_ok(
        KUBECTL_129,
        &["create", "deployment", "kept", "--image=busybox"],
        None,
    );
    s.kill9();
    let s2 = Server::start_in(dir.path(), &args);
    assert_eq!(
        s2.kubectl(&["get", "deployment", "kept", "-o", "name"])
            .trim(),
        "deployment.apps/kept"
    );
}

#[test]
fn serving_continues_when_an_etcd_member_dies() {
    let (_rt, mut cluster) = etcd(3);
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_in(
        dir.path(),
        &["--store", "etcd", "--etcd-endpoints", endpoints.as_str()],
    );
    s.kubectl_ok(KUBECTL_129, &["create", "configmap", "before"], None);
    cluster.kill(0);
    // Within seconds, writes and reads go through the surviving members.
    let ok = common::eventually(Duration::from_secs(15), || {
        s.kubectl_with(
            KUBECTL_129,
            &["create", "configmap", "after", "--request-timeout=3s"],
            None,
        )
        .status
        .success()
    });
    assert!(
        ok,
        "writes did not resume after an etcd member died; log:\n{}",
        s.log()
    );
    let names = s.kubectl(&["get", "configmaps", "-o", "name"]);
    assert!(
        names.contains("configmap/before") && names.contains("configmap/after"),
        "{names}"
    );
}
