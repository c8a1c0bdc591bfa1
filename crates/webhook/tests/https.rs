//! The dispatcher against real HTTPS webhooks on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krust_webhook::{Attributes, Dispatcher, Operation, ServiceResolver, UserInfo, WebhookError};
use serde_json::{json, Value};
use server::{answer, labels, patch, Reply};

/// Resolves nothing; for tests with URL clientConfigs only.
struct NoServices;

#[async_trait::async_trait]
impl ServiceResolver for NoServices {
    async fn resolve(&self, ns: &str, name: &str, _port: u16) -> Result<SocketAddr, String> {
        Err(format!("service {ns}/{name} not found"))
    }
}

/// Resolves every service to one address and records what it was asked.
struct FixedService(SocketAddr, Mutex<Vec<(String, String, u16)>>);

#[async_trait::async_trait]
impl ServiceResolver for FixedService {
    async fn resolve(&self, ns: &str, name: &str, port: u16) -> Result<SocketAddr, String> {
        self.1.lock().unwrap().push((ns.into(), name.into(), port));
        Ok(self.0)
    }
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(Arc::new(NoServices))
}

fn pod() -> Attributes {
    Attributes {
        operation: Operation::Create,
        group: String::new(),
        version: "v1".into(),
        kind: "Pod".into(),
        resource: "pods".into(),
        subresource: String::new(),
        name: "web".into(),
        namespace: Some("default".into()),
        object: Some(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}})),
        old_object: None,
        options: Some(json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"})),
        dry_run: false,
        user: UserInfo {
            username: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["system:authenticated".into()],
            extra: BTreeMap::from([("scopes".to_string(), vec!["a".to_string()])]),
        },
        namespace_labels: Some(BTreeMap::new()),
        cluster_scoped: false,
    }
}

/// A webhook for pod creation with `client` and the `extra` fields over the defaults.
fn hook(name: &str, client: Value, extra: Value) -> Value {
    let mut h = json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

fn config(kind: &str, name: &str, hooks: Vec<Value>) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": hooks})
}

fn url_client(url: String, bundle: &str) -> Value {
    json!({"url": url, "caBundle": bundle})
}

#[tokio::test]
async fn a_validating_denial_reads_as_upstream() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|_: &str, r: &Value| {
            answer(
                r,
                json!({"allowed": false, "warnings": ["careful"],
                "status": {"message": "pods named web are not allowed", "reason": "NoWeb"}}),
            )
        }),
    )
    .await;
    let cfg = config(
        "ValidatingWebhookConfiguration",
        "deny",
        vec![hook(
            "deny.example.com",
            url_client(srv.url("/deny"), &ca.bundle),
            json!({}),
        )],
    );
    let err = dispatcher().validate(&[cfg], &pod()).await.unwrap_err();
    assert_eq!(
        err,
        WebhookError::Denied {
            code: 403,
            reason: "NoWeb".into(),
            message: "admission webhook \"deny.example.com\" denied the request: pods named web are not allowed".into(),
        }
    );
    // The review carried what upstream sends.
    let sent = srv.requests("/deny").remove(0);
    assert_eq!(sent["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(sent["kind"], "AdmissionReview");
    let req = &sent["request"];
    assert_eq!(req["uid"].as_str().unwrap().len(), 36);
    assert_eq!(
        req["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(req["requestKind"], req["kind"]);
    assert!(req.get("subResource").is_none());
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["namespace"], "default");
    assert_eq!(req["name"], "web");
    assert_eq!(req["userInfo"]["username"], "alice");
    assert_eq!(req["userInfo"]["extra"], json!({"scopes": ["a"]}));
    assert_eq!(req["object"]["metadata"]["name"], "web");
    assert_eq!(req["oldObject"], Value::Null);
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["options"]["kind"], "CreateOptions");
}

#[tokio::test]
async fn a_mutating_webhook_patches_the_object() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|_: &str, r: &Value| {
            let mut fields =
                patch(json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]));
            fields["warnings"] = json!(["label added"]);
            answer(r, fields)
        }),
    )
    .await;
    let cfg = config(
        "MutatingWebhookConfiguration",
        "label",
        vec![hook(
            "label.example.com",
            url_client(srv.url("/m"), &ca.bundle),
            json!({}),
        )],
    );
    let mut attrs = pod();
    let warnings = dispatcher()
        .mutate(std::slice::from_ref(&cfg), &mut attrs)
        .await
        .unwrap();
    assert_eq!(warnings, ["label added"]);
    let obj = attrs.object.as_ref().unwrap();
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"app": "web", "mutated": "yes"})
    );

    // A patch for a request without object is refused.
    let mut delete = pod();
    delete.operation = Operation::Delete;
    delete.object = None;
    let cfg = config(
        "MutatingWebhookConfiguration",
        "label",
        vec![hook(
            "label.example.com",
            url_client(srv.url("/m"), &ca.bundle),
            json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]}),
        )],
    );
    let err = dispatcher().mutate(&[cfg], &mut delete).await.unwrap_err();
    assert_eq!(err, WebhookError::BadResponse {
        message: "admission webhook \"label.example.com\" attempted to modify the object, which is not supported for this operation".into()
    });
}

