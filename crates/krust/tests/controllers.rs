//! `krust controller-manager` end to end: the real kubectl against a server, the controller
//! manager and simulated nodes (`krust sim`), all separate processes. Most pod templates name
//! their node; the tests of StatefulSets, DaemonSets, Jobs and node failure run `krust
//! scheduler` too.

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
    let s = Server::start_in(tmp.path(), &["--disable", "controllers,scheduler"]);
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

/// activeDeadlineSeconds fails a Job whose pods run too long (and stops them);
/// ttlSecondsAfterFinished deletes a finished Job with its pods.
#[test]
fn job_deadline_fails_it_and_ttl_deletes_it() {
    let (_dir, s) = server();
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let slow = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2,
            "template": {
                "metadata": {"annotations": {"krust.dev/sim-run-seconds": "120"}},
                "spec": {"restartPolicy": "Never", "nodeName": "sim-0",
                    "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    apply(&s, &slow.to_string());
    let quick = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "quick", "namespace": "default"},
        "spec": {"ttlSecondsAfterFinished": 1, "template": {"spec": {
            "restartPolicy": "Never", "nodeName": "sim-0",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    apply(&s, &quick.to_string());
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=failed",
            "job/slow",
            "--timeout=60s",
        ],
        None,
    );
    let j = get_json(&s, &["job", "slow"]).expect("job");
    let failed = j["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Failed").cloned())
        .unwrap_or_default();
    assert_eq!(failed["reason"], "DeadlineExceeded", "{j}");
    wait("the failed job's pods stopped", &s, 30, || {
        items(&s, &["pods", "-l", "job-name=slow"])
            .iter()
            .all(|p| !p["metadata"]["deletionTimestamp"].is_null())
    });
    wait("the finished job deleted after its TTL", &s, 60, || {
        get_json(&s, &["job", "quick"]).is_none()
            && items(&s, &["pods", "-l", "job-name=quick"]).is_empty()
    });
}

fn sim_with(s: &Server, log: &str, args: &[&str]) -> Proc {
    start(s, "sim", log, args)
}

/// The scheduler, for the tests whose pods do not name their node.
fn scheduler(s: &Server) -> Proc {
    start(s, "scheduler", "scheduler.log", &[])
}

/// The node each pod of `selector` runs on.
fn pod_nodes(s: &Server, selector: &str) -> Vec<String> {
    items(s, &["pods", "-l", selector])
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn stateful_set_creates_web_0_1_2_in_order_then_rolls_and_scales_down() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    wait("node", &s, 30, || !items(&s, &["nodes"]).is_empty());
    let (mut watch, lines) = s.kubectl_stream(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-w",
        "-o",
        r#"jsonpath={.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
    ]);
    let sts = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3, "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    });
    // As upstream, pods wait for their claims to bind: one volume per replica.
    for i in 0..3 {
        let pv = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("www-pv-{i}")},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": format!("/tmp/krust-sts-www-{i}")}}
        });
        apply(&s, &pv.to_string());
    }
    apply(&s, &sts.to_string());
    let out = s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "statefulset/web", "--timeout=90s"],
        None,
    );
    assert!(
        out.contains("3 pods ready") || out.contains("complete"),
        "{out}"
    );
    // Order: web-N first appears only after web-(N-1) was seen Ready.
    let mut seen: Vec<String> = Vec::new();
    wait("watch lines for web-2", &s, 20, || {
        while let Ok(l) = lines.try_recv() {
            seen.push(l);
        }
        seen.iter().any(|l| l.starts_with("web-2 "))
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let first = |name: &str| {
        seen.iter()
            .position(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or(usize::MAX)
    };
    let first_ready = |name: &str| {
        seen.iter()
            .position(|l| l.split_whitespace().next() == Some(name) && l.ends_with("True"))
            .unwrap_or(usize::MAX)
    };
    assert!(first_ready("web-0") < first("web-1"), "{seen:#?}");
    assert!(first_ready("web-1") < first("web-2"), "{seen:#?}");
    let pvcs: Vec<String> = items(&s, &["pvc"])
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    for n in ["www-web-0", "www-web-1", "www-web-2"] {
        assert!(pvcs.contains(&n.to_string()), "{pvcs:?}");
    }
    let p = get_json(&s, &["pod", "web-1"]).expect("web-1");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(p["spec"]["hostname"], "web-1");
    let st = get_json(&s, &["sts", "web"]).expect("sts");
    assert_eq!(st["status"]["readyReplicas"], 3, "{st}");
    assert_eq!(
        st["status"]["currentRevision"],
        st["status"]["updateRevision"]
    );
    let rev1 = st["status"]["updateRevision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        p["metadata"]["labels"]["controller-revision-hash"],
        rev1.as_str()
    );

    // A new image rolls through every pod, highest ordinal first.
    s.kubectl(&["set", "image", "statefulset/web", "c=nginx:2"]);
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "statefulset/web", "--timeout=90s"],
        None,
    );
    wait("every pod on nginx:2", &s, 30, || {
        let pods = items(&s, &["pods", "-l", "app=web"]);
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
    });
    let st = get_json(&s, &["sts", "web"]).expect("sts");
    assert_ne!(st["status"]["updateRevision"], rev1.as_str());
    assert_eq!(items(&s, &["controllerrevisions"]).len(), 2);
    let history = s.kubectl(&["rollout", "history", "statefulset/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Scale down removes the highest ordinals.
    s.kubectl(&["scale", "statefulset/web", "--replicas=1"]);
    wait("only web-0 left", &s, 60, || {
        let pods = items(&s, &["pods", "-l", "app=web"]);
        pods.len() == 1 && pods[0]["metadata"]["name"] == "web-0"
    });
    let described = s.kubectl(&["describe", "sts", "web"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("SuccessfulDelete"), "{described}");
}

#[test]
fn daemon_set_covers_every_node_follows_a_new_one_and_rolls() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _sim = sim(&s, 2);
    let _cm = controllers(&s);
    wait("two nodes", &s, 30, || items(&s, &["nodes"]).len() == 2);
    let ds = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}
        }
    });
    apply(&s, &ds.to_string());
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
        None,
    );
    let mut nodes = pod_nodes(&s, "app=agent");
    nodes.sort();
    assert_eq!(nodes, ["sim-0", "sim-1"]);
    let p = &items(&s, &["pods", "-l", "app=agent"])[0];
    assert_eq!(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["key"],
        "metadata.name"
    );

    // A node that joins gets its pod.
    let _extra = sim_with(
        &s,
        "sim-extra.log",
        &["--nodes", "1", "--name-prefix", "extra-"],
    );
    wait("a pod on the new node", &s, 60, || {
        let mut n = pod_nodes(&s, "app=agent");
        n.sort();
        n == ["extra-0", "sim-0", "sim-1"]
    });
    wait("status counts three", &s, 30, || {
        get_json(&s, &["ds", "agent"]).is_some_and(|d| {
            d["status"]["desiredNumberScheduled"] == 3 && d["status"]["numberAvailable"] == 3
        })
    });

    // A new template rolls node by node.
    s.kubectl(&["set", "image", "daemonset/agent", "c=agent:2"]);
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "daemonset/agent", "--timeout=90s"],
        None,
    );
    wait("all on agent:2", &s, 30, || {
        let pods: Vec<Value> = items(&s, &["pods", "-l", "app=agent"])
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "agent:2")
    });

    // A NoExecute taint the pods do not tolerate takes the node out.
    s.kubectl(&["taint", "nodes", "sim-1", "dedicated=db:NoExecute"]);
    wait("pod gone from the tainted node", &s, 60, || {
        let mut n = pod_nodes(&s, "app=agent");
        n.sort();
        n == ["extra-0", "sim-0"]
    });
    wait("desired 2", &s, 30, || {
        get_json(&s, &["ds", "agent"]).is_some_and(|d| d["status"]["desiredNumberScheduled"] == 2)
    });
}

