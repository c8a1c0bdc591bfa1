//! The CEL environment Kubernetes expressions run in, shared by CRD validation rules and
//! the admission policies of krust-webhook (one environment, one JSON conversion).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ::cel::objects::{Key, Map as CelMap};
use ::cel::{Env, ExecutionError, Value as Cel};
use serde_json::Value;

/// The standard library, its macros, and the strings extension Kubernetes expressions
/// use (`lowerAscii`, `split`, ...); built once.
pub fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The extension only declares functions; failing to would leave them undeclared.
        let _ = env.add_extension(::cel::extensions::strings);
        Arc::new(env)
    })
    .clone()
}

/// Converts a JSON value for CEL: integers are ints, unless `as_double` (a schema's
/// `number`, which upstream types as double even when written as an integer).
pub fn to_cel(v: &Value, as_double: bool) -> Cel {
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

/// cel-go's wording of an evaluation error, which clients see in messages.
pub fn error_text(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".into(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".into(),
        ExecutionError::Overflow(..) => "integer overflow".into(),
        ExecutionError::IndexOutOfBounds(i) => {
            let shown = match i {
                Cel::Int(n) => n.to_string(),
                Cel::UInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            format!("index out of bounds: {shown}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_stay_ints_unless_typed_number() {
        assert_eq!(to_cel(&json!(3), false), Cel::Int(3));
        assert_eq!(to_cel(&json!(3), true), Cel::Float(3.0));
        let p = env().compile("has(x.a) && !has(x.b)").expect("compiles");
        let mut ctx = ::cel::Context::with_env(env());
        ctx.add_variable_from_value("x", to_cel(&json!({"a": 1}), false));
        assert_eq!(p.execute(&ctx), Ok(Cel::Bool(true)));
    }
}
