//! `additionalPrinterColumns`: the cells of a custom resource's table rows, found by the
//! column's kubectl-style JSONPath and typed as upstream's table convertor types them.

use serde_json::{Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One step of a simple JSONPath.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    /// `[?(@.a.b=="x")]` (or `!=`): the items whose sub-path compares so.
    Filter {
        path: Vec<Step>,
        equal: bool,
        literal: Value,
    },
}

/// Checks a column's path parses (`validate_crd` reports the error text).
pub fn valid_json_path(path: &str) -> Result<(), String> {
    parse(path).map(|_| ())
}

/// The cell of `column` (an `additionalPrinterColumns` entry) for `obj`, its age
/// columns measured from now.
pub fn cell(column: &Value, obj: &Value) -> Value {
    cell_at(column, obj, OffsetDateTime::now_utc())
}

/// [`cell`] with the clock given: `date` columns show the age of the timestamp at `now`.
pub fn cell_at(column: &Value, obj: &Value, now: OffsetDateTime) -> Value {
    let path = column.get("jsonPath").and_then(Value::as_str).unwrap_or("");
    let ty = column
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    let Ok(steps) = parse(path) else {
        return Value::Null;
    };
    let Some(found) = first(obj, &steps) else {
        return Value::Null;
    };
    typed_cell(ty, found, now)
}

fn typed_cell(ty: &str, v: &Value, now: OffsetDateTime) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(_)) => v.clone(),
        ("string", other) => Value::String(text(other)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n
                .as_f64()
                .map(|f| Value::from(f as i64))
                .unwrap_or(Value::Null),
        },
        ("number", Value::Number(n)) if n.is_f64() => v.clone(),
        ("number", Value::Number(n)) => n
            .as_f64()
            .and_then(Number::from_f64)
            .map(|_| v.clone())
            .unwrap_or(Value::Null),
        ("boolean", Value::Bool(_)) => v.clone(),
        ("date", Value::String(s)) => Value::String(age(s, now)),
        _ => Value::Null,
    }
}

/// How kubectl's JSONPath prints a non-string result: JSON for maps and lists.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Upstream's `ConvertToHumanReadableDateType`, with `<invalid>` for unparsable times.
fn age(s: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => krust_machinery::table::human_duration(now - t),
        Err(_) => "<invalid>".into(),
    }
}

/// The first value the path finds; upstream shows only the first result.
fn first<'a>(v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(v);
    };
    match step {
        Step::Field(name) => first(v.as_object()?.get(name)?, rest),
        Step::Index(i) => {
            let items = v.as_array()?;
            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
            first(items.get(usize::try_from(idx).ok()?)?, rest)
        }
        Step::Wildcard => match v {
            Value::Array(items) => items.iter().find_map(|i| first(i, rest)),
            Value::Object(map) => map.values().find_map(|i| first(i, rest)),
            _ => None,
        },
        Step::Filter {
            path,
            equal,
            literal,
        } => v
            .as_array()?
            .iter()
            .filter(|item| (first(item, path) == Some(literal)) == *equal)
            .find_map(|item| first(item, rest)),
    }
}

/// Parses `.a.b[0][*]['c.d'][?(@.x=="y")]`, optionally wrapped in `{...}`.
fn parse(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(p);
    if !p.starts_with('.') && !p.starts_with('[') {
        return Err("must be a simple json path starting with .".into());
    }
    let mut steps = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        rest = parse_step(rest, &mut steps)?;
    }
    Ok(steps)
}

fn parse_step<'a>(rest: &'a str, steps: &mut Vec<Step>) -> Result<&'a str, String> {
    if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(['.', '[']).unwrap_or(r.len());
        let name = &r[..end];
        if name == "*" {
            steps.push(Step::Wildcard);
        } else if !name.is_empty() {
            steps.push(Step::Field(name.to_string()));
        } else if end < r.len() && r[end..].starts_with('.') {
            return Err(format!("invalid empty field name in {rest:?}"));
        }
        return Ok(&r[end..]);
    }
    let Some(r) = rest.strip_prefix('[') else {
        return Err(format!("unexpected {rest:?}"));
    };
    let close = bracket_end(r).ok_or_else(|| format!("unterminated [ in {rest:?}"))?;
    let inner = r[..close].trim();
    steps.push(parse_bracket(inner)?);
    Ok(&r[close + 1..])
}

/// Where the bracket closes, skipping quoted text.
fn bracket_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|s| s.strip_suffix(')')) {
        return parse_filter(f.trim());
    }
    if let Some(q) = unquote(inner) {
        return Ok(Step::Field(q));
    }
    inner
        .parse::<i64>()
        .map(Step::Index)
        .map_err(|_| format!("invalid array index {inner}"))
}

fn unquote(s: &str) -> Option<String> {
    let q = s.chars().next()?;
    if (q == '\'' || q == '"') && s.len() >= 2 && s.ends_with(q) {
        Some(s[1..s.len() - 1].to_string())
    } else {
        None
    }
}

fn parse_filter(f: &str) -> Result<Step, String> {
    let (lhs, rhs, equal) = if let Some((l, r)) = f.split_once("==") {
        (l, r, true)
    } else if let Some((l, r)) = f.split_once("!=") {
        (l, r, false)
    } else {
        return Err(format!("unsupported filter {f}"));
    };
    let lhs = lhs.trim();
    let sub = lhs
        .strip_prefix('@')
        .ok_or_else(|| format!("filter must start with @: {f}"))?;
    let path = if sub.is_empty() {
        Vec::new()
    } else {
        parse(sub)?
    };
    let rhs = rhs.trim();
    let literal = match unquote(rhs) {
        Some(s) => Value::String(s),
        None => serde_json::from_str(rhs).map_err(|_| format!("invalid filter value {rhs}"))?,
    };
    Ok(Step::Filter {
        path,
        equal,
        literal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn col(ty: &str, path: &str) -> Value {
        json!({"name": "c", "type": ty, "jsonPath": path})
    }

    #[test]
    fn cells() {
        let obj = json!({
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "ratio": 0.5, "paused": true, "tags": ["a", "b"]},
            "status": {"conditions": [
                {"type": "Progressing", "status": "False"},
                {"type": "Ready", "status": "True"}
            ]}
        });
        let now = datetime!(2024-01-01 03:00:00 UTC);
        let c = |ty, p| cell_at(&col(ty, p), &obj, now);
        assert_eq!(c("integer", ".spec.replicas"), json!(3));
        assert_eq!(c("number", ".spec.ratio"), json!(0.5));
        assert_eq!(c("boolean", ".spec.paused"), json!(true));
        assert_eq!(c("string", ".metadata.labels.app"), json!("web"));
        assert_eq!(c("string", ".spec.replicas"), json!("3"));
        assert_eq!(c("string", ".spec.tags[1]"), json!("b"));
        assert_eq!(
            c("string", ".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(c("date", ".metadata.creationTimestamp"), json!("3h"));
        assert_eq!(c("string", ".spec.missing"), Value::Null);
        assert_eq!(c("integer", ".metadata.labels.app"), Value::Null);
        assert_eq!(c("string", ".metadata.labels['app']"), json!("web"));
    }

    #[test]
    fn paths() {
        assert!(valid_json_path(".spec.replicas").is_ok());
        assert!(valid_json_path(".status.conditions[?(@.type==\"Ready\")].status").is_ok());
        assert!(valid_json_path("spec.replicas").is_err());
        assert!(valid_json_path(".spec[").is_err());
    }
}
