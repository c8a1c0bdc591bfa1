//! Structural defaulting, as upstream's `schema/defaulting`: a property's `default` fills
//! it in when absent (or null while not nullable), then defaulting goes on below.

use serde_json::Value;

use super::node::Node;

/// Applies the defaults under `node` to `v` in place.
pub(crate) fn apply(node: &Node, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, prop) in &node.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                let absent = match map.get(k) {
                    None => true,
                    Some(Value::Null) => !prop.nullable,
                    Some(_) => false,
                };
                if absent {
                    map.insert(k.clone(), default.clone());
                }
            }
            for (k, cv) in map.iter_mut() {
                if let Some(sub) = node.properties.get(k) {
                    apply(sub, cv);
                } else if let Some(sub) = node.additional.as_deref() {
                    fill_null(sub, cv);
                    apply(sub, cv);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.items.as_deref() {
                for item in items.iter_mut() {
                    fill_null(sub, item);
                    apply(sub, item);
                }
            }
        }
        _ => {}
    }
}

/// Map values and list items have no "absent": a null one takes the default when the
/// schema is not nullable.
fn fill_null(node: &Node, v: &mut Value) {
    if let (Value::Null, false, Some(default)) = (&*v, node.nullable, &node.default) {
        *v = default.clone();
    }
}