#[test]
fn cron_job_fires_and_kubectl_creates_a_job_from_it() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let cj = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {
            "schedule": "*/1 * * * *",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 2,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}
        }
    });
    apply(&s, &cj.to_string());
    // kubectl create job --from=cronjob is the API server and kubectl alone.
    s.kubectl(&["create", "job", "manual", "--from=cronjob/hello"]);
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=complete",
            "job/manual",
            "--timeout=60s",
        ],
        None,
    );
    // The schedule fires within a minute (plus slack for a loaded machine).
    let mut fired = String::new();
    wait("a scheduled job", &s, 80, || {
        let jobs = items(&s, &["jobs"]);
        if let Some(j) = jobs.iter().find(|j| {
            j["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix("hello-"))
                .is_some_and(|n| n.parse::<u64>().is_ok())
        }) {
            fired = j["metadata"]["name"].as_str().unwrap_or("").to_string();
            return true;
        }
        false
    });
    let minutes: u64 = fired
        .strip_prefix("hello-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let now_min = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0);
    assert!(now_min.abs_diff(minutes) <= 2, "{fired} vs now {now_min}");
    let j = get_json(&s, &["job", &fired]).expect("job");
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert!(
        j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].is_string()
    );
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=complete",
            &format!("job/{fired}"),
            "--timeout=60s",
        ],
        None,
    );
    wait("cron job status", &s, 30, || {
        get_json(&s, &["cronjob", "hello"]).is_some_and(|c| {
            c["status"]["lastScheduleTime"].is_string()
                && c["status"]["lastSuccessfulTime"].is_string()
                && c["status"]["active"].is_null()
        })
    });
    let described = s.kubectl(&["describe", "cronjob", "hello"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
}

#[test]
fn indexed_job_completes_every_index() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _sim = sim(&s, 1);
    let _cm = controllers(&s);
    let job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "idx", "namespace": "default"},
        "spec": {"completions": 4, "parallelism": 2, "completionMode": "Indexed",
                 "template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    apply(&s, &job.to_string());
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=complete",
            "job/idx",
            "--timeout=60s",
        ],
        None,
    );
    let j = get_json(&s, &["job", "idx"]).expect("job");
    assert_eq!(j["status"]["completedIndexes"], "0-3", "{j}");
    assert_eq!(j["status"]["succeeded"], 4, "{j}");
    let mut indexes: Vec<String> = items(&s, &["pods", "-l", "job-name=idx"])
        .iter()
        .filter_map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .map(String::from)
        })
        .collect();
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes, ["0", "1", "2", "3"]);
}

