//! End-to-end scenarios: the patches `kubectl apply` (client-side) sends, and server-side
//! apply and managed-fields flows as kubectl and controllers drive them.

use serde_json::{json, Value};

use super::*;
use crate::Registry;

const T1: &str = "2024-05-01T10:00:00Z";
const T2: &str = "2024-05-01T10:05:00Z";
const T3: &str = "2024-05-01T10:10:00Z";

fn registry() -> Registry {
    Registry::builtin()
}

fn deployments(r: &Registry) -> &ResourceInfo {
    r.by_kind("apps/v1", "Deployment")
        .expect("deployments served")
}

/// What a live Deployment looks like after creation and defaulting.
fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7", "generation": 1,
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}],
                         "terminationMessagePath": "/dev/termination-log"},
                        {"name": "sidecar", "image": "envoy:1", "imagePullPolicy": "IfNotPresent"}
                    ],
                    "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"
                }
            }
        },
        "status": {"replicas": 2, "readyReplicas": 2}
    })
}

fn smp(r: &Registry, live: &Value, patch: Value) -> Value {
    let body = serde_json::to_vec(&patch).expect("encodes");
    patch_object(deployments(r), PatchType::Strategic, live, &body).expect("patch applies")
}

fn container_names(obj: &Value) -> Vec<&str> {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn kubectl_apply_changes_an_image() {
    let r = registry();
    let live = live_deployment();
    let out = smp(
        &r,
        &live,
        json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.26", "name": "web"}]
            }}}
        }),
    );
    let web = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(web["image"], "nginx:1.26");
    // Server-side defaults and untouched fields survive.
    assert_eq!(web["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        web["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(container_names(&out), ["web", "sidecar"]);
    assert_eq!(out["status"], live["status"]);
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"new\":1}\n"
    );
}

#[test]
fn kubectl_apply_removes_a_label_and_adds_an_env_var() {
    let r = registry();
    let out = smp(
        &r,
        &live_deployment(),
        json!({
            "metadata": {"labels": {"tier": null}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "env": [{"name": "B", "value": "2"}],
                    "name": "web"
                }]
            }}}
        }),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
}

#[test]
fn kubectl_apply_inserts_an_env_var_in_the_middle() {
    let r = registry();
    let mut live = live_deployment();
    live["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]);
    let out = smp(
        &r,
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
            "env": [{"name": "B", "value": "2"}],
            "name": "web"
        }]}}}}),
    );
    let env: Vec<&str> = out["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(env, ["A", "B", "C"]);
}

#[test]
fn kubectl_apply_reorders_and_deletes_containers() {
    let r = registry();
    let live = live_deployment();
    let out = smp(
        &r,
        &live,
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}),
    );
    assert_eq!(container_names(&out), ["sidecar", "web"]);

    let out = smp(
        &r,
        &live,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }}}}),
    );
    assert_eq!(container_names(&out), ["web"]);
}

#[test]
fn kubectl_apply_replaces_ports_and_switches_strategy() {
    let r = registry();
    let mut live = live_deployment();
    live["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080, "protocol": "TCP"}]);
    let out = smp(
        &r,
        &live,
        json!({"spec": {
            "strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/ports": [{"containerPort": 443}, {"containerPort": 80}],
                    "name": "web",
                    "ports": [{"containerPort": 443, "name": "https"}, {"$patch": "delete", "containerPort": 8080}]
                }]
            }}
        }}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 443, "name": "https"}, {"containerPort": 80, "protocol": "TCP"}])
    );
}

#[test]
fn kubectl_apply_on_services_and_finalizers() {
    let r = registry();
    let services = r.lookup("", "v1", "services").expect("services");
    let live = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "finalizers": ["a", "b"]},
        "spec": {"clusterIP": "10.43.0.10", "selector": {"app": "web", "old": "x"},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}
    });
    let patch = json!({
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "$setElementOrder/finalizers": ["b", "c"], "finalizers": ["c"]},
        "spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 53}],
            "ports": [{"port": 80, "targetPort": 9090}],
            "selector": {"old": null}
        }
    });
    let body = serde_json::to_vec(&patch).expect("encodes");
    let out = patch_object(services, PatchType::Strategic, &live, &body).expect("applies");
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    assert_eq!(
        out["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 9090})
    );
    assert_eq!(out["spec"]["ports"][1]["port"], 53);
    assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(out["spec"]["clusterIP"], "10.43.0.10");
}

