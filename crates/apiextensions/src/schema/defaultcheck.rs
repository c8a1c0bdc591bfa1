//! Upstream's checks of `default` values in a schema: a default must survive pruning
//! unchanged and validate against its own node's schema.

use krust_machinery::Cause;
use serde_json::Value;

use super::node::Node;
use super::{openapi, prune};
use crate::path::{child, invalid};

/// Checks `node`'s default (whose raw schema is `raw`, at `path`).
pub(crate) fn check(node: &Node, raw: &Value, path: &str, errs: &mut Vec<Cause>) {
    let Some(default) = &node.default else {
        return;
    };
    let field = child(path, "default");
    if default.is_null() {
        if !node.nullable {
            errs.push(invalid(
                &field,
                default,
                "must not be null for non-nullable schemas",
            ));
        }
        return;
    }
    let mut pruned_copy = default.clone();
    let mut pruned = Vec::new();
    prune::prune(node, &mut pruned_copy, "", node.embedded, &mut pruned);
    if !pruned.is_empty() {
        let detail = format!("must not have unknown fields, got: [{}]", pruned.join(" "));
        errs.push(invalid(&field, default, &detail));
        return;
    }
    let Ok(validator) = openapi::build(raw) else {
        return;
    };
    for mut c in openapi::validate(&validator, default, None) {
        c.field = if c.field.is_empty() {
            field.clone()
        } else {
            child(&field, &c.field)
        };
        errs.push(c);
    }
}
