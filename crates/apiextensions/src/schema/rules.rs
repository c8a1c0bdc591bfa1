//! `x-kubernetes-validations`: CEL rules compiled once with the schema, evaluated per
//! object with `self` (and `oldSelf` on updates) bound to the node's value.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program, Value as Cel};
use krust_machinery::Cause;
use serde_json::Value;

use crate::path::{child, index, invalid_str, quote, required};

/// The reasons a rule may name (upstream's list, in its sorted order for the message).
const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// One compiled rule.
pub(crate) struct Rule {
    text: String,
    program: Program,
    message: String,
    message_expr: Option<Program>,
    reason: &'static str,
    field_path: String,
    /// Mentions `oldSelf`: only checked on updates where an old value correlates.
    transition: bool,
}

/// The CEL environment every rule compiles and runs in: the standard library, its
/// macros, and the strings extension Kubernetes rules use (`lowerAscii`, `split`, ...).
pub(crate) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The extension only declares functions; failing to would leave them undeclared.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
    .clone()
}

/// Compiles the rules of one node, reporting problems under
/// `<path>.x-kubernetes-validations[i]`.
pub(crate) fn compile(raw: Option<&Value>, path: &str, errs: &mut Vec<Cause>) -> Vec<Rule> {
    let Some(list) = raw.and_then(Value::as_array) else {
        return Vec::new();
    };
    let base = child(path, "x-kubernetes-validations");
    let env = env();
    list.iter()
        .enumerate()
        .filter_map(|(i, r)| compile_one(&env, r, &index(&base, i), errs))
        .collect()
}

fn text_of<'a>(r: &'a Value, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

fn compile_one(env: &Env, r: &Value, path: &str, errs: &mut Vec<Cause>) -> Option<Rule> {
    let text = text_of(r, "rule");
    if text.trim().is_empty() {
        errs.push(required(child(path, "rule"), "rule is not specified"));
        return None;
    }
    let reason = match r.get("reason").and_then(Value::as_str) {
        None => "FieldValueInvalid",
        Some(s) => match REASONS.iter().find(|k| **k == s) {
            Some(k) => k,
            None => {
                let allowed = REASONS.map(String::from);
                let p = child(path, "reason");
                errs.push(crate::path::not_supported(
                    p,
                    &Value::String(s.into()),
                    &allowed,
                ));
                return None;
            }
        },
    };
    let program = match env.compile(text) {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("compilation failed: {e}");
            errs.push(rule_invalid(child(path, "rule"), r, &detail));
            return None;
        }
    };
    let message_expr = match text_of(r, "messageExpression") {
        "" => None,
        src => match env.compile(src) {
            Ok(p) => Some(p),
            Err(e) => {
                let detail = format!("messageExpression compilation failed: {e}");
                errs.push(rule_invalid(child(path, "messageExpression"), r, &detail));
                return None;
            }
        },
    };
    let transition = program.references().has_variable("oldSelf");
    Some(Rule {
        text: text.to_string(),
        program,
        message: text_of(r, "message").to_string(),
        message_expr,
        reason,
        field_path: text_of(r, "fieldPath").to_string(),
        transition,
    })
}

/// Upstream reports a bad rule with the whole rule struct as the bad value, printed by
/// Go's `%#v`.
fn rule_invalid(field: String, r: &Value, detail: &str) -> Cause {
    let ptr = |k: &str, ty: &str| match r.get(k) {
        None | Some(Value::Null) => format!("(*{ty})(nil)"),
        Some(_) => format!("(*{ty})(0xc000000000)"),
    };
    let shown = format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{}, FieldPath:{}, OptionalOldSelf:{}}}",
        quote(text_of(r, "rule")),
        quote(text_of(r, "message")),
        quote(text_of(r, "messageExpression")),
        ptr("reason", "apiextensions.FieldValueErrorReason"),
        quote(text_of(r, "fieldPath")),
        ptr("optionalOldSelf", "bool"),
    );
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {shown}: {detail}"),
        field,
    }
}

