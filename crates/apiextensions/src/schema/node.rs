//! The parsed schema tree the other passes walk, and upstream's structural-schema rules
//! checked while parsing (so one walk reports every problem with its schema path).

use std::collections::BTreeMap;

use krust_machinery::Cause;
use serde_json::{Map, Value};

use super::rules::{self, Rule};
use crate::path::{child, invalid, invalid_str, key, required};

/// Where a node sits; upstream words the "type must not be empty" error per level.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Root,
    Field,
    Item,
}

/// One node of a structural schema: what pruning, defaulting, list-type checks and CEL
/// rules need. Value validations (minimum, pattern, ...) are left to the JSON Schema
/// validator built from the raw schema.
#[derive(Default)]
pub(crate) struct Node {
    pub ty: String,
    pub nullable: bool,
    pub int_or_string: bool,
    pub preserve_unknown: bool,
    pub embedded: bool,
    pub properties: BTreeMap<String, Node>,
    /// `additionalProperties` given as a schema: a map whose values follow it.
    pub additional: Option<Box<Node>>,
    /// `additionalProperties: true`: a map of anything.
    pub additional_any: bool,
    pub items: Option<Box<Node>>,
    pub default: Option<Value>,
    pub list_type: Option<String>,
    pub map_keys: Vec<String>,
    pub rules: Vec<Rule>,
}

impl Node {
    /// Whether this node or any below it carries CEL rules.
    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
            || self.properties.values().any(Node::has_rules)
            || self.additional.as_deref().is_some_and(Node::has_rules)
            || self.items.as_deref().is_some_and(Node::has_rules)
    }
}

/// Keywords upstream's v1 API has no room for in a structural schema.
const UNSUPPORTED: [&str; 4] = [
    "patternProperties",
    "definitions",
    "dependencies",
    "additionalItems",
];

/// Parses `raw` (at schema path `path`), appending every rule violation to `errs`.
pub(crate) fn parse(raw: &Value, path: &str, lvl: Level, errs: &mut Vec<Cause>) -> Node {
    let empty = Map::new();
    let obj = raw.as_object().unwrap_or(&empty);
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut node = Node {
        ty: obj
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        nullable: flag("nullable"),
        int_or_string: flag("x-kubernetes-int-or-string"),
        preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
        embedded: flag("x-kubernetes-embedded-resource"),
        default: obj.get("default").cloned(),
        ..Node::default()
    };
    check_keywords(obj, path, errs);
    parse_children(obj, &mut node, path, lvl, errs);
    check_type(obj, &node, path, lvl, errs);
    check_extensions(obj, &mut node, path, errs);
    check_metadata(&node, obj, path, lvl, errs);
    super::nested::check_value_validations(obj, path, errs);
    node.rules = rules::compile(obj.get("x-kubernetes-validations"), path, errs);
    super::defaultcheck::check(&node, raw, path, errs);
    node
}

