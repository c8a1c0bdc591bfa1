use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::{Operation, UserInfo};

/// Params and namespaces held in memory; ConfigMaps are namespaced, `Limit` is cluster-scoped.
#[derive(Default)]
struct Fake {
    params: Vec<Value>,
    namespaces: Vec<Value>,
}

impl PolicySource for Fake {
    fn params(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        self.params
            .iter()
            .filter(|p| p["apiVersion"] == api_version && p["kind"] == kind)
            .filter(|p| namespace.is_none_or(|ns| p["metadata"]["namespace"] == ns))
            .cloned()
            .collect()
    }

    fn param_namespaced(&self, api_version: &str, kind: &str) -> Option<bool> {
        match (api_version, kind) {
            ("v1", "ConfigMap") => Some(true),
            ("example.com/v1", "Limit") => Some(false),
            _ => None,
        }
    }

    fn namespace(&self, name: &str) -> Option<Value> {
        self.namespaces
            .iter()
            .find(|n| n["metadata"]["name"] == name)
            .cloned()
    }
}

fn deployment(replicas: i64) -> Attributes {
    Attributes {
        operation: Operation::Create,
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        resource: "deployments".into(),
        subresource: String::new(),
        name: "web".into(),
        namespace: Some("default".into()),
        object: Some(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": replicas}
        })),
        old_object: None,
        options: None,
        dry_run: false,
        user: UserInfo {
            username: "alice".into(),
            ..UserInfo::default()
        },
        namespace_labels: None,
        cluster_scoped: false,
    }
}

fn deployments_rule() -> Value {
    json!({"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
           "resources": ["deployments"]})
}