/// `first` adds label `first` unless present; `second` always sets label `second`.
fn reinvocation_server_handler(path: &str, r: &Value) -> Reply {
    let have = labels(r);
    match path {
        "/first" if !have.contains_key("first") => answer(
            r,
            patch(json!([{"op": "add", "path": "/metadata/labels/first", "value": "1"}])),
        ),
        "/second" => answer(
            r,
            patch(json!([{"op": "add", "path": "/metadata/labels/second", "value": "2"}])),
        ),
        _ => answer(r, json!({})),
    }
}

#[tokio::test]
async fn if_needed_webhooks_are_reinvoked_after_a_later_change() {
    let ca = server::ca();
    let srv = server::start(&ca, &["127.0.0.1"], Arc::new(reinvocation_server_handler)).await;
    let configs = |policy: &str| {
        vec![
            // Listed out of order: configurations run sorted by name.
            config(
                "MutatingWebhookConfiguration",
                "b-second",
                vec![hook(
                    "second.example.com",
                    url_client(srv.url("/second"), &ca.bundle),
                    json!({}),
                )],
            ),
            config(
                "MutatingWebhookConfiguration",
                "a-first",
                vec![hook(
                    "first.example.com",
                    url_client(srv.url("/first"), &ca.bundle),
                    json!({"reinvocationPolicy": policy}),
                )],
            ),
        ]
    };
    let mut attrs = pod();
    dispatcher()
        .mutate(&configs("IfNeeded"), &mut attrs)
        .await
        .unwrap();
    assert_eq!(srv.calls("/first"), 2);
    assert_eq!(srv.calls("/second"), 1);
    // The second call saw the other webhook's change.
    assert_eq!(
        labels(&srv.requests("/first")[1])
            .get("second")
            .map(String::as_str),
        Some("2")
    );
    let obj = attrs.object.unwrap();
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"app": "web", "first": "1", "second": "2"})
    );

    let mut attrs = pod();
    dispatcher()
        .mutate(&configs("Never"), &mut attrs)
        .await
        .unwrap();
    assert_eq!(srv.calls("/first"), 3);
    assert_eq!(srv.calls("/second"), 2);
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn failure_policy_when_the_webhook_is_down() {
    let ca = server::ca();
    let port = closed_port().await;
    let url = format!("https://127.0.0.1:{port}/check");
    let with = |policy: &str| {
        vec![config(
            "ValidatingWebhookConfiguration",
            "down",
            vec![hook(
                "down.example.com",
                url_client(url.clone(), &ca.bundle),
                json!({"failurePolicy": policy}),
            )],
        )]
    };
    let err = dispatcher()
        .validate(&with("Fail"), &pod())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        WebhookError::Failed {
            message: format!(
                "failed calling webhook \"down.example.com\": failed to call webhook: Post \"https://127.0.0.1:{port}/check?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        }
    );
    assert_eq!(
        dispatcher()
            .validate(&with("Ignore"), &pod())
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let mut attrs = pod();
    let mutating = |policy: &str| {
        let mut c = with(policy);
        c[0]["kind"] = json!("MutatingWebhookConfiguration");
        c
    };
    assert!(matches!(
        dispatcher().mutate(&mutating("Fail"), &mut attrs).await,
        Err(WebhookError::Failed { .. })
    ));
    dispatcher()
        .mutate(&mutating("Ignore"), &mut attrs)
        .await
        .unwrap();
}

#[tokio::test]
async fn failure_policy_when_the_webhook_is_too_slow() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|_: &str, r: &Value| Reply {
            delay: Duration::from_secs(5),
            ..answer(r, json!({}))
        }),
    )
    .await;
    let with = |policy: &str| {
        vec![config(
            "ValidatingWebhookConfiguration",
            "slow",
            vec![hook(
                "slow.example.com",
                url_client(srv.url("/slow"), &ca.bundle),
                json!({"failurePolicy": policy, "timeoutSeconds": 1}),
            )],
        )]
    };
    let started = Instant::now();
    let err = dispatcher()
        .validate(&with("Fail"), &pod())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        err,
        WebhookError::Failed {
            message: format!(
                "failed calling webhook \"slow.example.com\": failed to call webhook: Post \"{}?timeout=1s\": context deadline exceeded",
                srv.url("/slow")
            )
        }
    );
    let started = Instant::now();
    dispatcher()
        .validate(&with("Ignore"), &pod())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn service_references_go_through_the_resolver() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["svc-name.ns.svc"],
        Arc::new(|_: &str, r: &Value| answer(r, json!({}))),
    )
    .await;
    let resolver = Arc::new(FixedService(srv.addr, Mutex::new(Vec::new())));
    let dispatcher = Dispatcher::new(resolver.clone());
    let client = json!({"service": {"namespace": "ns", "name": "svc-name", "path": "/validate"}, "caBundle": ca.bundle});
    let cfg = config(
        "ValidatingWebhookConfiguration",
        "svc",
        vec![hook("svc.example.com", client, json!({}))],
    );
    dispatcher.validate(&[cfg], &pod()).await.unwrap();
    assert_eq!(srv.calls("/validate"), 1);
    assert_eq!(
        *resolver.1.lock().unwrap(),
        [("ns".to_string(), "svc-name".to_string(), 443)]
    );

    // The same server reached by IP does not present a certificate for that name.
    let cfg = config(
        "ValidatingWebhookConfiguration",
        "ip",
        vec![hook(
            "ip.example.com",
            url_client(srv.url("/validate"), &ca.bundle),
            json!({}),
        )],
    );
    let err = dispatcher.validate(&[cfg], &pod()).await.unwrap_err();
    let WebhookError::Failed { message } = err else {
        panic!("{err:?}")
    };
    assert!(message.ends_with("tls: failed to verify certificate: x509: certificate is not valid for the requested name"), "{message}");

    // And a CA that did not sign it is not trusted.
    let other = server::ca();
    let client = json!({"service": {"namespace": "ns", "name": "svc-name", "path": "/validate"}, "caBundle": other.bundle});
    let cfg = config(
        "ValidatingWebhookConfiguration",
        "svc",
        vec![hook("svc.example.com", client, json!({}))],
    );
    let err = dispatcher.validate(&[cfg], &pod()).await.unwrap_err();
    let WebhookError::Failed { message } = err else {
        panic!("{err:?}")
    };
    assert!(
        message.ends_with("x509: certificate signed by unknown authority"),
        "{message}"
    );
}

