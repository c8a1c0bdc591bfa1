//! Schema-aware walks over JSON objects for server-side apply, following upstream's
//! structured-merge-diff: the field set of an object, merging an applied configuration into
//! a live object, comparing two objects, and removing a set of fields.
//!
//! Structs and maps are granular unless atomic; lists are atomic unless they are sets or
//! list-maps; a value whose JSON kind does not match its schema is treated as one leaf.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value};

use super::facts::ListType;
use super::fieldpath::{path_string, values_equal, FieldSet, Path, PathElement};
use super::schema::{Node, Shape};

/// How one position is walked.
enum Form {
    /// Owned, compared and replaced as a whole.
    Leaf,
    /// An object merged key by key.
    Fields,
    /// A list merged item by item.
    Items(ListType),
}

fn form(node: &Node, values: &[Option<&Value>]) -> Form {
    // `null` stands for an empty value of whatever the schema says.
    let present = || values.iter().flatten().filter(|v| !v.is_null());
    match node.shape() {
        Shape::Scalar => Form::Leaf,
        Shape::Struct | Shape::Map if !node.atomic() && present().all(|v| v.is_object()) => {
            Form::Fields
        }
        Shape::Untyped if present().all(|v| v.is_object()) => Form::Fields,
        Shape::List => match node.list_type() {
            ListType::Atomic => Form::Leaf,
            t if present().all(|v| v.is_array()) => Form::Items(t),
            _ => Form::Leaf,
        },
        _ => Form::Leaf,
    }
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The path element of a list item: its key fields (with defaults) or, in a set, its value.
pub fn item_element(list: &Node, list_type: ListType, item: &Value) -> Result<PathElement, String> {
    match list_type {
        ListType::Map(keys) => {
            let Value::Object(obj) = item else {
                return Err("associative list with keys may not have non-map elements".into());
            };
            let item_node = list.items();
            let mut fields = Vec::new();
            for key in keys {
                if let Some(v) = obj.get(*key) {
                    fields.push((key.to_string(), v.clone()));
                } else if let Some(v) = item_node.key_default(key) {
                    fields.push((key.to_string(), v));
                }
            }
            if fields.is_empty() {
                return Err(format!(
                    "associative list with keys has an element that omits all key fields {keys:?}"
                ));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(fields))
        }
        ListType::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            scalar => Ok(PathElement::Value(scalar.clone())),
        },
        ListType::Atomic => Err("invalid indexing of non-associative list".into()),
    }
}

/// The set of fields `value` sets: its leaves, list items, and map entries.
pub fn field_set(node: Node, value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    collect_fields(&node, value, &mut Vec::new(), &mut set);
    set
}