/// A policy over Deployments with `spec` merged over the defaults.
fn policy(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "matchConstraints": {"resourceRules": [deployments_rule()]},
        "validations": [{"expression": "object.spec.replicas <= 5"}]
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

fn binding(name: &str, policy: &str, extra: Value) -> Value {
    let mut spec = json!({"policyName": policy, "validationActions": ["Deny"]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

fn check(
    p: Value,
    b: Value,
    source: &Fake,
    attrs: &Attributes,
) -> Result<PolicyOutcome, PolicyError> {
    Policies::new().validate(&[p], &[b], source, attrs)
}

fn denied_message(r: Result<PolicyOutcome, PolicyError>) -> String {
    match r {
        Err(PolicyError::Denied { message, .. }) => message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn max_replicas_denies_seven_and_passes_three() {
    let (p, b) = (
        policy("max-replicas", json!({})),
        binding("max-b", "max-replicas", json!({})),
    );
    let src = Fake::default();
    assert_eq!(
        check(p.clone(), b.clone(), &src, &deployment(7)),
        Err(PolicyError::Denied {
            code: 422,
            reason: "Invalid".into(),
            message: "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-b' denied request: failed expression: object.spec.replicas <= 5".into(),
        })
    );
    assert_eq!(
        check(p, b, &src, &deployment(3)),
        Ok(PolicyOutcome::default())
    );
}

#[test]
fn message_reason_and_message_expression() {
    let p = policy(
        "p",
        json!({"validations": [
            {"expression": "object.spec.replicas <= 5", "message": "too many", "reason": "Forbidden"}
        ]}),
    );
    let r = check(
        p,
        binding("b", "p", json!({})),
        &Fake::default(),
        &deployment(7),
    );
    assert_eq!(
        r,
        Err(PolicyError::Denied {
            code: 403,
            reason: "Forbidden".into(),
            message: "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: too many"
                .into(),
        })
    );
    let p = policy(
        "p",
        json!({"validations": [{
            "expression": "object.spec.replicas <= 5", "message": "fallback",
            "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5 for ' + request.userInfo.username"
        }]}),
    );
    let r = check(
        p,
        binding("b", "p", json!({})),
        &Fake::default(),
        &deployment(7),
    );
    assert_eq!(
        denied_message(r),
        "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: replicas 7 > 5 for alice"
    );
    // A messageExpression that fails falls back to the message.
    let p = policy(
        "p",
        json!({"validations": [{
            "expression": "false", "message": "fallback", "messageExpression": "object.nope"
        }]}),
    );
    let r = check(
        p,
        binding("b", "p", json!({})),
        &Fake::default(),
        &deployment(1),
    );
    assert!(denied_message(r).ends_with("denied request: fallback"));
}

fn configmap(ns: &str, name: &str, max: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns, "labels": labels},
           "data": {"maxReplicas": max}})
}

fn param_policy() -> Value {
    policy(
        "params",
        json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "validations": [{"expression": "object.spec.replicas <= int(params.data.maxReplicas)",
                             "messageExpression": "'at most ' + params.data.maxReplicas + ' (' + params.kind + ')'"}]
        }),
    )
}

#[test]
fn params_by_name_from_the_request_namespace() {
    let src = Fake {
        params: vec![
            configmap("default", "limits", "4", json!({})),
            configmap("other", "limits", "10", json!({})),
        ],
        ..Fake::default()
    };
    let b = binding("b", "params", json!({"paramRef": {"name": "limits"}}));
    let r = check(param_policy(), b.clone(), &src, &deployment(5));
    assert_eq!(
        denied_message(r),
        "ValidatingAdmissionPolicy 'params' with binding 'b' denied request: at most 4 (ConfigMap)"
    );
    assert!(check(param_policy(), b, &src, &deployment(4)).is_ok());
    // An explicit namespace wins.
    let b = binding(
        "b",
        "params",
        json!({"paramRef": {"name": "limits", "namespace": "other"}}),
    );
    assert!(check(param_policy(), b, &src, &deployment(9)).is_ok());
}

#[test]
fn params_by_selector_each_evaluated() {
    let src = Fake {
        params: vec![
            configmap("default", "a", "10", json!({"use": "yes"})),
            configmap("default", "b", "3", json!({"use": "yes"})),
            configmap("default", "c", "1", json!({"use": "no"})),
        ],
        ..Fake::default()
    };
    let sel = json!({"paramRef": {"selector": {"matchLabels": {"use": "yes"}}}});
    let r = check(
        param_policy(),
        binding("b", "params", sel.clone()),
        &src,
        &deployment(5),
    );
    assert!(denied_message(r).ends_with("at most 3 (ConfigMap)"));
    assert!(check(
        param_policy(),
        binding("b", "params", sel),
        &src,
        &deployment(2)
    )
    .is_ok());
}

#[test]
fn parameter_not_found_allow_and_deny() {
    let src = Fake::default();
    let allow = json!({"paramRef": {"name": "missing", "parameterNotFoundAction": "Allow"}});
    assert!(check(
        param_policy(),
        binding("b", "params", allow),
        &src,
        &deployment(50)
    )
    .is_ok());
    let deny = json!({"paramRef": {"name": "missing", "parameterNotFoundAction": "Deny"}});
    let r = check(
        param_policy(),
        binding("b", "params", deny),
        &src,
        &deployment(1),
    );
    assert_eq!(
        r,
        Err(PolicyError::Denied {
            code: 422,
            reason: "Invalid".into(),
            message: "ValidatingAdmissionPolicy 'params' with binding 'b' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        })
    );
    // Deny is the default.
    let unset = json!({"paramRef": {"name": "missing"}});
    assert!(check(
        param_policy(),
        binding("b", "params", unset),
        &src,
        &deployment(1)
    )
    .is_err());
    // A param kind the server does not know.
    let p = policy(
        "p",
        json!({"paramKind": {"apiVersion": "v9", "kind": "Nope"}}),
    );
    let r = check(
        p,
        binding("b", "p", json!({"paramRef": {"name": "x"}})),
        &src,
        &deployment(1),
    );
    assert!(denied_message(r)
        .ends_with("failed to configure binding: paramKind kind `&ParamKind{APIVersion:v9,Kind:Nope,}` not known"));
}

#[test]
fn cluster_scoped_params_and_no_param_ref() {
    let src = Fake {
        params: vec![json!({"apiVersion": "example.com/v1", "kind": "Limit",
                             "metadata": {"name": "global"}, "max": 2})],
        ..Fake::default()
    };
    let p = policy(
        "p",
        json!({"paramKind": {"apiVersion": "example.com/v1", "kind": "Limit"},
               "validations": [{"expression": "params == null || object.spec.replicas <= params.max"}]}),
    );
    let b = binding("b", "p", json!({"paramRef": {"name": "global"}}));
    assert!(check(p.clone(), b, &src, &deployment(3)).is_err());
    let b = binding(
        "b",
        "p",
        json!({"paramRef": {"name": "global", "namespace": "x"}}),
    );
    let r = check(p.clone(), b, &src, &deployment(1));
    assert!(denied_message(r).ends_with(
        "failed to configure binding: paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
    ));
    // A binding without paramRef evaluates with params null.
    assert!(check(p, binding("b", "p", json!({})), &src, &deployment(30)).is_ok());
}

#[test]
fn warn_and_audit_actions() {
    let p = policy("p", json!({}));
    let b = binding("b", "p", json!({"validationActions": ["Warn", "Audit"]}));
    let out = check(p, b, &Fake::default(), &deployment(7)).unwrap();
    assert_eq!(
        out.warnings,
        ["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': failed expression: object.spec.replicas <= 5"]
    );
    assert_eq!(out.audit_annotations.len(), 1);
    let (key, value) = &out.audit_annotations[0];
    assert_eq!(key, "validation.policy.admission.k8s.io/validation_failure");
    assert_eq!(
        value,
        r#"[{"message":"failed expression: object.spec.replicas <= 5","policy":"p","binding":"b","expressionIndex":0,"validationActions":["Warn","Audit"]}]"#
    );
}

#[test]
fn audit_annotations_are_published_per_policy() {
    let p = policy(
        "p",
        json!({"validations": [], "auditAnnotations": [
            {"key": "replicas", "valueExpression": "'n=' + string(object.spec.replicas)"},
            {"key": "skipped", "valueExpression": "null"}
        ]}),
    );
    let out = check(
        p,
        binding("b", "p", json!({})),
        &Fake::default(),
        &deployment(2),
    )
    .unwrap();
    assert_eq!(
        out.audit_annotations,
        [("p/replicas".to_string(), "n=2".to_string())]
    );
}

#[test]
fn match_conditions_gate_the_policy() {
    let p = policy(
        "p",
        json!({"matchConditions": [
            {"name": "not-alice", "expression": "request.userInfo.username != 'alice'"}
        ]}),
    );
    let src = Fake::default();
    assert!(check(
        p.clone(),
        binding("b", "p", json!({})),
        &src,
        &deployment(7)
    )
    .is_ok());
    let mut bob = deployment(7);
    bob.user.username = "bob".into();
    assert!(check(p, binding("b", "p", json!({})), &src, &bob).is_err());
    // An error in a condition follows failurePolicy.
    let p = policy(
        "p",
        json!({"matchConditions": [{"name": "c", "expression": "object.nope"}]}),
    );
    let r = check(
        p.clone(),
        binding("b", "p", json!({})),
        &src,
        &deployment(1),
    );
    assert!(denied_message(r)
        .ends_with("expression 'object.nope' resulted in error: no such key: nope"));
    let mut ignore = p;
    ignore["spec"]["failurePolicy"] = json!("Ignore");
    assert!(check(ignore, binding("b", "p", json!({})), &src, &deployment(7)).is_ok());
}

#[test]
fn variables_are_lazy_and_composable() {
    let p = policy(
        "p",
        json!({
            "variables": [
                {"name": "replicas", "expression": "object.spec.replicas"},
                {"name": "limit", "expression": "variables.replicas > 10 ? 0 : 5"},
                {"name": "broken", "expression": "object.nope"}
            ],
            "validations": [{"expression": "variables.replicas <= variables.limit",
                             "messageExpression": "'limit ' + string(variables.limit)"}]
        }),
    );
    let src = Fake::default();
    let r = check(
        p.clone(),
        binding("b", "p", json!({})),
        &src,
        &deployment(7),
    );
    assert!(denied_message(r).ends_with("denied request: limit 5"));
    // `broken` is never used, so it never fails.
    assert!(check(p, binding("b", "p", json!({})), &src, &deployment(3)).is_ok());
    let p = policy(
        "p",
        json!({"variables": [{"name": "broken", "expression": "object.nope"}],
               "validations": [{"expression": "variables.broken == 1"}]}),
    );
    let r = check(p, binding("b", "p", json!({})), &src, &deployment(3));
    assert!(denied_message(r).ends_with(
        "expression 'variables.broken == 1' resulted in error: composited variable \"broken\" fails to evaluate: no such key: nope"
    ));
}

#[test]
fn namespace_selector_and_namespace_object() {
    let src = Fake {
        namespaces: vec![json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"env": "prod"},
                         "managedFields": [{"manager": "x"}]}})],
        ..Fake::default()
    };
    let p = |env: &str| {
        let mut p = policy(
            "p",
            json!({"validations": [{"expression": "namespaceObject.metadata.labels.env == 'dev' && !has(namespaceObject.metadata.managedFields)",
                                    "message": "prod is read-only"}]}),
        );
        p["spec"]["matchConstraints"]["namespaceSelector"] = json!({"matchLabels": {"env": env}});
        p
    };
    let r = check(
        p("prod"),
        binding("b", "p", json!({})),
        &src,
        &deployment(1),
    );
    assert!(denied_message(r).ends_with("denied request: prod is read-only"));
    assert!(check(p("dev"), binding("b", "p", json!({})), &src, &deployment(1)).is_ok());
    // Labels the caller filled in take precedence over the source's.
    let mut attrs = deployment(1);
    attrs.namespace_labels = Some(BTreeMap::from([("env".into(), "dev".into())]));
    assert!(check(p("prod"), binding("b", "p", json!({})), &src, &attrs).is_ok());
}

