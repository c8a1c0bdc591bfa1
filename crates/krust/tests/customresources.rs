//! CustomResourceDefinitions end to end with the real kubectl, the Python client and an
//! operator written with kopf: a definition is established, its custom resources are
//! served (schema defaults, pruning, validation and a CEL rule, status and scale
//! subresources, printer columns, two versions, `kubectl explain`), bad definitions and
//! bad resources are refused as upstream refuses them, and deleting the definition
//! deletes its resources.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, Server, KUBECTL};

const WIDGETS: &str = include_str!("../../../tests/manifests/crd-widgets.yaml");

fn establish(s: &Server, manifest: &str, name: &str) {
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(manifest));
    s.kubectl_ok(
        KUBECTL,
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{name}"),
            "--timeout=20s",
        ],
        None,
    );
}

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}")
}

#[test]
fn custom_resources_are_served_as_their_definition_says() {
    let s = Server::start();
    establish(&s, WIDGETS, "widgets.example.com");
    let resources = s.kubectl(&["api-resources", "--api-group=example.com"]);
    assert!(
        resources.contains("widgets") && resources.contains("wd") && resources.contains("Widget"),
        "{resources}"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "crd",
            "widgets.example.com",
            "-o",
            "jsonpath={.status.storedVersions}"
        ]),
        "[\"v1\"]"
    );

    // Unknown fields are pruned (and refused under strict field validation); defaults fill.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "--validate=false", "-f", "-"],
        Some(&widget(
            "w1",
            "  replicas: 2\n  size: large\n  bogus: 1\n  port: http\n  tags: [a, b]\n",
        )),
    );
    let spec = s.kubectl(&["get", "widget", "w1", "-o", "jsonpath={.spec}"]);
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("spec is JSON");
    assert_eq!(spec["replicas"], 2, "{spec}");
    assert_eq!(spec["maxReplicas"], 10, "default filled: {spec}");
    assert_eq!(spec["port"], "http", "int-or-string kept: {spec}");
    assert!(spec.get("bogus").is_none(), "pruned: {spec}");
    let strict = s.kubectl_err(&["apply", "-f", "-"], Some(&widget("w2", "  bogus: 1\n")));
    assert!(strict.contains("unknown field \"spec.bogus\""), "{strict}");

    // Invalid resources: schema and CEL rule, upstream's messages and field paths.
    let too_many = s.kubectl_err(
        &["apply", "-f", "-"],
        Some(&widget("w3", "  replicas: 20\n")),
    );
    assert!(
        too_many.contains("spec: Invalid value: \"object\": replicas must not exceed maxReplicas"),
        "{too_many}"
    );
    let negative = s.kubectl_err(
        &["apply", "-f", "-"],
        Some(&widget("w3", "  replicas: -1\n")),
    );
    assert!(
        negative.contains("spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
        "{negative}"
    );
    let size = s.kubectl_err(
        &["apply", "-f", "-"],
        Some(&widget("w3", "  size: medium\n")),
    );
    assert!(
        size.contains(
            "spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\""
        ),
        "{size}"
    );
    let dup = s.kubectl_err(
        &["apply", "-f", "-"],
        Some(&widget("w3", "  tags: [a, a]\n")),
    );
    assert!(
        dup.contains("spec.tags[1]: Duplicate value: \"a\""),
        "{dup}"
    );
    assert!(s
        .kubectl_err(&["get", "widget", "w3"], None)
        .contains("NotFound"));

    // Printer columns, short name, category.
    let table = s.kubectl(&["get", "wd"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "REPLICAS", "SIZE", "AGE"], "{table}");
    assert!(table.contains("w1") && table.contains("large"), "{table}");
    assert_eq!(
        s.kubectl(&["get", "examples", "-o", "name"]).trim(),
        "widget.example.com/w1"
    );

    // Scale and status subresources.
    s.kubectl_ok(KUBECTL, &["scale", "widget", "w1", "--replicas=3"], None);
    assert_eq!(
        s.kubectl(&["get", "wd", "w1", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    s.kubectl_ok(
        KUBECTL,
        &[
            "patch",
            "widget",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":3,"selector":"app=w1"}}"#,
        ],
        None,
    );
    s.kubectl_ok(
        KUBECTL,
        &[
            "patch",
            "widget",
            "w1",
            "--type=merge",
            "-p",
            r#"{"spec":{"image":"busybox"},"status":{"replicas":9}}"#,
        ],
        None,
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "wd",
            "w1",
            "-o",
            "jsonpath={.spec.image} {.status.replicas}"
        ]),
        "busybox 3",
        "a write to the main resource leaves status alone"
    );
    let scale = s.kubectl(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
    ]);
    assert!(scale.contains("\"selector\":\"app=w1\""), "{scale}");

    // Server-side apply with managed fields: the patch's manager owns spec.image.
    let conflict = s.kubectl_err(
        &[
            "apply",
            "--server-side",
            "--field-manager=tester",
            "-f",
            "-",
        ],
        Some(&widget("w1", "  image: nginx\n")),
    );
    assert!(
        conflict.contains("conflict with \"kubectl-patch\" using example.com/v1: .spec.image"),
        "{conflict}"
    );
    s.kubectl_ok(
        KUBECTL,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tester",
            "-f",
            "-",
        ],
        Some(&widget("w1", "  image: nginx\n")),
    );
    let managers = s.kubectl(&[
        "get",
        "wd",
        "w1",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("tester"), "{managers}");
    assert_eq!(
        s.kubectl(&["get", "wd", "w1", "-o", "jsonpath={.spec.image}"]),
        "nginx"
    );

    // The second version serves the same objects.
    assert_eq!(
        s.kubectl(&[
            "get",
            "widgets.v1beta1.example.com",
            "w1",
            "-o",
            "jsonpath={.apiVersion}"
        ]),
        "example.com/v1beta1"
    );
    // kubectl explain reads the OpenAPI v3 document.
    let explain = s.kubectl(&["explain", "widget.spec"]);
    assert!(
        explain.contains("What the widget should be.") && explain.contains("replicas"),
        "{explain}"
    );
    // Field selectors on metadata.
    let named = s.kubectl(&[
        "get",
        "wd",
        "--field-selector=metadata.name=w1",
        "-o",
        "name",
    ]);
    assert_eq!(named.trim(), "widget.example.com/w1");

    // Deleting the definition deletes its resources.
    s.kubectl_ok(
        KUBECTL,
        &["delete", "crd", "widgets.example.com", "--timeout=30s"],
        None,
    );
    // (kubectl's discovery cache may still name the kind: the list is then a 404.)
    let gone = s.kubectl_err(&["get", "widgets"], None);
    assert!(
        gone.contains("the server doesn't have a resource type")
            || gone.contains("the server could not find the requested resource"),
        "{gone}"
    );
    establish(&s, WIDGETS, "widgets.example.com");
    assert_eq!(
        s.kubectl(&["get", "widgets", "-A", "-o", "name"]).trim(),
        ""
    );
}

