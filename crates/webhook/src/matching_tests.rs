use super::*;
use crate::config::webhooks;
use crate::UserInfo;
use serde_json::json;

fn pod(op: Operation, labels: Value) -> Attributes {
    Attributes {
        operation: op,
        group: String::new(),
        version: "v1".into(),
        kind: "Pod".into(),
        resource: "pods".into(),
        subresource: String::new(),
        name: "p".into(),
        namespace: Some("ns".into()),
        object: Some(json!({"metadata": {"name": "p", "labels": labels}})),
        old_object: None,
        options: None,
        dry_run: false,
        user: UserInfo::default(),
        namespace_labels: Some(BTreeMap::from([("env".to_string(), "prod".to_string())])),
        cluster_scoped: false,
    }
}

fn hook(spec: Value) -> Webhook {
    let mut hooks = webhooks(&[json!({"metadata": {"name": "c"}, "webhooks": [spec]})]).unwrap();
    hooks.remove(0)
}

fn rule(spec: Value) -> Rule {
    serde_json::from_value(spec).unwrap()
}

#[test]
fn operations_groups_versions() {
    let a = pod(Operation::Create, json!({}));
    let r = |ops: Value, groups: Value, versions: Value| {
        rule(
            json!({"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": ["pods"]}),
        )
    };
    assert!(rule_matches(
        &r(json!(["CREATE"]), json!([""]), json!(["v1"])),
        &a
    ));
    assert!(rule_matches(
        &r(json!(["*"]), json!(["*"]), json!(["*"])),
        &a
    ));
    assert!(!rule_matches(
        &r(json!(["UPDATE", "DELETE"]), json!([""]), json!(["v1"])),
        &a
    ));
    assert!(!rule_matches(
        &r(json!(["CREATE"]), json!(["apps"]), json!(["v1"])),
        &a
    ));
    assert!(!rule_matches(
        &r(json!(["CREATE"]), json!([""]), json!(["v2"])),
        &a
    ));
    assert!(!rule_matches(&r(json!([]), json!([""]), json!(["v1"])), &a));
}

#[test]
fn resources_and_subresources() {
    let mut a = pod(Operation::Update, json!({}));
    let r = |res: Value| {
        rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": res}),
        )
    };
    assert!(rule_matches(&r(json!(["pods"])), &a));
    assert!(rule_matches(&r(json!(["*"])), &a));
    assert!(!rule_matches(&r(json!(["pods/status"])), &a));
    a.subresource = "status".into();
    assert!(!rule_matches(&r(json!(["pods"])), &a));
    assert!(!rule_matches(&r(json!(["*"])), &a));
    assert!(rule_matches(&r(json!(["pods/status"])), &a));
    assert!(rule_matches(&r(json!(["*/status"])), &a));
    assert!(rule_matches(&r(json!(["pods/*"])), &a));
    assert!(rule_matches(&r(json!(["*/*"])), &a));
    assert!(!rule_matches(&r(json!(["pods/log"])), &a));
    assert!(!rule_matches(&r(json!(["deployments/*"])), &a));
}

#[test]
fn scopes() {
    let r = |scope: &str| {
        rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": scope}),
        )
    };
    let namespaced = pod(Operation::Create, json!({}));
    assert!(rule_matches(&r("Namespaced"), &namespaced));
    assert!(!rule_matches(&r("Cluster"), &namespaced));
    assert!(rule_matches(&r("*"), &namespaced));

    let mut node = pod(Operation::Create, json!({}));
    node.kind = "Node".into();
    node.resource = "nodes".into();
    node.namespace = None;
    node.cluster_scoped = true;
    assert!(rule_matches(&r("Cluster"), &node));
    assert!(!rule_matches(&r("Namespaced"), &node));

    // A Namespace request carries its own name as namespace but is cluster-scoped.
    let mut ns = pod(Operation::Create, json!({}));
    ns.kind = "Namespace".into();
    ns.resource = "namespaces".into();
    assert!(rule_matches(&r("Cluster"), &ns));
    assert!(!rule_matches(&r("Namespaced"), &ns));
}