#[tokio::test]
async fn dry_run_needs_webhooks_without_side_effects() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|_: &str, r: &Value| answer(r, json!({}))),
    )
    .await;
    let with = |side_effects: &str| {
        vec![config(
            "ValidatingWebhookConfiguration",
            "dry",
            vec![hook(
                "dry.example.com",
                url_client(srv.url("/dry"), &ca.bundle),
                json!({"sideEffects": side_effects}),
            )],
        )]
    };
    let mut attrs = pod();
    attrs.dry_run = true;
    let err = dispatcher()
        .validate(&with("Some"), &attrs)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        WebhookError::Denied {
            code: 400,
            reason: "BadRequest".into(),
            message: "admission webhook \"dry.example.com\" does not support dry run".into()
        }
    );
    assert_eq!(srv.calls("/dry"), 0);
    dispatcher()
        .validate(&with("NoneOnDryRun"), &attrs)
        .await
        .unwrap();
    assert_eq!(srv.requests("/dry")[0]["request"]["dryRun"], true);
}

#[tokio::test]
async fn invalid_answers_and_unsupported_versions_fail_the_call() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|path: &str, r: &Value| match path {
            "/patching" => answer(r, patch(json!([]))),
            "/wrong-uid" => answer(r, json!({"uid": "nope"})),
            _ => answer(r, json!({})),
        }),
    )
    .await;
    let run = |path: &str, extra: Value| {
        let cfg = config(
            "ValidatingWebhookConfiguration",
            "v",
            vec![hook(
                "v.example.com",
                url_client(srv.url(path), &ca.bundle),
                extra,
            )],
        );
        async move { dispatcher().validate(&[cfg], &pod()).await }
    };
    let failed = |detail: &str| WebhookError::Failed {
        message: format!("failed calling webhook \"v.example.com\": {detail}"),
    };
    assert_eq!(
        run("/patching", json!({})).await.unwrap_err(),
        failed(
            "received invalid webhook response: validating webhook may not return response.patch"
        )
    );
    assert_eq!(
        run("/wrong-uid", json!({})).await.unwrap_err(),
        failed(&format!(
            "received invalid webhook response: expected response.uid={:?}, got \"nope\"",
            srv.requests("/wrong-uid")[0]["request"]["uid"]
                .as_str()
                .unwrap()
        ))
    );
    assert_eq!(
        run("/ok", json!({"admissionReviewVersions": ["v1beta1"]})).await.unwrap_err(),
        failed("could not create admission objects: webhook does not accept known AdmissionReview versions (v1)")
    );
    run(
        "/ok",
        json!({"admissionReviewVersions": ["v1beta1"], "failurePolicy": "Ignore"}),
    )
    .await
    .unwrap();
    assert_eq!(srv.calls("/ok"), 0);
}