fn collect_fields(node: &Node, value: &Value, path: &mut Path, set: &mut FieldSet) {
    match form(node, &[Some(value)]) {
        Form::Leaf => set.insert(path),
        Form::Fields => {
            let Value::Object(obj) = value else { return };
            for (k, v) in obj {
                path.push(PathElement::Field(k.clone()));
                collect_fields(&node.child(k), v, path, set);
                // Map entries (not struct fields), nulls and empty objects are owned as such.
                let empty = v.is_null() || v.as_object().is_some_and(Map::is_empty);
                if empty || node.shape() != Shape::Struct || node.declared(k).is_none() {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Form::Items(list_type) => {
            let Value::Array(items) = value else { return };
            let elements: Vec<Option<PathElement>> = items
                .iter()
                .map(|i| item_element(node, list_type, i).ok())
                .collect();
            let mut seen = BTreeSet::new();
            let mut duplicates = BTreeSet::new();
            for pe in elements.iter().flatten() {
                if !seen.insert(pe) {
                    duplicates.insert(pe);
                }
            }
            let item_node = node.items();
            for dup in &duplicates {
                path.push((*dup).clone());
                set.insert(path);
                path.pop();
            }
            for (item, pe) in items.iter().zip(elements.iter()) {
                let Some(pe) = pe else { continue };
                if duplicates.contains(pe) {
                    continue;
                }
                path.push(pe.clone());
                collect_fields(&item_node, item, path, set);
                set.insert(path);
                path.pop();
            }
        }
    }
}

/// Checks an applied configuration against the schema: every field declared, list items
/// identifiable and unique. Returns upstream-style `path: problem` messages.
pub fn validate(node: Node, value: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    validate_at(&node, value, &mut Vec::new(), &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}

fn validate_at(node: &Node, value: &Value, path: &mut Path, errors: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    match node.shape() {
        Shape::Struct => {
            let Value::Object(obj) = value else {
                errors.push(format!(
                    "{}: expected map, got {}",
                    path_string(path),
                    kind_name(value)
                ));
                return;
            };
            for (k, v) in obj {
                path.push(PathElement::Field(k.clone()));
                match node.declared(k) {
                    Some(child) => validate_at(&child, v, path, errors),
                    None => errors.push(format!(
                        "{}: field not declared in schema",
                        path_string(path)
                    )),
                }
                path.pop();
            }
        }
        Shape::Map => {
            let Value::Object(obj) = value else {
                errors.push(format!(
                    "{}: expected map, got {}",
                    path_string(path),
                    kind_name(value)
                ));
                return;
            };
            for (k, v) in obj {
                path.push(PathElement::Field(k.clone()));
                validate_at(&node.child(k), v, path, errors);
                path.pop();
            }
        }
        Shape::List => {
            let Value::Array(items) = value else {
                errors.push(format!(
                    "{}: expected list, got {}",
                    path_string(path),
                    kind_name(value)
                ));
                return;
            };
            let list_type = node.list_type();
            let item_node = node.items();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if list_type != ListType::Atomic {
                    match item_element(node, list_type, item) {
                        Ok(pe) => {
                            if !seen.insert(pe.clone()) {
                                errors.push(format!(
                                    "{}: duplicate entries for key {pe}",
                                    path_string(path)
                                ));
                            }
                        }
                        Err(e) => errors.push(format!("{}: element {i}: {e}", path_string(path))),
                    }
                }
                path.push(PathElement::Index(i));
                validate_at(&item_node, item, path, errors);
                path.pop();
            }
        }
        Shape::Scalar => {
            if value.is_object() || value.is_array() {
                errors.push(format!(
                    "{}: expected scalar, got {}",
                    path_string(path),
                    kind_name(value)
                ));
            }
        }
        Shape::Untyped => {}
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Merges `rhs` (an applied configuration) into `lhs` (the live object): `rhs` wins on
/// leaves, objects merge key by key, granular lists merge item by item.
pub fn merge(
    node: Node,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
) -> Result<Option<Value>, String> {
    merge_at(&node, lhs, rhs, &mut Vec::new())
}

fn merge_at(
    node: &Node,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Path,
) -> Result<Option<Value>, String> {
    let (l, r) = match (lhs, rhs) {
        (None, None) => return Ok(None),
        (Some(l), None) => return Ok(Some(l.clone())),
        (None, Some(r)) => return Ok(Some(r.clone())),
        (Some(l), Some(r)) => (l, r),
    };
    if is_empty_container(Some(l)) && is_empty_container(Some(r)) {
        return Ok(Some(r.clone()));
    }
    match form(node, &[Some(l), Some(r)]) {
        Form::Leaf => Ok(Some(r.clone())),
        Form::Fields => {
            let (Value::Object(lm), Value::Object(rm)) = (l, r) else {
                return Ok(Some(r.clone()));
            };
            let mut out = Map::new();
            let keys = lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k)));
            for k in keys {
                path.push(PathElement::Field(k.clone()));
                let merged = merge_at(&node.child(k), lm.get(k), rm.get(k), path)?;
                path.pop();
                if let Some(v) = merged {
                    out.insert(k.clone(), v);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Form::Items(list_type) => {
            let (Value::Array(la), Value::Array(ra)) = (l, r) else {
                return Ok(Some(r.clone()));
            };
            let out = merge_items(node, list_type, la, ra, path)?;
            Ok((!out.is_empty()).then_some(Value::Array(out)))
        }
    }
}

/// Merges two granular lists. Items of `rhs` keep their order; items only in `lhs` stay
/// where they were relative to the items around them.
fn merge_items(
    node: &Node,
    list_type: ListType,
    lhs: &[Value],
    rhs: &[Value],
    path: &mut Path,
) -> Result<Vec<Value>, String> {
    let here = path_string(path);
    let mut rpes = Vec::with_capacity(rhs.len());
    let mut rmap: BTreeMap<PathElement, &Value> = BTreeMap::new();
    for (i, item) in rhs.iter().enumerate() {
        let pe =
            item_element(node, list_type, item).map_err(|e| format!("{here}: element {i}: {e}"))?;
        if rmap.insert(pe.clone(), item).is_some() {
            return Err(format!("{here}: duplicate entries for key {pe}"));
        }
        rpes.push(pe);
    }
    let mut lpes = Vec::with_capacity(lhs.len());
    // A key seen twice in the live list has no single counterpart: `None`.
    let mut lmap: BTreeMap<PathElement, Option<&Value>> = BTreeMap::new();
    for (i, item) in lhs.iter().enumerate() {
        let pe =
            item_element(node, list_type, item).map_err(|e| format!("{here}: element {i}: {e}"))?;
        match lmap.get_mut(&pe) {
            Some(slot) => *slot = None,
            None => {
                lmap.insert(pe.clone(), Some(item));
            }
        }
        lpes.push(pe);
    }

    let item_node = node.items();
    let mut shared: VecDeque<&PathElement> =
        rpes.iter().filter(|pe| lmap.contains_key(*pe)).collect();
    let mut next_shared = shared.pop_front();
    let mut emitted: BTreeSet<&PathElement> = BTreeSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let push = |out: &mut Vec<Value>,
                pe: &PathElement,
                l: Option<&Value>,
                r: Option<&Value>,
                path: &mut Path|
     -> Result<(), String> {
        path.push(pe.clone());
        let merged = merge_at(&item_node, l, r, path)?;
        path.pop();
        out.extend(merged);
        Ok(())
    };
    let (mut li, mut ri) = (0, 0);
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                emitted.insert(pe);
                push(
                    &mut out,
                    pe,
                    lmap.get(pe).copied().flatten(),
                    rmap.get(pe).copied(),
                    path,
                )?;
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            // A shared item that `rhs` places later: wait until `rhs` reaches it.
            if rmap.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !rmap.contains_key(pe) {
                push(&mut out, pe, Some(&lhs[li]), None, path)?;
                li += 1;
                continue;
            } else if emitted.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            emitted.insert(pe);
            push(
                &mut out,
                pe,
                lmap.get(pe).copied().flatten(),
                rmap.get(pe).copied(),
                path,
            )?;
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(out)
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops `ignored` paths (and everything below them) from all three sets.
    pub fn exclude(&mut self, ignored: &FieldSet) {
        self.added.remove_recursive(ignored);
        self.modified.remove_recursive(ignored);
        self.removed.remove_recursive(ignored);
    }

    pub fn changed(&self) -> FieldSet {
        self.modified.union(&self.added)
    }
}

/// Compares `lhs` (before) with `rhs` (after).
pub fn compare(node: Node, lhs: Option<&Value>, rhs: Option<&Value>) -> Comparison {
    let mut cmp = Comparison::default();
    compare_at(&node, lhs, rhs, &mut Vec::new(), &mut cmp);
    cmp
}

fn compare_at(
    node: &Node,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Path,
    cmp: &mut Comparison,
) {
    if lhs.is_none() && rhs.is_none() {
        return;
    }
    let leaf = is_empty_container(lhs) && is_empty_container(rhs);
    match if leaf {
        Form::Leaf
    } else {
        form(node, &[lhs, rhs])
    } {
        Form::Leaf => {
            match (lhs, rhs) {
                (None, _) => cmp.added.insert(path),
                (_, None) => cmp.removed.insert(path),
                (Some(l), Some(r)) if !values_equal(l, r) => cmp.modified.insert(path),
                _ => {}
            }
            return;
        }
        Form::Fields => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            for k in lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k))) {
                path.push(PathElement::Field(k.clone()));
                compare_at(&node.child(k), lm.get(k), rm.get(k), path, cmp);
                path.pop();
            }
        }
        Form::Items(list_type) => compare_items(node, list_type, lhs, rhs, path, cmp),
    }
    match (lhs, rhs) {
        (None, _) => cmp.added.insert(path),
        (_, None) => cmp.removed.insert(path),
        _ => {}
    }
}

fn compare_items(
    node: &Node,
    list_type: ListType,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Path,
    cmp: &mut Comparison,
) {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let lgroups = group_items(node, list_type, lhs, &mut order, &mut seen);
    let rgroups = group_items(node, list_type, rhs, &mut order, &mut seen);
    let item_node = node.items();
    for pe in order {
        let l = lgroups.get(&pe).map(Vec::as_slice).unwrap_or_default();
        let r = rgroups.get(&pe).map(Vec::as_slice).unwrap_or_default();
        path.push(pe);
        match (l.len(), r.len()) {
            (0..=1, 0..=1) => compare_at(
                &item_node,
                l.first().copied(),
                r.first().copied(),
                path,
                cmp,
            ),
            (2.., 2..) => {
                let same =
                    l.len() == r.len() && l.iter().zip(r.iter()).all(|(a, b)| values_equal(a, b));
                if !same {
                    cmp.modified.insert(path);
                }
            }
            (2.., _) => {
                if let Some(first) = r.first() {
                    compare_at(&item_node, None, Some(first), path, cmp);
                }
                cmp.removed.insert(path);
            }
            (_, _) => {
                if let Some(first) = l.first() {
                    compare_at(&item_node, Some(first), None, path, cmp);
                }
                cmp.added.insert(path);
            }
        }
        path.pop();
    }
}

/// The items of a list grouped by path element; new elements are appended to `order`.
fn group_items<'v>(
    node: &Node,
    list_type: ListType,
    list: Option<&'v Value>,
    order: &mut Vec<PathElement>,
    seen: &mut BTreeSet<PathElement>,
) -> BTreeMap<PathElement, Vec<&'v Value>> {
    let mut groups: BTreeMap<PathElement, Vec<&'v Value>> = BTreeMap::new();
    for item in list.and_then(Value::as_array).into_iter().flatten() {
        let Ok(pe) = item_element(node, list_type, item) else {
            continue;
        };
        if seen.insert(pe.clone()) {
            order.push(pe.clone());
        }
        groups.entry(pe).or_default().push(item);
    }
    groups
}

