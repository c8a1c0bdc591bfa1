//! Evaluating one policy for one (binding, param): the CEL variables upstream binds
//! (`object`, `oldObject`, `request`, `namespaceObject`, `params`, `variables`) and the
//! decisions and audit annotations its expressions give.

use std::fmt;
use std::sync::OnceLock;

use cel::common::traits::Indexer;
use cel::common::types::{CelString, Type};
use cel::common::value::{CowVal, Val};
use cel::{Context, ExecutionError, Value as Cel};
use krust_apiextensions::cel::{env, error_text, to_cel};
use serde_json::{json, Map, Value};

use super::compile::{Compiled, Expr};
use crate::config::FailurePolicy;
use crate::Attributes;

/// Upstream's limits on what messageExpression and audit annotations may produce.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;
const MAX_ANNOTATION_VALUE_BYTES: usize = 10 * 1024;

/// Marks the error of a composited variable, so its text is shown as upstream words it.
const VARIABLE_ERROR: &str = "variables";

/// The `request` variable: an AdmissionRequest without uid, object and oldObject.
pub(crate) fn request_json(attrs: &Attributes) -> Value {
    let gvk = json!({"group": attrs.group, "version": attrs.version, "kind": attrs.kind});
    let gvr = json!({"group": attrs.group, "version": attrs.version, "resource": attrs.resource});
    let extra: Map<String, Value> = attrs
        .user
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "kind": gvk,
        "resource": gvr,
        "subResource": attrs.subresource,
        "requestKind": gvk,
        "requestResource": gvr,
        "requestSubResource": attrs.subresource,
        "name": attrs.name,
        "namespace": attrs.namespace.clone().unwrap_or_default(),
        "operation": attrs.operation.as_str(),
        "userInfo": {
            "username": attrs.user.username,
            "uid": attrs.user.uid,
            "groups": attrs.user.groups,
            "extra": extra,
        },
        "dryRun": attrs.dry_run,
        "options": attrs.options.clone().unwrap_or(Value::Null),
    })
}

/// `namespaceObject`: the Namespace without managedFields and ownerReferences, as upstream.
pub(crate) fn namespace_json(ns: &Value) -> Value {
    const META: [&str; 12] = [
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "finalizers",
    ];
    let mut meta = Map::new();
    if let Some(m) = ns.get("metadata").and_then(Value::as_object) {
        for k in META {
            if let Some(v) = m.get(k) {
                meta.insert(k.to_string(), v.clone());
            }
        }
    }
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(meta));
    for k in ["spec", "status"] {
        if let Some(v) = ns.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// The variables shared by every policy of one request; built once, when one matches.
pub(crate) fn request_context(
    attrs: &Attributes,
    namespace: Option<&Value>,
) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(env());
    let obj = |o: &Option<Value>| o.as_ref().map_or(Cel::Null, |v| to_cel(v, false));
    ctx.add_variable_from_value("object", obj(&attrs.object));
    ctx.add_variable_from_value("oldObject", obj(&attrs.old_object));
    ctx.add_variable_from_value("request", to_cel(&request_json(attrs), false));
    let ns = namespace.map_or(Cel::Null, |n| to_cel(&namespace_json(n), false));
    ctx.add_variable_from_value("namespaceObject", ns);
    ctx
}

/// `variables`: each one evaluated on first use, at most once per (binding, param), and
/// seeing only the variables declared before it (upstream compiles them in order).
#[derive(Clone, Copy)]
struct Variables<'a> {
    scope: &'a Context<'a, 'a>,
    defs: &'a [(String, Expr)],
    memo: &'a [OnceLock<Result<Box<dyn Val>, ExecutionError>>],
    visible: usize,
}

static VARIABLES_TYPE: Type = Type::new_unspecified_type("kubernetes.variables");

impl fmt::Debug for Variables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variables")
    }
}

impl Variables<'_> {
    fn evaluate(&self, i: usize) -> Result<Box<dyn Val>, ExecutionError> {
        let (name, expr) = &self.defs[i];
        let fail = |detail: String| ExecutionError::FunctionError {
            function: VARIABLE_ERROR.into(),
            message: detail,
        };
        let program = expr.program.as_ref().map_err(|e| {
            fail(format!(
                "composited variable {name:?} fails to compile: {e}"
            ))
        })?;
        let mut ctx = self.scope.new_inner_scope();
        ctx.add_variable_as_val(
            "variables",
            Box::new(Variables {
                visible: i,
                ..*self
            }),
        );
        let value = program.execute(&ctx).map_err(|e| {
            fail(format!(
                "composited variable {name:?} fails to evaluate: {}",
                describe(&e)
            ))
        })?;
        Box::<dyn Val>::try_from(value)
    }
}

impl Indexer for Variables<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let key = idx.downcast_ref::<CelString>().map(CelString::inner);
        let found = key.and_then(|k| self.defs[..self.visible].iter().position(|(n, _)| n == k));
        let Some(i) = found else {
            return Err(ExecutionError::no_such_key(key.unwrap_or("?")));
        };
        match self.memo[i].get_or_init(|| self.evaluate(i)) {
            Ok(v) => Ok(CowVal::Borrowed(v.as_ref())),
            Err(e) => Err(e.clone()),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

impl Val for Variables<'_> {
    fn get_type(&self) -> &Type {
        &VARIABLES_TYPE
    }

    fn cel_type() -> &'static Type {
        &VARIABLES_TYPE
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(*self)
    }
}

