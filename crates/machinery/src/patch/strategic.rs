//! Strategic merge patch, with the semantics of upstream's `strategicpatch` package:
//!
//! - maps merge key by key; `null` deletes a key;
//! - lists with the `merge` strategy merge: lists of objects by their merge key, lists of
//!   scalars as sets; all other lists are replaced;
//! - directives: `$patch: replace` (take the patch's map or list as is), `$patch: delete`
//!   (empty the map, or remove the list item with that key), `$retainKeys` (drop the keys not
//!   listed), `$deleteFromPrimitiveList/<field>` (remove these scalars), and
//!   `$setElementOrder/<field>` (the order of the merged list), as `kubectl apply` sends them.
//!
//! The order of a merged list: items named by the patch (or its `$setElementOrder`) in that
//! order, interleaved with the live object's other items where they stood.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::fieldpath::values_equal;
use super::schema::Node;
use super::PatchError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

fn bad(message: impl Into<String>) -> PatchError {
    PatchError::BadRequest(message.into())
}

/// Applies strategic merge patch `patch` to `original`; `node` is the type of `original`.
pub fn strategic_merge_patch(
    node: Node,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(bad("a strategic merge patch must be a JSON object"));
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(&node, original, patch.clone()).map(Value::Object)
}

/// The merge strategy of the field at `node`.
struct Strategy {
    merge: bool,
    replace: bool,
    merge_key: Option<&'static str>,
}

fn strategy(node: &Node) -> Strategy {
    let f = node.facts();
    Strategy {
        merge: f.patch_merge,
        replace: f.patch_replace,
        merge_key: f.merge_key,
    }
}

fn merge_map(
    node: &Node,
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return Ok(clean_map(node, patch)),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(bad(format!(
                    "unknown $patch directive {directive} in a map"
                )))
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_element_orders(node, &mut original, &mut patch)?;

    for (key, patch_value) in patch {
        let (key, delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some("") => {
                return Err(bad(format!(
                    "invalid patch key {key:?}: no field after the directive"
                )))
            }
            Some(field) => (field.to_string(), true),
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let child = node.child(&key);
        let Some(current) = original.remove(&key) else {
            if !delete_list {
                if let Some(v) = fresh(&child, patch_value)? {
                    original.insert(key, v);
                }
            }
            continue;
        };
        let merged = match (current, patch_value) {
            (Value::Object(cur), Value::Object(p)) => {
                if strategy(&child).replace {
                    Some(Value::Object(clean_map(&child, p)))
                } else {
                    Some(Value::Object(merge_map(&child, cur, p)?))
                }
            }
            (Value::Array(cur), Value::Array(p)) => {
                let s = strategy(&child);
                if s.merge || delete_list {
                    Some(Value::Array(merge_list(
                        &child,
                        cur,
                        p,
                        s.merge_key,
                        delete_list,
                    )?))
                } else {
                    fresh(&child, Value::Array(p))?
                }
            }
            (current, _) if delete_list => Some(current),
            (_, patch_value) => fresh(&child, patch_value)?,
        };
        if let Some(v) = merged {
            original.insert(key, v);
        }
    }
    Ok(original)
}

/// The value a patch creates where the original has nothing (or something of another
/// kind): directives are resolved against an empty original and `null`s disappear.
fn fresh(node: &Node, value: Value) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(m) => match m.get(DIRECTIVE).and_then(Value::as_str) {
            Some("delete") => Ok(None),
            _ => merge_map(node, Map::new(), m).map(|m| Some(Value::Object(m))),
        },
        Value::Array(items) => {
            let item_node = node.items();
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Object(m) if m.contains_key(DIRECTIVE) => {}
                    Value::Object(m) => {
                        out.push(Value::Object(merge_map(&item_node, Map::new(), m)?))
                    }
                    other => out.push(other),
                }
            }
            Ok(Some(Value::Array(out)))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// A map taken as is (`$patch: replace`), without directives inside.
