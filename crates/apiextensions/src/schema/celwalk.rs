//! Runs the compiled CEL rules over an object: each node's rules see that node's value as
//! `self`, and on updates the correlated old value as `oldSelf`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map as CelMap};
use cel::{Env, Value as Cel};
use krust_machinery::Cause;
use serde_json::Value;

use super::node::Node;
use super::rules::{to_cel, Outcome};
use crate::path::{child, index, invalid_str};

/// Validates `v` (at `path`) and everything below it.
pub(crate) fn validate(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    env: &Arc<Env>,
    errs: &mut Vec<Cause>,
) {
    if v.is_null() {
        return;
    }
    if !node.rules.is_empty() {
        run_rules(node, v, old, path, env, errs);
    }
    match v {
        Value::Object(map) => {
            for (k, child_v) in map {
                let Some(sub) = node.properties.get(k).or(node.additional.as_deref()) else {
                    continue;
                };
                let old_child = old.and_then(|o| o.get(k));
                validate(sub, child_v, old_child, &child(path, k), env, errs);
            }
        }
        Value::Array(items) => {
            let Some(sub) = node.items.as_deref() else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                let old_item = correlate(node, item, old);
                validate(sub, item, old_item, &index(path, i), env, errs);
            }
        }
        _ => {}
    }
}

fn run_rules(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    env: &Arc<Env>,
    errs: &mut Vec<Cause>,
) {
    let this = typed(v, Some(node));
    let old = old.filter(|o| !o.is_null());
    if old == Some(v) {
        // Ratcheting: an unchanged value keeps whatever it was allowed before.
        return;
    }
    let old_cel = old.map(|o| typed(o, Some(node)));
    for rule in &node.rules {
        if rule.is_transition() && old_cel.is_none() {
            continue;
        }
        match rule.eval(env, &this, old_cel.as_ref()) {
            Outcome::Pass => {}
            Outcome::Fail(detail) => errs.push(rule.failure_cause(path, &node.ty, &detail)),
            Outcome::Error(detail) => errs.push(invalid_str(path, &node.ty, &detail)),
        }
    }
}

/// The old item an array item corresponds to: only `map` lists correlate (by their
/// keys), as upstream; items of other lists have no `oldSelf`.
fn correlate<'a>(node: &Node, item: &Value, old: Option<&'a Value>) -> Option<&'a Value> {
    if node.list_type.as_deref() != Some("map") || node.map_keys.is_empty() {
        return None;
    }
    let same = |o: &&Value| node.map_keys.iter().all(|k| o.get(k) == item.get(k));
    old?.as_array()?.iter().find(same)
}

/// Converts with the schema at hand: `number` nodes become doubles.
fn typed(v: &Value, node: Option<&Node>) -> Cel {
    let Some(node) = node else {
        return to_cel(v, false);
    };
    match v {
        Value::Object(map) => {
            let m: HashMap<Key, Cel> = map
                .iter()
                .map(|(k, cv)| {
                    let sub = node.properties.get(k).or(node.additional.as_deref());
                    (Key::String(Arc::new(k.clone())), typed(cv, sub))
                })
                .collect();
            Cel::Map(CelMap { map: Arc::new(m) })
        }
        Value::Array(items) => {
            let sub = node.items.as_deref();
            Cel::List(Arc::new(items.iter().map(|i| typed(i, sub)).collect()))
        }
        _ => to_cel(v, node.ty == "number"),
    }
}
