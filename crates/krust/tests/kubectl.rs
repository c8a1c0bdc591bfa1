//! The real kubectl against a freshly started `krust server`.

mod common;

use std::time::Duration;

use common::{wait_line, Server, KUBECTL, KUBECTL_129};

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
}

/// The everyday workflow with kubectl 1.33 (OpenAPI validation, protobuf for typed
/// creates, strategic merge for apply).
#[test]
fn apply_get_patch_scale_label_describe_delete() {
    let s = Server::start();
    let applied = s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(MANIFEST));
    for obj in [
        "namespace/demo",
        "configmap/web-config",
        "secret/web-secret",
        "service/web",
        "deployment.apps/web",
    ] {
        assert!(applied.contains(&format!("{obj} created")), "{applied}");
    }
    // Table output with upstream's columns.
    let table = s.kubectl(&["get", "deployments", "-n", "demo"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(table.contains("0/2"), "{table}");
    let svc = s.kubectl(&["get", "service", "web", "-n", "demo"]);
    assert!(
        svc.contains("ClusterIP") && svc.contains("10.43.") && svc.contains("80/TCP"),
        "{svc}"
    );

    // -o yaml shows the stored object with server-set fields.
    let yaml = s.kubectl(&["get", "configmap", "web-config", "-n", "demo", "-o", "yaml"]);
    assert!(
        yaml.contains("greeting: hello")
            && yaml.contains("uid:")
            && yaml.contains("creationTimestamp:"),
        "{yaml}"
    );
    let secret = s.kubectl(&[
        "get",
        "secret",
        "web-secret",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(secret, "czNjcmV0", "stringData is folded into base64 data");
    let labelled = s.kubectl(&["get", "all", "-n", "demo", "-l", "app=web", "-o", "name"]);
    assert!(
        labelled.contains("service/web") && labelled.contains("deployment.apps/web"),
        "{labelled}"
    );

    // apply again with a changed field: the strategic-merge path.
    let changed = MANIFEST
        .replace("replicas: 2", "replicas: 4")
        .replace("busybox:1.36", "busybox:1.37");
    let out = s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let jp = |path: &str| {
        s.kubectl(&[
            "get",
            "deployment",
            "web",
            "-n",
            "demo",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(jp("{.spec.replicas}"), "4");
    assert_eq!(
        jp("{.spec.template.spec.containers[0].image}"),
        "busybox:1.37"
    );
    assert_eq!(jp("{.metadata.generation}"), "2");

    s.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    assert_eq!(jp("{.spec.minReadySeconds}"), "5");
    s.kubectl(&[
        "patch", "deployment", "web", "-n", "demo", "--type=json", "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:json"}]"#,
    ]);
    assert_eq!(
        jp("{.spec.template.spec.containers[0].image}"),
        "busybox:json"
    );
    s.kubectl(&["scale", "deployment", "web", "-n", "demo", "--replicas=7"]);
    assert_eq!(jp("{.spec.replicas}"), "7");
    s.kubectl(&["label", "deployment", "web", "-n", "demo", "tier=front"]);
    s.kubectl(&["annotate", "deployment", "web", "-n", "demo", "note=hello"]);
    assert_eq!(jp("{.metadata.labels.tier}"), "front");
    assert_eq!(jp("{.metadata.annotations.note}"), "hello");
    let selected = s.kubectl(&[
        "get",
        "deployments",
        "-n",
        "demo",
        "-l",
        "tier=front",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "deployment.apps/web");

    let described = s.kubectl(&["describe", "deployment", "web", "-n", "demo"]);
    for needle in [
        "Name:                   web",
        "Namespace:              demo",
        "tier=front",
        "busybox:json",
        "7 desired",
    ] {
        assert!(
            described.contains(needle),
            "describe lacks {needle:?}:\n{described}"
        );
    }

    s.kubectl(&["delete", "deployment", "web", "-n", "demo"]);
    s.kubectl(&[
        "delete",
        "-n",
        "demo",
        "configmap/web-config",
        "secret/web-secret",
        "service/web",
    ]);
    // Dependents (if controllers made any) go by garbage collection, in the background.
    let empty = common::eventually(std::time::Duration::from_secs(15), || {
        s.kubectl(&["get", "all", "-n", "demo", "-o", "name"])
            .trim()
            .is_empty()
    });
    assert!(
        empty,
        "{}",
        s.kubectl(&["get", "all", "-n", "demo", "-o", "name"])
    );
}

#[test]
fn typed_creates_with_kubectl_133_protobuf_and_129_json() {
    let s = Server::start();
    for (bin, suffix) in [(KUBECTL, "pb"), (KUBECTL_129, "json")] {
        s.kubectl_ok(bin, &["create", "namespace", &format!("ns-{suffix}")], None);
        s.kubectl_ok(
            bin,
            &[
                "create",
                "configmap",
                &format!("cm-{suffix}"),
                "--from-literal=k=v",
            ],
            None,
        );
        s.kubectl_ok(
            bin,
            &[
                "create",
                "secret",
                "generic",
                &format!("s-{suffix}"),
                "--from-literal=p=q",
            ],
            None,
        );
        s.kubectl_ok(
            bin,
            &[
                "create",
                "deployment",
                &format!("d-{suffix}"),
                "--image=busybox",
                "--replicas=2",
            ],
            None,
        );
        s.kubectl_ok(
            bin,
            &[
                "create",
                "job",
                &format!("j-{suffix}"),
                "--image=busybox",
                "--",
                "true",
            ],
            None,
        );
        assert_eq!(
            s.kubectl(&[
                "get",
                "configmap",
                &format!("cm-{suffix}"),
                "-o",
                "jsonpath={.data.k}"
            ]),
            "v"
        );
        assert_eq!(
            s.kubectl(&[
                "get",
                "secret",
                &format!("s-{suffix}"),
                "-o",
                "jsonpath={.data.p}"
            ]),
            "cQ=="
        );
        let replicas = s.kubectl(&[
            "get",
            "deployment",
            &format!("d-{suffix}"),
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        assert_eq!(replicas, "2");
        let job_sel = s.kubectl(&[
            "get",
            "job",
            &format!("j-{suffix}"),
            "-o",
            "jsonpath={.spec.selector.matchLabels}",
        ]);
        assert!(
            job_sel.contains("controller-uid"),
            "Job selector generated: {job_sel}"
        );
        assert!(s
            .kubectl(&["get", "namespaces", "-o", "name"])
            .contains(&format!("namespace/ns-{suffix}")));
    }
}

#[test]
fn strict_field_validation_and_explain() {
    let s = Server::start();
    let bad =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\ndata:\n  a: b\nbogus: 1\n";
    let err = s.kubectl_err(&["apply", "-f", "-"], Some(bad));
    assert!(
        err.contains(r#"strict decoding error: unknown field "bogus""#),
        "{err}"
    );
    let missing = s.kubectl_with(KUBECTL, &["get", "configmap", "strict"], None);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "a refused create stores nothing"
    );
    let err = s.kubectl_err(
        &["create", "-f", "-"],
        Some(&bad.replace("bogus: 1", "spec:\n  nope: 1")),
    );
    assert!(err.contains(r#"unknown field "spec""#), "{err}");

    let explained = s.kubectl(&["explain", "pod.spec.containers"]);
    assert!(
        explained.contains("KIND:       Pod")
            && explained.contains("FIELD: containers <[]Container>"),
        "{explained}"
    );
    assert!(explained.contains("image"), "{explained}");
}

#[test]
fn server_side_apply_conflicts_between_field_managers() {
    let s = Server::start();
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  namespace: default\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: ssa}\n  template:\n    metadata:\n      labels: {app: ssa}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
    let out = s.kubectl_ok(
        KUBECTL,
        &["apply", "--server-side", "-f", "-"],
        Some(deploy),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let again = s.kubectl_ok(
        KUBECTL,
        &["apply", "--server-side", "-f", "-"],
        Some(deploy),
    );
    assert!(again.contains("serverside-applied"), "{again}");
    let other = deploy.replace("replicas: 2", "replicas: 5");
    let err = s.kubectl_err(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        Some(&other),
    );
    assert!(
        err.contains(r#"conflict with "kubectl""#) && err.contains(".spec.replicas"),
        "{err}"
    );
    let replicas = || {
        s.kubectl(&[
            "get",
            "deployment",
            "ssa",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
    };
    assert_eq!(replicas(), "2", "a refused apply changes nothing");
    let forced = [
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
    ];
    s.kubectl_ok(KUBECTL, &forced, Some(&other));
    assert_eq!(replicas(), "5");
    let managers = s.kubectl(&[
        "get",
        "deployment",
        "ssa",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managers.contains("kubectl") && managers.contains("other"),
        "{managers}"
    );
}
