//! OpenAPI value validation through the `jsonschema` crate: the structural schema is
//! translated to draft 4 (OpenAPI v3's boolean `exclusiveMaximum`), and its errors are
//! worded as upstream's kube-openapi validator words them.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use krust_machinery::Cause;
use serde_json::{json, Map, Value};

use crate::path::{go_float, go_value, invalid, invalid_str, pointer_to_field, quote};

/// Formats whose checks upstream and `jsonschema` agree on; others are not checked.
const FORMATS: [&str; 5] = ["date-time", "date", "uuid", "ipv4", "ipv6"];

/// Keywords copied as they are.
const PLAIN: [&str; 14] = [
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "maxProperties",
    "minProperties",
    "required",
];

/// Builds the validator for a (structurally valid) schema.
pub(crate) fn build(raw: &Value) -> Result<Validator, String> {
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&translate(raw))
        .map_err(|e| e.to_string())
}

/// One schema node in draft 4 terms: `nullable` and `x-kubernetes-int-or-string` become
/// type lists, vendor extensions and defaults are dropped.
fn translate(raw: &Value) -> Value {
    let Some(obj) = raw.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    let nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
    let mut types: Vec<Value> = match obj.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => vec![json!(t)],
        _ => Vec::new(),
    };
    if obj
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        types = vec![json!("integer"), json!("string")];
    }
    if !types.is_empty() {
        if nullable {
            types.push(json!("null"));
        }
        out.insert("type".into(), Value::Array(types));
    }
    if let Some(f) = obj.get("format").and_then(Value::as_str) {
        if FORMATS.contains(&f) {
            out.insert("format".into(), json!(f));
        }
    }
    if let Some(Value::Array(options)) = obj.get("enum") {
        let mut options = options.clone();
        if nullable {
            options.push(Value::Null);
        }
        out.insert("enum".into(), Value::Array(options));
    }
    for k in PLAIN {
        if let Some(v) = obj.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    translate_children(obj, &mut out);
    Value::Object(out)
}

fn translate_children(obj: &Map<String, Value>, out: &mut Map<String, Value>) {
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let t: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), translate(v)))
            .collect();
        out.insert("properties".into(), Value::Object(t));
    }
    if let Some(add @ Value::Object(_)) = obj.get("additionalProperties") {
        out.insert("additionalProperties".into(), translate(add));
    }
    if let Some(items @ Value::Object(_)) = obj.get("items") {
        out.insert("items".into(), translate(items));
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get(k) {
            out.insert(k.into(), Value::Array(list.iter().map(translate).collect()));
        }
    }
    if let Some(not) = obj.get("not") {
        out.insert("not".into(), translate(not));
    }
}

/// Validates `obj` and maps each error to upstream's cause. With `old` (an update),
/// errors on values the update left unchanged are dropped: upstream's validation
/// ratcheting, so tightening a schema does not lock existing objects.
pub(crate) fn validate(validator: &Validator, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    validator
        .iter_errors(obj)
        .filter(|e| !ratcheted(obj, old, e.instance_path().as_str()))
        .map(|e| to_cause(obj, &e))
        .collect()
}