fn check_keywords(obj: &Map<String, Value>, path: &str, errs: &mut Vec<Cause>) {
    if obj.contains_key("$ref") {
        errs.push(Cause::forbidden(
            child(path, "$ref"),
            "$ref is not supported",
        ));
    }
    for k in UNSUPPORTED {
        if obj.contains_key(k) {
            errs.push(Cause::forbidden(
                child(path, k),
                format!("{k} is not supported"),
            ));
        }
    }
    if obj.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        errs.push(Cause::forbidden(
            child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(p) {
            let detail = format!("must be a valid regular expression, but isn't: {e}");
            errs.push(invalid_str(child(path, "pattern"), p, &detail));
        }
    }
}

fn parse_children(
    obj: &Map<String, Value>,
    node: &mut Node,
    path: &str,
    lvl: Level,
    errs: &mut Vec<Cause>,
) {
    match obj.get("items") {
        Some(items @ Value::Object(_)) => {
            let p = child(path, "items");
            node.items = Some(Box::new(parse(items, &p, Level::Item, errs)));
        }
        Some(Value::Array(_)) => errs.push(Cause::forbidden(
            child(path, "items"),
            "items must be a schema object and not an array",
        )),
        _ if node.ty == "array" => errs.push(required(child(path, "items"), "must be specified")),
        _ => {}
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let base = child(path, "properties");
        for (k, v) in props {
            let p = key(&base, k);
            node.properties
                .insert(k.clone(), parse(v, &p, Level::Field, errs));
        }
    }
    parse_additional(obj, node, path, lvl, errs);
}

fn parse_additional(
    obj: &Map<String, Value>,
    node: &mut Node,
    path: &str,
    lvl: Level,
    errs: &mut Vec<Cause>,
) {
    let Some(additional) = obj.get("additionalProperties") else {
        return;
    };
    let p = child(path, "additionalProperties");
    if lvl == Level::Root {
        errs.push(Cause::forbidden(&p, "must not be used at the root"));
    }
    if obj.contains_key("properties") {
        errs.push(Cause::forbidden(
            &p,
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if node.embedded {
        errs.push(Cause::forbidden(
            &p,
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    match additional {
        Value::Bool(true) => node.additional_any = true,
        Value::Bool(false) => errs.push(Cause::forbidden(
            &p,
            "additionalProperties cannot be set to false",
        )),
        schema => node.additional = Some(Box::new(parse(schema, &p, Level::Field, errs))),
    }
}

fn check_type(
    obj: &Map<String, Value>,
    node: &Node,
    path: &str,
    lvl: Level,
    errs: &mut Vec<Cause>,
) {
    let p = child(path, "type");
    if let Some(t) = obj.get("type").filter(|t| !t.is_string()) {
        errs.push(invalid(&p, t, "must be a string"));
        return;
    }
    let supported = ["array", "boolean", "integer", "number", "object", "string"];
    if !node.ty.is_empty() && !supported.contains(&node.ty.as_str()) {
        let allowed: Vec<String> = supported.iter().map(|s| s.to_string()).collect();
        errs.push(crate::path::not_supported(
            &p,
            &Value::String(node.ty.clone()),
            &allowed,
        ));
    }
    let embedded_msg = "must be object if x-kubernetes-embedded-resource is true";
    if node.embedded && node.ty != "object" {
        if node.ty.is_empty() {
            errs.push(required(&p, embedded_msg));
        } else {
            errs.push(invalid_str(&p, &node.ty, embedded_msg));
        }
    } else if node.ty.is_empty() && !node.int_or_string && !node.preserve_unknown {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(required(&p, detail));
    }
    if lvl == Level::Root && !node.ty.is_empty() && node.ty != "object" {
        errs.push(invalid_str(&p, &node.ty, "must be object at the root"));
    }
    if node.embedded && !node.preserve_unknown && node.properties.is_empty() {
        errs.push(required(
            child(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

fn check_extensions(obj: &Map<String, Value>, node: &mut Node, path: &str, errs: &mut Vec<Cause>) {
    let preserve = "x-kubernetes-preserve-unknown-fields";
    if obj.get(preserve).and_then(Value::as_bool) == Some(false) {
        errs.push(invalid(
            child(path, preserve),
            &Value::Bool(false),
            "must be true or undefined",
        ));
    }
    if node.int_or_string && node.preserve_unknown {
        let detail = "must be false if x-kubernetes-int-or-string is true";
        errs.push(invalid(child(path, preserve), &Value::Bool(true), detail));
    }
    if node.int_or_string && node.embedded {
        let detail = "must be false if x-kubernetes-int-or-string is true";
        let p = child(path, "x-kubernetes-embedded-resource");
        errs.push(invalid(p, &Value::Bool(true), detail));
    }
    node.map_keys = obj
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    node.list_type = obj
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
        .map(String::from);
    check_list_type(node, path, errs);
}

fn check_list_type(node: &Node, path: &str, errs: &mut Vec<Cause>) {
    let p = child(path, "x-kubernetes-list-type");
    match node.list_type.as_deref() {
        None if !node.map_keys.is_empty() => errs.push(Cause::forbidden(
            &p,
            "must be map if x-kubernetes-list-map-keys is non-empty",
        )),
        None | Some("atomic") | Some("set") => {}
        Some("map") => {
            if node.map_keys.is_empty() {
                errs.push(required(
                    child(path, "x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            let item_ty = node.items.as_ref().map(|i| i.ty.as_str()).unwrap_or("");
            if item_ty != "object" {
                let detail = "must only be used if items are objects";
                errs.push(invalid_str(&p, "map", detail));
            }
        }
        Some(other) => {
            let allowed = ["atomic", "set", "map"].map(String::from);
            errs.push(crate::path::not_supported(
                &p,
                &Value::String(other.into()),
                &allowed,
            ));
        }
    }
    if node.list_type.is_some() && node.ty != "array" {
        let shown = node.list_type.clone().unwrap_or_default();
        errs.push(invalid_str(
            &p,
            &shown,
            "must only be used if type is array",
        ));
    }
}

/// Upstream lets the root (and embedded resources) say little about `metadata`: the
/// server owns it. Only restricting `name`/`generateName` is allowed at the root.
fn check_metadata(
    node: &Node,
    obj: &Map<String, Value>,
    path: &str,
    lvl: Level,
    errs: &mut Vec<Cause>,
) {
    let check = lvl == Level::Root || node.embedded;
    let props = obj.get("properties").and_then(Value::as_object);
    let base = child(path, "properties");
    for name in ["kind", "apiVersion"] {
        if let (true, Some(p)) = (check, node.properties.get(name)) {
            if p.ty != "string" {
                errs.push(invalid_str(
                    child(&key(&base, name), "type"),
                    &p.ty,
                    "must be string",
                ));
            }
        }
    }
    let Some(meta) = props.and_then(|p| p.get("metadata")) else {
        return;
    };
    let meta_path = key(&base, "metadata");
    if check && meta.get("type").and_then(Value::as_str) != Some("object") {
        let ty = meta.get("type").and_then(Value::as_str).unwrap_or("");
        errs.push(invalid_str(child(&meta_path, "type"), ty, "must be object"));
    }
    if lvl == Level::Root && !metadata_is_trivial(meta) {
        errs.push(Cause::forbidden(
            meta_path,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

/// Whether a root `metadata` schema only types itself and (optionally) restricts
/// `name` and `generateName`.
fn metadata_is_trivial(meta: &Value) -> bool {
    let Some(obj) = meta.as_object() else {
        return false;
    };
    let allowed_keys = ["type", "properties"];
    if obj.keys().any(|k| !allowed_keys.contains(&k.as_str())) {
        return false;
    }
    match obj.get("properties").and_then(Value::as_object) {
        None => true,
        Some(props) => props.keys().all(|k| k == "name" || k == "generateName"),
    }
}
