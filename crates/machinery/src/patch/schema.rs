//! The type tree: walks a kind's OpenAPI schema (from k8s-openapi, through schemars) so the
//! patch code can ask, at any path of an object, "what is this field and how does it merge?".
//!
//! A [`Node`] is one position in the tree: a struct (named properties), a map (one value
//! type), a list, a scalar, or untyped (no schema: maps merge granularly, lists are atomic).
//! Facts that the schema lacks come from [`super::facts`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{Map, Value};

use super::facts::{self, FieldFacts, Granularity, ListType};
use crate::registry::ResourceInfo;

/// All definitions reachable from one kind, and the kind's own definition.
#[derive(Debug)]
pub struct TypeTree {
    defs: Map<String, Value>,
    root: Value,
}

static TREES: LazyLock<Mutex<HashMap<String, Arc<TypeTree>>>> = LazyLock::new(Default::default);

/// The type tree of `info`'s kind, built once per kind and shared.
pub fn type_tree(info: &ResourceInfo) -> Arc<TypeTree> {
    let name = info.ops.schema_name();
    let mut trees = TREES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tree) = trees.get(&name) {
        return tree.clone();
    }
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let root = info.ops.schema(&mut generator).to_value();
    let tree = Arc::new(TypeTree {
        defs: generator.definitions().clone(),
        root,
    });
    trees.insert(name, tree.clone());
    tree
}

/// References are followed at most this deep, so a malformed schema cannot loop.
const MAX_REF_HOPS: usize = 16;

impl TypeTree {
    /// A tree from a root schema and its definitions (`$ref`s name definitions by the last
    /// segment of the reference).
    pub fn new(root: Value, defs: Map<String, Value>) -> Self {
        TypeTree { defs, root }
    }

    /// The kind's own type.
    pub fn root(&self) -> Node<'_> {
        self.node(&self.root, None)
    }

    /// A node with no schema at all.
    pub fn untyped(&self) -> Node<'_> {
        Node {
            tree: self,
            schema: None,
            def: None,
            facts: None,
        }
    }

    /// Names of every definition in the tree.
    pub fn definitions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.defs.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn node<'a>(&'a self, schema: &'a Value, facts: Option<&'static FieldFacts>) -> Node<'a> {
        let mut schema = schema;
        let mut def = None;
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let name = reference.rsplit('/').next().unwrap_or(reference);
            match self.defs.get_key_value(name) {
                Some((k, target)) => {
                    def = Some(k.as_str());
                    schema = target;
                }
                None => {
                    return Node {
                        tree: self,
                        schema: None,
                        def: None,
                        facts,
                    }
                }
            }
        }
        Node {
            tree: self,
            schema: schema.as_object(),
            def,
            facts,
        }
    }
}

/// What kind of value a node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An object with named properties.
    Struct,
    /// An object whose keys are free and whose values share one type.
    Map,
    List,
    Scalar,
    /// Anything goes: maps merge key by key, lists are atomic.
    Untyped,
}

/// One position in a type tree.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    tree: &'a TypeTree,
    schema: Option<&'a Map<String, Value>>,
    def: Option<&'a str>,
    /// Facts of the property that led here.
    facts: Option<&'static FieldFacts>,
}

