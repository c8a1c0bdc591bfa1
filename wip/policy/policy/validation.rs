//! Object validation of ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding on
//! create and update, with upstream's field paths and wording (the API server refuses bad
//! objects, so the dispatcher rarely meets one).
//!
//! The objects are taken as upstream's defaulting leaves them: an absent failurePolicy
//! (Fail), matchPolicy (Equivalent), namespaceSelector/objectSelector ({}) or
//! parameterNotFoundAction (Deny) is accepted. Name formats (DNS subdomain, qualified
//! names) are not checked.

use krust_machinery::selector::Selector;
use krust_machinery::Cause;
use serde_json::Value;

use super::compile::compile_text;

const FAILURE_POLICIES: [&str; 2] = ["Fail", "Ignore"];
const MATCH_POLICIES: [&str; 2] = ["Equivalent", "Exact"];
const REASONS: [&str; 3] = ["Forbidden", "Invalid", "RequestEntityTooLarge"];
const OPERATIONS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: [&str; 3] = ["*", "Cluster", "Namespaced"];
const ACTIONS: [&str; 3] = ["Audit", "Deny", "Warn"];
const MAX_AUDIT_ANNOTATIONS: usize = 20;

/// Go's `strconv.Quote`, close enough for expressions.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn required(field: String, detail: &str) -> Cause {
    let message = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    Cause {
        reason: "FieldValueRequired",
        message,
        field,
    }
}

/// `field.Invalid` of a string value, quoted as Go does.
fn invalid(field: String, value: &str, detail: &str) -> Cause {
    invalid_shown(field, &quote(value), detail)
}

fn invalid_shown(field: String, shown: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {shown}: {detail}"),
        field,
    }
}

/// Go's `%#v` of a slice of a named string type: `[]pkg.Type{"a", "b"}`.
fn go_slice(ty: &str, items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[]admissionregistration.{ty}{{{}}}", inner.join(", "))
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    list(v, key)
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// A CEL expression that must be given and compile.
fn expression(field: String, expr: &str, missing: &str, errs: &mut Vec<Cause>) {
    if expr.trim().is_empty() {
        errs.push(required(field, missing));
    } else if let Err(detail) = compile_text(expr) {
        errs.push(invalid(field, expr, &detail));
    }
}

fn selector(sel: Option<&Value>, field: String, errs: &mut Vec<Cause>) {
    if let Some(sel) = sel.filter(|s| !s.is_null()) {
        if let Err(e) = Selector::from_label_selector(sel) {
            errs.push(invalid_shown(field, &sel.to_string(), &e));
        }
    }
}

/// A NamedRuleWithOperations.
fn named_rule(rule: &Value, path: &str, errs: &mut Vec<Cause>) {
    let names = strings(rule, "resourceNames");
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            errs.push(Cause::duplicate(format!("{path}.resourceNames[{i}]"), n));
        }
    }
    let ops = strings(rule, "operations");
    if ops.is_empty() {
        errs.push(required(format!("{path}.operations"), ""));
    }
    if ops.len() > 1 && ops.iter().any(|o| o == "*") {
        let shown = go_slice("OperationType", &ops);
        let detail = "if '*' is present, must not specify other operations";
        errs.push(invalid_shown(format!("{path}.operations"), &shown, detail));
    }
    for (i, op) in ops.iter().enumerate() {
        if !OPERATIONS.contains(&op.as_str()) {
            errs.push(Cause::not_supported(
                format!("{path}.operations[{i}]"),
                op,
                &OPERATIONS,
            ));
        }
    }
    for key in ["apiGroups", "apiVersions", "resources"] {
        if list(rule, key).is_empty() {
            errs.push(required(format!("{path}.{key}"), ""));
        }
    }
    if let Some(scope) = text(rule, "scope") {
        if !SCOPES.contains(&scope) {
            errs.push(Cause::not_supported(
                format!("{path}.scope"),
                scope,
                &SCOPES,
            ));
        }
    }
}

fn match_resources(mr: &Value, path: &str, errs: &mut Vec<Cause>) {
    if let Some(mp) = text(mr, "matchPolicy") {
        if !MATCH_POLICIES.contains(&mp) {
            errs.push(Cause::not_supported(
                format!("{path}.matchPolicy"),
                mp,
                &MATCH_POLICIES,
            ));
        }
    }
    for key in ["namespaceSelector", "objectSelector"] {
        selector(mr.get(key), format!("{path}.{key}"), errs);
    }
    for key in ["resourceRules", "excludeResourceRules"] {
        for (i, r) in list(mr, key).iter().enumerate() {
            named_rule(r, &format!("{path}.{key}[{i}]"), errs);
        }
    }
}