/// The patch kubectl 1.33 sent (captured from a real `kubectl apply`, annotation shortened)
/// for: dropping a label and a finalizer and adding one, switching the strategy to
/// Recreate, turning an emptyDir volume into a configMap, reordering containers, adding an
/// env var in the middle, adding a port and deleting another.
#[test]
fn kubectl_apply_captured_patch() {
    let r = registry();
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5",
            "labels": {"app": "web", "tier": "front"}, "finalizers": ["a.example/x", "b.example/y"],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "<old configuration>\n"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                     "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]},
                    {"name": "sidecar", "image": "envoy:1"}
                ]
            }}
        },
        "status": {"replicas": 2}
    });
    let patch = r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a.example/x"],"$setElementOrder/finalizers":["b.example/y","c.example/z"],"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"<new configuration>\n"},"finalizers":["c.example/z"],"labels":{"tier":null}},"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"web"}],"$setElementOrder/volumes":[{"name":"data"}],"containers":[{"image":"envoy:2","name":"sidecar"},{"$setElementOrder/env":[{"name":"A"},{"name":"B"},{"name":"C"}],"$setElementOrder/ports":[{"containerPort":443},{"containerPort":80}],"env":[{"name":"B","value":"2"}],"image":"nginx:1.26","name":"web","ports":[{"containerPort":443,"name":"https"},{"$patch":"delete","containerPort":8080}]}],"volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cm"},"emptyDir":null,"name":"data"}]}}}}"#;
    let out = patch_object(
        deployments(&r),
        PatchType::Strategic,
        &live,
        patch.as_bytes(),
    )
    .expect("applies");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["b.example/y", "c.example/z"])
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "<new configuration>\n"
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}])
    );
    assert_eq!(container_names(&out), ["sidecar", "web"]);
    assert_eq!(
        spec["containers"][0],
        json!({"name": "sidecar", "image": "envoy:2"})
    );
    assert_eq!(
        spec["containers"][1],
        json!({"name": "web", "image": "nginx:1.26", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 443, "name": "https"}, {"containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]})
    );
    assert_eq!(out["status"], json!({"replicas": 2}));
}

// ---- Server-side apply ----

fn config(replicas: Option<i64>) -> Value {
    let mut c = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}
            }
        }
    });
    if let Some(n) = replicas {
        c["spec"]["replicas"] = json!(n);
    }
    c
}

/// The stored object as the API server keeps it after a write (uid and version added).
fn stored(mut obj: Value) -> Value {
    obj["metadata"]["uid"] = json!("u-1");
    obj["metadata"]["resourceVersion"] = json!("1");
    obj
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owns(obj: &Value, manager: &str, operation: &str, path: &[&str]) -> bool {
    let Some(e) = entry(obj, manager, operation) else {
        return false;
    };
    let mut at = &e["fieldsV1"];
    for p in path {
        match at.get(*p) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// `kubectl apply --server-side` of the same change (body as kubectl 1.33 sent it) onto the
/// client-side-applied object, which has no managed fields yet: what was there belongs to
/// `before-first-apply`, and kubectl may take what still matches its last client-side apply.
#[test]
fn kubectl_server_side_apply_captured_body() {
    let r = registry();
    let info = deployments(&r);
    let last = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx:1.25"}, {"name": "sidecar", "image": "envoy:1"}]}}}});
    let mut live = last.clone();
    live["metadata"]["uid"] = json!("u1");
    live["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{}\n", serde_json::to_string(&last).expect("json"))});
    let body = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"finalizers":["b.example/y","c.example/z"],"labels":{"app":"web"},"name":"web","namespace":"default"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"strategy":{"type":"Recreate"},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"envoy:2","name":"sidecar"},{"env":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"C","value":"3"}],"image":"nginx:1.26","name":"web","ports":[{"containerPort":443,"name":"https"},{"containerPort":80}]}],"volumes":[{"configMap":{"name":"cm"},"name":"data"}]}}}}"#;
    let applied = decode_apply_body(body.as_bytes()).expect("decodes");
    let out = apply(info, Some(&live), &applied, "kubectl", false, T1).expect("no conflict");
    assert_eq!(container_names(&out), ["sidecar", "web"]);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][1]["image"],
        "nginx:1.26"
    );
    assert_eq!(out["spec"]["strategy"]["type"], "Recreate");
    assert!(owns(
        &out,
        "kubectl",
        "Apply",
        &["f:spec", "f:strategy", "f:type"]
    ));
    assert!(!owns(
        &out,
        "before-first-apply",
        "Update",
        &["f:spec", "f:strategy", "f:type"]
    ));
    assert!(owns(
        &out,
        "before-first-apply",
        "Update",
        &["f:metadata", "f:annotations"]
    ));
    let annotation = out["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("kept");
    assert_eq!(
        serde_json::from_str::<Value>(annotation).expect("json"),
        applied
    );

    // Another manager would have conflicted with what was there.
    let err = apply(info, Some(&live), &applied, "helm", false, T1).expect_err("conflicts");
    assert!(
        err.to_string()
            .contains("conflicts with \"before-first-apply\" using apps/v1:"),
        "{err}"
    );
}