#[tokio::test]
async fn webhook_configurations_bypass_webhooks_and_rules_filter() {
    let ca = server::ca();
    let srv = server::start(
        &ca,
        &["127.0.0.1"],
        Arc::new(|_: &str, r: &Value| answer(r, json!({"allowed": false}))),
    )
    .await;
    let any = json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]});
    let cfg = config(
        "ValidatingWebhookConfiguration",
        "all",
        vec![hook(
            "all.example.com",
            url_client(srv.url("/all"), &ca.bundle),
            any,
        )],
    );
    let mut attrs = pod();
    attrs.group = "admissionregistration.k8s.io".into();
    attrs.kind = "ValidatingWebhookConfiguration".into();
    attrs.resource = "validatingwebhookconfigurations".into();
    attrs.namespace = None;
    attrs.cluster_scoped = true;
    dispatcher()
        .validate(std::slice::from_ref(&cfg), &attrs)
        .await
        .unwrap();
    assert_eq!(srv.calls("/all"), 0);

    // A status update does not match a rule for "pods".
    let narrow = config(
        "ValidatingWebhookConfiguration",
        "pods",
        vec![hook(
            "pods.example.com",
            url_client(srv.url("/pods"), &ca.bundle),
            json!({}),
        )],
    );
    let mut status = pod();
    status.subresource = "status".into();
    dispatcher().validate(&[narrow], &status).await.unwrap();
    assert_eq!(srv.calls("/pods"), 0);
    let err = dispatcher().validate(&[cfg], &pod()).await.unwrap_err();
    assert!(
        matches!(err, WebhookError::Denied { code: 403, .. }),
        "{err:?}"
    );
}