fn clean_map(node: &Node, patch: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in patch {
        if k == DIRECTIVE
            || k == RETAIN_KEYS
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        let child = node.child(&k);
        let v = match v {
            Value::Object(m) => Value::Object(clean_map(&child, m)),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .filter(|i| !i.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)))
                    .map(|i| match i {
                        Value::Object(m) => Value::Object(clean_map(&child.items(), m)),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        };
        out.insert(k, v);
    }
    out
}

/// `$retainKeys`: every key the patch sets must be listed, and the original keeps only the
/// listed keys (used for unions such as a deployment strategy or a volume source).
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad("$retainKeys must be a list of field names"));
    };
    let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
            || k == DIRECTIVE
        {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(bad(format!(
                "the patch sets {k:?}, which its $retainKeys list does not contain"
            )));
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the list `<field>` (if the patch has it) and orders
/// the result: listed items in the listed order, other live items where they stood.
fn apply_element_orders(
    node: &Node,
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let Some(order) = patch.remove(&order_key) else {
            continue;
        };
        let field = order_key
            .strip_prefix(SET_ELEMENT_ORDER)
            .unwrap_or_default();
        if field.is_empty() {
            return Err(bad(format!(
                "invalid patch key {order_key:?}: no field after the directive"
            )));
        }
        let Value::Array(order) = order else {
            return Err(bad(format!("{order_key} must be a list")));
        };
        let child = node.child(field);
        let s = strategy(&child);
        let current = match original.get(field) {
            Some(Value::Array(items)) => Some(items.clone()),
            Some(_) => {
                return Err(bad(format!(
                    "{order_key} names {field:?}, which is not a list"
                )))
            }
            None => None,
        };
        let listed = match patch.remove(field) {
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                return Err(bad(format!(
                    "{order_key} names {field:?}, which the patch does not set as a list"
                )))
            }
            None => None,
        };
        if let Some(items) = &listed {
            check_order(items, &order, s.merge_key)?;
        }
        let merged = match (current.clone(), listed) {
            (Some(cur), None) => cur,
            (None, Some(p)) => match fresh(&child, Value::Array(p))? {
                Some(Value::Array(v)) => v,
                _ => Vec::new(),
            },
            (Some(cur), Some(p)) if s.merge => merge_list(&child, cur, p, s.merge_key, false)?,
            (Some(_), Some(p)) => match fresh(&child, Value::Array(p))? {
                Some(Value::Array(v)) => v,
                _ => Vec::new(),
            },
            (None, None) => continue,
        };
        let (in_order, rest) = partition(merged, &order, s.merge_key)?;
        let server_order = current.unwrap_or_default();
        let ordered = interleave(
            sort_by_order(in_order, &order, s.merge_key),
            rest,
            &server_order,
            s.merge_key,
        );
        original.insert(field.to_string(), Value::Array(ordered));
    }
    Ok(())
}

/// The patch list must list its items in the same relative order as `$setElementOrder`.
fn check_order(items: &[Value], order: &[Value], key: Option<&str>) -> Result<(), PatchError> {
    let listed: Vec<&Value> = items
        .iter()
        .filter(|i| !i.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)))
        .collect();
    let mut at = 0;
    for o in order {
        if at == listed.len() {
            break;
        }
        if same_item(listed[at], o, key)? {
            at += 1;
        }
    }
    if at < listed.len() {
        return Err(bad(format!(
            "the order of the patch list does not match its {SET_ELEMENT_ORDER} list"
        )));
    }
    Ok(())
}

fn same_item(a: &Value, b: &Value, key: Option<&str>) -> Result<bool, PatchError> {
    match key {
        None => Ok(values_equal(a, b)),
        Some(k) => Ok(values_equal(key_of(a, k)?, key_of(b, k)?)),
    }
}

fn key_of<'v>(item: &'v Value, key: &str) -> Result<&'v Value, PatchError> {
    match item {
        Value::Object(m) => m.get(key).ok_or_else(|| {
            bad(format!(
                "list item {item} does not contain its merge key {key:?}"
            ))
        }),
        _ => Err(bad(format!(
            "list item {item} is not an object, but its list merges by key {key:?}"
        ))),
    }
}