/// cel-go's text for an error, or a failed variable's own message.
fn describe(e: &ExecutionError) -> String {
    match e {
        ExecutionError::FunctionError { function, message } if function == VARIABLE_ERROR => {
            message.clone()
        }
        other => error_text(other),
    }
}

/// The type name cel-go prints for a value of the wrong type.
fn type_name(v: &Cel) -> &'static str {
    match v {
        Cel::Bool(_) => "bool",
        Cel::Int(_) => "int",
        Cel::UInt(_) => "uint",
        Cel::Float(_) => "double",
        Cel::String(_) => "string",
        Cel::Bytes(_) => "bytes",
        Cel::Null => "null_type",
        Cel::List(_) => "list(dyn)",
        Cel::Map(_) => "map(dyn, dyn)",
        _ => "dyn",
    }
}

/// A failed validation (or an error under failurePolicy Fail), to be handled by the
/// binding's validationActions.
pub(crate) struct Failure {
    pub index: usize,
    pub message: String,
    /// None for errors (upstream then answers Invalid).
    pub reason: Option<String>,
}

#[derive(Default)]
pub(crate) struct Evaluation {
    pub failures: Vec<Failure>,
    /// (key, value) of the policy's auditAnnotations that produced a value.
    pub annotations: Vec<(String, String)>,
    /// auditAnnotations that failed: these deny whatever the validationActions.
    pub annotation_errors: Vec<String>,
}

/// Evaluates `policy` with `base` (the request's variables) and `params`.
pub(crate) fn evaluate(
    policy: &Compiled,
    base: &Context<'_, '_>,
    params: Option<&Value>,
) -> Evaluation {
    let mut scope = base.new_inner_scope();
    scope.add_variable_from_value("params", params.map_or(Cel::Null, |p| to_cel(p, false)));
    let memo: Vec<OnceLock<Result<Box<dyn Val>, ExecutionError>>> =
        policy.variables.iter().map(|_| OnceLock::new()).collect();
    let vars = Variables {
        scope: &scope,
        defs: &policy.variables,
        memo: &memo,
        visible: policy.variables.len(),
    };
    let run = |expr: &Expr| -> Result<Cel, String> {
        let program = expr
            .program
            .as_ref()
            .map_err(|e| format!("compilation error: {e}"))?;
        let mut ctx = vars.scope.new_inner_scope();
        ctx.add_variable_as_val("variables", Box::new(vars));
        program.execute(&ctx).map_err(|e| {
            format!(
                "expression '{}' resulted in error: {}",
                expr.text,
                describe(&e)
            )
        })
    };
    let run_bool = |expr: &Expr| -> Result<bool, String> {
        match run(expr)? {
            Cel::Bool(b) => Ok(b),
            other => Err(format!(
                "compilation error: must evaluate to bool but got {}",
                type_name(&other)
            )),
        }
    };
    let fail = policy.failure_policy == FailurePolicy::Fail;
    let mut out = Evaluation::default();

    let mut errors = Vec::new();
    for cond in &policy.match_conditions {
        match run_bool(cond) {
            Ok(true) => {}
            Ok(false) => return out,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        if fail {
            let message = match errors.len() {
                1 => errors.remove(0),
                _ => format!("[{}]", errors.join(", ")),
            };
            out.failures.push(Failure {
                index: 0,
                message,
                reason: None,
            });
        }
        return out;
    }

    for (index, v) in policy.validations.iter().enumerate() {
        match run_bool(&v.expr) {
            Ok(true) => {}
            Ok(false) => {
                let from_expr = v.message_expr.as_ref().and_then(|m| match run(m) {
                    Ok(Cel::String(s)) => {
                        let s = s.trim();
                        let usable =
                            !s.is_empty() && s.len() <= MAX_MESSAGE_BYTES && !s.contains('\n');
                        usable.then(|| s.to_string())
                    }
                    _ => None,
                });
                let message = from_expr
                    .or_else(|| {
                        (!v.message.trim().is_empty()).then(|| v.message.trim().to_string())
                    })
                    .unwrap_or_else(|| format!("failed expression: {}", v.expr.text.trim()));
                let reason = Some(v.reason.clone().unwrap_or_else(|| "Invalid".into()));
                out.failures.push(Failure {
                    index,
                    message,
                    reason,
                });
            }
            Err(message) if fail => out.failures.push(Failure {
                index,
                message,
                reason: None,
            }),
            Err(_) => {}
        }
    }

    for (key, expr) in &policy.audit_annotations {
        match run(expr) {
            Ok(Cel::String(s)) => {
                let mut value = s.trim().to_string();
                if value.is_empty() {
                    continue;
                }
                if value.len() > MAX_ANNOTATION_VALUE_BYTES {
                    let mut end = MAX_ANNOTATION_VALUE_BYTES;
                    while !value.is_char_boundary(end) {
                        end -= 1;
                    }
                    value.truncate(end);
                }
                out.annotations.push((key.clone(), value));
            }
            Ok(Cel::Null) => {}
            Ok(other) => out.annotation_errors.push(format!(
                "valueExpression '{}' resulted in unsupported return type: {}. Return type must be either string or null.",
                expr.text,
                type_name(&other)
            )),
            Err(e) if fail => out.annotation_errors.push(e),
            Err(_) => {}
        }
    }
    out
}
