//! Client-side `kubectl apply` (1.33) computes its strategic merge patches from the merge
//! keys and strategies in our OpenAPI v3 documents; the server merges them by the same facts.
//! Re-applying an unchanged manifest changes nothing, and removing an item from a keyed list
//! in the manifest removes it on the server.

mod common;

use common::{Server, KUBECTL};
use serde_json::Value;

const MANIFEST: &str = include_str!("../../../tests/manifests/app.yaml");

/// A Deployment with two containers, each with env vars and ports.
fn deployment(web_image: &str, web_env: &[(&str, &str)], web_ports: &[u16]) -> String {
    let env: String = web_env
        .iter()
        .map(|(k, v)| format!("        - name: {k}\n          value: \"{v}\"\n"))
        .collect();
    let ports: String = web_ports
        .iter()
        .map(|p| format!("        - containerPort: {p}\n"))
        .collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: two
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: two
  template:
    metadata:
      labels:
        app: two
    spec:
      containers:
      - name: web
        image: {web_image}
        env:
{env}        ports:
{ports}      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "infinity"]
        env:
        - name: MODE
          value: side
        ports:
        - containerPort: 9090
"#
    )
}

fn jsonpath(s: &Server, path: &str) -> String {
    s.kubectl(&[
        "get",
        "deployment",
        "two",
        "-n",
        "default",
        "-o",
        &format!("jsonpath={path}"),
    ])
}

/// Applies `manifest` verbosely and returns (stdout, the PATCH request bodies it logged).
/// `-v=8` shows the bodies too but cuts them at 1024 bytes; `-v=9` at 10240.
fn apply_verbose(s: &Server, manifest: &str) -> (String, Vec<Value>) {
    let out = s.kubectl_with(KUBECTL, &["apply", "-v=9", "-f", "-"], Some(manifest));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "apply failed: {stderr}\n{stdout}");
    // kubectl logs each request's body (`"Request Body" body="<quoted>"`) before the request
    // itself (`"Request" verb="PATCH"` at -v=8, a `curl -v -XPATCH` command at -v=9).
    let mut body = None;
    let mut patches = Vec::new();
    for line in stderr.lines() {
        if line.contains("\"Request Body\"") {
            body = Some(line);
        } else if line.contains("-XPATCH") || line.contains("\"Request\" verb=\"PATCH\"") {
            let line = body.take().expect("a body before the PATCH");
            let quoted = line
                .split_once("body=\"")
                .and_then(|(_, rest)| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no body in {line}"));
            let patch =
                serde_json::from_str(&unquote(quoted)).unwrap_or_else(|e| panic!("{e}: {quoted}"));
            patches.push(patch);
        }
    }
    (stdout, patches)
}

/// Undoes Go's string quoting (as klog writes values) for the escapes JSON text needs.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The patch without kubectl's last-applied annotation (which holds the whole manifest).
fn without_annotation(patch: &Value) -> String {
    let mut patch = patch.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("annotations");
    }
    patch.to_string()
}

#[test]
fn reapplying_an_unchanged_manifest_changes_nothing() {
    let s = Server::start();
    let first = s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(MANIFEST));
    assert_eq!(first.matches(" created").count(), 5, "{first}");
    let second = s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(MANIFEST));
    let lines: Vec<&str> = second.lines().collect();
    assert_eq!(lines.len(), 5, "{second}");
    for line in lines {
        // stringData is write-only (the server folds it into data), so upstream reports the
        // Secret as configured on every apply too.
        let expected = if line.starts_with("secret/") {
            "configured"
        } else {
            "unchanged"
        };
        assert!(line.ends_with(expected), "{line}: expected {expected}");
    }
}

#[test]
fn keyed_lists_merge_by_key_like_the_server() {
    let s = Server::start();
    let v1 = deployment(
        "busybox:1.36",
        &[("A", "1"), ("B", "2"), ("C", "3")],
        &[8080, 8443],
    );
    let out = s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&v1));
    assert!(out.contains("deployment.apps/two created"), "{out}");
    let (out, patches) = apply_verbose(&s, &v1);
    assert!(out.contains("deployment.apps/two unchanged"), "{out}");
    assert!(patches.is_empty(), "unchanged apply sent {patches:?}");

    // Changing the image of one container of two: only that container is sent, by name, with
    // the order of the list; the other container is kept as it was.
    let v2 = deployment(
        "busybox:1.37",
        &[("A", "1"), ("B", "2"), ("C", "3")],
        &[8080, 8443],
    );
    let (out, patches) = apply_verbose(&s, &v2);
    assert!(out.contains("deployment.apps/two configured"), "{out}");
    assert_eq!(patches.len(), 1, "{patches:?}");
    let patch = without_annotation(&patches[0]);
    assert!(patch.contains("$setElementOrder/containers"), "{patch}");
    assert!(patch.contains("busybox:1.37"), "{patch}");
    assert!(
        !patch.contains("sleep") && !patch.contains("9090") && !patch.contains("MODE"),
        "the unchanged container was sent: {patch}"
    );
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[*].name}"),
        "web sidecar"
    );
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[*].image}"),
        "busybox:1.37 busybox:1.36"
    );
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[1].command}"),
        r#"["sleep","infinity"]"#
    );

    // Removing an env var and a container port from the manifest removes them on the server
    // (a patch that merged by key without deleting would keep them), and leaves the other
    // container's env and ports alone.
    let v3 = deployment("busybox:1.37", &[("A", "1"), ("C", "3")], &[8443]);
    let (out, patches) = apply_verbose(&s, &v3);
    assert!(out.contains("deployment.apps/two configured"), "{out}");
    let patch = without_annotation(patches.first().expect("a patch"));
    assert!(patch.contains("$setElementOrder/env"), "{patch}");
    assert!(patch.contains("$setElementOrder/ports"), "{patch}");
    assert!(patch.contains("$patch"), "{patch}");
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[0].env[*].name}"),
        "A C"
    );
    assert_eq!(
        jsonpath(
            &s,
            "{.spec.template.spec.containers[0].ports[*].containerPort}"
        ),
        "8443"
    );
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[1].env[*].name}"),
        "MODE"
    );
    assert_eq!(
        jsonpath(
            &s,
            "{.spec.template.spec.containers[1].ports[*].containerPort}"
        ),
        "9090"
    );

    // And the result is stable: applying it again changes nothing.
    let (out, patches) = apply_verbose(&s, &v3);
    assert!(out.contains("deployment.apps/two unchanged"), "{out}");
    assert!(patches.is_empty(), "{patches:?}");

    // An env var added on the server by someone else survives an apply that does not mention
    // it (three-way merge: it is not in the last-applied configuration).
    s.kubectl(&[
        "set",
        "env",
        "deployment/two",
        "-n",
        "default",
        "-c",
        "web",
        "EXTRA=x",
    ]);
    let v4 = deployment("busybox:1.38", &[("A", "1"), ("C", "3")], &[8443]);
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&v4));
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[0].env[*].name}"),
        "A C EXTRA"
    );
    assert_eq!(
        jsonpath(&s, "{.spec.template.spec.containers[*].image}"),
        "busybox:1.38 busybox:1.36"
    );
}