/// Merges a patch list into a list with the merge strategy.
fn merge_list(
    node: &Node,
    original: Vec<Value>,
    patch: Vec<Value>,
    key: Option<&str>,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let objects = element_kind_is_object(&original, &patch)?;
    let server_order = original.clone();
    let merged = if !objects {
        if delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|d| values_equal(v, d)))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.into_iter().chain(patch.iter().cloned()) {
            if !merged.iter().any(|m| values_equal(m, &v)) {
                merged.push(v);
            }
        }
        merged
    } else {
        let Some(key) = key else {
            return Err(bad("cannot merge a list of objects without a merge key"));
        };
        let mut merged = original;
        let mut rest = Vec::with_capacity(patch.len());
        let mut replace = false;
        for item in &patch {
            let Value::Object(m) = item else {
                return Err(bad(format!(
                    "list item {item} is not an object, but its list merges by key {key:?}"
                )));
            };
            match m.get(DIRECTIVE).map(|d| d.as_str()) {
                None => rest.push(item.clone()),
                Some(Some("delete")) => {
                    let target = key_of(item, key)?;
                    merged.retain(|o| !o.get(key).is_some_and(|v| values_equal(v, target)));
                }
                Some(Some("replace")) => replace = true,
                Some(Some("merge")) => {
                    return Err(bad("$patch: merge is not supported on list items"))
                }
                Some(_) => {
                    return Err(bad(format!("unknown $patch directive in list item {item}")))
                }
            }
        }
        if replace {
            return match fresh(node, Value::Array(rest))? {
                Some(Value::Array(v)) => Ok(v),
                _ => Ok(Vec::new()),
            };
        }
        let item_node = node.items();
        for item in rest {
            let Value::Object(p) = item else { continue };
            let target = key_of_map(&p, key)?;
            let found = merged
                .iter()
                .position(|o| o.get(key).is_some_and(|v| values_equal(v, &target)));
            match found {
                Some(i) => {
                    let current = match std::mem::take(&mut merged[i]) {
                        Value::Object(c) => c,
                        _ => Map::new(),
                    };
                    merged[i] = Value::Object(merge_map(&item_node, current, p)?);
                }
                None => merged.push(Value::Object(merge_map(&item_node, Map::new(), p)?)),
            }
        }
        merged
    };
    let patch_order: Vec<Value> = patch
        .into_iter()
        .filter(|i| !i.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)))
        .collect();
    let (in_patch, rest) = partition(merged, &patch_order, key.filter(|_| objects))?;
    let key = key.filter(|_| objects);
    Ok(interleave(
        sort_by_order(in_patch, &patch_order, key),
        rest,
        &server_order,
        key,
    ))
}

fn key_of_map(m: &Map<String, Value>, key: &str) -> Result<Value, PatchError> {
    m.get(key).cloned().ok_or_else(|| {
        bad(format!(
            "list item {} does not contain its merge key {key:?}",
            Value::Object(m.clone())
        ))
    })
}

/// Whether the items of both lists are objects (else scalars); lists of lists and mixed
/// lists cannot merge.
fn element_kind_is_object(a: &[Value], b: &[Value]) -> Result<bool, PatchError> {
    let mut kind: Option<bool> = None;
    for v in a.iter().chain(b.iter()) {
        let is_object = match v {
            Value::Array(_) => {
                return Err(PatchError::Unprocessable(
                    "lists of lists cannot be merged".into(),
                ))
            }
            Value::Null => continue,
            Value::Object(_) => true,
            _ => false,
        };
        match kind {
            None => kind = Some(is_object),
            Some(k) if k != is_object => {
                return Err(bad("a merged list mixes objects and scalars"))
            }
            Some(_) => {}
        }
    }
    Ok(kind.unwrap_or(false))
}

