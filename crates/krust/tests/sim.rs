//! `krust sim` end to end: simulated nodes register, stay Ready, renew their Leases, and move
//! pods through their lifecycle, as seen by the real kubectl.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Server, KUBECTL};
use serde_json::Value;

/// A `krust sim` child process, killed when dropped.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim(s: &Server, extra: &[&str]) -> Sim {
    let log = std::fs::File::create(s.data_dir.join("sim.log")).expect("sim log");
    let child = Command::new(env!("CARGO_BIN_EXE_krust"))
        .arg("sim")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start krust sim");
    Sim(child)
}

fn get_json(s: &Server, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl_with(KUBECTL, &all, None);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

fn pod_manifest(name: &str, node: &str, annotations: Value) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "busybox:1.36"}]
        }
    })
    .to_string()
}

#[test]
fn simulated_nodes_run_pods() {
    let s = Server::start();
    let sim = start_sim(&s, &["--nodes", "3", "--lease-renew-seconds", "2"]);
    let timeout = Duration::from_secs(30);

    // Three Ready nodes with the configured shape, spread over three zones (other nodes, such
    // as a server's own agent, are left out by the instance-type label).
    let mut nodes = Value::Null;
    let ready = eventually(timeout, || {
        nodes = get_json(&s, &["nodes", "-l", "node.kubernetes.io/instance-type=sim"])
            .unwrap_or(Value::Null);
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        items.len() == 3
            && items
                .iter()
                .all(|n| condition(n, "Ready").as_deref() == Some("True"))
    });
    assert!(ready, "nodes not Ready: {nodes:#}\n{}", s.log());
    let items = nodes["items"].as_array().expect("items");
    let mut zones: Vec<&str> = Vec::new();
    for n in items {
        let cap = &n["status"]["capacity"];
        assert_eq!(cap["cpu"], "32", "{n:#}");
        assert_eq!(cap["memory"], "128Gi");
        assert_eq!(cap["pods"], "110");
        assert_eq!(n["status"]["allocatable"]["cpu"], "32");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.33.0");
        assert_eq!(condition(n, "MemoryPressure").as_deref(), Some("False"));
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        zones.push(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .expect("zone"),
        );
    }
    zones.sort();
    assert_eq!(zones, ["zone-0", "zone-1", "zone-2"]);

    // A pod bound to a simulated node runs and is Ready.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_manifest("web", "sim-1", serde_json::json!({}))),
    );
    let mut pod = Value::Null;
    let running = eventually(timeout, || {
        pod = get_json(&s, &["pod", "web"]).unwrap_or(Value::Null);
        pod["status"]["phase"] == "Running" && condition(&pod, "Ready").as_deref() == Some("True")
    });
    assert!(running, "pod not running: {pod:#}\n{}", s.log());
    let st = &pod["status"];
    assert!(st["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.")));
    assert!(st["hostIP"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.")));
    assert!(st["startTime"].is_string());
    let cs = &st["containerStatuses"][0];
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["running"].is_object());
    assert!(cs["containerID"]
        .as_str()
        .is_some_and(|id| id.starts_with("sim://")));

    // A pod annotated to exit 0 succeeds.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_manifest(
            "batch",
            "sim-2",
            serde_json::json!({"krust.dev/sim-exit-code": "0", "krust.dev/sim-run-seconds": "1"}),
        )),
    );
    let mut done = Value::Null;
    let succeeded = eventually(timeout, || {
        done = get_json(&s, &["pod", "batch"]).unwrap_or(Value::Null);
        done["status"]["phase"] == "Succeeded"
    });
    assert!(succeeded, "pod did not succeed: {done:#}\n{}", s.log());
    let term = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0);
    assert_eq!(term["reason"], "Completed");

    // A deleted pod disappears (the simulated kubelet finishes the graceful delete).
    s.kubectl(&["delete", "pod", "web", "--timeout=30s"]);
    let gone = eventually(timeout, || {
        let out = s.kubectl_with(KUBECTL, &["get", "pod", "web"], None);
        String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    assert!(gone, "pod web was not deleted\n{}", s.log());

    // Leases are renewed.
    let renew_time = |s: &Server| {
        get_json(s, &["lease", "sim-0", "-n", "kube-node-lease"])
            .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_string))
    };
    let first = renew_time(&s).expect("lease sim-0");
    let lease = get_json(&s, &["lease", "sim-0", "-n", "kube-node-lease"]).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "sim-0");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let advanced = eventually(Duration::from_secs(15), || {
        renew_time(&s).is_some_and(|t| t != first)
    });
    assert!(
        advanced,
        "lease sim-0 not renewed since {first}\n{}",
        s.log()
    );

    // SIGTERM stops the simulator promptly and cleanly.
    let mut sim = sim;
    let pid = sim.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|st| st.success()));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = sim.0.try_wait().expect("wait sim") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "krust sim did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "krust sim exited with {status}\n{}",
        s.log()
    );
}

/// A bare `krust server` hosts the scheduler and the controller manager: a Deployment of
/// three replicas becomes three Running pods on simulated nodes with nothing else started.
#[test]
fn bare_server_schedules_and_runs_a_deployment() {
    let s = Server::start();
    let _sim = start_sim(&s, &["--nodes", "2"]);
    s.kubectl_ok(
        KUBECTL,
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=3",
        ],
        None,
    );
    let mut pods = Value::Null;
    let running = eventually(Duration::from_secs(60), || {
        pods = get_json(&s, &["pods", "-l", "app=web"]).unwrap_or(Value::Null);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 3
            && items.iter().all(|p| {
                p["status"]["phase"] == "Running"
                    && p["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("sim-"))
                    && condition(p, "PodScheduled").as_deref() == Some("True")
            })
    });
    assert!(running, "deployment not running: {pods:#}\n{}", s.log());
    let out = s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    );
    assert!(out.contains("successfully rolled out"), "{out}");
}
