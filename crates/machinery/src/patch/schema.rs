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

/// All definitions reachable from one kind, and the kind's own definition, compiled once into
/// an arena of types whose properties, item and value types are resolved: walking the tree
/// follows indexes and never looks at the JSON schema, `$ref`s or the facts table again.
#[derive(Debug)]
pub struct TypeTree {
    defs: Map<String, Value>,
    types: Vec<Ty>,
    root: u32,
}

/// The type with no schema at all; always the arena's first entry.
const UNTYPED: u32 = 0;

/// One compiled schema (after `$ref` resolution).
#[derive(Debug)]
struct Ty {
    /// The definition this schema is, when it came through a `$ref`.
    def: Option<Box<str>>,
    shape: Shape,
    /// Whether the schema has a `properties` object (even when its shape is not a struct).
    has_properties: bool,
    /// Declared properties, in declaration order.
    props: Vec<Prop>,
    /// Indexes into `props`, sorted by name.
    by_name: Vec<u32>,
    /// Indexes into `props` of value-held structs and always-null properties, in
    /// declaration order.
    fills: Vec<u32>,
    /// The type of map values (`additionalProperties`), for maps.
    values: u32,
    /// The type of list items, for lists.
    items: u32,
    /// Whether the definition is a struct that server-side apply replaces whole.
    atomic_struct: bool,
}

#[derive(Debug)]
struct Prop {
    name: Box<str>,
    ty: u32,
    facts: Option<&'static FieldFacts>,
    value_struct: bool,
    always_null: bool,
    /// Whether the struct's schema lists the property as required.
    required: bool,
    /// What Go writes for it when unset, for a required plain scalar.
    zero: Option<Zero>,
}

/// The zero value of a required scalar, as Go's encoder writes a field without `omitempty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zero {
    Integer,
    Boolean,
    String,
}

impl Zero {
    /// The zero of an inline scalar schema. Strings with a format (dates, bytes) and types
    /// reached through a `$ref` (Quantity, Time, IntOrString) are not plain Go scalars and
    /// have none.
    fn of(schema: &Value) -> Option<Zero> {
        if schema.get("$ref").is_some()
            || schema
                .get("format")
                .is_some_and(|f| !matches!(f.as_str(), Some("int32" | "int64" | "double")))
        {
            return None;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("integer" | "number") => Some(Zero::Integer),
            Some("boolean") => Some(Zero::Boolean),
            Some("string") => Some(Zero::String),
            _ => None,
        }
    }

    pub fn value(self) -> Value {
        match self {
            Zero::Integer => Value::from(0),
            Zero::Boolean => Value::Bool(false),
            Zero::String => Value::String(String::new()),
        }
    }
}

static TREES: LazyLock<Mutex<HashMap<String, Arc<TypeTree>>>> = LazyLock::new(Default::default);

/// The type tree of `info`'s kind, built once per kind and shared.
pub fn type_tree(info: &ResourceInfo) -> Arc<TypeTree> {
    let name = info.ops.schema_key();
    let mut trees = TREES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tree) = trees.get(&name) {
        return tree.clone();
    }
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let root = info.ops.schema(&mut generator).to_value();
    let tree = Arc::new(TypeTree::new(root, generator.definitions().clone()));
    trees.insert(name, tree.clone());
    tree
}

/// References are followed at most this deep, so a malformed schema cannot loop.
const MAX_REF_HOPS: usize = 16;

/// Builds the arena of a [`TypeTree`].
struct Compiler<'d> {
    defs: &'d Map<String, Value>,
    types: Vec<Ty>,
    /// Definition name → its type, so each definition is compiled once (and cycles end).
    by_def: HashMap<&'d str, u32>,
}