#[test]
fn failure_policy_on_expression_errors() {
    let p = policy(
        "p",
        json!({"validations": [{"expression": "object.spec.missing > 1"}]}),
    );
    let src = Fake::default();
    let r = check(
        p.clone(),
        binding("b", "p", json!({})),
        &src,
        &deployment(1),
    );
    assert_eq!(
        r,
        Err(PolicyError::Denied {
            code: 422,
            reason: "Invalid".into(),
            message: "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression 'object.spec.missing > 1' resulted in error: no such key: missing".into(),
        })
    );
    let mut ignore = p;
    ignore["spec"]["failurePolicy"] = json!("Ignore");
    assert!(check(ignore, binding("b", "p", json!({})), &src, &deployment(1)).is_ok());
    // has() tests presence instead of failing.
    let p = policy(
        "p",
        json!({"validations": [{"expression": "!has(object.spec.missing)"}]}),
    );
    assert!(check(p, binding("b", "p", json!({})), &src, &deployment(1)).is_ok());
    // A non-bool result is an error, as upstream's type check would make it.
    let p = policy(
        "p",
        json!({"validations": [{"expression": "object.spec.replicas"}]}),
    );
    let r = check(p, binding("b", "p", json!({})), &src, &deployment(1));
    assert!(denied_message(r).ends_with("compilation error: must evaluate to bool but got int"));
}

