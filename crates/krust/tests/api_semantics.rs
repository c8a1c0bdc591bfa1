//! API semantics over raw HTTPS: pagination, watch resourceVersions, dry runs, deletion
//! with finalizers and propagation, generateName, Service address allocation. The API
//! server runs alone here, so no controller acts on what these tests create.

mod common;

use common::Server;
use serde_json::{json, Value};

fn v(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post(s: &Server, path: &str, obj: Value) -> (u16, Value) {
    let (code, body) = s.curl(
        "POST",
        path,
        Some(("application/json", obj.to_string().as_bytes())),
        true,
    );
    (code, v(&body))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let (code, body) = s.curl("GET", path, None, true);
    (code, v(&body))
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"n": name}}})
}

/// The API server without the components it hosts.
const BARE: &[&str] = &["--disable", "controllers,scheduler"];

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn list_pagination_with_limit_and_continue() {
    let s = Server::start_args(BARE);
    for i in 0..7 {
        assert_eq!(post(&s, CMS, cm(&format!("page-{i}"))).0, 201);
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut remaining = Vec::new();
    loop {
        let path = match &token {
            Some(t) => format!("{CMS}?limit=3&continue={t}"),
            None => format!("{CMS}?limit=3"),
        };
        let (code, list) = get(&s, &path);
        assert_eq!(code, 200, "{list}");
        pages += 1;
        remaining.push(list["metadata"]["remainingItemCount"].as_u64());
        names.extend(
            list["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string()),
        );
        match list["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7).map(|i| format!("page-{i}")).collect::<Vec<_>>()
    );
    // As upstream: what follows a cut page is counted, but not under a selector.
    assert_eq!(remaining, [Some(4), Some(1), None]);
    let (_, list) = get(&s, &format!("{CMS}?limit=3&labelSelector=n"));
    assert!(list["metadata"]["continue"].is_string(), "{list}");
    assert!(
        list["metadata"].get("remainingItemCount").is_none(),
        "{list}"
    );
    let (code, err) = get(&s, &format!("{CMS}?limit=3&continue=garbage"));
    assert_eq!(
        (code, err["reason"].as_str()),
        (400, Some("BadRequest")),
        "{err}"
    );
}

#[test]
fn watch_from_a_revision_bookmarks_and_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_in(tmp.path(), BARE);
    let (_, first) = post(&s, CMS, cm("w1"));
    let rv1: i64 = first["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    post(&s, CMS, cm("w2"));
    post(&s, CMS, cm("w3"));
    // From rv1: exactly the later changes, in order.
    let (code, body) = s.curl(
        "GET",
        &format!("{CMS}?watch=true&resourceVersion={rv1}&timeoutSeconds=1"),
        None,
        true,
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = body.lines().map(v).collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, vec!["w2", "w3"], "{body}");
    assert!(events.iter().all(|e| e["type"] == "ADDED"));

    // Streaming list: initial state, then a bookmark marking its end.
    let (_, body) = s.curl(
        "GET",
        &format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1&labelSelector=n%3Dw1"),
        None,
        true,
    );
    let events: Vec<Value> = body.lines().map(v).collect();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w1");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // After a restart the history before it is gone: 410 Expired, as upstream.
    s.kill9();
    let s = Server::start_in(tmp.path(), BARE);
    let (code, body) = s.curl(
        "GET",
        &format!("{CMS}?watch=true&resourceVersion={rv1}&timeoutSeconds=1"),
        None,
        true,
    );
    assert_eq!(code, 200);
    let ev = v(body.lines().next().unwrap_or("{}"));
    assert_eq!(ev["type"], "ERROR", "{body}");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[test]
fn dry_run_changes_nothing_and_deletecollection_deletes_selected() {
    let s = Server::start_args(BARE);
    let (code, obj) = post(&s, &format!("{CMS}?dryRun=All"), cm("dry"));
    assert_eq!(code, 201, "{obj}");
    assert_eq!(obj["metadata"]["name"], "dry");
    assert_eq!(get(&s, &format!("{CMS}/dry")).0, 404);
    for n in ["keep", "drop1", "drop2"] {
        post(&s, CMS, cm(n));
    }
    let (code, _) = s.curl("DELETE", &format!("{CMS}/keep?dryRun=All"), None, true);
    assert_eq!(code, 200);
    assert_eq!(get(&s, &format!("{CMS}/keep")).0, 200);
    let (code, body) = s.curl(
        "DELETE",
        &format!("{CMS}?labelSelector=n%20in%20(drop1,drop2)"),
        None,
        true,
    );
    assert_eq!(code, 200, "{body}");
    let (_, list) = get(&s, CMS);
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["keep"]);
}

#[test]
fn finalizers_hold_deletion_and_propagation_is_recorded() {
    let s = Server::start_args(BARE);
    let mut obj = cm("held");
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    post(&s, CMS, obj);
    let (code, body) = s.curl("DELETE", &format!("{CMS}/held"), None, true);
    assert_eq!(code, 200, "{body}");
    let (code, held) = get(&s, &format!("{CMS}/held"));
    assert_eq!(code, 200, "an object with finalizers stays");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    // Removing the last finalizer completes the deletion.
    let patch = br#"{"metadata":{"finalizers":null}}"#;
    let (code, body) = s.curl(
        "PATCH",
        &format!("{CMS}/held"),
        Some(("application/merge-patch+json", patch)),
        true,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(&s, &format!("{CMS}/held")).0, 404);

    post(&s, CMS, cm("fg"));
    let opts = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground"}"#;
    let (code, _) = s.curl(
        "DELETE",
        &format!("{CMS}/fg"),
        Some(("application/json", opts)),
        true,
    );
    assert_eq!(code, 200);
    let (_, fg) = get(&s, &format!("{CMS}/fg"));
    assert_eq!(
        fg["metadata"]["finalizers"],
        json!(["foregroundDeletion"]),
        "{fg}"
    );
    post(&s, CMS, cm("orphan"));
    let (code, _) = s.curl(
        "DELETE",
        &format!("{CMS}/orphan?propagationPolicy=Orphan"),
        None,
        true,
    );
    assert_eq!(code, 200);
    assert_eq!(
        get(&s, &format!("{CMS}/orphan")).1["metadata"]["finalizers"],
        json!(["orphan"])
    );
}

#[test]
fn generate_name_and_service_address_allocation() {
    let s = Server::start_args(BARE);
    let (code, obj) = post(
        &s,
        CMS,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
    );
    assert_eq!(code, 201, "{obj}");
    let name = obj["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    // A long prefix is cut to 58 characters, as upstream, so the name still fits 63.
    let long = format!("{}-", "g".repeat(61));
    let (code, obj) = post(
        &s,
        CMS,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": long}}),
    );
    assert_eq!(code, 201, "{obj}");
    let name = obj["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with(&long[..58]) && name.len() == 63, "{name}");

    let svcs = "/api/v1/namespaces/default/services";
    let svc = |name: &str, ty: &str, node_port: Option<i64>| {
        let mut port = json!({"port": 80});
        if let Some(p) = node_port {
            port["nodePort"] = json!(p);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"type": ty, "selector": {"a": "b"}, "ports": [port]}})
    };
    let (code, a) = post(&s, svcs, svc("a", "NodePort", Some(30080)));
    assert_eq!(code, 201, "{a}");
    assert!(
        a["spec"]["clusterIP"]
            .as_str()
            .unwrap_or("")
            .starts_with("10.43."),
        "{a}"
    );
    assert_eq!(a["spec"]["ports"][0]["nodePort"], 30080);
    let (code, b) = post(&s, svcs, svc("b", "NodePort", Some(30080)));
    assert_eq!(code, 422, "a node port in use is refused: {b}");
    let (code, c) = post(&s, svcs, svc("c", "NodePort", None));
    assert_eq!(code, 201, "{c}");
    let auto = c["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0);
    assert!((30000..=32767).contains(&auto), "{c}");
    assert_ne!(a["spec"]["clusterIP"], c["spec"]["clusterIP"]);
    let ip = a["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let (code, dup) = post(
        &s,
        svcs,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "d"}, "spec": {"clusterIP": ip, "ports": [{"port": 1}]}}),
    );
    assert_eq!(code, 422, "a cluster IP in use is refused: {dup}");
    // Deleting releases both.
    assert_eq!(s.curl("DELETE", &format!("{svcs}/a"), None, true).0, 200);
    let (code, again) = post(&s, svcs, svc("b", "NodePort", Some(30080)));
    assert_eq!(code, 201, "node port released on delete: {again}");
    let (code, _) = post(
        &s,
        svcs,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "d"}, "spec": {"clusterIP": ip, "ports": [{"port": 1}]}}),
    );
    assert_eq!(code, 201, "cluster IP released on delete");
}

