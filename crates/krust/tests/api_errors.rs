//! Bad input gets the right Status and changes nothing; credentials are enforced.

mod common;

use common::Server;
use serde_json::{json, Value};

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

fn configmaps(s: &Server) -> usize {
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/configmaps", None, true);
    assert_eq!(code, 200, "{body}");
    status(&body)["items"].as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn bad_requests_get_status_errors_and_change_nothing() {
    let s = Server::start();
    let path = "/api/v1/namespaces/default/configmaps";
    let good =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok"},"data":{"a":"b"}}"#;
    let (code, body) = s.curl("POST", path, Some(("application/json", good)), true);
    assert_eq!(code, 201, "{body}");
    let before = configmaps(&s);

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"apiVersion\": \"v1\",".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "malformed YAML",
            "application/yaml",
            b"a: [unclosed\n  b: {".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "bad name",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "no name",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "wrong kind",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "wrong type",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":7}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "duplicate",
            "application/json",
            good.to_vec(),
            409,
            "AlreadyExists",
        ),
        (
            "unsupported media type",
            "text/plain",
            b"hello".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
    ];
    for (what, ct, body, code, reason) in cases {
        let (got, text) = s.curl("POST", path, Some((ct, &body)), true);
        assert_eq!(got, code, "{what}: {text}");
        let st = status(&text);
        assert_eq!(st["kind"], "Status", "{what}: {text}");
        assert_eq!(st["reason"], reason, "{what}: {text}");
        assert_eq!(st["code"], code, "{what}: {text}");
    }
    let (code, text) = s.curl(
        "POST",
        path,
        Some((
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
        )),
        true,
    );
    assert_eq!(code, 422);
    assert_eq!(
        status(&text)["details"]["causes"][0]["field"],
        "metadata.name",
        "{text}"
    );

    // Oversized body: over 3 MiB.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (code, text) = s.curl(
        "POST",
        path,
        Some(("application/json", big.as_bytes())),
        true,
    );
    assert_eq!(code, 413, "{text}");
    assert_eq!(
        status(&text)["message"],
        "Request entity too large: limit is 3145728"
    );
    // An object over what the store keeps (etcd's 1.5 MiB): 413, nothing written.
    let cm_with = |name: &str, extra: Value| {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        o.to_string()
    };
    // (A ConfigMap has its own 1 MiB limit; a pod template's env has none.)
    let templates = "/api/v1/namespaces/default/podtemplates";
    let env = json!([{"name": "BIG", "value": "x".repeat(2 << 20)}]);
    let two_mib = json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "big2"},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox", "env": env}]}}});
    let (code, text) = s.curl(
        "POST",
        templates,
        Some(("application/json", two_mib.to_string().as_bytes())),
        true,
    );
    assert_eq!(
        (code, status(&text)["message"].as_str()),
        (413, Some("Request entity too large: limit is 1572864")),
        "{text}"
    );
    let (code, _) = s.curl("GET", &format!("{templates}/big2"), None, true);
    assert_eq!(code, 404, "a refused object is not stored");
    // A generateName whose last character before the dash is wide (fuzzing found the
    // server panicking on it): 422.
    let gen =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x\u{e9}-"}});
    let (code, text) = s.curl(
        "POST",
        path,
        Some(("application/json", gen.to_string().as_bytes())),
        true,
    );
    assert_eq!(code, 422, "{text}");
    // Annotations over 256 KiB in all, a label value over 63 characters: 422.
    let anns = json!({"metadata": {"name": "anns", "annotations": {"a": "x".repeat(300 << 10)}}});
    let (code, text) = s.curl(
        "POST",
        path,
        Some(("application/json", cm_with("anns", anns).as_bytes())),
        true,
    );
    assert_eq!(code, 422, "{text}");
    assert_eq!(
        status(&text)["details"]["causes"][0]["field"],
        "metadata.annotations",
        "{text}"
    );
    assert!(
        status(&text)["message"]
            .as_str()
            .is_some_and(|m| m.contains("Too long: may not be more than 262144 bytes")),
        "{text}"
    );
    let label = json!({"metadata": {"name": "lbl", "labels": {"a": "x".repeat(64)}}});
    let (code, text) = s.curl(
        "POST",
        path,
        Some(("application/json", cm_with("lbl", label).as_bytes())),
        true,
    );
    assert_eq!(code, 422, "{text}");
    assert!(
        status(&text)["message"]
            .as_str()
            .is_some_and(|m| m.contains("must be no more than 63 characters")),
        "{text}"
    );
    // A JSON patch of more operations than upstream allows: 413.
    let (code, _) = s.curl(
        "POST",
        path,
        Some(("application/json", cm_with("patched", json!({})).as_bytes())),
        true,
    );
    assert_eq!(code, 201);
    let ops: Vec<Value> = (0..10_001)
        .map(|i| json!({"op": "add", "path": format!("/metadata/labels/l{i}"), "value": "v"}))
        .collect();
    let (code, text) = s.curl(
        "PATCH",
        &format!("{path}/patched"),
        Some((
            "application/json-patch+json",
            Value::Array(ops).to_string().as_bytes(),
        )),
        true,
    );
    assert_eq!(
        (code, status(&text)["message"].as_str()),
        (
            413,
            Some("Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001")
        ),
        "{text}"
    );
    let (code, _) = s.curl("DELETE", &format!("{path}/patched"), None, true);
    assert_eq!(code, 200);

    // Unknown kinds and paths.
    let (code, text) = s.curl("GET", "/apis/nosuch.example.com/v1/widgets", None, true);
    assert_eq!(code, 404, "{text}");
    assert_eq!(status(&text)["reason"], "NotFound");
    let (code, _) = s.curl(
        "POST",
        "/api/v1/namespaces/default/widgets",
        Some(("application/json", b"{}")),
        true,
    );
    assert_eq!(code, 404);
    let (code, text) = s.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps/missing",
        None,
        true,
    );
    assert_eq!(
        (code, status(&text)["reason"].as_str()),
        (404, Some("NotFound")),
        "{text}"
    );
    assert_eq!(status(&text)["message"], "configmaps \"missing\" not found");

    // Stale resourceVersion on update: 409 Conflict, object unchanged.
    let stale = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok","resourceVersion":"1"},"data":{"a":"changed"}}"#;
    let (code, text) = s.curl(
        "PUT",
        &format!("{path}/ok"),
        Some(("application/json", stale)),
        true,
    );
    assert_eq!(code, 409, "{text}");
    assert_eq!(status(&text)["reason"], "Conflict");
    let (_, text) = s.curl("GET", &format!("{path}/ok"), None, true);
    assert_eq!(status(&text)["data"]["a"], "b");

    // Creating into a namespace that does not exist.
    let (code, text) = s.curl(
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        Some(("application/json", good)),
        true,
    );
    assert_eq!(code, 404, "{text}");

    assert_eq!(
        configmaps(&s),
        before,
        "failed requests must not change the store"
    );
}