fn is_cel_identifier(name: &str) -> bool {
    const RESERVED: [&str; 21] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    first_ok && chars.all(|c| c == '_' || c.is_ascii_alphanumeric()) && !RESERVED.contains(&name)
}

fn validation(v: &Value, path: &str, errs: &mut Vec<Cause>) {
    let expr = text(v, "expression").unwrap_or_default();
    expression(
        format!("{path}.expression"),
        expr,
        "expression is not specified",
        errs,
    );
    let msg_expr = text(v, "messageExpression").unwrap_or_default();
    if !msg_expr.is_empty() && msg_expr.trim().is_empty() {
        let detail = "must be non-empty if specified";
        errs.push(invalid(
            format!("{path}.messageExpression"),
            msg_expr,
            detail,
        ));
    } else if !msg_expr.is_empty() {
        if let Err(detail) = compile_text(msg_expr) {
            errs.push(invalid(
                format!("{path}.messageExpression"),
                msg_expr,
                &detail,
            ));
        }
    }
    let message = text(v, "message").unwrap_or_default();
    if !message.is_empty() && message.trim().is_empty() {
        let detail = "message must be non-empty if specified";
        errs.push(invalid(format!("{path}.message"), message, detail));
    } else if message.trim().contains(['\n', '\r']) {
        let detail = "message must not contain line breaks";
        errs.push(invalid(format!("{path}.message"), message, detail));
    }
    if let Some(reason) = text(v, "reason") {
        if !REASONS.contains(&reason) {
            errs.push(Cause::not_supported(
                format!("{path}.reason"),
                reason,
                &REASONS,
            ));
        }
    }
}

fn audit_annotations(spec: &Value, policy_name: &str, errs: &mut Vec<Cause>) {
    let items = list(spec, "auditAnnotations");
    if items.len() > MAX_AUDIT_ANNOTATIONS {
        errs.push(invalid_shown(
            "spec.auditAnnotations".into(),
            "[]admissionregistration.AuditAnnotation{...}",
            &format!("must not have more than {MAX_AUDIT_ANNOTATIONS} auditAnnotations"),
        ));
    }
    let mut keys: Vec<&str> = Vec::new();
    for (i, a) in items.iter().enumerate() {
        let path = format!("spec.auditAnnotations[{i}]");
        let key = text(a, "key").unwrap_or_default();
        if policy_name.is_empty() {
            let detail = "requires metadata.name be non-empty";
            errs.push(invalid(format!("{path}.key"), key, detail));
        }
        let value = text(a, "valueExpression").unwrap_or_default();
        let missing = "valueExpression is not specified";
        expression(format!("{path}.valueExpression"), value, missing, errs);
        if keys.contains(&key) {
            errs.push(Cause::duplicate(format!("{path}.key"), key));
        }
        keys.push(key);
    }
}