#[test]
fn creating_into_a_terminating_namespace_is_forbidden() {
    let s = Server::start_args(BARE);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ending", "finalizers": ["example.com/hold"]}});
    assert_eq!(post(&s, "/api/v1/namespaces", ns).0, 201);
    let (code, body) = s.curl("DELETE", "/api/v1/namespaces/ending", None, true);
    assert_eq!(code, 200, "{body}");
    let (_, ending) = get(&s, "/api/v1/namespaces/ending");
    assert_eq!(ending["status"]["phase"], "Terminating", "{ending}");
    let (code, err) = post(&s, "/api/v1/namespaces/ending/configmaps", cm("late"));
    assert_eq!(code, 403, "{err}");
    assert_eq!(err["reason"], "Forbidden");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("because it is being terminated"),
        "{err}"
    );
}

/// Systematic, not one kind at a time: one fresh object of every served kind
/// (`tests/manifests/fresh.yaml`), each read back and checked, field by field against
/// upstream's OpenAPI schema, for every required field below the structs it has. A
/// generated client (Python, Java, C#) refuses an object that lacks one.
#[test]
fn fresh_objects_carry_every_required_field() {
    let s = Server::start();
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/manifests/fresh.yaml"
    );
    s.kubectl_ok(common::KUBECTL, &["create", "-f", manifest], None);
    let registry = krust_machinery::Registry::builtin();
    let mut kinds = std::collections::BTreeSet::new();
    let mut gaps = Vec::new();
    let listed = s.kubectl_ok(
        common::KUBECTL,
        &["get", "-f", manifest, "-o", "json"],
        None,
    );
    for obj in v(&listed)["items"].as_array().cloned().unwrap_or_default() {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let info = registry
            .by_kind(&api_version, &kind)
            .unwrap_or_else(|| panic!("{api_version} {kind} not served"));
        for path in krust_machinery::zeros::missing_required(info, &obj) {
            gaps.push(format!("{kind}: {path}"));
        }
        kinds.insert(kind);
    }
    assert!(kinds.len() >= 30, "read back only {kinds:?}");
    assert!(
        gaps.is_empty(),
        "required fields missing:\n{}",
        gaps.join("\n")
    );
    // The issue's examples: a DaemonSet's counts and an RC's replicas are always written.
    let ds = v(&s.kubectl(&["get", "daemonset", "fresh", "-o", "json"]));
    for count in [
        "numberReady",
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberMisscheduled",
    ] {
        assert!(ds["status"][count].is_u64(), "{count}: {}", ds["status"]);
    }
    let rc = v(&s.kubectl(&["get", "rc", "fresh", "-o", "json"]));
    assert!(rc["status"]["replicas"].is_u64(), "{}", rc["status"]);
}