/// Adds `{}` for every absent struct that Go holds by value (and `null` for the few lists
/// it always serializes), below every present struct and list item, so comparisons see what
/// upstream sees.
pub fn fill_value_structs(node: Node, value: &mut Value) {
    fill_at(&node, value, None);
}

/// [`fill_value_structs`], returning what [`unfill_value_structs`] needs to take `value`
/// back to exactly what it was (so a comparison needs no copy of it).
pub fn fill_value_structs_undoably(node: Node, value: &mut Value) -> Vec<usize> {
    let mut log = Vec::new();
    fill_at(&node, value, Some(&mut log));
    log
}

/// Undoes [`fill_value_structs_undoably`]: fillers are appended to their objects, so each
/// object filled is cut back to its length before (`log`, in the order the fill met them).
pub fn unfill_value_structs(node: Node, value: &mut Value, log: &[usize]) {
    unfill_at(&node, value, &mut log.iter().copied());
}

/// `log`, when given, gets the length before filling of every object that was there
/// before the fill, in depth-first order.
fn fill_at(node: &Node, value: &mut Value, mut log: Option<&mut Vec<usize>>) {
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(obj)) => {
            let len = obj.len();
            if let Some(log) = log.as_deref_mut() {
                log.push(len);
            }
            for (name, value_struct) in node.fills() {
                if obj.contains_key(name) {
                    continue;
                }
                let filler = if value_struct {
                    Value::Object(Map::new())
                } else {
                    Value::Null
                };
                obj.insert(name.to_string(), filler);
            }
            for (i, (k, v)) in obj.iter_mut().enumerate() {
                if let Some(child) = node.declared(k) {
                    let log = if i < len { log.as_deref_mut() } else { None };
                    fill_at(&child, v, log);
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            let item_node = node.items();
            for item in items {
                fill_at(&item_node, item, log.as_deref_mut());
            }
        }
        _ => {}
    }
}

