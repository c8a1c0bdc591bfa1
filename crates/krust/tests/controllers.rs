//! `krust controller-manager` end to end: the real kubectl against a server, the controller
//! manager and simulated nodes (`krust sim`), all separate processes. Pod templates name their
//! node, so no scheduler is needed.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Server, KUBECTL};
use serde_json::Value;

/// A krust child process (controller manager, sim), killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(s: &Server, sub: &str, log: &str, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(s.data_dir.join(log)).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_krust"))
        .arg(sub)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(extra)
        .env("KRUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start krust");
    Proc(child)
}

/// A server that hosts no controllers of its own (the tests run the controller manager as a
/// separate process, with their own flags); the directory lives as long as the server.
fn server() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start_in(tmp.path(), &["--disable", "controllers"]);
    (tmp, s)
}

fn controllers(s: &Server) -> Proc {
    start(s, "controller-manager", "controllers.log", &[])
}

fn sim(s: &Server, nodes: usize) -> Proc {
    start(s, "sim", "sim.log", &["--nodes", &nodes.to_string()])
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

fn items(s: &Server, args: &[&str]) -> Vec<Value> {
    get_json(s, args)
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn apply(s: &Server, manifest: &str) {
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(manifest));
}

fn deployment(name: &str, replicas: i32, image: &str, node: &str) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]}
            }
        }
    })
    .to_string()
}

fn wait(what: &str, s: &Server, secs: u64, f: impl FnMut() -> bool) {
    assert!(
        eventually(Duration::from_secs(secs), f),
        "timed out waiting for {what}; logs:\n{}",
        tail(&s.log(), 6000)
    );
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

#[test]
fn namespace_gets_a_default_service_account_and_its_deletion_empties_it() {
    let (_dir, s) = server();
    let _cm = controllers(&s);
    s.kubectl(&["create", "namespace", "doomed"]);
    wait("default service account", &s, 20, || {
        get_json(&s, &["serviceaccount", "default", "-n", "doomed"]).is_some()
    });
    s.kubectl(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    // A deleted default ServiceAccount comes back.
    s.kubectl(&["delete", "serviceaccount", "default", "-n", "doomed"]);
    wait("default service account recreated", &s, 20, || {
        get_json(&s, &["serviceaccount", "default", "-n", "doomed"]).is_some()
    });
    s.kubectl(&["delete", "namespace", "doomed", "--wait=false"]);
    wait("namespace gone", &s, 30, || {
        get_json(&s, &["namespace", "doomed"]).is_none()
    });
    assert!(items(&s, &["configmaps", "-n", "doomed"]).is_empty());
}

#[test]
fn replica_set_keeps_its_replicas_adopts_orphans_and_tells_the_story() {
    let (_dir, s) = server();
    let _cm = controllers(&s);
    // An orphan that matches is adopted rather than duplicated.
    s.kubectl(&["run", "orphan", "--image=nginx", "--labels=app=rs"]);
    let rs = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "rs", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    });
    apply(&s, &rs.to_string());
    wait("3 pods owned by the ReplicaSet", &s, 20, || {
        let pods = items(&s, &["pods", "-l", "app=rs"]);
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["name"] == "rs")
    });
    let orphan = get_json(&s, &["pod", "orphan"]).expect("orphan pod");
    assert_eq!(
        orphan["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    wait("status.replicas 3", &s, 20, || {
        get_json(&s, &["rs", "rs"])
            .is_some_and(|r| r["status"]["replicas"] == 3 && r["status"]["observedGeneration"] == 1)
    });
    // A deleted pod is replaced.
    s.kubectl(&["delete", "pod", "orphan", "--wait=false"]);
    wait("replacement", &s, 20, || {
        let pods = items(&s, &["pods", "-l", "app=rs"]);
        pods.len() == 3 && pods.iter().all(|p| p["metadata"]["name"] != "orphan")
    });
    s.kubectl(&["scale", "rs", "rs", "--replicas=1"]);
    wait("scaled down to 1", &s, 20, || {
        items(&s, &["pods", "-l", "app=rs"]).len() == 1
    });
    let described = s.kubectl(&["describe", "rs", "rs"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("SuccessfulDelete"), "{described}");
    // Relabelling a pod releases it, and a new one takes its place.
    let name = items(&s, &["pods", "-l", "app=rs"])[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    s.kubectl(&["label", "pod", &name, "app=other", "--overwrite"]);
    wait("released and replaced", &s, 20, || {
        let released = get_json(&s, &["pod", &name]).is_some_and(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
        });
        released && items(&s, &["pods", "-l", "app=rs"]).len() == 1
    });
}

/// Ready, not terminating pods by name, from `kubectl get pods -w` lines.
fn track(lines: &std::sync::mpsc::Receiver<String>, ready: &mut HashMap<String, bool>) {
    while let Ok(line) = lines.try_recv() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let rest: Vec<&str> = parts.collect();
        let deleting = rest.iter().any(|t| t.contains('T') && t.ends_with('Z'));
        let is_ready = rest.contains(&"True");
        ready.insert(name.to_string(), is_ready && !deleting);
    }
}

