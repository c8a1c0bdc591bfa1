//! Pruning: dropping what the schema does not describe, as upstream's `schema/pruning`.

use serde_json::Value;

use super::node::Node;
use crate::path::{child, index};

/// Prunes `v` in place, recording the dotted paths of dropped fields. `resource_root` is
/// true for the object itself and for embedded resources, whose `apiVersion`, `kind` and
/// `metadata` always stay (metadata is the server's to handle).
pub(crate) fn prune(
    node: &Node,
    v: &mut Value,
    path: &str,
    resource_root: bool,
    out: &mut Vec<String>,
) {
    match v {
        Value::Object(map) => {
            let mut dropped = Vec::new();
            for (k, cv) in map.iter_mut() {
                if resource_root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = child(path, k);
                if let Some(sub) = node.properties.get(k).or(node.additional.as_deref()) {
                    prune(sub, cv, &p, sub.embedded, out);
                } else if !node.preserve_unknown && !node.additional_any {
                    dropped.push(k.clone());
                    out.push(p);
                }
            }
            for k in dropped {
                map.shift_remove(&k);
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.items.as_deref() {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(sub, item, &index(path, i), sub.embedded, out);
                }
            }
        }
        _ => {}
    }
}
