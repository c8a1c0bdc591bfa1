//! `krust scheduler` end to end: a server, simulated nodes (`krust sim`) and the scheduler as
//! child processes; pods created with the real kubectl land where their constraints say, and
//! a pod that fits nowhere stays Pending with upstream's message in `kubectl describe`.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, Server};
use serde_json::{json, Value};

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(s: &Server, sub: &str, log: &str, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(s.data_dir.join(log)).expect("log file");
    Proc(
        Command::new(env!("CARGO_BIN_EXE_krust"))
            .arg(sub)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start krust"),
    )
}

/// A cluster: server, scheduler, and one `krust sim` per node group (prefix, count, flags).
struct Cluster {
    s: Server,
    _procs: Vec<Proc>,
}

fn cluster(groups: &[(&str, usize, &[&str])]) -> Cluster {
    // The standalone scheduler below is the one under test, not the one the server hosts.
    let s = Server::start_args(&["--disable", "scheduler"]);
    let mut procs = Vec::new();
    let mut total = 0;
    for (i, (prefix, n, extra)) in groups.iter().enumerate() {
        let count = n.to_string();
        let mut args = vec![
            "--nodes",
            &count,
            "--name-prefix",
            prefix,
            "--cpu",
            "4",
            "--memory",
            "8Gi",
        ];
        args.extend_from_slice(extra);
        procs.push(spawn(&s, "sim", &format!("sim-{i}.log"), &args));
        total += n;
    }
    procs.push(spawn(&s, "scheduler", "scheduler.log", &[]));
    let ok = eventually(Duration::from_secs(30), || {
        s.kubectl(&["get", "nodes", "-o", "name"]).lines().count() == total
    });
    assert!(ok, "nodes did not register; log:\n{}", s.log());
    Cluster { s, _procs: procs }
}

fn create_pod(s: &Server, name: &str, labels: Value, spec: Value) {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.9",
        "resources": spec.get("requests").map(|r| json!({"requests": r})).unwrap_or(json!({}))}]);
    if let Some(o) = spec.as_object_mut() {
        o.remove("requests");
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec});
    s.kubectl_ok(
        common::KUBECTL,
        &["create", "-f", "-"],
        Some(&pod.to_string()),
    );
}

fn node_of(s: &Server, pod: &str) -> Option<String> {
    let out = s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
    let n = out.trim().to_string();
    (!n.is_empty()).then_some(n)
}

fn wait_node(c: &Cluster, pod: &str) -> String {
    let mut node = None;
    let ok = eventually(Duration::from_secs(30), || {
        node = node_of(&c.s, pod);
        node.is_some()
    });
    assert!(ok, "pod {pod} was not scheduled; log:\n{}", c.s.log());
    node.unwrap_or_default()
}

