//! Field paths and sets of them, as server-side apply records ownership, with upstream's
//! `FieldsV1` encoding (`f:<field>`, `k:<keys as JSON>`, `v:<value as JSON>`, `i:<index>`,
//! and `.` for "the element itself" when it also has children).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// A list-map item, by its key fields (sorted by name).
    Key(Vec<(String, Value)>),
    /// A set item, by its value.
    Value(Value),
    /// A list item by position (only in sets written by others; we never produce it).
    Index(usize),
}

pub type Path = Vec<PathElement>;

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let map: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub fn decode(s: &str) -> Result<PathElement, String> {
        let (kind, rest) = s
            .split_at_checked(2)
            .ok_or_else(|| format!("invalid field path element {s:?}"))?;
        match kind {
            "f:" => Ok(PathElement::Field(rest.to_string())),
            "v:" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|e| format!("invalid value element {s:?}: {e}")),
            "k:" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(map)) => {
                    let mut fields: Vec<(String, Value)> = map.into_iter().collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Ok(PathElement::Key(fields))
                }
                _ => Err(format!("invalid key element {s:?}")),
            },
            "i:" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|_| format!("invalid index element {s:?}")),
            _ => Err(format!("invalid field path element {s:?}")),
        }
    }
}

impl Ord for PathElement {
    /// Fields, then keys, then values, then indexes; within a kind by content, as upstream
    /// orders them (this is also the `FieldsV1` key order).
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an.cmp(bn).then_with(|| compare_values(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    /// Upstream's path syntax: `.field`, `[name="c"]`, `[="value"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path in upstream's syntax, e.g. `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

fn value_string(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(value_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_string(v)))
            .collect(),
        other => other.to_string(),
    }
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// A total order on JSON values: numbers (by value), strings, booleans, lists, maps, null.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i.cmp(&j),
                _ => x
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&y.as_f64().unwrap_or(0.0)),
            },
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (i, j) in x.iter().zip(y.iter()) {
                let c = compare_values(i, j);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_by(|a, b| a.0.cmp(b.0));
            ys.sort_by(|a, b| a.0.cmp(b.0));
            for ((xk, xv), (yk, yv)) in xs.iter().zip(ys.iter()) {
                let c = xk.cmp(yk).then_with(|| compare_values(xv, yv));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// JSON equality where `1` and `1.0` are the same number.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare_values(a, b) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(i, j)| values_equal(i, j))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A set of field paths, stored as a trie: `members` are the paths ending at this level,
/// `children` the paths going deeper. A child set is never empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`; the empty path (the object itself) is never a member.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                if !self.members.contains(last) {
                    self.members.insert(last.clone());
                }
            }
            [first, rest @ ..] => match self.children.get_mut(first) {
                Some(child) => child.insert(rest),
                None => {
                    let mut child = FieldSet::new();
                    child.insert(rest);
                    self.children.insert(first.clone(), child);
                }
            },
        }
    }

    /// [`FieldSet::union`] in place: adds every path of `other` (elements already here are
    /// kept as they are).
    pub(crate) fn absorb(&mut self, other: FieldSet) {
        self.members.extend(other.members);
        for (pe, set) in other.children {
            match self.children.get_mut(&pe) {
                Some(mine) => mine.absorb(set),
                None => {
                    self.children.insert(pe, set);
                }
            }
        }
    }

    /// [`FieldSet::difference`] in place.
    pub(crate) fn remove(&mut self, other: &FieldSet) {
        if other.is_empty() {
            return;
        }
        self.members.retain(|m| !other.members.contains(m));
        self.children.retain(|pe, set| {
            if let Some(theirs) = other.children.get(pe) {
                set.remove(theirs);
            }
            !set.is_empty()
        });
    }

    /// [`FieldSet::recursive_difference`] in place.
    pub(crate) fn remove_recursive(&mut self, other: &FieldSet) {
        if other.is_empty() {
            return;
        }
        self.members.retain(|m| !other.members.contains(m));
        self.children.retain(|pe, set| {
            if other.members.contains(pe) {
                return false;
            }
            if let Some(theirs) = other.children.get(pe) {
                set.remove_recursive(theirs);
            }
            !set.is_empty()
        });
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether `element` itself is in the set at this level.
    pub fn has_member(&self, element: &PathElement) -> bool {
        self.members.contains(element)
    }

    /// The paths below `element`, with `element` removed from their front.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    pub fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    pub fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub(crate) fn insert_member(&mut self, element: PathElement) {
        self.members.insert(element);
    }

    pub(crate) fn set_child(&mut self, element: PathElement, set: FieldSet) {
        if set.is_empty() {
            self.children.remove(&element);
        } else {
            self.children.insert(element, set);
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, set) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(set),
                None => set.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.intersection(&other.members).cloned().collect();
        for (pe, set) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                out.set_child(pe.clone(), set.intersection(theirs));
            }
        }
        out
    }

    /// The paths of `self` not in `other`, level by level: removing a parent path does not
    /// remove the paths below it.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.difference(&other.members).cloned().collect();
        for (pe, set) in &self.children {
            match other.children.get(pe) {
                Some(theirs) => out.set_child(pe.clone(), set.difference(theirs)),
                None => out.set_child(pe.clone(), set.clone()),
            }
        }
        out
    }

    /// Like [`FieldSet::difference`], but a path of `other` also removes everything below it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.difference(&other.members).cloned().collect();
        for (pe, set) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            match other.children.get(pe) {
                Some(theirs) => out.set_child(pe.clone(), set.recursive_difference(theirs)),
                None => out.set_child(pe.clone(), set.clone()),
            }
        }
        out
    }

    /// Every path in the set: this level's members first, then each child's paths.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, set) in &self.children {
            prefix.push(pe.clone());
            set.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` encoding.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode_level(false))
    }

    fn encode_level(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        // Members and children interleave in element order (both are sorted).
        let mut members = self.members.iter().peekable();
        let mut children = self.children.iter().peekable();
        loop {
            let (pe, value) = match (members.peek().copied(), children.peek().copied()) {
                (None, None) => break,
                (Some(m), Some((c, child))) => match m.cmp(c) {
                    Ordering::Less => {
                        members.next();
                        (m, Map::new())
                    }
                    Ordering::Equal => {
                        members.next();
                        children.next();
                        (m, child.encode_level(true))
                    }
                    Ordering::Greater => {
                        children.next();
                        (c, child.encode_level(false))
                    }
                },
                (Some(m), None) => {
                    members.next();
                    (m, Map::new())
                }
                (None, Some((c, child))) => {
                    children.next();
                    (c, child.encode_level(false))
                }
            };
            out.insert(pe.encode(), Value::Object(value));
        }
        out
    }

    /// Parses the `FieldsV1` encoding.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut out = FieldSet::new();
        for (key, sub) in map {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)?;
            let Value::Object(sub_map) = sub else {
                return Err(format!("fieldsV1 entry {key:?} must be an object"));
            };
            let child = FieldSet::from_fields_v1(sub)?;
            if child.is_empty() || sub_map.contains_key(".") {
                out.members.insert(pe.clone());
            }
            out.set_child(pe, child);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn key(name: &str) -> PathElement {
        PathElement::Key(vec![("name".into(), json!(name))])
    }

    #[test]
    fn encodes_upstream_fields_v1() {
        let mut s = FieldSet::new();
        s.insert(&[f("metadata"), f("labels"), f("app")]);
        s.insert(&[f("spec"), f("replicas")]);
        let containers = [f("spec"), f("template"), f("spec"), f("containers")];
        let mut item = containers.to_vec();
        item.push(key("web"));
        s.insert(&item);
        let mut image = item.clone();
        image.push(f("image"));
        s.insert(&image);
        let mut port = item.clone();
        port.push(f("ports"));
        port.push(PathElement::Key(vec![
            ("containerPort".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]));
        s.insert(&port);
        s.insert(&[
            f("metadata"),
            f("finalizers"),
            PathElement::Value(json!("x")),
        ]);
        let encoded = s.to_fields_v1();
        assert_eq!(
            encoded,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"x\"": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {},
                        "f:image": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}
                    }}}}
                }
            })
        );
        // Key order in the encoding is element order: "." first, fields before keys.
        let text = serde_json::to_string(&encoded).expect("encodes");
        assert!(text.find("f:finalizers") < text.find("f:labels"));
        assert!(text.find("\".\"") < text.find("f:image"));
        assert_eq!(FieldSet::from_fields_v1(&encoded).expect("decodes"), s);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"v:{": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"i:x": {}})).is_err());
        let s = FieldSet::from_fields_v1(&json!({"i:3": {}, "f:a": {".": {}}})).expect("decodes");
        assert!(s.has(&[PathElement::Index(3)]));
        assert!(s.has(&[f("a")]));
    }

    #[test]
    fn set_operations() {
        let mut a = FieldSet::new();
        a.insert(&[f("a"), f("b")]);
        a.insert(&[f("a")]);
        a.insert(&[f("c")]);
        let mut b = FieldSet::new();
        b.insert(&[f("a")]);
        b.insert(&[f("d")]);

        let u = a.union(&b);
        assert!(u.has(&[f("a"), f("b")]) && u.has(&[f("d")]) && u.has(&[f("c")]));
        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("a")]]);
        // Level by level: removing `a` keeps `a.b`.
        let d = a.difference(&b);
        assert!(d.has(&[f("a"), f("b")]) && !d.has(&[f("a")]) && d.has(&[f("c")]));
        // Recursive: removing `a` removes `a.b` too.
        let r = a.recursive_difference(&b);
        assert_eq!(r.paths(), vec![vec![f("c")]]);
        assert!(a.difference(&a).is_empty());
        assert!(!a.has(&[]));
    }

    #[test]
    fn paths_print_like_upstream() {
        let p = vec![f("spec"), f("containers"), key("web"), f("image")];
        assert_eq!(path_string(&p), ".spec.containers[name=\"web\"].image");
        let port = PathElement::Key(vec![
            ("containerPort".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        assert_eq!(port.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(PathElement::Value(json!("a")).to_string(), "[=\"a\"]");
        assert_eq!(PathElement::Index(2).to_string(), "[2]");
    }

    #[test]
    fn value_order_and_equality() {
        assert_eq!(compare_values(&json!(2), &json!(10)), Ordering::Less);
        assert_eq!(compare_values(&json!(1.5), &json!(1)), Ordering::Greater);
        assert_eq!(compare_values(&json!(5), &json!("a")), Ordering::Less);
        assert_eq!(compare_values(&json!("b"), &json!("a")), Ordering::Greater);
        assert_eq!(compare_values(&json!(null), &json!({})), Ordering::Greater);
        assert_eq!(
            compare_values(&json!([1, 2]), &json!([1])),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&json!({"a": 1}), &json!({"a": 1})),
            Ordering::Equal
        );
        assert!(values_equal(&json!({"a": [1.0]}), &json!({"a": [1]})));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(PathElement::Field("z".into()) < key("a"));
        assert!(key("a") < PathElement::Value(json!(0)));
    }
}