/// Splits `items` into those that `order` names and the others, each keeping its order.
fn partition(
    items: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for item in items {
        let mut found = false;
        for o in order {
            let matches = match key {
                Some(k) => match (item.get(k), o.get(k)) {
                    (Some(a), Some(b)) => values_equal(a, b),
                    (None, _) => {
                        return Err(bad(format!(
                            "list item {item} does not contain its merge key {k:?}"
                        )))
                    }
                    _ => false,
                },
                None => values_equal(&item, o),
            };
            if matches {
                found = true;
                break;
            }
        }
        if found {
            named.push(item);
        } else {
            rest.push(item);
        }
    }
    Ok((named, rest))
}

/// Where `item` stands in `list`, by merge key or by value.
fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|x| match key {
        Some(k) => match (x.get(k), item.get(k)) {
            (Some(a), Some(b)) => values_equal(a, b),
            _ => false,
        },
        None => values_equal(x, item),
    })
}

/// Stable sort of `items` by their position in `order`; unlisted items go last.
fn sort_by_order(mut items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    items.sort_by(
        |a, b| match (position(order, a, key), position(order, b, key)) {
            (Some(i), Some(j)) => i.cmp(&j),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
    );
    items
}

/// Merges the two ordered lists: a live-only item goes before a patch item only when both
/// stood in the live list in that order.
fn interleave(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                position(server_order, l, key),
                position(server_order, r, key),
            ) {
                (Some(i), Some(j)) => i < j,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::schema::type_tree;
    use crate::Registry;
    use serde_json::json;

    fn smp(
        api_version: &str,
        kind: &str,
        original: Value,
        patch: Value,
    ) -> Result<Value, PatchError> {
        let r = Registry::builtin();
        let tree = type_tree(r.by_kind(api_version, kind).expect("served"));
        strategic_merge_patch(tree.root(), &original, &patch)
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let original =
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": "v"}});
        let out = smp(
            "v1",
            "ConfigMap",
            original,
            json!({"metadata": {"labels": {"x": null, "z": "3"}}, "data": {"n": "m"}}),
        )
        .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"y": "2", "z": "3"}));
        assert_eq!(out["data"], json!({"k": "v", "n": "m"}));
        // Null for a missing key is ignored; nulls inside new maps disappear.
        let out = smp(
            "v1",
            "ConfigMap",
            json!({}),
            json!({"metadata": {"gone": null, "labels": {"a": "1", "b": null}}}),
        )
        .expect("ok");
        assert_eq!(out, json!({"metadata": {"labels": {"a": "1"}}}));
    }

    #[test]
    fn lists_merge_by_key() {
        let original = pod(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]));
        let out = smp("v1", "Pod", original, json!({"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}]}}))
            .expect("applies");
        let c = &out["spec"]["containers"];
        // Patch items in patch order; the live-only item is placed first as it stood before them.
        assert_eq!(names(c), ["a", "b", "c"]);
        assert_eq!(c[1]["image"], "3");
        assert_eq!(c[0]["image"], "1");
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let mut original = pod(json!([{"name": "a", "image": "1", "args": ["x", "y"]}]));
        original["spec"]["tolerations"] = json!([{"key": "a"}, {"key": "b"}]);
        let patch = json!({"spec": {"tolerations": [{"key": "c"}], "containers": [{"name": "a", "args": ["z"]}]}});
        let out = smp("v1", "Pod", original, patch).expect("applies");
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "c"}]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
        assert_eq!(out["spec"]["containers"][0]["image"], "1");
    }

    #[test]
    fn patch_directives_in_lists_and_maps() {
        let original = pod(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]));
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .expect("ok");
        assert_eq!(names(&out["spec"]["containers"]), ["b"]);
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"spec": {"containers": [{"name": "z", "image": "9"}, {"$patch": "replace"}]}}),
        )
        .expect("ok");
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "z", "image": "9"}])
        );
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"metadata": {"$patch": "replace", "name": "q"}}),
        )
        .expect("ok");
        assert_eq!(out["metadata"], json!({"name": "q"}));
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"spec": {"$patch": "delete"}}),
        )
        .expect("ok");
        assert_eq!(out["spec"], json!({}));
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"metadata": {"$patch": "merge", "labels": {"a": "b"}}}),
        )
        .expect("ok");
        assert_eq!(out["metadata"], json!({"name": "p", "labels": {"a": "b"}}));
        // A new map marked for deletion is not created.
        let out = smp(
            "v1",
            "Pod",
            original.clone(),
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        )
        .expect("ok");
        assert!(out["spec"].get("securityContext").is_none());
        for bad_patch in [
            json!({"metadata": {"$patch": "frob"}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": ["a"]}}),
        ] {
            let err = smp("v1", "Pod", original.clone(), bad_patch.clone()).expect_err("malformed");
            assert_eq!(err.code(), 400, "{bad_patch}: {err}");
        }
        let err = smp(
            "v1",
            "Pod",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [["x"]]}}),
        )
        .expect_err("nested");
        assert_eq!(err.code(), 422);
        assert_eq!(
            smp("v1", "Pod", original, json!([1])).map_err(|e| e.code()),
            Err(400)
        );
    }

    #[test]
    fn primitive_lists_with_merge_strategy_are_sets() {
        let original = json!({"metadata": {"name": "n", "finalizers": ["a", "b"]}});
        let out = smp(
            "v1",
            "ConfigMap",
            original.clone(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        )
        .expect("ok");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            "v1",
            "ConfigMap",
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "x"]}}),
        )
        .expect("ok");
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // Deleting from a missing list does not create it.
        let out = smp(
            "v1",
            "ConfigMap",
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .expect("ok");
        assert!(out["metadata"].get("finalizers").is_none());
        let err = smp(
            "v1",
            "ConfigMap",
            original,
            json!({"metadata": {"$deleteFromPrimitiveList/": ["a"]}}),
        )
        .expect_err("bad key");
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn set_element_order_orders_merged_lists() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "d"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "c"], "finalizers": ["c"]}});
        let out = smp("v1", "ConfigMap", original, patch).expect("ok");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c", "d"]));

        let original = pod(
            json!([{"name": "1"}, {"name": "3", "v": 3}, {"name": "4", "v": 4}, {"name": "2", "v": 2}, {"name": "9"}]),
        );
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "2"}, {"name": "3"}, {"name": "1"}]}});
        let out = smp("v1", "Pod", original, patch).expect("ok");
        assert_eq!(names(&out["spec"]["containers"]), ["4", "2", "3", "1", "9"]);

        let original = pod(json!([{"name": "a"}, {"name": "b"}]));
        let mismatch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b"}, {"name": "a"}]}});
        assert_eq!(
            smp("v1", "Pod", original.clone(), mismatch).map_err(|e| e.code()),
            Err(400)
        );
        let not_list = json!({"spec": {"$setElementOrder/containers": {"name": "a"}}});
        assert_eq!(
            smp("v1", "Pod", original, not_list).map_err(|e| e.code()),
            Err(400)
        );
    }

    #[test]
    fn retain_keys_clears_other_union_members() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let out = smp("apps/v1", "Deployment", original.clone(), patch).expect("ok");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}});
        assert_eq!(
            smp("apps/v1", "Deployment", original.clone(), patch).map_err(|e| e.code()),
            Err(400)
        );
        let patch = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
        assert_eq!(
            smp("apps/v1", "Deployment", original, patch).map_err(|e| e.code()),
            Err(400)
        );

        // In list items: a volume switching from emptyDir to a configMap.
        let mut original = pod(json!([]));
        original["spec"]["volumes"] =
            json!([{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]);
        let patch = json!({"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "name": "v", "configMap": {"name": "cm"}}]}});
        let out = smp("v1", "Pod", original, patch).expect("ok");
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "emptyDir": {}}])
        );
    }

    #[test]
    fn kinds_of_values_that_differ_are_replaced() {
        let original = json!({"data": {"a": "b"}, "metadata": {"labels": "oops"}});
        let out = smp(
            "v1",
            "ConfigMap",
            original,
            json!({"metadata": {"labels": {"x": "y"}}, "data": "s"}),
        )
        .expect("ok");
        assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
        assert_eq!(out["data"], "s");
    }
}