#[test]
fn bad_definitions_are_refused_and_clashing_names_not_accepted() {
    let s = Server::start();
    let base = WIDGETS
        .replace("widgets.example.com", "things.example.com")
        .replace("plural: widgets", "plural: things")
        .replace("singular: widget", "singular: thing")
        .replace("kind: Widget", "kind: Thing")
        .replace("shortNames: [wd]", "shortNames: [th]");
    // A property without a type: not structural.
    let untyped = base.replace(
        "              image:\n                type: string\n",
        "              image: {}\n",
    );
    let err = s.kubectl_err(&["apply", "-f", "-"], Some(&untyped));
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
    // A CEL rule that does not compile.
    let bad_rule = base.replace(
        "rule: self.replicas <= self.maxReplicas",
        "rule: self.replicas <=",
    );
    let err = s.kubectl_err(&["apply", "-f", "-"], Some(&bad_rule));
    assert!(err.contains("compilation failed"), "{err}");
    // The name must be plural.group.
    let misnamed = base.replace("name: things.example.com", "name: stuff.example.com");
    let err = s.kubectl_err(&["apply", "-f", "-"], Some(&misnamed));
    assert!(
        err.contains("must be spec.names.plural+\".\"+spec.group"),
        "{err}"
    );
    // Two storage versions.
    let two = base.replace("storage: false", "storage: true");
    let err = s.kubectl_err(&["apply", "-f", "-"], Some(&two));
    assert!(
        err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
    assert!(s
        .kubectl_err(&["get", "crd", "things.example.com"], None)
        .contains("NotFound"));

    // A second definition claiming a taken short name is stored but not accepted.
    establish(&s, &base, "things.example.com");
    let clash = base
        .replace("things.example.com", "gizmos.example.com")
        .replace("plural: things", "plural: gizmos")
        .replace("singular: thing", "singular: gizmo")
        .replace("kind: Thing", "kind: Gizmo");
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&clash));
    assert!(eventually(Duration::from_secs(10), || {
        s.kubectl(&[
            "get",
            "crd",
            "gizmos.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].status}",
        ]) == "False"
    }));
    let message = s.kubectl(&[
        "get",
        "crd",
        "gizmos.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].message}",
    ]);
    assert!(message.contains("\"th\" is already in use"), "{message}");
    assert!(s
        .kubectl_err(&["get", "gizmos"], None)
        .contains("the server doesn't have a resource type"));
}

/// The Python client's CustomObjectsApi: create, list, watch, patch, delete.
#[test]
fn python_client_drives_custom_resources() {
    let s = Server::start();
    establish(&s, WIDGETS, "widgets.example.com");
    common::client_scenario(
        "python3",
        "python/crd_e2e.py",
        &[s.kubeconfig.as_os_str()],
        "crd scenario: ok",
    );
}

/// An operator written with kopf reconciles a custom resource into a Deployment and
/// reports in the resource's status.
#[test]
fn kopf_operator_reconciles_a_custom_resource() {
    let s = Server::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/kopf_operator.py");
    let crd = std::fs::read_to_string(&script)
        .expect("operator script")
        .split("CRD = \"\"\"")
        .nth(1)
        .and_then(|r| r.split("\"\"\"").next())
        .map(str::to_string)
        .expect("CRD in the script");
    establish(&s, &crd, "greeters.example.com");
    let mut operator = Command::new("python3")
        .args(["-m", "kopf", "run", "--standalone", "--namespace=default"])
        .arg(&script)
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kopf starts");
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Greeter\nmetadata:\n  name: hello\n  namespace: default\nspec:\n  replicas: 2\n  message: hi\n"),
    );
    let reconciled = eventually(Duration::from_secs(30), || {
        s.kubectl(&[
            "get",
            "greeter",
            "hello",
            "-o",
            "jsonpath={.status.create_greeter.deployment}",
        ]) == "hello-greeter"
    });
    let _ = operator.kill();
    let log = operator
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
        .unwrap_or_default();
    assert!(reconciled, "the operator never reported in status:\n{log}");
    assert_eq!(
        s.kubectl(&[
            "get",
            "deployment",
            "hello-greeter",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.ownerReferences[0].kind}"
        ]),
        "2 Greeter"
    );
}