#[test]
fn server_side_apply_creates_with_managed_fields() {
    let r = registry();
    let out = apply(
        deployments(&r),
        None,
        &config(Some(2)),
        "kubectl",
        false,
        T1,
    )
    .expect("creates");
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["metadata"]["name"], "web");
    let fields = out["metadata"]["managedFields"]
        .as_array()
        .expect("managed fields");
    assert_eq!(fields.len(), 1);
    let e = &fields[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
    // Key order of an entry follows upstream's.
    let keys: Vec<&String> = e.as_object().expect("entry").keys().collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1"
        ]
    );
}

#[test]
fn server_side_apply_conflicts_force_and_release() {
    let r = registry();
    let info = deployments(&r);
    let created =
        stored(apply(info, None, &config(Some(2)), "kubectl", false, T1).expect("creates"));

    // Another manager sets a different replica count: conflict with kubectl.
    let err =
        apply(info, Some(&created), &config(Some(5)), "other", false, T2).expect_err("conflicts");
    let PatchError::Conflict(conflicts) = &err else {
        panic!("expected a conflict, got {err:?}")
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].manager, "kubectl");
    assert_eq!(conflicts[0].field, ".spec.replicas");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
    );
    assert_eq!(err.code(), 409);
    let status = err.to_api_error(info, "web").to_status();
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\"", "field": ".spec.replicas"})
    );

    // Forced: "other" takes .spec.replicas; both share the fields they set alike.
    let forced =
        stored(apply(info, Some(&created), &config(Some(5)), "other", true, T2).expect("forced"));
    assert_eq!(forced["spec"]["replicas"], 5);
    assert!(owns(&forced, "other", "Apply", &["f:spec", "f:replicas"]));
    assert!(!owns(
        &forced,
        "kubectl",
        "Apply",
        &["f:spec", "f:replicas"]
    ));
    assert!(owns(&forced, "kubectl", "Apply", &["f:spec", "f:template"]));
    assert!(owns(&forced, "other", "Apply", &["f:spec", "f:template"]));
    assert_eq!(
        entry(&forced, "kubectl", "Apply").expect("kubectl")["time"],
        T1
    );
    assert_eq!(entry(&forced, "other", "Apply").expect("other")["time"], T2);

    // kubectl re-applies without replicas: no conflict, "other" keeps its value.
    let again = stored(
        apply(info, Some(&forced), &config(None), "kubectl", false, T3).expect("re-applies"),
    );
    assert_eq!(again["spec"]["replicas"], 5);
    assert!(owns(&again, "other", "Apply", &["f:spec", "f:replicas"]));

    // Had kubectl still owned it, dropping it from its config would release it.
    let both = stored(
        apply(info, Some(&created), &config(Some(2)), "other", false, T2)
            .expect("same value: shared"),
    );
    assert!(owns(&both, "kubectl", "Apply", &["f:spec", "f:replicas"]));
    assert!(owns(&both, "other", "Apply", &["f:spec", "f:replicas"]));
    let released =
        stored(apply(info, Some(&both), &config(None), "kubectl", false, T3).expect("releases"));
    assert!(!owns(
        &released,
        "kubectl",
        "Apply",
        &["f:spec", "f:replicas"]
    ));
    assert_eq!(released["spec"]["replicas"], 2);
    // Once nobody applies it, it is removed.
    let pruned = apply(info, Some(&released), &config(None), "other", false, T3).expect("prunes");
    assert!(pruned["spec"].get("replicas").is_none());
}