impl<'d> Compiler<'d> {
    /// The type of `schema`, following `$ref`s as far as [`MAX_REF_HOPS`].
    fn compile(&mut self, schema: &'d Value) -> u32 {
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
                None => return UNTYPED,
            }
        }
        match def {
            Some(name) => {
                if let Some(&ty) = self.by_def.get(name) {
                    return ty;
                }
                let ty = self.reserve();
                self.by_def.insert(name, ty);
                self.fill(ty, def, schema.as_object());
                ty
            }
            None => match schema.as_object() {
                Some(obj) => {
                    let ty = self.reserve();
                    self.fill(ty, None, Some(obj));
                    ty
                }
                None => UNTYPED,
            },
        }
    }

    fn reserve(&mut self) -> u32 {
        self.types.push(Ty::untyped());
        u32::try_from(self.types.len() - 1).unwrap_or(UNTYPED)
    }

    fn fill(&mut self, ty: u32, def: Option<&'d str>, schema: Option<&'d Map<String, Value>>) {
        let shape = schema.map_or(Shape::Untyped, shape_of);
        let properties = schema
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object);
        let mut props = Vec::new();
        let required: Vec<&str> = schema
            .and_then(|s| s.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, prop) in properties.into_iter().flatten() {
            let is_required = required.contains(&name.as_str());
            let child = self.compile(prop);
            props.push(Prop {
                name: name.as_str().into(),
                ty: child,
                facts: def.and_then(|d| facts::field(d, name)),
                value_struct: false,
                always_null: def.is_some_and(|d| facts::always_null(d, name)),
                required: is_required,
                zero: is_required.then(|| Zero::of(prop)).flatten(),
            });
        }
        let values = match (shape, schema.and_then(|s| s.get("additionalProperties"))) {
            (Shape::Map, Some(values)) => self.compile(values),
            _ => UNTYPED,
        };
        let items = match (shape, schema.and_then(|s| s.get("items"))) {
            (Shape::List, Some(items)) => self.compile(items),
            _ => UNTYPED,
        };
        let mut by_name: Vec<u32> = (0..props.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_name.sort_by(|&a, &b| props[a as usize].name.cmp(&props[b as usize].name));
        let entry = Ty {
            def: def.map(Into::into),
            shape,
            has_properties: properties.is_some(),
            props,
            by_name,
            fills: Vec::new(),
            values,
            items,
            atomic_struct: def.is_some_and(facts::atomic_struct),
        };
        if let Some(slot) = self.types.get_mut(ty as usize) {
            *slot = entry;
        }
    }

    /// Value-held structs need the shapes of their property types, which (through cycles)
    /// may only be known once every type is compiled.
    fn finish(mut self) -> Vec<Ty> {
        let shapes: Vec<Shape> = self.types.iter().map(|t| t.shape).collect();
        for ty in &mut self.types {
            let Some(def) = ty.def.as_deref() else {
                continue;
            };
            for (i, prop) in ty.props.iter_mut().enumerate() {
                prop.value_struct = shapes.get(prop.ty as usize) == Some(&Shape::Struct)
                    && facts::value_struct(def, &prop.name);
                if prop.value_struct || prop.always_null {
                    ty.fills.extend(u32::try_from(i).ok());
                }
            }
        }
        self.types
    }
}

impl Ty {
    fn untyped() -> Ty {
        Ty {
            def: None,
            shape: Shape::Untyped,
            has_properties: false,
            props: Vec::new(),
            by_name: Vec::new(),
            fills: Vec::new(),
            values: UNTYPED,
            items: UNTYPED,
            atomic_struct: false,
        }
    }

    fn prop(&self, name: &str) -> Option<&Prop> {
        let i = self
            .by_name
            .binary_search_by(|&i| self.props[i as usize].name.as_ref().cmp(name))
            .ok()?;
        self.props.get(self.by_name[i] as usize)
    }
}