/// Whether the value an error is about is the same in the old object.
fn ratcheted(obj: &Value, old: Option<&Value>, pointer: &str) -> bool {
    let Some(old) = old else {
        return false;
    };
    match (obj.pointer(pointer), old.pointer(pointer)) {
        (Some(n), Some(o)) => n == o,
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected_types(kind: &TypeKind) -> String {
    let all = match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    let mut names: Vec<String> = all.into_iter().filter(|t| t != "null").collect();
    names.sort();
    names.join(",")
}

fn limit_text(v: &Value) -> String {
    match v.as_i64() {
        Some(i) => i.to_string(),
        None => v.as_f64().map(go_float).unwrap_or_else(|| v.to_string()),
    }
}

/// One `jsonschema` error as upstream's cause: the field path from the instance path, the
/// message from kube-openapi's templates, the reason from `kubeOpenAPIResultToFieldErrors`.
fn to_cause(root: &Value, e: &ValidationError) -> Cause {
    let field = pointer_to_field(root, e.instance_path().as_str());
    let value: &Value = e.instance();
    let name = field.clone();
    let len = |v: &Value| match v {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    match e.kind() {
        ValidationErrorKind::Type { kind } => {
            let data = type_name(value);
            let detail = format!(
                "{name} in body must be of type {}: {}",
                expected_types(kind),
                quote(data)
            );
            Cause {
                reason: "FieldValueTypeInvalid",
                ..invalid_str(field, data, &detail)
            }
        }
        ValidationErrorKind::Format { format } => {
            let detail = format!(
                "{name} in body must be of type {format}: {}",
                go_value_str(value)
            );
            Cause {
                reason: "FieldValueTypeInvalid",
                ..invalid(field, value, &detail)
            }
        }
        ValidationErrorKind::Required { property } => {
            let prop = property.as_str().unwrap_or_default();
            Cause::required(crate::path::child(&field, prop))
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|o| o.iter().filter(|v| !v.is_null()).map(enum_text).collect())
                .unwrap_or_default();
            crate::path::not_supported(field, value, &allowed)
        }
        ValidationErrorKind::MaxLength { limit } => Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be longer than {limit}"),
            field,
        },
        ValidationErrorKind::MaxItems { limit } | ValidationErrorKind::MaxProperties { limit } => {
            Cause {
                reason: "FieldValueTooMany",
                message: format!("Too many: {}: must have at most {limit} items", len(value)),
                field,
            }
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
        | ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::Not { .. } => junctor_cause(e.kind(), &name),
        other => {
            let detail = format!("{name} in body {}", value_detail(other, value));
            invalid(field, &detail_value(other, value, len(value)), &detail)
        }
    }
}

/// kube-openapi's value for errors whose bad value is not the data itself.
fn detail_value(kind: &ValidationErrorKind, value: &Value, len: usize) -> Value {
    match kind {
        ValidationErrorKind::MinItems { .. } => json!(len),
        ValidationErrorKind::MinProperties { limit } => json!(limit),
        ValidationErrorKind::UniqueItems => json!(""),
        _ => value.clone(),
    }
}

/// The text after `<field> in body` for the remaining kinds.
fn value_detail(kind: &ValidationErrorKind, value: &Value) -> String {
    match kind {
        ValidationErrorKind::Maximum { limit } => {
            format!("should be less than or equal to {}", limit_text(limit))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("should be less than {}", limit_text(limit))
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("should be greater than or equal to {}", limit_text(limit))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("should be greater than {}", limit_text(limit))
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("should be at least {limit} chars long")
        }
        ValidationErrorKind::Pattern { pattern } => format!("should match '{pattern}'"),
        ValidationErrorKind::MinItems { limit } => format!("should have at least {limit} items"),
        ValidationErrorKind::MinProperties { limit } => {
            format!("should have at least {limit} properties")
        }
        ValidationErrorKind::UniqueItems => "shouldn't contain duplicates".into(),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("should be a multiple of {}", go_float(*multiple_of))
        }
        other => format!("is invalid: {} ({})", other.keyword(), go_value(value)),
    }
}

/// `%q` of a string bad value, `%v` of anything else.
fn go_value_str(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        other => go_value(other),
    }
}

/// Upstream lists non-string enum values by their JSON.
fn enum_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// kube-openapi reports junctor failures as plain errors (not field validations), which
/// upstream turns into an `Invalid` cause at the root with an empty bad value; the
/// message quotes the node's path.
fn junctor_cause(kind: &ValidationErrorKind, name: &str) -> Cause {
    let detail = match kind {
        ValidationErrorKind::OneOfNotValid { .. } => format!(
            "{} must validate one and only one schema (oneOf). Found none valid",
            quote(name)
        ),
        ValidationErrorKind::OneOfMultipleValid { context } => {
            let valid = context.iter().filter(|errs| errs.is_empty()).count().max(2);
            format!(
                "{} must validate one and only one schema (oneOf). Found {valid} valid alternatives",
                quote(name)
            )
        }
        ValidationErrorKind::AnyOf { .. } => {
            format!("{} must validate at least one schema (anyOf)", quote(name))
        }
        _ => format!("{} must not validate the schema (not)", quote(name)),
    };
    invalid_str("", "", &detail)
}
