//! Field paths and field errors rendered exactly as upstream's `field.Error.ErrorBody()`, so
//! clients that match on messages (kubectl, tests written against a real cluster) see the
//! same text.

use serde_json::Value;

use crate::status::Cause;

/// A field path such as `spec.containers[0].ports[1].containerPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// Nested children in one call: `p.at(&["spec", "template"])`.
    pub fn at(&self, names: &[&str]) -> Self {
        names.iter().fold(self.clone(), |p, n| p.child(n))
    }

    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{k}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Go's `%q` for the common cases: JSON string escaping is the same for printable text.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How upstream prints a bad value: strings quoted, numbers and booleans bare, anything
/// else as compact JSON with sorted keys (Go's `json.Marshal` sorts map keys).
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => sorted_json(other),
    }
}

fn sorted_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", quote(k), sorted_json(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(sorted_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

pub fn required(path: &Path, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        message: with_detail("Required value".into(), detail),
        field: path.to_string(),
    }
}

pub fn forbidden(path: &Path, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        message: with_detail("Forbidden".into(), detail),
        field: path.to_string(),
    }
}

/// `Invalid value` with an arbitrary JSON value.
pub fn invalid(path: &Path, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: with_detail(format!("Invalid value: {}", render(value)), detail),
        field: path.to_string(),
    }
}

/// `Invalid value` with the value already rendered as upstream prints it, for Go values
/// whose `%#v` form has no JSON equivalent (a nil slice: `[]networking.IngressRule(nil)`).
pub fn invalid_raw(path: &Path, rendered: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: with_detail(format!("Invalid value: {rendered}"), detail),
        field: path.to_string(),
    }
}

/// Go's `%#v` of a slice of strings of type `go_type`: `[]T(nil)` when absent, else
/// `[]T{"a", "b"}`.
pub fn go_string_slice(go_type: &str, v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => format!("[]{go_type}(nil)"),
        Some(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| quote(i.as_str().unwrap_or_default()))
                .collect();
            format!("[]{go_type}{{{}}}", parts.join(", "))
        }
    }
}

pub fn invalid_str(path: &Path, value: &str, detail: &str) -> Cause {
    invalid(path, &Value::String(value.to_string()), detail)
}

pub fn invalid_int(path: &Path, value: i64, detail: &str) -> Cause {
    invalid(path, &Value::from(value), detail)
}

pub fn not_supported(path: &Path, value: &Value, allowed: &[&str]) -> Cause {
    let detail = if allowed.is_empty() {
        String::new()
    } else {
        format!(
            "supported values: {}",
            allowed
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Cause {
        reason: "FieldValueNotSupported",
        message: with_detail(format!("Unsupported value: {}", render(value)), &detail),
        field: path.to_string(),
    }
}

pub fn not_supported_str(path: &Path, value: &str, allowed: &[&str]) -> Cause {
    not_supported(path, &Value::String(value.to_string()), allowed)
}

pub fn duplicate(path: &Path, value: &Value) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: {}", render(value)),
        field: path.to_string(),
    }
}

pub fn duplicate_str(path: &Path, value: &str) -> Cause {
    duplicate(path, &Value::String(value.to_string()))
}

pub fn not_found(path: &Path, value: &str) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        message: format!("Not found: {}", quote(value)),
        field: path.to_string(),
    }
}

pub fn too_long(path: &Path, max: usize) -> Cause {
    let unit = if max == 1 { "byte" } else { "bytes" };
    Cause {
        reason: "FieldValueTooLong",
        message: format!("Too long: may not be more than {max} {unit}"),
        field: path.to_string(),
    }
}

pub fn too_many(path: &Path, actual: usize, max: usize) -> Cause {
    let unit = if max == 1 { "item" } else { "items" };
    Cause {
        reason: "FieldValueTooMany",
        message: format!("Too many: {actual}: must have at most {max} {unit}"),
        field: path.to_string(),
    }
}

/// Upstream's `ValidateImmutableField`: `Invalid value: <new>: field is immutable`.
pub fn immutable(path: &Path, new: &Value) -> Cause {
    invalid(path, new, "field is immutable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_render_like_upstream() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("resources")
            .key("cpu");
        assert_eq!(p.to_string(), "spec.containers[0].resources[cpu]");
        assert_eq!(Path::new("").child("x").to_string(), "x");
        assert_eq!(
            Path::new("spec").at(&["template", "spec"]).to_string(),
            "spec.template.spec"
        );
    }

    #[test]
    fn messages_render_like_upstream() {
        let p = Path::new("spec").child("replicas");
        assert_eq!(
            invalid_int(&p, -1, "must be greater than or equal to 0").message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(required(&p, "").message, "Required value");
        assert_eq!(
            required(&p, "must be set").message,
            "Required value: must be set"
        );
        assert_eq!(forbidden(&p, "nope").message, "Forbidden: nope");
        assert_eq!(
            not_supported_str(&p, "X", &["A", "B"]).message,
            "Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert_eq!(
            invalid(&p, &json!({"b": 1, "a": "x"}), "bad").message,
            "Invalid value: {\"a\":\"x\",\"b\":1}: bad"
        );
        assert_eq!(duplicate_str(&p, "a").message, "Duplicate value: \"a\"");
        assert_eq!(not_found(&p, "v").message, "Not found: \"v\"");
        assert_eq!(
            too_long(&p, 262144).message,
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            too_many(&p, 4, 3).message,
            "Too many: 4: must have at most 3 items"
        );
        assert_eq!(
            invalid_str(&p, "a\"b", "x").message,
            "Invalid value: \"a\\\"b\": x"
        );
    }
}
