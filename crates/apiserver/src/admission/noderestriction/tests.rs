use serde_json::{json, Value};

use super::*;
use crate::auth::NODES_GROUP;

fn node_a() -> Identity {
    Identity::new("system:node:a", vec![NODES_GROUP.to_string()])
}

fn res<'a>(
    group: &'a str,
    resource: &'a str,
    sub: Option<&'a str>,
    ns: Option<&'a str>,
    name: Option<&'a str>,
) -> ResourceAttributes<'a> {
    ResourceAttributes {
        group,
        resource,
        subresource: sub,
        namespace: ns,
        name,
    }
}

fn request(verb: &str, r: ResourceAttributes<'_>, pod: Value) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb,
        resource: Some(r),
        path: "/",
    };
    let who = node_a();
    futures_lite_block_on(check_request(&who, &attrs, || async move { Ok(pod) }))
}

/// The futures here never wait.
fn futures_lite_block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn message(r: Result<(), ApiError>) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.code(), 403, "{e}");
            e.to_string()
        }
        Ok(()) => "allowed".into(),
    }
}

#[test]
fn nodes_may_modify_only_themselves() {
    let on_a = json!({"spec": {"nodeName": "a"}});
    assert_eq!(
        message(request(
            "patch",
            res("", "nodes", None, None, Some("b")),
            Value::Null
        )),
        "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
    );
    for sub in [None, Some("status")] {
        let r = res("", "nodes", sub, None, Some("a"));
        assert_eq!(message(request("patch", r, Value::Null)), "allowed");
    }
    let create_b = json!({"metadata": {"name": "b"}});
    let r = res("", "nodes", None, None, None);
    assert_eq!(message(request("create", r, Value::Null)), "allowed");
    assert_eq!(
        message(check_create(&node_a(), &r, &create_b, None)),
        "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
    );
    let labelled = json!({"metadata": {"name": "a", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "a", "node-restriction.kubernetes.io/x": "y", "example.com/ok": "1"}}});
    assert_eq!(
        message(check_create(&node_a(), &r, &labelled, None)),
        "nodes \"a\" is forbidden: node \"a\" is not allowed to set the following labels: node-restriction.kubernetes.io/x, node-role.kubernetes.io/control-plane"
    );
    // Updates: no taint changes.
    let ra = res("", "nodes", Some("status"), None, Some("a"));
    let old = json!({"metadata": {"name": "a"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    let mut new = old.clone();
    new["status"] = json!({"phase": "Running"});
    assert!(check_update(&node_a(), &ra, &new, &old).is_ok());
    new["spec"]["taints"] = json!([]);
    assert_eq!(
        message(check_update(&node_a(), &ra, &new, &old)),
        "nodes \"a\" is forbidden: node \"a\" is not allowed to modify taints"
    );
    let _ = on_a;
}

#[test]
fn pods_bound_to_the_node_only() {
    let on_a = json!({"spec": {"nodeName": "a"}});
    let on_b = json!({"spec": {"nodeName": "b"}});
    let pod = |sub| res("", "pods", sub, Some("default"), Some("p"));
    assert_eq!(
        message(request("delete", pod(None), on_a.clone())),
        "allowed"
    );
    assert_eq!(
        message(request("delete", pod(None), on_b.clone())),
        "pods \"p\" is forbidden: node \"a\" can only delete pods with spec.nodeName set to itself"
    );
    assert_eq!(
        message(request("create", pod(Some("eviction")), on_b.clone())),
        "pods \"p\" is forbidden: node a can only evict pods with spec.nodeName set to itself"
    );
    assert_eq!(
        message(request("create", pod(Some("eviction")), on_a.clone())),
        "allowed"
    );
    assert_eq!(
        message(request("update", pod(None), on_a.clone())),
        "pods \"p\" is forbidden: unexpected operation \"UPDATE\", node \"a\" can only create and delete mirror pods"
    );
    assert_eq!(
        message(request("create", pod(Some("exec")), on_a.clone())),
        "pods \"p\" is forbidden: unexpected pod subresource \"exec\", only 'status' and 'eviction' are allowed"
    );
    let status = pod(Some("status"));
    assert_eq!(message(request("patch", status, on_b.clone())), "allowed");
    assert_eq!(
        message(check_update(&node_a(), &status, &on_b, &on_b)),
        "pods \"p\" is forbidden: node \"a\" can only update pod status for pods with spec.nodeName set to itself"
    );
    assert!(check_update(&node_a(), &status, &on_a, &on_a).is_ok());
    let mut relabelled = on_a.clone();
    relabelled["metadata"] = json!({"labels": {"x": "y"}});
    assert_eq!(
        message(check_update(&node_a(), &status, &relabelled, &on_a)),
        "pods \"p\" is forbidden: node \"a\" cannot update labels through pod status"
    );
}

#[test]
fn mirror_pods_only() {
    let r = res("", "pods", None, Some("default"), None);
    let node = json!({"metadata": {"name": "a", "uid": "u1"}});
    let mut pod = json!({"metadata": {"name": "static-a", "annotations": {"kubernetes.io/config.mirror": "h"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "a", "uid": "u1", "controller": true}]},
        "spec": {"nodeName": "a", "containers": [{"name": "c", "image": "i"}]}});
    assert!(check_create(&node_a(), &r, &pod, Some(&node)).is_ok());
    pod["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "s"}}]);
    assert_eq!(
        message(check_create(&node_a(), &r, &pod, Some(&node))),
        "pods \"static-a\" is forbidden: node \"a\" can not create pods that reference secrets"
    );
    pod["spec"]["volumes"] = json!([]);
    pod["metadata"]["ownerReferences"][0]["uid"] = json!("u2");
    assert_eq!(
        message(check_create(&node_a(), &r, &pod, Some(&node))),
        "pods \"static-a\" is forbidden: node a UID mismatch: expected u2 got u1"
    );
    if let Some(m) = pod["metadata"].as_object_mut() {
        m.remove("annotations");
    }
    assert_eq!(
        message(check_create(&node_a(), &r, &pod, Some(&node))),
        "pods \"static-a\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"a\" can only create mirror pods"
    );
}

#[test]
fn leases_events_csrs_and_nothing_else() {
    let lease = |ns, name| res("coordination.k8s.io", "leases", None, Some(ns), name);
    assert_eq!(
        message(request(
            "update",
            lease("kube-node-lease", Some("a")),
            Value::Null
        )),
        "allowed"
    );
    assert_eq!(
        message(request("update", lease("kube-node-lease", Some("b")), Value::Null)),
        "leases.coordination.k8s.io \"b\" is forbidden: can only access node lease with the same name as the requesting node"
    );
    assert_eq!(
        message(request("create", lease("default", None), Value::Null)),
        "leases.coordination.k8s.io is forbidden: can only access leases in the \"kube-node-lease\" system namespace"
    );
    let csr = res(
        "certificates.k8s.io",
        "certificatesigningrequests",
        None,
        None,
        None,
    );
    assert_eq!(message(request("create", csr, Value::Null)), "allowed");
    let ev = res("events.k8s.io", "events", None, Some("default"), None);
    assert_eq!(message(request("create", ev, Value::Null)), "allowed");
    let secret = res("", "secrets", None, Some("default"), None);
    assert_eq!(
        message(request("create", secret, Value::Null)),
        "secrets is forbidden: User \"system:node:a\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    let deploy = res("apps", "deployments", None, Some("default"), Some("web"));
    assert!(request("patch", deploy, Value::Null).is_err());
    // Reads stay allowed, and others are not restricted.
    assert!(request("get", secret, Value::Null).is_ok());
    let admin = Identity::new("admin", vec!["system:masters".into()]);
    let attrs = Attributes {
        verb: "create",
        resource: Some(secret),
        path: "/",
    };
    let r = futures_lite_block_on(check_request(&admin, &attrs, || async { Ok(Value::Null) }));
    assert!(r.is_ok());
}
