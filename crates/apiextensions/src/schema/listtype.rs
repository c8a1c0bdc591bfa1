//! `x-kubernetes-list-type`: `set` lists must not repeat an item, `map` lists must not
//! repeat a key tuple (`x-kubernetes-list-map-keys`).

use krust_machinery::Cause;
use serde_json::{Map, Value};

use super::node::Node;
use crate::path::{child, duplicate, index};

/// Checks every list under `v`.
pub(crate) fn validate(node: &Node, v: &Value, path: &str, errs: &mut Vec<Cause>) {
    match v {
        Value::Array(items) => {
            match node.list_type.as_deref() {
                Some("set") => check_set(items, path, errs),
                Some("map") => check_map(&node.map_keys, items, path, errs),
                _ => {}
            }
            if let Some(sub) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    validate(sub, item, &index(path, i), errs);
                }
            }
        }
        Value::Object(map) => {
            for (k, cv) in map {
                if let Some(sub) = node.properties.get(k).or(node.additional.as_deref()) {
                    validate(sub, cv, &child(path, k), errs);
                }
            }
        }
        _ => {}
    }
}

fn check_set(items: &[Value], path: &str, errs: &mut Vec<Cause>) {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            errs.push(duplicate(index(path, i), item));
        }
    }
}

fn check_map(keys: &[String], items: &[Value], path: &str, errs: &mut Vec<Cause>) {
    let tuples: Vec<Option<Map<String, Value>>> = items
        .iter()
        .map(|item| {
            let obj = item.as_object()?;
            Some(
                keys.iter()
                    .filter_map(|k| obj.get(k).map(|v| (k.clone(), v.clone())))
                    .collect(),
            )
        })
        .collect();
    for (i, tuple) in tuples.iter().enumerate() {
        let Some(t) = tuple else { continue };
        if tuples[..i].iter().any(|prev| prev.as_ref() == Some(t)) {
            errs.push(duplicate(index(path, i), &Value::Object(t.clone())));
        }
    }
}