#[test]
fn server_side_apply_prunes_what_it_no_longer_applies() {
    let r = registry();
    let info = deployments(&r);
    let mut two = config(Some(1));
    two["metadata"]["labels"]["extra"] = json!("x");
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "sidecar", "image": "envoy"}));
    let created = stored(apply(info, None, &two, "kubectl", false, T1).expect("creates"));

    // A controller adds an annotation through an update: not the applier's to prune.
    let mut edited = created.clone();
    edited["metadata"]["annotations"] = json!({"note": "kept"});
    let edited = stored(update_managed_fields(
        info,
        Some(&created),
        &edited,
        "kubectl-annotate",
        T2,
    ));
    assert!(owns(
        &edited,
        "kubectl-annotate",
        "Update",
        &["f:metadata", "f:annotations", "f:note"]
    ));

    let out = apply(info, Some(&edited), &config(Some(1)), "kubectl", false, T3).expect("applies");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(container_names(&out), ["web"]);
    assert_eq!(out["metadata"]["annotations"], json!({"note": "kept"}));
    assert!(!owns(
        &out,
        "kubectl",
        "Apply",
        &["f:metadata", "f:labels", "f:extra"]
    ));
}

#[test]
fn server_side_apply_conflicts_with_update_managers() {
    let r = registry();
    let info = deployments(&r);
    let created = stored(update_managed_fields(
        info,
        None,
        &stored(config(Some(1))),
        "kubectl-create",
        T1,
    ));
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(3);
    let scaled = stored(update_managed_fields(
        info,
        Some(&created),
        &scaled,
        "kubectl-edit",
        T2,
    ));
    assert!(owns(
        &scaled,
        "kubectl-edit",
        "Update",
        &["f:spec", "f:replicas"]
    ));
    assert!(!owns(
        &scaled,
        "kubectl-create",
        "Update",
        &["f:spec", "f:replicas"]
    ));

    let err =
        apply(info, Some(&scaled), &config(Some(4)), "helm", false, T3).expect_err("conflict");
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas");
    assert_eq!(
        err.causes()[0].message,
        "conflict with \"kubectl-edit\" using apps/v1"
    );
    // Same values as the updaters: no conflict, shared ownership.
    let same =
        apply(info, Some(&scaled), &config(Some(3)), "helm", false, T3).expect("no conflict");
    assert!(owns(&same, "helm", "Apply", &["f:spec", "f:replicas"]));
    assert!(owns(
        &same,
        "kubectl-edit",
        "Update",
        &["f:spec", "f:replicas"]
    ));
}

#[test]
fn server_side_apply_takes_over_from_client_side_apply() {
    let r = registry();
    let info = deployments(&r);
    // Created by client-side `kubectl apply`: an update with the last-applied annotation.
    let mut obj = config(Some(2));
    obj["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{}\n", serde_json::to_string(&config(Some(2))).expect("json"))});
    let created = stored(update_managed_fields(
        info,
        None,
        &stored(obj),
        "kubectl-client-side-apply",
        T1,
    ));
    assert!(owns(
        &created,
        "kubectl-client-side-apply",
        "Update",
        &["f:spec", "f:replicas"]
    ));

    // `kubectl apply --server-side` changing replicas: allowed, since live still matches what
    // client-side apply last applied.
    let out = stored(
        apply(info, Some(&created), &config(Some(3)), "kubectl", false, T2).expect("takes over"),
    );
    assert_eq!(out["spec"]["replicas"], 3);
    assert!(owns(&out, "kubectl", "Apply", &["f:spec", "f:replicas"]));
    assert!(!owns(
        &out,
        "kubectl-client-side-apply",
        "Update",
        &["f:spec", "f:replicas"]
    ));
    let annotation = out["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("kept");
    let last: Value = serde_json::from_str(annotation).expect("json");
    assert_eq!(last["spec"]["replicas"], 3);

    // Another manager changing it afterwards conflicts with kubectl as usual.
    let err = apply(info, Some(&out), &config(Some(9)), "other", false, T3).expect_err("conflict");
    assert!(
        err.to_string()
            .contains("conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );

    // Any other manager than kubectl conflicts with the client-side apply owner.
    let err =
        apply(info, Some(&created), &config(Some(3)), "helm", false, T2).expect_err("conflict");
    assert!(
        err.to_string()
            .contains("\"kubectl-client-side-apply\" using apps/v1"),
        "{err}"
    );
}

#[test]
fn update_managed_fields_records_writes_like_upstream() {
    let r = registry();
    let info = deployments(&r);
    let mut obj = config(Some(1));
    obj["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}});
    obj["status"] = json!({"replicas": 0});
    let created = update_managed_fields(info, None, &obj, "kubectl-create", T1);
    let e = entry(&created, "kubectl-create", "Update").expect("entry");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                        "f:resources": {}
                    }}}
                }
            }
        })
    );
    let created = stored(created);

    // A status write by a controller: recorded under the subresource, spec untouched.
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 1, "readyReplicas": 1});
    let status_written = stored(update_managed_fields_subresource(
        info,
        "status",
        Some(&created),
        &with_status,
        "kube-controller-manager",
        T2,
    ));
    let s = entry(&status_written, "kube-controller-manager", "Update").expect("status entry");
    assert_eq!(s["subresource"], "status");
    assert_eq!(
        s["fieldsV1"],
        json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}})
    );

    // A no-op update changes nothing, not even times.
    let same = update_managed_fields(
        info,
        Some(&status_written),
        &status_written,
        "kubectl-edit",
        T3,
    );
    assert_eq!(
        same["metadata"]["managedFields"],
        status_written["metadata"]["managedFields"]
    );

    // Removing a label takes it from its owner; changing the image moves it to the editor.
    let mut edited = status_written.clone();
    edited["metadata"]["labels"] = json!({});
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let edited = update_managed_fields(info, Some(&status_written), &edited, "kubectl-edit", T3);
    assert!(!owns(
        &edited,
        "kubectl-create",
        "Update",
        &["f:metadata", "f:labels", "f:app"]
    ));
    assert!(owns(
        &edited,
        "kubectl-edit",
        "Update",
        &[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image"
        ]
    ));
    assert!(!owns(
        &edited,
        "kubectl-create",
        "Update",
        &[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image"
        ]
    ));
    // Main-resource writes never record status.
    assert!(!owns(&edited, "kubectl-edit", "Update", &["f:status"]));
}