/// Checks a ValidatingAdmissionPolicy; no causes means valid.
pub fn validate_policy(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    if let Some(fp) = text(spec, "failurePolicy") {
        if !FAILURE_POLICIES.contains(&fp) {
            errs.push(Cause::not_supported(
                "spec.failurePolicy",
                fp,
                &FAILURE_POLICIES,
            ));
        }
    }
    if let Some(pk) = spec.get("paramKind").filter(|p| !p.is_null()) {
        for key in ["apiVersion", "kind"] {
            if text(pk, key).unwrap_or_default().is_empty() {
                errs.push(required(format!("spec.paramKind.{key}"), ""));
            }
        }
    }
    match spec.get("matchConstraints").filter(|m| !m.is_null()) {
        None => errs.push(required("spec.matchConstraints".into(), "")),
        Some(mc) => {
            match_resources(mc, "spec.matchConstraints", &mut errs);
            // Upstream needs at least one rule for type information.
            if list(mc, "resourceRules").is_empty() {
                errs.push(required("spec.matchConstraints.resourceRules".into(), ""));
            }
        }
    }
    let conditions = list(spec, "matchConditions");
    for (i, c) in conditions.iter().enumerate() {
        let path = format!("spec.matchConditions[{i}]");
        let expr = text(c, "expression").unwrap_or_default();
        expression(format!("{path}.expression"), expr, "", &mut errs);
        let name = text(c, "name").unwrap_or_default();
        if name.is_empty() {
            errs.push(required(format!("{path}.name"), ""));
        } else if conditions[..i]
            .iter()
            .any(|o| text(o, "name") == Some(name))
        {
            errs.push(Cause::duplicate(format!("{path}.name"), name));
        }
    }
    for (i, v) in list(spec, "variables").iter().enumerate() {
        let path = format!("spec.variables[{i}]");
        let name = text(v, "name").unwrap_or_default();
        if name.trim().is_empty() {
            errs.push(required(format!("{path}.name"), "name is not specified"));
        } else if !is_cel_identifier(name) {
            let detail = "name is not a valid CEL identifier";
            errs.push(invalid(format!("{path}.name"), name, detail));
        }
        let expr = text(v, "expression").unwrap_or_default();
        let missing = "expression is not specified";
        expression(format!("{path}.expression"), expr, missing, &mut errs);
    }
    let validations = list(spec, "validations");
    if validations.is_empty() && list(spec, "auditAnnotations").is_empty() {
        let detail = "validations or auditAnnotations must contain at least one item";
        errs.push(required("spec.validations".into(), detail));
        errs.push(required("spec.auditAnnotations".into(), detail));
    } else {
        for (i, v) in validations.iter().enumerate() {
            validation(v, &format!("spec.validations[{i}]"), &mut errs);
        }
        let name = obj.pointer("/metadata/name").and_then(Value::as_str);
        audit_annotations(spec, name.unwrap_or_default(), &mut errs);
    }
    errs
}

fn param_ref(pr: &Value, errs: &mut Vec<Cause>) {
    let name = text(pr, "name").unwrap_or_default();
    let has_selector = present(pr, "selector");
    let exclusive = "name and selector are mutually exclusive";
    if !name.is_empty() && has_selector {
        errs.push(Cause::forbidden("spec.paramRef.name", exclusive));
    }
    if has_selector {
        selector(pr.get("selector"), "spec.paramRef.selector".into(), errs);
        if !name.is_empty() {
            errs.push(Cause::forbidden("spec.paramRef.selector", exclusive));
        }
    }
    if name.is_empty() && !has_selector {
        let detail = "one of name or selector must be specified";
        errs.push(required("spec.paramRef".into(), detail));
    }
    if let Some(action) = text(pr, "parameterNotFoundAction") {
        if action.is_empty() {
            errs.push(required("spec.paramRef.parameterNotFoundAction".into(), ""));
        } else if action != "Deny" && action != "Allow" {
            let field = "spec.paramRef.parameterNotFoundAction";
            errs.push(Cause::not_supported(field, action, &["Deny", "Allow"]));
        }
    }
}

/// Checks a ValidatingAdmissionPolicyBinding; no causes means valid.
pub fn validate_binding(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    if text(spec, "policyName").unwrap_or_default().is_empty() {
        errs.push(required("spec.policyName".into(), ""));
    }
    if let Some(pr) = spec.get("paramRef").filter(|p| !p.is_null()) {
        param_ref(pr, &mut errs);
    }
    if let Some(mr) = spec.get("matchResources").filter(|m| !m.is_null()) {
        match_resources(mr, "spec.matchResources", &mut errs);
    }
    let actions = strings(spec, "validationActions");
    for (i, a) in actions.iter().enumerate() {
        let field = format!("spec.validationActions[{i}]");
        if !ACTIONS.contains(&a.as_str()) {
            errs.push(Cause::not_supported(field.clone(), a, &ACTIONS));
        }
        if actions[..i].contains(a) {
            errs.push(Cause::duplicate(field, a));
        }
    }
    let has = |a: &str| actions.iter().any(|x| x == a);
    if has("Deny") && has("Warn") {
        let detail = "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)";
        let shown = go_slice("ValidationAction", &actions);
        errs.push(invalid_shown(
            "spec.validationActions".into(),
            &shown,
            detail,
        ));
    }
    if actions.is_empty() {
        let detail = "at least one validation action is required";
        errs.push(required("spec.validationActions".into(), detail));
    }
    errs
}