#[test]
fn node_selector_and_node_affinity() {
    let c = cluster(&[
        ("hdd-", 2, &["--labels", "disk=hdd"]),
        ("ssd-", 1, &["--labels", "disk=ssd,tier=gold"]),
    ]);
    create_pod(
        &c.s,
        "sel",
        json!({}),
        json!({"nodeSelector": {"disk": "ssd"}}),
    );
    assert_eq!(wait_node(&c, "sel"), "ssd-0");
    create_pod(
        &c.s,
        "req",
        json!({}),
        json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}),
    );
    assert!(wait_node(&c, "req").starts_with("hdd-"));
    for i in 0..3 {
        let name = format!("pref-{i}");
        create_pod(
            &c.s,
            &name,
            json!({}),
            json!({"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}}]}}}),
        );
        assert_eq!(wait_node(&c, &name), "ssd-0");
    }
}

#[test]
fn taints_and_tolerations() {
    let c = cluster(&[
        ("gpu-", 1, &["--taints", "dedicated=gpu:NoSchedule"]),
        ("cpu-", 1, &[]),
    ]);
    for i in 0..4 {
        let name = format!("plain-{i}");
        create_pod(&c.s, &name, json!({}), json!({}));
        assert_eq!(wait_node(&c, &name), "cpu-0");
    }
    create_pod(
        &c.s,
        "tolerant",
        json!({}),
        json!({
        "nodeSelector": {"kubernetes.io/hostname": "gpu-0"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    );
    assert_eq!(wait_node(&c, "tolerant"), "gpu-0");
}

#[test]
fn anti_affinity_spreads_replicas_over_nodes() {
    let c = cluster(&[("n-", 3, &[])]);
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..3 {
        create_pod(
            &c.s,
            &format!("web-{i}"),
            json!({"app": "web"}),
            anti.clone(),
        );
    }
    let nodes: HashSet<String> = (0..3).map(|i| wait_node(&c, &format!("web-{i}"))).collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    create_pod(&c.s, "web-3", json!({"app": "web"}), anti);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&c.s, "web-3"), None);
    let ok = eventually(Duration::from_secs(20), || {
        c.s.kubectl(&["describe", "pod", "web-3"])
            .contains("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.")
    });
    assert!(ok, "{}", c.s.kubectl(&["describe", "pod", "web-3"]));
    // a deleted replica frees its node and the pending one takes it
    c.s.kubectl(&["delete", "pod", "web-0", "--wait=false"]);
    wait_node(&c, "web-3");
}

#[test]
fn too_big_pod_stays_pending_with_upstream_message() {
    let c = cluster(&[
        ("small-", 3, &[]),
        ("tainted-", 2, &["--taints", "dedicated=gpu:NoSchedule"]),
    ]);
    create_pod(&c.s, "big", json!({}), json!({"requests": {"cpu": "64"}}));
    let want = "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu. \
                preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.";
    let mut described = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        described = c.s.kubectl(&["describe", "pod", "big"]);
        described.contains("FailedScheduling") && described.replace('\n', " ").contains(want)
    });
    assert!(ok, "{described}\nlog:\n{}", c.s.log());
    let pod: Value =
        serde_json::from_str(&c.s.kubectl(&["get", "pod", "big", "-o", "json"])).expect("json");
    assert_eq!(pod["status"]["phase"], "Pending");
    let cond = pod["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .expect("PodScheduled condition");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], want);
    assert_eq!(node_of(&c.s, "big"), None);
}

#[test]
fn higher_priority_pod_preempts() {
    let c = cluster(&[("p-", 1, &[])]);
    for (name, value) in [("low", 10), ("high", 1000)] {
        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        c.s.kubectl_ok(
            common::KUBECTL,
            &["create", "-f", "-"],
            Some(&pc.to_string()),
        );
    }
    create_pod(
        &c.s,
        "victim",
        json!({}),
        json!({"priorityClassName": "low", "requests": {"cpu": "3"}}),
    );
    assert_eq!(wait_node(&c, "victim"), "p-0");
    create_pod(
        &c.s,
        "vip",
        json!({}),
        json!({"priorityClassName": "high", "requests": {"cpu": "3"}}),
    );
    assert_eq!(wait_node(&c, "vip"), "p-0");
    let gone = eventually(Duration::from_secs(30), || {
        !c.s.kubectl(&["get", "pods", "-o", "name"])
            .contains("pod/victim")
    });
    assert!(gone, "victim was not evicted");
}

fn create(s: &Server, obj: Value) {
    s.kubectl_ok(
        common::KUBECTL,
        &["create", "-f", "-"],
        Some(&obj.to_string()),
    );
}

#[test]
fn pod_affinity_namespace_selector() {
    let c = cluster(&[("n-", 3, &[])]);
    create(
        &c.s,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team-a", "labels": {"team": "a"}}}),
    );
    create(
        &c.s,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "db", "namespace": "team-a", "labels": {"app": "db"}},
               "spec": {"nodeName": "n-2", "containers": [{"name": "c", "image": "busybox"}]}}),
    );
    let term = |team: &str| {
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}},
             "namespaceSelector": {"matchLabels": {"team": team}},
             "topologyKey": "kubernetes.io/hostname"}]}}})
    };
    create_pod(&c.s, "near-db", json!({}), term("a"));
    assert_eq!(wait_node(&c, "near-db"), "n-2");
    // no namespace labelled team=b holds such a pod: unschedulable until one is labelled so
    create_pod(&c.s, "waits", json!({}), term("b"));
    let ok = eventually(Duration::from_secs(20), || {
        c.s.kubectl(&["describe", "pod", "waits"])
            .contains("3 node(s) didn't match pod affinity rules")
    });
    assert!(ok, "{}", c.s.kubectl(&["describe", "pod", "waits"]));
    c.s.kubectl_ok(
        common::KUBECTL,
        &["label", "namespace", "team-a", "team=b", "--overwrite"],
        None,
    );
    assert_eq!(wait_node(&c, "waits"), "n-2");
}

#[test]
fn preemption_spares_pods_a_disruption_budget_guards() {
    let c = cluster(&[("p-", 2, &[])]);
    for (name, value) in [("low", 10), ("mid", 100), ("high", 1000)] {
        create(
            &c.s,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": name}, "value": value}),
        );
    }
    // the cheapest victim is guarded by a budget that allows no disruption
    for (name, app, class, node) in [
        ("guarded", "db", "low", "p-0"),
        ("spare", "web", "mid", "p-1"),
    ] {
        create(
            &c.s,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                   "spec": {"nodeName": node, "priorityClassName": class,
                            "containers": [{"name": "c", "image": "busybox",
                                            "resources": {"requests": {"cpu": "3"}}}]}}),
        );
    }
    create(
        &c.s,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "db", "namespace": "default"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}),
    );
    // the disruption controller sees the guarded pod healthy and allows no disruption
    let mut table = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        table = c.s.kubectl(&["get", "pdb", "db"]);
        let status = c.s.kubectl(&[
            "get",
            "pdb",
            "db",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ]);
        status.trim() == "1/0"
    });
    assert!(ok, "{table}\n{}", c.s.log());
    assert!(
        table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"),
        "{table}"
    );
    create_pod(
        &c.s,
        "vip",
        json!({}),
        json!({"priorityClassName": "high", "requests": {"cpu": "3"}}),
    );
    assert_eq!(wait_node(&c, "vip"), "p-1");
    let pods = c.s.kubectl(&["get", "pods", "-o", "name"]);
    assert!(pods.contains("pod/guarded"), "{pods}");
    assert!(!pods.contains("pod/spare"), "{pods}");
}

#[test]
fn invalid_disruption_budget_is_refused() {
    let s = Server::start_args(&["--disable", "scheduler"]);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "both", "namespace": "default"},
        "spec": {"minAvailable": 1, "maxUnavailable": "150%", "selector": {"matchLabels": {"a": "b"}}}});
    let err = s.kubectl_err(&["create", "-f", "-"], Some(&pdb.to_string()));
    assert!(
        err.contains("minAvailable and maxUnavailable cannot be both set")
            && err.contains("must not be greater than 100%"),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "pdb", "-o", "name"]).contains("both"));
}