#[test]
fn deployment_rolls_out_within_max_unavailable_undoes_and_cascades() {
    let (_dir, s) = server();
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    wait("node", &s, 30, || !items(&s, &["nodes"]).is_empty());
    apply(&s, &deployment("web", 10, "nginx:1", "sim-0"));
    let out = s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
        None,
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = get_json(&s, &["deployment", "web"]).expect("deployment");
    assert_eq!(d["status"]["availableReplicas"], 10, "{d}");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // Watch every pod while the image changes.
    let (mut watch, lines) = s.kubectl_stream(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-w",
        "-o",
        r#"jsonpath={.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
    ]);
    let mut ready = HashMap::new();
    wait("watch sees 10 ready pods", &s, 20, || {
        track(&lines, &mut ready);
        ready.values().filter(|r| **r).count() == 10
    });
    s.kubectl(&["set", "image", "deployment/web", "c=nginx:2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut min_ready = 10;
    loop {
        track(&lines, &mut ready);
        min_ready = min_ready.min(ready.values().filter(|r| **r).count());
        let done = get_json(&s, &["deployment", "web"]).is_some_and(|d| {
            d["status"]["updatedReplicas"] == 10
                && d["status"]["availableReplicas"] == 10
                && d["status"]["replicas"] == 10
                && d["status"]["observedGeneration"] == d["metadata"]["generation"]
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {}",
            tail(&s.log(), 6000)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        min_ready >= 8,
        "only {min_ready} ready pods during the rollout"
    );
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    );
    let described = s.kubectl(&["describe", "deployment", "web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
    let history = s.kubectl(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    assert_eq!(items(&s, &["rs", "-l", "app=web"]).len(), 2);

    // Undo goes back to nginx:1 as revision 3.
    s.kubectl(&["rollout", "undo", "deployment/web"]);
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
        None,
    );
    wait("pods back on nginx:1", &s, 60, || {
        let pods = items(&s, &["pods", "-l", "app=web"]);
        pods.len() == 10
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1")
    });
    let d = get_json(&s, &["deployment", "web"]).expect("deployment");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // Deleting the Deployment removes its ReplicaSets and pods.
    s.kubectl(&["delete", "deployment", "web"]);
    wait("replica sets and pods gone", &s, 60, || {
        items(&s, &["rs", "-l", "app=web"]).is_empty()
            && items(&s, &["pods", "-l", "app=web"]).is_empty()
    });
}

#[test]
fn recreate_and_pause_and_scale() {
    let (_dir, s) = server();
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let mut d: Value =
        serde_json::from_str(&deployment("re", 3, "nginx:1", "sim-0")).expect("json");
    d["spec"]["strategy"] = serde_json::json!({"type": "Recreate"});
    apply(&s, &d.to_string());
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/re", "--timeout=60s"],
        None,
    );
    s.kubectl(&["rollout", "pause", "deployment/re"]);
    s.kubectl(&["set", "image", "deployment/re", "c=nginx:2"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        items(&s, &["rs", "-l", "app=re"]).len(),
        1,
        "paused: no new ReplicaSet"
    );
    s.kubectl(&["scale", "deployment/re", "--replicas=5"]);
    wait("paused deployment scales", &s, 30, || {
        items(&s, &["pods", "-l", "app=re"]).len() == 5
    });
    s.kubectl(&["rollout", "resume", "deployment/re"]);
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/re", "--timeout=60s"],
        None,
    );
    wait("all on nginx:2", &s, 30, || {
        let pods = items(&s, &["pods", "-l", "app=re"]);
        pods.len() == 5
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
    });
}

#[test]
fn garbage_collector_honours_foreground_and_orphan() {
    let (_dir, s) = server();
    let _cm = controllers(&s);
    let rs = |name: &str| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        })
        .to_string()
    };
    apply(&s, &rs("fg"));
    apply(&s, &rs("or"));
    wait("pods", &s, 20, || {
        items(&s, &["pods", "-l", "app=fg"]).len() == 2
            && items(&s, &["pods", "-l", "app=or"]).len() == 2
    });
    s.kubectl(&[
        "delete",
        "rs",
        "fg",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=30s",
    ]);
    assert!(items(&s, &["pods", "-l", "app=fg"]).is_empty());
    s.kubectl(&[
        "delete",
        "rs",
        "or",
        "--cascade=orphan",
        "--wait=true",
        "--timeout=30s",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let pods = items(&s, &["pods", "-l", "app=or"]);
    assert_eq!(pods.len(), 2, "orphaned pods stay");
    assert!(pods.iter().all(|p| p["metadata"]["ownerReferences"]
        .as_array()
        .is_none_or(|a| a.is_empty())));
}

#[test]
fn endpoints_and_slices_follow_the_selected_pods() {
    let (_dir, s) = server();
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let mut d: Value =
        serde_json::from_str(&deployment("api", 2, "nginx:1", "sim-0")).expect("json");
    d["spec"]["template"]["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"name": "web", "containerPort": 8080}]);
    apply(&s, &d.to_string());
    let svc = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
    });
    apply(&s, &svc.to_string());
    wait("two ready addresses on port 8080", &s, 40, || {
        get_json(&s, &["endpoints", "api"]).is_some_and(|e| {
            e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)
                && e["subsets"][0]["ports"][0]["port"] == 8080
        })
    });
    wait("a slice with two ready endpoints", &s, 20, || {
        let slices = items(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=api"],
        );
        slices.len() == 1
            && slices[0]["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|x| x["conditions"]["ready"] == true))
    });
    s.kubectl(&["scale", "deployment/api", "--replicas=1"]);
    wait("one address left", &s, 40, || {
        get_json(&s, &["endpoints", "api"]).is_some_and(|e| {
            e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(1)
                && e["subsets"][0]["notReadyAddresses"].is_null()
        })
    });
}

#[test]
fn job_with_completions_5_and_parallelism_2_completes() {
    let (_dir, s) = server();
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {
            "restartPolicy": "Never", "nodeName": "sim-0",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    apply(&s, &job.to_string());
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=complete",
            "job/pi",
            "--timeout=60s",
        ],
        None,
    );
    let j = get_json(&s, &["job", "pi"]).expect("job");
    assert_eq!(j["status"]["succeeded"], 5, "{j}");
}