fn shape_of(schema: &Map<String, Value>) -> Shape {
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

impl TypeTree {
    /// A tree from a root schema and its definitions (`$ref`s name definitions by the last
    /// segment of the reference).
    pub fn new(root: Value, defs: Map<String, Value>) -> Self {
        let (types, root) = {
            let mut compiler = Compiler {
                defs: &defs,
                types: vec![Ty::untyped()],
                by_def: HashMap::new(),
            };
            let root = compiler.compile(&root);
            (compiler.finish(), root)
        };
        TypeTree { defs, types, root }
    }

    /// The kind's own type.
    pub fn root(&self) -> Node<'_> {
        Node {
            tree: self,
            ty: self.root,
            facts: None,
        }
    }

    /// A node with no schema at all.
    pub fn untyped(&self) -> Node<'_> {
        Node {
            tree: self,
            ty: UNTYPED,
            facts: None,
        }
    }

    /// Names of every definition in the tree.
    pub fn definitions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.defs.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn ty(&self, ty: u32) -> &Ty {
        // Every index in the arena points into it; the fallback is never taken.
        self.types
            .get(ty as usize)
            .unwrap_or_else(|| &self.types[UNTYPED as usize])
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
    ty: u32,
    /// Facts of the property that led here.
    facts: Option<&'static FieldFacts>,
}

impl<'a> Node<'a> {
    fn compiled(&self) -> &'a Ty {
        self.tree.ty(self.ty)
    }

    fn at_type(&self, ty: u32, facts: Option<&'static FieldFacts>) -> Node<'a> {
        Node {
            tree: self.tree,
            ty,
            facts,
        }
    }

    /// The definition name of this node's type, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub fn def(&self) -> Option<&'a str> {
        self.compiled().def.as_deref()
    }

    pub fn shape(&self) -> Shape {
        self.compiled().shape
    }

    /// The facts of the property that led to this node (defaults when none are listed).
    pub fn facts(&self) -> FieldFacts {
        self.facts.copied().unwrap_or_default()
    }

    /// The declared property `name` of a struct.
    pub fn declared(&self, name: &str) -> Option<Node<'a>> {
        let prop = self.compiled().prop(name)?;
        Some(self.at_type(prop.ty, prop.facts))
    }

    /// The declared property names of a struct.
    pub fn property_names(&self) -> Option<impl Iterator<Item = &'a str>> {
        let ty = self.compiled();
        ty.has_properties
            .then(|| ty.props.iter().map(|p| p.name.as_ref()))
    }

    /// The properties [`super::typed::fill_value_structs`] adds when absent, in declaration
    /// order: each name and whether it is a value-held struct (`{}`) or always null.
    pub fn fills(&self) -> impl Iterator<Item = (&'a str, bool)> {
        let ty = self.compiled();
        ty.fills.iter().filter_map(move |&i| {
            let p = ty.props.get(i as usize)?;
            Some((p.name.as_ref(), p.value_struct))
        })
    }

    /// The required scalar properties of a struct, with the zero value upstream writes for
    /// each when it is unset.
    pub fn zeros(&self) -> impl Iterator<Item = (&'a str, Zero)> {
        self.compiled()
            .props
            .iter()
            .filter_map(|p| Some((p.name.as_ref(), p.zero?)))
    }

    /// Every property upstream's OpenAPI marks required for this struct.
    pub fn required(&self) -> impl Iterator<Item = &'a str> {
        self.compiled()
            .props
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name.as_ref())
    }

    /// The value at key `name`: a struct property, a map value, or untyped.
    pub fn child(&self, name: &str) -> Node<'a> {
        let ty = self.compiled();
        match ty.shape {
            Shape::Struct => self.declared(name).unwrap_or_else(|| self.tree.untyped()),
            Shape::Map => self.at_type(ty.values, None),
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
        self.at_type(self.compiled().items, None)
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
            None => self.compiled().atomic_struct,
        }
    }

    /// Whether property `name` of this struct always exists (a struct held by value in Go).
    pub fn value_struct(&self, name: &str) -> bool {
        self.compiled().prop(name).is_some_and(|p| p.value_struct)
    }

    /// Whether property `name` of this struct is always serialized, as `null` when unset.
    pub fn always_null(&self, name: &str) -> bool {
        match self.compiled().prop(name) {
            Some(p) => p.always_null,
            None => self.def().is_some_and(|def| facts::always_null(def, name)),
        }
    }

    /// The default of key field `key` for items of this (item) type.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        let def = self.def()?;
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
