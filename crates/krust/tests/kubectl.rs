//! The real kubectl against a freshly started `krust server`.

mod common;

use std::time::Duration;

use common::{wait_line, Server, KUBECTL_129};

const MANIFEST: &str = include_str!("../../../tests/manifests/app.yaml");

#[test]
fn create_get_list_delete_with_kubectl_129_json() {
    let s = Server::start();
    s.kubectl_ok(KUBECTL_129, &["create", "namespace", "json"], None);
    s.kubectl_ok(
        KUBECTL_129,
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "json",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ],
        None,
    );
    s.kubectl_ok(
        KUBECTL_129,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "json",
            "--image=busybox",
            "--replicas=3",
        ],
        None,
    );
    let table = s.kubectl_ok(KUBECTL_129, &["get", "configmaps", "-n", "json"], None);
    assert!(
        table.lines().next().unwrap_or("").starts_with("NAME"),
        "{table}"
    );
    assert!(table.contains("cfg"), "{table}");
    let yaml = s.kubectl_ok(
        KUBECTL_129,
        &["get", "configmap", "cfg", "-n", "json", "-o", "yaml"],
        None,
    );
    assert!(
        yaml.contains("a: \"1\"") && yaml.contains("resourceVersion:") && yaml.contains("uid:"),
        "{yaml}"
    );
    let replicas = s.kubectl_ok(
        KUBECTL_129,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "json",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "3");
    s.kubectl_ok(
        KUBECTL_129,
        &["delete", "configmap", "cfg", "-n", "json"],
        None,
    );
    let out = s.kubectl_with(
        KUBECTL_129,
        &["get", "configmap", "cfg", "-n", "json"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound")
            || String::from_utf8_lossy(&out.stderr).contains("not found")
    );
}

#[test]
fn label_selectors_and_watch_from_another_process() {
    let s = Server::start();
    s.kubectl_ok(KUBECTL_129, &["create", "namespace", "sel"], None);
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        s.kubectl_ok(
            KUBECTL_129,
            &["create", "configmap", name, "-n", "sel"],
            None,
        );
        s.kubectl(&[
            "label",
            "configmap",
            name,
            "-n",
            "sel",
            &format!("tier={tier}"),
        ]);
    }
    let front = s.kubectl(&[
        "get",
        "configmaps",
        "-n",
        "sel",
        "-l",
        "tier=front",
        "-o",
        "name",
    ]);
    assert_eq!(
        front.lines().collect::<Vec<_>>(),
        vec!["configmap/a", "configmap/c"]
    );

    let (mut watcher, rx) =
        s.kubectl_stream(&["get", "configmaps", "-n", "sel", "-w", "-o", "name"]);
    // The initial list arrives first.
    assert!(wait_line(&rx, Duration::from_secs(10), |l| l == "configmap/a").is_some());
    s.kubectl_ok(
        KUBECTL_129,
        &["create", "configmap", "from-elsewhere", "-n", "sel"],
        None,
    );
    let seen = wait_line(&rx, Duration::from_secs(10), |l| {
        l.contains("from-elsewhere")
    });
    let _ = watcher.kill();
    assert!(
        seen.is_some(),
        "kubectl get -w did not see a create made by another process"
    );
    let _ = MANIFEST;
}