#[test]
fn exclusions_names_and_binding_match_resources() {
    let src = Fake::default();
    let mut p = policy("p", json!({}));
    p["spec"]["matchConstraints"]["excludeResourceRules"] = json!([
        {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["*"],
         "resources": ["deployments"], "resourceNames": ["web"]}
    ]);
    assert!(check(
        p.clone(),
        binding("b", "p", json!({})),
        &src,
        &deployment(7)
    )
    .is_ok());
    let mut other = deployment(7);
    other.name = "api".into();
    assert!(check(p, binding("b", "p", json!({})), &src, &other).is_err());
    // The binding narrows further: its objectSelector does not pick this Deployment.
    let b = binding(
        "b",
        "p",
        json!({"matchResources": {"objectSelector": {"matchLabels": {"app": "db"}}}}),
    );
    assert!(check(policy("p", json!({})), b, &src, &deployment(7)).is_ok());
    // A binding for another policy, or a policy without binding, does nothing.
    assert!(check(
        policy("p", json!({})),
        binding("b", "q", json!({})),
        &src,
        &deployment(7)
    )
    .is_ok());
}

#[test]
fn exempt_kinds_and_first_denial_wins() {
    let mut attrs = deployment(7);
    attrs.group = "admissionregistration.k8s.io".into();
    attrs.kind = "ValidatingAdmissionPolicy".into();
    let mut p = policy("p", json!({}));
    p["spec"]["matchConstraints"]["resourceRules"] = json!([{"apiGroups": ["*"],
        "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]);
    assert!(check(p, binding("b", "p", json!({})), &Fake::default(), &attrs).is_ok());

    let policies = [
        policy(
            "b-second",
            json!({"validations": [{"expression": "false", "message": "two"}]}),
        ),
        policy(
            "a-first",
            json!({"validations": [{"expression": "false", "message": "one"}]}),
        ),
    ];
    let bindings = [
        binding("x", "b-second", json!({})),
        binding("y", "a-first", json!({})),
    ];
    let r = Policies::new().validate(&policies, &bindings, &Fake::default(), &deployment(1));
    assert!(denied_message(r).starts_with("ValidatingAdmissionPolicy 'a-first' with binding 'y'"));
}

#[test]
fn compiles_once_per_version() {
    let policies = Policies::new();
    let mut p = policy("p", json!({}));
    p["metadata"]["uid"] = json!("u1");
    p["metadata"]["resourceVersion"] = json!("1");
    let b = [binding("b", "p", json!({}))];
    let src = Fake::default();
    assert!(policies
        .validate(&[p.clone()], &b, &src, &deployment(7))
        .is_err());
    let first = policies.compiled(&[p.clone()]);
    assert!(Arc::ptr_eq(&first[0], &policies.compiled(&[p.clone()])[0]));
    // A new version recompiles: the policy now allows 7.
    p["metadata"]["resourceVersion"] = json!("2");
    p["spec"]["validations"][0]["expression"] = json!("object.spec.replicas <= 10");
    assert!(policies.validate(&[p], &b, &src, &deployment(7)).is_ok());
    // Deleted policies leave the cache.
    let q = policy("q", json!({}));
    policies.compiled(&[q]);
    assert_eq!(policies.cache_len(), 1);
}

#[test]
fn policies_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policies>();
}

#[test]
fn a_policy_without_match_constraints_is_a_configuration_error() {
    let p = json!({"metadata": {"name": "p"}, "spec": {"validations": [{"expression": "true"}]}});
    let r = check(
        p,
        binding("b", "p", json!({})),
        &Fake::default(),
        &deployment(1),
    );
    assert_eq!(
        denied_message(r),
        "ValidatingAdmissionPolicy 'p' denied request: failed to configure policy: policy contained no match constraints, a required field"
    );
}

#[test]
fn validate_policy_reports_upstream_causes() {
    assert!(validate_policy(&policy("p", json!({}))).is_empty());
    let bad = policy(
        "p",
        json!({"failurePolicy": "Sometimes",
               "validations": [{"expression": "object.spec.replicas <= ", "reason": "Teapot"},
                               {"expression": " "}]}),
    );
    let causes = validate_policy(&bad);
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.failurePolicy",
            "spec.validations[0].expression",
            "spec.validations[0].reason",
            "spec.validations[1].expression"
        ]
    );
    assert_eq!(
        causes[0].message,
        r#"Unsupported value: "Sometimes": supported values: "Fail", "Ignore""#
    );
    assert_eq!(causes[1].reason, "FieldValueInvalid");
    assert!(
        causes[1]
            .message
            .starts_with(r#"Invalid value: "object.spec.replicas <= ": compilation failed: "#),
        "{}",
        causes[1].message
    );
    assert_eq!(
        causes[2].message,
        r#"Unsupported value: "Teapot": supported values: "Forbidden", "Invalid", "RequestEntityTooLarge""#
    );
    assert_eq!(
        causes[3].message,
        "Required value: expression is not specified"
    );

    let empty = json!({"metadata": {"name": "p"}, "spec": {"paramKind": {"kind": "ConfigMap"}}});
    let described: Vec<String> = validate_policy(&empty)
        .iter()
        .map(|c| c.describe())
        .collect();
    assert_eq!(
        described,
        [
            "spec.paramKind.apiVersion: Required value",
            "spec.matchConstraints: Required value",
            "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
            "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item",
        ]
    );
    let mut rules = policy(
        "p",
        json!({"variables": [{"name": "1x", "expression": "1"}]}),
    );
    rules["spec"]["matchConstraints"] = json!({"resourceRules": [{"operations": ["*", "CREATE"],
        "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"], "scope": "Global"}]});
    let described: Vec<String> = validate_policy(&rules)
        .iter()
        .map(|c| c.describe())
        .collect();
    assert_eq!(
        described,
        [
            r#"spec.matchConstraints.resourceRules[0].operations: Invalid value: []admissionregistration.OperationType{"*", "CREATE"}: if '*' is present, must not specify other operations"#,
            r#"spec.matchConstraints.resourceRules[0].scope: Unsupported value: "Global": supported values: "*", "Cluster", "Namespaced""#,
            r#"spec.variables[0].name: Invalid value: "1x": name is not a valid CEL identifier"#,
        ]
    );
}