#[test]
fn system_namespaces_exist_at_start() {
    let s = Server::start();
    let names = s.kubectl(&["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            names.contains(&format!("namespace/{ns}")),
            "{ns} missing: {names}"
        );
    }
}

#[test]
fn requests_without_client_certificates_get_401() {
    let s = Server::start();
    for path in [
        "/api",
        "/apis",
        "/api/v1/namespaces",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/deployments",
        "/openapi/v3",
    ] {
        let (code, body) = s.curl("GET", path, None, false);
        assert_eq!(code, 401, "{path}: {body}");
        assert_eq!(status(&body)["reason"], "Unauthorized");
    }
    let (code, _) = s.curl(
        "POST",
        "/api/v1/namespaces",
        Some(("application/json", b"{}")),
        false,
    );
    assert_eq!(code, 401);
    for path in ["/version", "/healthz", "/livez", "/readyz"] {
        let (code, _) = s.curl("GET", path, None, false);
        assert_eq!(code, 200, "{path} is public");
    }
}

#[test]
fn certificates_from_another_ca_are_refused_at_the_handshake() {
    let s = Server::start();
    let other = Server::start();
    let (ca, _, _) = s.client_files();
    let (_, cert, key) = other.client_files();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(format!("{}/api", s.url))
        .output()
        .expect("curl");
    assert!(!out.status.success(), "handshake must fail");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "no HTTP response at all"
    );
}