#[test]
fn namespace_selector() {
    let a = pod(Operation::Create, json!({}));
    let sel = |s: Value| namespace_selector_matches(Some(&s), &a).unwrap();
    assert!(sel(json!({})));
    assert!(sel(json!({"matchLabels": {"env": "prod"}})));
    assert!(!sel(json!({"matchLabels": {"env": "dev"}})));
    assert!(sel(
        json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]}]})
    ));
    assert!(!sel(
        json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})
    ));
    assert!(sel(
        json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]})
    ));
    assert!(!sel(
        json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]})
    ));
    assert!(namespace_selector_matches(None, &a).unwrap());
    assert!(namespace_selector_matches(
        Some(&json!({"matchExpressions": [{"key": "k", "operator": "Bogus"}]})),
        &a
    )
    .is_err());

    // Cluster-scoped objects other than namespaces are never exempted.
    let mut node = pod(Operation::Create, json!({}));
    node.resource = "nodes".into();
    node.namespace = None;
    node.cluster_scoped = true;
    assert!(
        namespace_selector_matches(Some(&json!({"matchLabels": {"env": "dev"}})), &node).unwrap()
    );

    // A namespace being created is matched by its own labels.
    let mut ns = pod(Operation::Create, json!({"env": "dev"}));
    ns.resource = "namespaces".into();
    ns.cluster_scoped = true;
    ns.namespace_labels = None;
    assert!(
        namespace_selector_matches(Some(&json!({"matchLabels": {"env": "dev"}})), &ns).unwrap()
    );
    assert!(
        !namespace_selector_matches(Some(&json!({"matchLabels": {"env": "prod"}})), &ns).unwrap()
    );
}

#[test]
fn object_selector_matches_new_or_old() {
    let mut a = pod(Operation::Update, json!({"app": "web"}));
    a.old_object = Some(json!({"metadata": {"labels": {"app": "db"}}}));
    let sel = |s: Value, a: &Attributes| object_selector_matches(Some(&s), a).unwrap();
    assert!(sel(json!({"matchLabels": {"app": "web"}}), &a));
    assert!(sel(json!({"matchLabels": {"app": "db"}}), &a));
    assert!(!sel(json!({"matchLabels": {"app": "cache"}}), &a));
    assert!(sel(json!({}), &a));
    a.object = None;
    a.old_object = None;
    assert!(!sel(
        json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
        &a
    ));
}

#[test]
fn should_call_combines_and_defers_selector_errors() {
    let a = pod(Operation::Create, json!({"app": "web"}));
    let base = json!({"name": "h", "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]});
    let with = |extra: Value| {
        let mut spec = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        hook(spec)
    };
    assert!(should_call(&with(json!({})), &a).unwrap());
    assert!(!should_call(
        &with(json!({"objectSelector": {"matchLabels": {"app": "db"}}})),
        &a
    )
    .unwrap());
    assert!(!should_call(
        &with(json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}})),
        &a
    )
    .unwrap());
    let broken = json!({"matchExpressions": [{"key": "k", "operator": "Bogus"}]});
    assert!(should_call(&with(json!({"objectSelector": broken})), &a).is_err());
    let unrelated = with(json!({"objectSelector": broken, "rules": []}));
    assert!(!should_call(&unrelated, &a).unwrap());
}

#[test]
fn webhook_configurations_are_exempt() {
    let mut a = pod(Operation::Create, json!({}));
    assert!(!is_exempt(&a));
    a.group = ADMISSION_GROUP.into();
    a.kind = "ValidatingWebhookConfiguration".into();
    assert!(is_exempt(&a));
    a.kind = "MutatingWebhookConfiguration".into();
    assert!(is_exempt(&a));
}
