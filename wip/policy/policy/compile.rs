//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding objects read from JSON;
//! a policy's CEL is compiled here once per version of the object.

use cel::Program;
use krust_apiextensions::cel::env;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{FailurePolicy, Rule};
use crate::matching::{namespace_selector_matches, object_selector_matches, rule_matches};
use crate::Attributes;

/// A NamedRuleWithOperations: a rule that may also restrict by object name.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NamedRule {
    #[serde(flatten)]
    pub rule: Rule,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl NamedRule {
    /// An empty name list matches every name, as upstream (even a name still to be generated).
    fn matches(&self, attrs: &Attributes) -> bool {
        rule_matches(&self.rule, attrs)
            && (self.resource_names.is_empty() || self.resource_names.contains(&attrs.name))
    }
}

/// `matchConstraints` of a policy or `matchResources` of a binding.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MatchResources {
    pub namespace_selector: Option<Value>,
    pub object_selector: Option<Value>,
    #[serde(default)]
    pub resource_rules: Vec<NamedRule>,
    #[serde(default)]
    pub exclude_resource_rules: Vec<NamedRule>,
}

impl MatchResources {
    /// Upstream's order: a selector that plainly does not match wins over a broken one,
    /// and selector errors count only once the rules match.
    pub fn matches(&self, attrs: &Attributes) -> Result<bool, String> {
        let ns = namespace_selector_matches(self.namespace_selector.as_ref(), attrs);
        if matches!(ns, Ok(false)) {
            return Ok(false);
        }
        let obj = object_selector_matches(self.object_selector.as_ref(), attrs);
        if matches!(obj, Ok(false)) {
            return Ok(false);
        }
        if self.exclude_resource_rules.iter().any(|r| r.matches(attrs)) {
            return Ok(false);
        }
        let included =
            self.resource_rules.is_empty() || self.resource_rules.iter().any(|r| r.matches(attrs));
        if !included {
            return Ok(false);
        }
        ns?;
        obj?;
        Ok(true)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParamKind {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
}

impl ParamKind {
    /// Go's `String()` of the ParamKind struct, as upstream's messages print it.
    pub fn go_string(&self) -> String {
        format!(
            "&ParamKind{{APIVersion:{},Kind:{},}}",
            self.api_version, self.kind
        )
    }
}

/// One CEL expression with its compilation result (an error is reported when evaluated).
pub(crate) struct Expr {
    pub text: String,
    pub program: Result<Program, String>,
}

impl Expr {
    pub fn compile(text: &str) -> Expr {
        Expr {
            text: text.to_string(),
            program: compile_text(text),
        }
    }
}

/// Upstream's detail for an expression that does not compile.
pub(crate) fn compile_text(text: &str) -> Result<Program, String> {
    env()
        .compile(text)
        .map_err(|e| format!("compilation failed: {e}"))
}

pub(crate) struct Validation {
    pub expr: Expr,
    pub message: String,
    pub message_expr: Option<Expr>,
    pub reason: Option<String>,
}

/// A policy ready to evaluate.
pub(crate) struct Compiled {
    pub name: String,
    /// Identity of the object version this was compiled from.
    pub version: String,
    pub failure_policy: FailurePolicy,
    pub param_kind: Option<ParamKind>,
    pub match_constraints: Option<MatchResources>,
    pub match_conditions: Vec<Expr>,
    pub variables: Vec<(String, Expr)>,
    pub validations: Vec<Validation>,
    pub audit_annotations: Vec<(String, Expr)>,
    /// The spec could not be read; reported when the policy would be evaluated.
    pub config_error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    failure_policy: Option<String>,
    param_kind: Option<ParamKind>,
    match_constraints: Option<MatchResources>,
    #[serde(default)]
    match_conditions: Vec<RawNamedExpr>,
    #[serde(default)]
    variables: Vec<RawNamedExpr>,
    #[serde(default)]
    validations: Vec<RawValidation>,
    #[serde(default)]
    audit_annotations: Vec<RawAuditAnnotation>,
}

#[derive(Deserialize, Default)]
struct RawNamedExpr {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expression: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawValidation {
    #[serde(default)]
    expression: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    message_expression: String,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAuditAnnotation {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value_expression: String,
}

pub(crate) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// What identifies one version of an object: uid, resourceVersion and generation, or
/// the spec itself when the object carries none of them (objects not from storage).
pub(crate) fn version_of(obj: &Value) -> String {
    let uid = str_at(obj, "/metadata/uid");
    let rv = str_at(obj, "/metadata/resourceVersion");
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    if uid.is_empty() && rv.is_empty() && generation.is_none() {
        return obj.get("spec").map(Value::to_string).unwrap_or_default();
    }
    format!("{uid}/{rv}/{}", generation.unwrap_or(0))
}

fn failure_policy(s: Option<&str>) -> FailurePolicy {
    match s {
        Some("Ignore") => FailurePolicy::Ignore,
        _ => FailurePolicy::Fail,
    }
}

/// Compiles every expression of `policy`; a spec that cannot be read becomes a
/// configuration error under its failurePolicy.
pub(crate) fn compile(policy: &Value) -> Compiled {
    let name = str_at(policy, "/metadata/name").to_string();
    let version = version_of(policy);
    let spec = policy.get("spec").cloned().unwrap_or(Value::Null);
    let raw: Result<RawSpec, String> = if spec.is_null() {
        Ok(RawSpec::default())
    } else {
        serde_json::from_value(spec).map_err(|e| e.to_string())
    };
    let raw = match raw {
        Ok(r) => r,
        Err(e) => {
            let fp = policy
                .pointer("/spec/failurePolicy")
                .and_then(Value::as_str);
            return Compiled {
                name,
                version,
                failure_policy: failure_policy(fp),
                param_kind: None,
                match_constraints: None,
                match_conditions: Vec::new(),
                variables: Vec::new(),
                validations: Vec::new(),
                audit_annotations: Vec::new(),
                config_error: Some(format!("invalid policy spec: {e}")),
            };
        }
    };
    Compiled {
        name,
        version,
        failure_policy: failure_policy(raw.failure_policy.as_deref()),
        param_kind: raw.param_kind,
        match_constraints: raw.match_constraints,
        match_conditions: raw
            .match_conditions
            .iter()
            .map(|m| Expr::compile(&m.expression))
            .collect(),
        variables: raw
            .variables
            .iter()
            .map(|v| (v.name.clone(), Expr::compile(&v.expression)))
            .collect(),
        validations: raw
            .validations
            .iter()
            .map(|v| Validation {
                expr: Expr::compile(&v.expression),
                message: v.message.clone(),
                message_expr: (!v.message_expression.trim().is_empty())
                    .then(|| Expr::compile(&v.message_expression)),
                reason: v.reason.clone(),
            })
            .collect(),
        audit_annotations: raw
            .audit_annotations
            .iter()
            .map(|a| (a.key.clone(), Expr::compile(a.value_expression.trim())))
            .collect(),
        config_error: None,
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParamRef {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub selector: Option<Value>,
    pub parameter_not_found_action: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BindingSpec {
    pub param_ref: Option<ParamRef>,
    pub match_resources: Option<MatchResources>,
    #[serde(default)]
    pub validation_actions: Vec<String>,
}

/// A binding as the dispatcher sees it; `spec` is an error when it cannot be read.
pub(crate) struct Binding {
    pub name: String,
    pub policy_name: String,
    pub spec: Result<BindingSpec, String>,
}

pub(crate) fn binding(obj: &Value) -> Binding {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let spec = if spec.is_null() {
        Ok(BindingSpec::default())
    } else {
        serde_json::from_value(spec).map_err(|e| format!("invalid binding spec: {e}"))
    };
    Binding {
        name: str_at(obj, "/metadata/name").to_string(),
        policy_name: str_at(obj, "/spec/policyName").to_string(),
        spec,
    }
}