/// Query values upstream's parameter codec and request filters refuse: a 400 (or 422 for
/// ListOptions that contradict themselves) with upstream's message; Python's spellings pass.
#[test]
fn bad_query_values_get_upstreams_messages() {
    let s = Server::start();
    let base = "/api/v1/namespaces/default/configmaps";
    for (query, code, message) in [
        ("limit=ten", 400, "strconv.ParseInt: parsing \"ten\": invalid syntax"),
        (
            "timeout=soon",
            400,
            "invalid timeout specified in the request URL - time: invalid duration \"soon\"",
        ),
        (
            "resourceVersionMatch=Exact",
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "watch=True&sendInitialEvents=True",
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
    ] {
        let (got, body) = s.curl("GET", &format!("{base}?{query}"), None, true);
        assert_eq!(got, code, "{query}: {body}");
        assert_eq!(status(&body)["message"], message, "{query}");
        assert!(body.ends_with("}\n"), "{query}: {body:?}");
    }
    // `watch=True` (Python's spelling) is a watch: it streams until timeoutSeconds.
    let started = std::time::Instant::now();
    let (got, body) = s.curl(
        "GET",
        &format!("{base}?watch=True&timeoutSeconds=1"),
        None,
        true,
    );
    assert_eq!(got, 200, "{body}");
    assert!(
        body.lines().all(|l| l.starts_with("{\"type\":")) && started.elapsed().as_millis() >= 900,
        "not a watch: {body}"
    );
    let (got, _) = s.curl("GET", &format!("{base}?timeout=5s&limit=1"), None, true);
    assert_eq!(got, 200);
}

/// `networking.k8s.io/v1`: an invalid Ingress and an invalid NetworkPolicy are refused with
/// upstream's 422 and messages; an Ingress that names no class gets the default one.
#[test]
fn networking_objects_are_validated_and_ingresses_get_the_default_class() {
    let s = Server::start();
    let post = |path: &str, obj: Value| {
        let body = obj.to_string();
        s.curl(
            "POST",
            path,
            Some(("application/json", body.as_bytes())),
            true,
        )
    };
    let ingresses = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let backend = json!({"service": {"name": "web", "port": {"name": "http", "number": 80}}});
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "bad"}, "spec": {"rules": [{"host": "1.2.3.4", "http": {"paths": [
            {"path": "/a//b", "pathType": "Exact", "backend": backend}]}}]}});
    let (code, text) = post(ingresses, bad);
    assert_eq!(code, 422, "{text}");
    let st = status(&text);
    assert_eq!(
        st["message"],
        "Ingress.networking.k8s.io \"bad\" is invalid: [spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address, spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//', spec.rules[0].http.paths[0].backend: Invalid value: \"\": cannot set both port name & port number]"
    );
    assert_eq!(
        st["details"]["causes"][2]["field"],
        "spec.rules[0].http.paths[0].backend"
    );
    let (code, text) = post(
        ingresses,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "empty"}, "spec": {}}),
    );
    assert_eq!(code, 422, "{text}");
    assert_eq!(
        status(&text)["message"],
        "Ingress.networking.k8s.io \"empty\" is invalid: spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"
    );

    let policies = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad"}, "spec": {"ingress": [{
            "ports": [{"port": 100, "endPort": 50}],
            "from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}});
    let (code, text) = post(policies, bad);
    assert_eq!(code, 422, "{text}");
    assert_eq!(
        status(&text)["message"],
        "NetworkPolicy.networking.k8s.io \"bad\" is invalid: [spec.ingress[0].ports[0].endPort: Invalid value: 50: must be greater than or equal to `port`, spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`]"
    );
    let good = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db"}, "spec": {"egress": [{"ports": [{"port": 53}]}]}});
    let (code, text) = post(policies, good);
    assert_eq!(code, 201, "{text}");
    let np = status(&text);
    assert_eq!(
        np["spec"]["policyTypes"],
        json!(["Ingress", "Egress"]),
        "{text}"
    );
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");

    let classes = "/apis/networking.k8s.io/v1/ingressclasses";
    for (name, default) in [("other", "false"), ("nginx", "true")] {
        let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name, "annotations": {"ingressclass.kubernetes.io/is-default-class": default}},
            "spec": {"controller": "k8s.io/ingress-nginx"}});
        let (code, text) = post(classes, class);
        assert_eq!(code, 201, "{text}");
    }
    let web = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"}, "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}});
    let (code, text) = post(ingresses, web);
    assert_eq!(code, 201, "{text}");
    let created = status(&text);
    assert_eq!(created["spec"]["ingressClassName"], "nginx", "{text}");
    assert_eq!(created["status"], json!({"loadBalancer": {}}));
}