#[test]
fn a_silent_node_is_tainted_and_its_pods_are_recreated_elsewhere() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _cm = start(
        &s,
        "controller-manager",
        "controllers.log",
        &["--node-monitor-grace-period", "5s"],
    );
    let mut victim = sim_with(
        &s,
        "sim-victim.log",
        &[
            "--nodes",
            "1",
            "--name-prefix",
            "victim-",
            "--lease-renew-seconds",
            "1",
        ],
    );
    wait("victim node", &s, 30, || items(&s, &["nodes"]).len() == 1);
    let mut d: Value =
        serde_json::from_str(&deployment("survivor", 4, "nginx:1", "")).expect("json");
    d["spec"]["template"]["spec"]
        .as_object_mut()
        .map(|m| m.remove("nodeName"));
    d["spec"]["template"]["spec"]["tolerations"] = serde_json::json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
    ]);
    apply(&s, &d.to_string());
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/survivor", "--timeout=60s"],
        None,
    );
    assert!(pod_nodes(&s, "app=survivor")
        .iter()
        .all(|n| n == "victim-0"));
    // Admission gave the pods the not-ready toleration they lacked (300 s).
    let p = &items(&s, &["pods", "-l", "app=survivor"])[0];
    let tols = p["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tols.iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["tolerationSeconds"] == 300),
        "{tols:?}"
    );
    assert!(tols
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 2));

    let _stable = sim_with(
        &s,
        "sim-stable.log",
        &[
            "--nodes",
            "1",
            "--name-prefix",
            "stable-",
            "--lease-renew-seconds",
            "1",
        ],
    );
    wait("stable node ready", &s, 30, || {
        get_json(&s, &["node", "stable-0"]).is_some_and(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    });
    // Stop the victim's heartbeats.
    let _ = victim.0.kill();
    let _ = victim.0.wait();
    let t0 = Instant::now();
    wait("victim marked unreachable", &s, 30, || {
        get_json(&s, &["node", "victim-0"]).is_some_and(|n| {
            let ready_unknown = n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
            });
            let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                })
            });
            ready_unknown && tainted
        })
    });
    wait("pods recreated on the stable node", &s, 60, || {
        let nodes = pod_nodes(&s, "app=survivor");
        nodes.len() == 4 && nodes.iter().all(|n| n == "stable-0")
    });
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/survivor", "--timeout=60s"],
        None,
    );
    eprintln!(
        "pods back on another node {:.1} s after the heartbeats stopped (grace 5 s + toleration 2 s)",
        t0.elapsed().as_secs_f64()
    );
    // The evicted pods stay Terminating: no kubelet finishes them.
    let on_victim = |s: &Server| {
        items(s, &["pods", "-l", "app=survivor"])
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "victim-0")
            .count()
    };
    assert_eq!(on_victim(&s), 4, "evicted pods should still be Terminating");
    // Declaring the node out of service (non-graceful node shutdown) lets the pod garbage
    // collector force-delete them on its next pass (every 20 s).
    s.kubectl_ok(
        KUBECTL,
        &[
            "taint",
            "node",
            "victim-0",
            "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
        ],
        None,
    );
    wait("terminating pods collected", &s, 45, || on_victim(&s) == 0);
}