fn unfill_at(node: &Node, value: &mut Value, log: &mut impl Iterator<Item = usize>) {
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(obj)) => {
            let len = log.next().unwrap_or(obj.len());
            if obj.len() > len {
                let mut kept = 0;
                obj.retain(|_, _| {
                    kept += 1;
                    kept <= len
                });
            }
            for (k, v) in obj.iter_mut() {
                if let Some(child) = node.declared(k) {
                    unfill_at(&child, v, log);
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            let item_node = node.items();
            for item in items {
                unfill_at(&item_node, item, log);
            }
        }
        _ => {}
    }
}

/// `value` without the fields in `set`. Objects and lists left empty disappear (`None`).
pub fn remove_fields(node: Node, value: &Value, set: &FieldSet) -> Option<Value> {
    remove_at(&node, value, set)
}

fn remove_at(node: &Node, value: &Value, set: &FieldSet) -> Option<Value> {
    if is_empty_container(Some(value)) {
        return Some(value.clone());
    }
    match form(node, &[Some(value)]) {
        Form::Leaf => Some(value.clone()),
        Form::Fields => {
            let Value::Object(obj) = value else {
                return Some(value.clone());
            };
            let mut out = Map::new();
            for (k, v) in obj {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                let kept = match set.child(&pe) {
                    Some(sub) => remove_at(&node.child(k), v, sub),
                    None => Some(v.clone()),
                };
                if let Some(v) = kept {
                    out.insert(k.clone(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Form::Items(list_type) => {
            let Value::Array(items) = value else {
                return Some(value.clone());
            };
            let item_node = node.items();
            let mut out = Vec::new();
            for item in items {
                let Ok(pe) = item_element(node, list_type, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => out.extend(remove_at(&item_node, item, sub)),
                    None => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// `set` plus every struct field that has owned fields below it, so removing the set also
/// removes the (then empty) structs, as upstream prunes.
pub fn with_named_fields(node: Node, set: &FieldSet) -> FieldSet {
    let mut out = FieldSet::new();
    for m in set.members() {
        out.insert_member(m.clone());
    }
    for (pe, child) in set.children() {
        let child_node = match pe {
            PathElement::Field(name) => {
                if node.shape() == Shape::Struct && node.declared(name).is_some() {
                    out.insert_member(pe.clone());
                }
                node.child(name)
            }
            PathElement::Key(_) => node.items(),
            _ => node.items(),
        };
        out.set_child(pe.clone(), with_named_fields(child_node, child));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::schema::type_tree;
    use crate::Registry;
    use serde_json::json;

    fn deployment() -> std::sync::Arc<crate::patch::schema::TypeTree> {
        type_tree(
            Registry::builtin()
                .by_kind("apps/v1", "Deployment")
                .expect("served"),
        )
    }

    fn deploy(image: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    #[test]
    fn field_set_of_a_deployment() {
        let t = deployment();
        let set = field_set(t.root(), &deploy("nginx", 2));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:apiVersion": {}, "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn field_set_marks_empty_objects_and_duplicates() {
        let t = type_tree(Registry::builtin().by_kind("v1", "Pod").expect("served"));
        let pod = json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b"}, {"name": "b"}]}});
        let set = field_set(t.root(), &pod);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:volumes": {
                "k:{\"name\":\"a\"}": {".": {}, "f:emptyDir": {}, "f:name": {}},
                "k:{\"name\":\"b\"}": {}
            }}})
        );
    }

    #[test]
    fn validate_reports_paths() {
        let t = deployment();
        assert!(validate(t.root(), &deploy("nginx", 1)).is_ok());
        let bad = json!({"spec": {"bogus": 1, "replicas": {"x": 1},
            "template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}, {"image": "x"}]}}}});
        let err = validate(t.root(), &bad).expect_err("invalid");
        assert!(
            err.contains(".spec.bogus: field not declared in schema"),
            "{err}"
        );
        assert!(err.contains(".spec.replicas: expected scalar"), "{err}");
        assert!(
            err.contains(".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"),
            "{err}"
        );
        assert!(
            err.contains(
                "element 2: associative list with keys has an element that omits all key fields"
            ),
            "{err}"
        );
    }

    #[test]
    fn fills_are_undone_exactly() {
        let t = deployment();
        let mut obj = deploy("nginx", 2);
        obj["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({});
        obj["metadata"]["annotations"] = json!({"a": "b"});
        let before = serde_json::to_string(&obj).expect("encodes");
        let mut filled = obj.clone();
        fill_value_structs(t.root(), &mut filled);
        let log = fill_value_structs_undoably(t.root(), &mut obj);
        assert_eq!(
            serde_json::to_string(&obj).expect("encodes"),
            serde_json::to_string(&filled).expect("encodes")
        );
        assert_ne!(serde_json::to_string(&obj).expect("encodes"), before);
        unfill_value_structs(t.root(), &mut obj, &log);
        assert_eq!(serde_json::to_string(&obj).expect("encodes"), before);
    }

    #[test]
    fn merge_keeps_live_fields_and_applies_config() {
        let t = deployment();
        let mut live = deploy("nginx:1", 3);
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "sidecar", "image": "envoy"}));
        live["status"] = json!({"replicas": 3});
        let applied = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
        let merged = merge(t.root(), Some(&live), Some(&applied))
            .expect("merges")
            .expect("present");
        assert_eq!(merged["spec"]["replicas"], 5);
        assert_eq!(merged["status"]["replicas"], 3);
        let containers = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["name"], "sidecar");
        // Atomic: the selector is replaced, not merged.
        let sel = json!({"spec": {"selector": {"matchLabels": {"tier": "x"}}}});
        let merged = merge(t.root(), Some(&live), Some(&sel))
            .expect("merges")
            .expect("present");
        assert_eq!(
            merged["spec"]["selector"],
            json!({"matchLabels": {"tier": "x"}})
        );
    }

    #[test]
    fn merge_orders_like_upstream() {
        let t = deployment();
        let c = |names: &[&str]| {
            let items: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
            json!({"spec": {"template": {"spec": {"containers": items}}}})
        };
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("list")
                .iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let run = |l: &[&str], r: &[&str]| {
            names(
                &merge(t.root(), Some(&c(l)), Some(&c(r)))
                    .expect("ok")
                    .expect("some"),
            )
        };
        assert_eq!(run(&["a", "b", "c"], &["c", "a"]), ["b", "c", "a"]);
        assert_eq!(run(&["a", "b"], &["b", "x"]), ["a", "b", "x"]);
        assert_eq!(run(&["a", "x", "b"], &["b", "a"]), ["x", "b", "a"]);
        assert_eq!(run(&["a"], &["b", "c"]), ["a", "b", "c"]);
        let dup =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        assert!(merge(t.root(), Some(&c(&["a"])), Some(&dup)).is_err());
    }

    #[test]
    fn compare_reports_changes() {
        let t = deployment();
        let old = deploy("nginx:1", 3);
        let mut new = deploy("nginx:2", 3);
        new["metadata"]["labels"] = json!({"tier": "web"});
        let cmp = compare(t.root(), Some(&old), Some(&new));
        let img = [
            PathElement::Field("spec".into()),
            PathElement::Field("template".into()),
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("web"))]),
            PathElement::Field("image".into()),
        ];
        assert!(cmp.modified.has(&img));
        let label = |k: &str| {
            [
                PathElement::Field("metadata".into()),
                PathElement::Field("labels".into()),
                PathElement::Field(k.into()),
            ]
        };
        assert!(cmp.added.has(&label("tier")));
        assert!(cmp.removed.has(&label("app")));
        assert!(!cmp.modified.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        // Creation: every new non-leaf is added too.
        let created = compare(t.root(), None, Some(&old));
        assert!(created.added.has(&[PathElement::Field("spec".into())]));
        assert!(created.added.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
    }

    #[test]
    fn remove_and_named_fields() {
        let t = deployment();
        let obj = deploy("nginx", 2);
        let mut set = FieldSet::new();
        set.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ]);
        set.insert(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
            PathElement::Field("app".into()),
        ]);
        let out = remove_fields(t.root(), &obj, &set).expect("left");
        assert!(out["spec"].get("replicas").is_none());
        // The emptied labels map disappears with its last key.
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(out["metadata"]["name"], "web");
        let named = with_named_fields(t.root(), &set);
        assert!(named.has(&[PathElement::Field("spec".into())]));
        assert!(named.has(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into())
        ]));
        assert!(!named.has(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
            PathElement::Field("x".into())
        ]));
    }
}