#[test]
fn validate_binding_reports_upstream_causes() {
    assert!(validate_binding(&binding("b", "p", json!({}))).is_empty());
    let b = json!({"metadata": {"name": "b"}, "spec": {
        "paramRef": {"name": "x", "selector": {}, "parameterNotFoundAction": "Maybe"},
        "validationActions": ["Deny", "Warn", "Deny", "Shout"]
    }});
    let described: Vec<String> = validate_binding(&b).iter().map(|c| c.describe()).collect();
    assert_eq!(
        described,
        [
            "spec.policyName: Required value",
            "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
            "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
            r#"spec.paramRef.parameterNotFoundAction: Unsupported value: "Maybe": supported values: "Deny", "Allow""#,
            r#"spec.validationActions[2]: Duplicate value: "Deny""#,
            r#"spec.validationActions[3]: Unsupported value: "Shout": supported values: "Audit", "Deny", "Warn""#,
            r#"spec.validationActions: Invalid value: []admissionregistration.ValidationAction{"Deny", "Warn", "Deny", "Shout"}: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)"#,
        ]
    );
    let none = json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "paramRef": {}}});
    let described: Vec<String> = validate_binding(&none)
        .iter()
        .map(|c| c.describe())
        .collect();
    assert_eq!(
        described,
        [
            "spec.paramRef: Required value: one of name or selector must be specified",
            "spec.validationActions: Required value: at least one validation action is required",
        ]
    );
}
