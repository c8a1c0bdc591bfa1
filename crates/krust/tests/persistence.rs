//! Nothing acknowledged is lost: across restarts and across `kill -9`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;

#[test]
fn objects_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_in(tmp.path(), &[]);
    s.kubectl_ok(common::KUBECTL_129, &["create", "namespace", "keep"], None);
    s.kubectl_ok(
        common::KUBECTL_129,
        &[
            "create",
            "configmap",
            "c1",
            "-n",
            "keep",
            "--from-literal=k=v",
        ],
        None,
    );
    s.kubectl_ok(
        common::KUBECTL_129,
        &[
            "create",
            "deployment",
            "d1",
            "-n",
            "keep",
            "--image=busybox",
        ],
        None,
    );
    let before = s.kubectl(&["get", "configmaps,deployments", "-n", "keep", "-o", "name"]);
    s.kill9();
    let s2 = Server::start_in(tmp.path(), &[]);
    let after = s2.kubectl(&["get", "configmaps,deployments", "-n", "keep", "-o", "name"]);
    assert_eq!(before, after);
    assert!(
        after.contains("configmap/c1") && after.contains("deployment.apps/d1"),
        "{after}"
    );
    let v = s2.kubectl(&[
        "get",
        "configmap",
        "c1",
        "-n",
        "keep",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(v, "v");
    // The `kubernetes` Service keeps its cluster IP; its endpoints follow the server's new
    // port.
    let svc = s2.kubectl(&[
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
    ]);
    assert_eq!(svc, "10.43.0.1 443");
    let port = s2.url.rsplit(':').next().unwrap_or_default().to_string();
    let ep = s2.kubectl(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    ]);
    assert_eq!(ep, format!("127.0.0.1:{port}"));
    let slice = s2.kubectl(&[
        "get",
        "endpointslice",
        "kubernetes",
        "-o",
        "jsonpath={.ports[0].port}",
    ]);
    assert_eq!(slice, port);
}

/// 16 clients create ConfigMaps as fast as they can; the server is killed with SIGKILL in
/// the middle; every create that got a 201 must be there after the restart.
#[test]
fn acknowledged_creates_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_in(tmp.path(), &[]);
    let client = s.http();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (client, acked, stop, url) =
            (client.clone(), acked.clone(), stop.clone(), s.url.clone());
        workers.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let name = format!("w{w}-{i}");
                let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#);
                match client.post(format!("{url}/api/v1/namespaces/default/configmaps")).header("content-type", "application/json").body(body).send() {
                    Ok(r) if r.status().as_u16() == 201 => acked.lock().expect("lock").push(name),
                    Ok(_) => {}
                    Err(_) => return,
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 100,
        "the load must have made progress before the kill ({} acked)",
        acked.len()
    );
    let s2 = Server::start_in(tmp.path(), &[]);
    let names = s2.kubectl(&["get", "configmaps", "-n", "default", "-o", "name"]);
    let present: std::collections::HashSet<&str> = names
        .lines()
        .filter_map(|l| l.strip_prefix("configmap/"))
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