impl<'a> Node<'a> {
    /// The definition name of this node's type, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub fn def(&self) -> Option<&'a str> {
        self.def
    }

    pub fn shape(&self) -> Shape {
        let Some(schema) = self.schema else {
            return Shape::Untyped;
        };
        if schema.contains_key("x-kubernetes-int-or-string") {
            return Shape::Scalar;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("array") => Shape::List,
            Some("string" | "integer" | "number" | "boolean") => Shape::Scalar,
            Some("object") | None => {
                if schema.get("properties").is_some_and(Value::is_object) {
                    Shape::Struct
                } else if schema
                    .get("additionalProperties")
                    .is_some_and(Value::is_object)
                {
                    Shape::Map
                } else {
                    Shape::Untyped
                }
            }
            Some(_) => Shape::Untyped,
        }
    }

    /// The facts of the property that led to this node (defaults when none are listed).
    pub fn facts(&self) -> FieldFacts {
        self.facts.copied().unwrap_or_default()
    }

    /// The declared property `name` of a struct.
    pub fn declared(&self, name: &str) -> Option<Node<'a>> {
        let schema = self.schema?.get("properties")?.get(name)?;
        let facts = self.def.and_then(|d| facts::field(d, name));
        Some(self.tree.node(schema, facts))
    }

    /// The declared property names of a struct.
    pub fn property_names(&self) -> Option<impl Iterator<Item = &'a str>> {
        let props = self.schema?.get("properties")?.as_object()?;
        Some(props.keys().map(String::as_str))
    }

    /// The value at key `name`: a struct property, a map value, or untyped.
    pub fn child(&self, name: &str) -> Node<'a> {
        match self.shape() {
            Shape::Struct => self.declared(name).unwrap_or_else(|| self.tree.untyped()),
            Shape::Map => match self.schema.and_then(|s| s.get("additionalProperties")) {
                Some(values) => self.tree.node(values, None),
                None => self.tree.untyped(),
            },
            _ => self.tree.untyped(),
        }
    }

    /// The node at a JSON path below this one; a segment below a list is an item (its index
    /// or key is not looked at), e.g. `["spec", "containers", "0", "ports"]`.
    pub fn at(&self, path: &[&str]) -> Node<'a> {
        path.iter().fold(*self, |node, segment| match node.shape() {
            Shape::List => node.items(),
            _ => node.child(segment),
        })
    }

    /// The type of a list's items.
    pub fn items(&self) -> Node<'a> {
        match self.schema.and_then(|s| s.get("items")) {
            Some(items) if self.shape() == Shape::List => self.tree.node(items, None),
            _ => self.tree.untyped(),
        }
    }

    /// How server-side apply treats this list. Lists with a strategic merge key and no
    /// list type are keyed by it, as upstream derives them.
    pub fn list_type(&self) -> ListType {
        let f = self.facts();
        match f.list_type {
            Some(t) => t,
            None if f.patch_merge => match self.facts.and_then(|f| f.merge_key.as_ref()) {
                Some(key) => ListType::Map(std::slice::from_ref(key)),
                None => ListType::Set,
            },
            None => ListType::Atomic,
        }
    }

    /// Whether server-side apply replaces this struct or map whole.
    pub fn atomic(&self) -> bool {
        match self.facts().granularity {
            Some(Granularity::Atomic) => true,
            Some(Granularity::Granular) => false,
            None => self.def.is_some_and(facts::atomic_struct),
        }
    }

    /// Whether property `name` of this struct always exists (a struct held by value in Go).
    pub fn value_struct(&self, name: &str) -> bool {
        let Some(def) = self.def else { return false };
        self.declared(name)
            .is_some_and(|n| n.shape() == Shape::Struct)
            && facts::value_struct(def, name)
    }

    /// Whether property `name` of this struct is always serialized, as `null` when unset.
    pub fn always_null(&self, name: &str) -> bool {
        self.def.is_some_and(|def| facts::always_null(def, name))
    }

    /// The default of key field `key` for items of this (item) type.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        let def = self.def?;
        facts::key_default(def, key).map(|v| Value::String(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    fn tree(api_version: &str, kind: &str) -> Arc<TypeTree> {
        let r = Registry::builtin();
        type_tree(r.by_kind(api_version, kind).expect("kind served"))
    }

    #[test]
    fn walks_a_deployment() {
        let t = tree("apps/v1", "Deployment");
        let root = t.root();
        assert_eq!(root.def(), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(root.shape(), Shape::Struct);
        let pod_spec = root.child("spec").child("template").child("spec");
        assert_eq!(pod_spec.def(), Some("io.k8s.api.core.v1.PodSpec"));
        let containers = pod_spec.child("containers");
        assert_eq!(containers.shape(), Shape::List);
        assert_eq!(containers.facts().merge_key, Some("name"));
        assert_eq!(containers.list_type(), ListType::Map(&["name"]));
        let container = containers.items();
        assert_eq!(container.def(), Some("io.k8s.api.core.v1.Container"));
        assert_eq!(container.child("image").shape(), Shape::Scalar);
        let ports = container.child("ports");
        assert_eq!(
            ports.list_type(),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(
            ports.items().key_default("protocol"),
            Some(Value::String("TCP".into()))
        );
        assert_eq!(container.child("args").list_type(), ListType::Atomic);
        // Quantities and int-or-strings are scalars; maps of them are maps.
        let limits = container.child("resources").child("limits");
        assert_eq!(limits.shape(), Shape::Map);
        assert_eq!(limits.child("cpu").shape(), Shape::Scalar);
        assert_eq!(
            root.child("spec")
                .child("strategy")
                .child("rollingUpdate")
                .child("maxSurge")
                .shape(),
            Shape::Scalar
        );
        // Labels are a granular map, the selector an atomic struct.
        let labels = root.child("metadata").child("labels");
        assert_eq!(labels.shape(), Shape::Map);
        assert!(!labels.atomic());
        assert!(root.child("spec").child("selector").atomic());
        assert!(pod_spec.child("nodeSelector").atomic());
        // Unknown fields and untyped places.
        assert_eq!(root.child("bogus").shape(), Shape::Untyped);
        assert!(root.declared("bogus").is_none());
        assert_eq!(
            root.child("bogus").child("x").items().shape(),
            Shape::Untyped
        );
        assert_eq!(
            root.child("metadata").child("finalizers").list_type(),
            ListType::Set
        );
        assert_eq!(t.untyped().list_type(), ListType::Atomic);
        let env = root.at(&["spec", "template", "spec", "containers", "0", "env"]);
        assert_eq!(env.facts().merge_key, Some("name"));
        assert_eq!(
            root.at(&["spec", "template", "spec", "containers", "web"])
                .def(),
            Some("io.k8s.api.core.v1.Container")
        );
        assert_eq!(root.at(&[]).def(), root.def());
    }

    #[test]
    fn raw_extensions_are_untyped() {
        let t = tree("apps/v1", "ControllerRevision");
        assert_eq!(t.root().child("data").shape(), Shape::Untyped);
    }

    #[test]
    fn trees_are_cached() {
        let a = tree("v1", "Pod");
        let b = tree("v1", "Pod");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn broken_references_are_untyped() {
        let t = TypeTree::new(serde_json::json!({"$ref": "#/$defs/missing"}), Map::new());
        assert_eq!(t.root().shape(), Shape::Untyped);
        let mut defs = Map::new();
        defs.insert("a".into(), serde_json::json!({"$ref": "#/$defs/a"}));
        let looping = TypeTree::new(serde_json::json!({"$ref": "#/$defs/a"}), defs);
        assert_eq!(looping.root().shape(), Shape::Untyped);
    }

    /// Every fact names a real property of a definition that some served kind reaches, so a
    /// typo or a field missing from this API version cannot hide.
    #[test]
    fn facts_name_real_properties() {
        let r = Registry::builtin();
        let mut defs = Map::new();
        for info in r.resources() {
            for (k, v) in type_tree(info).definitions() {
                defs.insert(k.to_string(), v.clone());
            }
        }
        let mut problems = Vec::new();
        let property = |def: &str, property: &str| {
            defs.get(def)
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get(property))
                .cloned()
        };
        for (def, name, facts) in facts::all_fields() {
            let Some(prop) = property(def, name) else {
                problems.push(format!("{def}.{name}"));
                continue;
            };
            let shape = TypeTree::new(prop, defs.clone()).root().shape();
            let keyed =
                facts.list_type.is_some_and(|l| l != ListType::Atomic) || facts.merge_key.is_some();
            if keyed && shape != Shape::List {
                problems.push(format!("{def}.{name} is not a list"));
            }
        }
        for (def, name) in facts::all_value_structs() {
            if property(def, name).is_none() {
                problems.push(format!("{def}.{name}"));
            }
        }
        for def in facts::all_atomic_structs() {
            if !defs.contains_key(*def) {
                problems.push(def.to_string());
            }
        }
        assert!(
            problems.is_empty(),
            "not in the served schemas: {problems:#?}"
        );
    }
}