#[test]
fn managed_fields_can_be_reset_and_sent_by_clients() {
    let r = registry();
    let info = deployments(&r);
    let created = stored(update_managed_fields(
        info,
        None,
        &config(Some(1)),
        "kubectl-create",
        T1,
    ));
    let mut reset = created.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    let out = update_managed_fields(info, Some(&created), &reset, "kubectl-patch", T2);
    assert!(out["metadata"].get("managedFields").is_none());
    // Objects without managed fields stay untracked on update...
    let mut scaled = stored(out.clone());
    scaled["spec"]["replicas"] = json!(5);
    let out2 = update_managed_fields(info, Some(&stored(out)), &scaled, "kubectl-scale", T3);
    assert!(out2["metadata"].get("managedFields").is_none());
    // ...until an apply, which gives what was there to "before-first-apply".
    let applied = apply(
        info,
        Some(&stored(out2)),
        &config(None),
        "kubectl",
        false,
        T3,
    )
    .expect("applies");
    assert!(owns(
        &applied,
        "before-first-apply",
        "Update",
        &["f:spec", "f:replicas"]
    ));
    assert_eq!(applied["spec"]["replicas"], 5);

    // A client may also write managed fields outright.
    let mut custom = created.clone();
    custom["metadata"]["managedFields"] = json!([{"manager": "mine", "operation": "Update", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let out = update_managed_fields(info, Some(&created), &custom, "kubectl-edit", T2);
    assert!(owns(&out, "mine", "Update", &["f:spec", "f:replicas"]));
    assert!(entry(&out, "kubectl-create", "Update").is_none());
}

#[test]
fn server_side_apply_rejects_bad_configurations() {
    let r = registry();
    let info = deployments(&r);
    let mut wrong_kind = config(None);
    wrong_kind["kind"] = json!("StatefulSet");
    let err = apply(info, None, &wrong_kind, "kubectl", false, T1).expect_err("wrong kind");
    assert_eq!(
        err.to_string(),
        "invalid object type: apps/v1, Kind=StatefulSet"
    );
    assert_eq!(err.code(), 400);

    let mut with_fields = config(None);
    with_fields["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(info, None, &with_fields, "kubectl", false, T1).map_err(|e| e.to_string()),
        Err("metadata.managedFields must be nil".into())
    );

    let mut unknown = config(None);
    unknown["spec"]["replicaz"] = json!(3);
    let err = apply(info, None, &unknown, "kubectl", false, T1).expect_err("unknown field");
    assert_eq!(
        err.to_string(),
        "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema"
    );

    let mut dup = config(None);
    dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
    assert_eq!(
        apply(info, None, &dup, "kubectl", false, T1).map_err(|e| e.code()),
        Err(400)
    );
    assert_eq!(
        apply(info, None, &json!([]), "kubectl", false, T1).map_err(|e| e.code()),
        Err(400)
    );
}

#[test]
fn server_side_apply_noop_keeps_times() {
    let r = registry();
    let info = deployments(&r);
    let created =
        stored(apply(info, None, &config(Some(2)), "kubectl", false, T1).expect("creates"));
    let again = apply(info, Some(&created), &config(Some(2)), "kubectl", false, T2).expect("no-op");
    assert_eq!(again, created);
}

#[test]
fn server_side_apply_on_other_kinds() {
    let r = registry();
    let cms = r.lookup("", "v1", "configmaps").expect("configmaps");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["x"]}, "data": {"a": "1", "b": "2"}});
    let created = stored(apply(cms, None, &cfg, "mgr", false, T1).expect("creates"));
    assert!(owns(&created, "mgr", "Apply", &["f:data", "f:a"]));
    assert!(owns(
        &created,
        "mgr",
        "Apply",
        &["f:metadata", "f:finalizers", "v:\"x\""]
    ));
    let smaller = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let out = apply(cms, Some(&created), &smaller, "mgr", false, T2).expect("applies");
    assert_eq!(out["data"], json!({"a": "1"}));
    assert!(out["metadata"].get("finalizers").is_none());

    // Nodes: addresses merge by type; status is the status subresource's.
    let nodes = r.lookup("", "v1", "nodes").expect("nodes");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let created = stored(
        apply_subresource(nodes, "status", None, &node, "kubelet", false, T1).expect("applies"),
    );
    let e = entry(&created, "kubelet", "Apply").expect("entry");
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"]["f:status"]["f:addresses"],
        json!({"k:{\"type\":\"InternalIP\"}": {".": {}, "f:address": {}, "f:type": {}}})
    );
}

