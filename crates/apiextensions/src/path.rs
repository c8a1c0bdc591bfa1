//! Field paths as upstream's `field.Path` prints them, and Go-style value rendering for
//! cause messages (clients compare these strings, so they follow `fmt`'s `%v`/`%#v`).

use krust_machinery::Cause;
use serde_json::Value;

/// Appends `.name` (or just `name` at the root).
pub(crate) fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// Appends `[key]`, upstream's `Key` for map entries of a schema (`properties[spec]`).
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

/// Appends `[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// Go's `strconv.Quote`, close enough for the printable text clients see.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How `field.Error` prints a bad value: scalars with `%v`, strings quoted, anything else
/// with Go's `%#v` of the decoded JSON (`map[string]interface {}{...}`).
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => quote(s),
        Value::Bool(_) | Value::Number(_) => go_number_or_bool(v),
        _ => go_sharp(v),
    }
}

fn go_number_or_bool(v: &Value) -> String {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64: shortest representation, exponent form for large magnitudes.
pub(crate) fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else if f.abs() >= 1e21 {
        let s = format!("{f:e}");
        s.replace('e', "e+")
    } else {
        f.to_string()
    }
}

/// Go's `%#v` of a value decoded into `interface{}`.
fn go_sharp(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::String(s) => quote(s),
        Value::Bool(_) | Value::Number(_) => go_number_or_bool(v),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_sharp).collect();
            format!("[]interface {{}}{{{}}}", inner.join(", "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", quote(k), go_sharp(&map[k.as_str()])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
    }
}

/// `field.Invalid` with upstream's value rendering.
pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", go_value(value)),
        field: field.into(),
    }
}

/// `field.Invalid` whose bad value is a Go string (a schema type name, a rule's text).
pub(crate) fn invalid_str(field: impl Into<String>, value: &str, detail: &str) -> Cause {
    invalid(field, &Value::String(value.to_string()), detail)
}

/// `field.Required` with a detail (`Required value: <detail>`).
pub(crate) fn required(field: impl Into<String>, detail: &str) -> Cause {
    let message = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    Cause {
        reason: "FieldValueRequired",
        message,
        field: field.into(),
    }
}

/// `field.Duplicate` with upstream's value rendering.
pub(crate) fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: {}", go_value(value)),
        field: field.into(),
    }
}

/// `field.NotSupported`: a bad value (rendered as Go does) and the quoted allowed values.
pub(crate) fn not_supported(field: impl Into<String>, value: &Value, allowed: &[String]) -> Cause {
    let quoted: Vec<String> = allowed.iter().map(|a| quote(a)).collect();
    let mut message = format!("Unsupported value: {}", go_value(value));
    if !quoted.is_empty() {
        message.push_str(&format!(": supported values: {}", quoted.join(", ")));
    }
    Cause {
        reason: "FieldValueNotSupported",
        message,
        field: field.into(),
    }
}

/// Turns a JSON pointer into the dotted path clients see (`/spec/items/2` ->
/// `spec.items[2]`), deciding index vs key by walking `root`.
pub(crate) fn pointer_to_field(root: &Value, pointer: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(root);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match cur {
            Some(Value::Array(items)) => {
                let i: usize = seg.parse().unwrap_or(0);
                out = index(&out, i);
                cur = items.get(i);
            }
            Some(Value::Object(map)) => {
                out = child(&out, &seg);
                cur = map.get(&seg);
            }
            _ => {
                out = child(&out, &seg);
                cur = None;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_go() {
        assert_eq!(go_value(&json!("a")), "\"a\"");
        assert_eq!(go_value(&json!(5)), "5");
        assert_eq!(go_value(&json!(1.5)), "1.5");
        assert_eq!(
            go_value(&json!({"b": 1, "a": "x"})),
            "map[string]interface {}{\"a\":\"x\", \"b\":1}"
        );
        let obj = json!({"spec": {"items": [{"name": 1}, {"name": 2}]}});
        assert_eq!(
            pointer_to_field(&obj, "/spec/items/1/name"),
            "spec.items[1].name"
        );
    }
}