/// Converts a JSON value for CEL; `number` fields are doubles even when written as
/// integers, as upstream types them by the schema.
pub(crate) fn to_cel(v: &Value, as_double: bool) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (as_double, n.as_i64(), n.as_u64()) {
            (false, Some(i), _) => Cel::Int(i),
            (false, None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            Cel::List(Arc::new(items.iter().map(|i| to_cel(i, false)).collect()))
        }
        Value::Object(map) => {
            let m: HashMap<Key, Cel> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v, false)))
                .collect();
            Cel::Map(CelMap { map: Arc::new(m) })
        }
    }
}

/// What one rule concluded about a value.
pub(crate) enum Outcome {
    Pass,
    /// Failed, with the detail for the cause.
    Fail(String),
    /// Could not be evaluated.
    Error(String),
}

impl Rule {
    /// Upstream's `ruleErrorString`: the message when there is one, else the rule.
    fn error_string(&self) -> &str {
        if self.message.trim().is_empty() {
            self.text.trim()
        } else {
            self.message.trim()
        }
    }

    pub(crate) fn is_transition(&self) -> bool {
        self.transition
    }

    /// Evaluates the rule with `self`/`oldSelf` bound.
    pub(crate) fn eval(&self, env: &Arc<Env>, this: &Cel, old: Option<&Cel>) -> Outcome {
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_from_value("self", this.clone());
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", o.clone());
        }
        match self.program.execute(&ctx) {
            Ok(Cel::Bool(true)) => Outcome::Pass,
            Ok(Cel::Bool(false)) => Outcome::Fail(self.failure_detail(&ctx)),
            Ok(other) => Outcome::Error(format!(
                "rule did not evaluate to a bool: {other:?} evaluating rule: {}",
                self.error_string()
            )),
            Err(e) => Outcome::Error(self.runtime_error(&e)),
        }
    }

    /// Upstream's wording of an evaluation error: cel-go's error text, then the rule.
    fn runtime_error(&self, e: &cel::ExecutionError) -> String {
        let rule = self.error_string();
        match e {
            cel::ExecutionError::NoSuchOverload(_) => format!(
                "'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {rule}"
            ),
            cel::ExecutionError::NoSuchKey(k) => format!("no such key: {k} evaluating rule: {rule}"),
            cel::ExecutionError::DivisionByZero(_) => format!("division by zero evaluating rule: {rule}"),
            cel::ExecutionError::RemainderByZero(_) => format!("modulus by zero evaluating rule: {rule}"),
            cel::ExecutionError::Overflow(..) => format!("integer overflow evaluating rule: {rule}"),
            cel::ExecutionError::IndexOutOfBounds(i) => {
                let shown = match i {
                    Cel::Int(n) => n.to_string(),
                    Cel::UInt(n) => n.to_string(),
                    other => format!("{other:?}"),
                };
                format!("index out of bounds: {shown} evaluating rule: {rule}")
            }
            other => format!("{other} evaluating rule: {rule}"),
        }
    }

    /// The message of a failed rule: `messageExpression`'s result when it gives a
    /// non-blank string, else `message`, else `failed rule: <rule>`.
    fn failure_detail(&self, ctx: &Context) -> String {
        if let Some(expr) = &self.message_expr {
            if let Ok(Cel::String(s)) = expr.execute(ctx) {
                if !s.trim().is_empty() {
                    return s.to_string();
                }
            }
        }
        if self.message.is_empty() {
            format!("failed rule: {}", self.error_string())
        } else {
            self.message.clone()
        }
    }

    /// The cause for a failed rule at `path` (the node), with its `fieldPath` appended.
    pub(crate) fn failure_cause(&self, path: &str, ty: &str, detail: &str) -> Cause {
        let field = append_field_path(path, &self.field_path);
        match self.reason {
            "FieldValueForbidden" => Cause::forbidden(field, detail),
            "FieldValueRequired" => required(field, detail),
            "FieldValueDuplicate" => Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {}", quote(ty)),
                field,
            },
            _ => invalid_str(field, ty, detail),
        }
    }
}

/// Appends a rule's `fieldPath` (`.a.b`, `['x']`, `[0]`) to the node's path.
fn append_field_path(path: &str, fp: &str) -> String {
    let mut out = path.to_string();
    let mut rest = fp;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            out = child(&out, &r[..end]);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").unwrap_or(r.len());
            out = child(&out, &r[..end]);
            rest = r.get(end + 2..).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            out = format!("{out}[{}]", &r[..end]);
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            out = child(&out, rest);
            break;
        }
    }
    out
}