/// A small deterministic generator of JSON built from real field names and directives.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }

    fn value(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "metadata",
            "labels",
            "annotations",
            "finalizers",
            "name",
            "spec",
            "template",
            "containers",
            "image",
            "ports",
            "containerPort",
            "protocol",
            "env",
            "value",
            "replicas",
            "selector",
            "matchLabels",
            "strategy",
            "rollingUpdate",
            "type",
            "volumes",
            "emptyDir",
            "status",
            "conditions",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/finalizers",
            "$deleteFromPrimitiveList/finalizers",
            "$setElementOrder/",
            "tolerations",
            "apiVersion",
            "kind",
            "managedFields",
        ];
        const STRINGS: &[&str] = &[
            "a",
            "web",
            "delete",
            "replace",
            "merge",
            "TCP",
            "apps/v1",
            "Deployment",
            "",
        ];
        let kind = if depth == 0 {
            self.next() % 4
        } else {
            self.next() % 7
        };
        match kind {
            0 => Value::Null,
            1 => json!(self.next() % 5),
            2 => json!(self.pick(STRINGS)),
            3 => json!(self.next() & 1 == 0),
            4 | 5 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.next() % 4 {
                    let k = self.pick(KEYS).to_string();
                    let v = self.value(depth - 1);
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            _ => Value::Array(
                (0..self.next() % 3)
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
        }
    }
}

/// Arbitrary (well-formed JSON) input never panics any entry point.
#[test]
fn arbitrary_input_never_panics() {
    let r = registry();
    let info = deployments(&r);
    let mut g = Gen(7);
    let live = stored(apply(info, None, &config(Some(2)), "kubectl", false, T1).expect("creates"));
    for _ in 0..3000 {
        let mut v = g.value(6);
        let body = serde_json::to_vec(&v).expect("encodes");
        let _ = patch_object(info, PatchType::Strategic, &live, &body);
        let _ = patch_object(info, PatchType::Merge, &live, &body);
        let _ = patch_object(info, PatchType::Json, &live, &body);
        let _ = update_managed_fields(info, Some(&live), &v, "fuzz", T2);
        let _ = update_managed_fields(info, Some(&v), &live, "fuzz", T2);
        let other = serde_json::to_vec(&g.value(5)).expect("encodes");
        let _ = patch_object(info, PatchType::Strategic, &v, &other);
        let _ = apply(info, Some(&v), &config(Some(3)), "kubectl", false, T2);
        if let Value::Object(m) = &mut v {
            m.insert("apiVersion".into(), json!("apps/v1"));
            m.insert("kind".into(), json!("Deployment"));
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.remove("managedFields");
            }
        }
        let _ = apply(info, Some(&live), &v, "fuzz", false, T2);
        let _ = apply(info, Some(&live), &v, "kubectl", true, T2);
        let _ = apply(info, None, &v, "fuzz", false, T2);
    }
}