#[test]
fn drain_moves_a_deployment_and_cordon_taints_the_node() {
    let (_dir, s) = server();
    let _sched = scheduler(&s);
    let _sim = sim(&s, 2);
    let _cm = controllers(&s);
    wait("two nodes with pod CIDRs", &s, 30, || {
        let nodes = items(&s, &["nodes"]);
        let mut cidrs: Vec<&str> = nodes
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str())
            .collect();
        cidrs.sort();
        cidrs.dedup();
        nodes.len() == 2
            && cidrs.len() == 2
            && cidrs
                .iter()
                .all(|c| c.starts_with("10.42.") && c.ends_with(".0/24"))
    });
    let ds = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "logs", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "logs"}},
                 "template": {"metadata": {"labels": {"app": "logs"}},
                              "spec": {"containers": [{"name": "c", "image": "logs:1"}]}}}
    });
    apply(&s, &ds.to_string());
    let mut d: Value = serde_json::from_str(&deployment("moving", 4, "nginx:1", "")).expect("json");
    d["spec"]["template"]["spec"]
        .as_object_mut()
        .map(|m| m.remove("nodeName"));
    apply(&s, &d.to_string());
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/moving", "--timeout=60s"],
        None,
    );
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "daemonset/logs", "--timeout=60s"],
        None,
    );
    // A budget of one disruption at a time: drain's evictions take turns (429 meanwhile).
    let pdb = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "moving", "namespace": "default"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "moving"}}}
    });
    apply(&s, &pdb.to_string());
    wait("budget allows one disruption", &s, 30, || {
        get_json(&s, &["pdb", "moving"]).is_some_and(|p| p["status"]["disruptionsAllowed"] == 1)
    });
    let victim = pod_nodes(&s, "app=moving")
        .first()
        .cloned()
        .unwrap_or_else(|| "sim-0".to_string());
    let other = if victim == "sim-0" { "sim-1" } else { "sim-0" };
    let out = s.kubectl_ok(
        KUBECTL,
        &[
            "drain",
            &victim,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=90s",
        ],
        None,
    );
    assert!(out.contains("drained"), "{out}");
    wait("deployment pods all on the other node", &s, 60, || {
        let nodes = pod_nodes(&s, "app=moving");
        nodes.len() == 4 && nodes.iter().all(|n| n == other)
    });
    s.kubectl_ok(
        KUBECTL,
        &["rollout", "status", "deployment/moving", "--timeout=60s"],
        None,
    );
    // The daemon pod stays, the node is cordoned and tainted.
    assert!(pod_nodes(&s, "app=logs").contains(&victim));
    wait("unschedulable taint", &s, 30, || {
        get_json(&s, &["node", &victim]).is_some_and(|n| {
            n["spec"]["unschedulable"] == true
                && n["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
                })
        })
    });
    // A budget that allows nothing: draining the other node is refused.
    let mut strict = pdb.clone();
    strict["spec"] =
        serde_json::json!({"minAvailable": 4, "selector": {"matchLabels": {"app": "moving"}}});
    apply(&s, &strict.to_string());
    wait("budget allows nothing", &s, 30, || {
        get_json(&s, &["pdb", "moving"]).is_some_and(|p| {
            p["status"]["disruptionsAllowed"] == 0 && p["status"]["observedGeneration"] == 2
        })
    });
    let out = s.kubectl_with(
        KUBECTL,
        &["drain", other, "--ignore-daemonsets", "--timeout=8s"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disruption budget"), "{err}");
    assert_eq!(pod_nodes(&s, "app=moving").len(), 4);
    s.kubectl(&["uncordon", other]);
    s.kubectl(&["uncordon", &victim]);
    wait("taint gone after uncordon", &s, 30, || {
        get_json(&s, &["node", &victim]).is_some_and(|n| {
            n["spec"]["taints"].as_array().is_none_or(|t| {
                !t.iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
            })
        })
    });
}
