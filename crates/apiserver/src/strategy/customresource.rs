//! Custom resources as kinds: one [`ResourceInfo`] per served version of an established
//! CustomResourceDefinition, whose [`KindOps`] decode by pruning to the version's
//! structural schema, default and validate by it (CEL rules included), print the
//! definition's columns and scale by its paths.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use krust_apiextensions::crd::{CrdView, VersionView};
use krust_apiextensions::schema::Schema;
use krust_machinery::registry::{intern, intern_list, KindOps, Printer, ScalePaths};
use krust_machinery::{Cause, ResourceInfo};
use serde_json::{json, Map, Value};

/// The kinds a definition serves, most preferred version first (upstream's version
/// priority: GA over beta over alpha, higher numbers first).
pub fn resources(crd: &CrdView, schema_key: &str) -> Vec<ResourceInfo> {
    let storage = crd
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| format!("{}/{}", crd.group, v.name));
    let mut versions: Vec<&VersionView> = crd.versions.iter().filter(|v| v.served).collect();
    versions.sort_by(|a, b| version_priority(&b.name).cmp(&version_priority(&a.name)));
    versions
        .into_iter()
        .map(|v| resource(crd, v, schema_key, storage.as_deref()))
        .collect()
}

fn resource(
    crd: &CrdView,
    v: &VersionView,
    schema_key: &str,
    storage: Option<&str>,
) -> ResourceInfo {
    let mut subresources = Vec::new();
    if v.status_subresource {
        subresources.push("status");
    }
    if v.scale.is_some() {
        subresources.push("scale");
    }
    let api_version = format!("{}/{}", crd.group, v.name);
    let ops = CustomKind {
        group: crd.group.clone(),
        version: v.name.clone(),
        kind: crd.kind.clone(),
        schema: v.schema.clone(),
        key: format!("{schema_key}/{}", v.name),
        scale: v.scale.as_ref().map(|s| ScalePaths {
            spec_replicas: s.spec_replicas.clone(),
            status_replicas: s.status_replicas.clone(),
            label_selector: s.label_selector.clone(),
        }),
        printer: CustomPrinter::new(&v.printer_columns),
        storage: storage.filter(|s| *s != api_version).map(str::to_string),
    };
    ResourceInfo {
        group: intern(&crd.group),
        version: intern(&v.name),
        kind: intern(&crd.kind),
        plural: intern(&crd.plural),
        singular: crd.singular.clone(),
        short_names: intern_list(&crd.short_names),
        categories: intern_list(&crd.categories),
        namespaced: crd.namespaced,
        subresources: intern_list(&subresources),
        ops: Arc::new(ops),
    }
}

/// Kubernetes' version order: `v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > others
/// (those last by name, ascending).
pub fn version_priority(v: &str) -> (u8, u64, u64, std::cmp::Reverse<String>) {
    let other = (0, 0, 0, std::cmp::Reverse(v.to_string()));
    let Some(rest) = v.strip_prefix('v') else {
        return other;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Ok(major) = rest[..digits].parse::<u64>() else {
        return other;
    };
    let tail = &rest[digits..];
    let (stage, minor) = if tail.is_empty() {
        (3, Some(0))
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().ok())
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().ok())
    } else {
        return other;
    };
    match minor {
        Some(minor) => (stage, major, minor, std::cmp::Reverse(String::new())),
        None => other,
    }
}

struct CustomKind {
    group: String,
    version: String,
    kind: String,
    schema: Option<Schema>,
    /// Changes with the definition, for caches of schema-derived data.
    key: String,
    scale: Option<ScalePaths>,
    printer: CustomPrinter,
    /// The storage version's `apiVersion`, when it is not this one.
    storage: Option<String>,
}

impl KindOps for CustomKind {
    /// Metadata goes through ObjectMeta (unknown metadata fields dropped, wrong types
    /// refused); the rest is pruned to the schema.
    fn roundtrip(&self, mut value: Value) -> Result<Value, String> {
        let Some(map) = value.as_object_mut() else {
            return Err("expected an object".into());
        };
        if let Some(meta) = map.remove("metadata") {
            let typed: ObjectMeta = serde_json::from_value(meta).map_err(|e| e.to_string())?;
            map.insert(
                "metadata".into(),
                serde_json::to_value(typed).map_err(|e| e.to_string())?,
            );
        }
        if let Some(schema) = &self.schema {
            schema.prune(&mut value);
        }
        Ok(value)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let meta = generator.subschema_for::<ObjectMeta>().to_value();
        let mut root = self
            .schema
            .as_ref()
            .map(|s| s.openapi().clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        if let Some(map) = root.as_object_mut() {
            let props = map
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(props) = props.as_object_mut() {
                props.insert("apiVersion".into(), json!({"type": "string",
                    "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.insert("kind".into(), json!({"type": "string",
                    "description": "Kind is a string value representing the REST resource this object represents."}));
                props.insert("metadata".into(), meta);
            }
            map.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": self.group, "version": self.version, "kind": self.kind}]),
            );
        }
        // Into the generator's definitions, as typed kinds are, and answered as a reference.
        let name = self.schema_name();
        generator.definitions_mut().insert(name.clone(), root);
        let reference = format!(
            "#{}/{name}",
            generator.settings().definitions_path.trim_end_matches('/')
        );
        schemars::Schema::try_from(json!({ "$ref": reference })).unwrap_or_default()
    }

    /// Upstream's definition name: the group reversed, then version and kind
    /// (`com.example.stable.v1.CronTab`).
    fn schema_name(&self) -> String {
        let mut parts: Vec<&str> = self.group.split('.').collect();
        parts.reverse();
        format!("{}.{}.{}", parts.join("."), self.version, self.kind)
    }

    fn schema_key(&self) -> String {
        format!("{}@{}", self.schema_name(), self.key)
    }

    fn apply_defaults(&self, obj: &mut Value) {
        if let Some(schema) = &self.schema {
            schema.apply_defaults(obj);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        match &self.schema {
            Some(schema) => schema.validate(obj, old),
            None => Vec::new(),
        }
    }

    fn scale_paths(&self) -> Option<ScalePaths> {
        self.scale.clone()
    }

    fn printer(&self) -> Option<&dyn Printer> {
        Some(&self.printer)
    }

    fn storage_api_version(&self) -> Option<&str> {
        self.storage.as_deref()
    }

    fn is_custom(&self) -> bool {
        true
    }
}

/// The Name column, then the definition's additionalPrinterColumns (Age when it has none).
struct CustomPrinter {
    columns: Vec<Value>,
}

impl CustomPrinter {
    fn new(columns: &[Value]) -> Self {
        let columns = if columns.is_empty() {
            vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
        } else {
            columns.to_vec()
        };
        CustomPrinter { columns }
    }
}

impl Printer for CustomPrinter {
    fn columns(&self) -> Vec<Value> {
        let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
            "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            "priority": 0})];
        out.extend(self.columns.iter().map(|c| {
            json!({
                "name": c.get("name").cloned().unwrap_or(json!("")),
                "type": c.get("type").cloned().unwrap_or(json!("string")),
                "format": c.get("format").cloned().unwrap_or(json!("")),
                "description": c.get("description").cloned().unwrap_or(json!("")),
                "priority": c.get("priority").cloned().unwrap_or(json!(0)),
            })
        }));
        out
    }

    fn cells(&self, obj: &Value, _now: time::OffsetDateTime) -> Vec<Value> {
        let mut out = vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
        out.extend(
            self.columns
                .iter()
                .map(|c| krust_apiextensions::columns::cell(c, obj)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_orders_them() {
        let mut v = vec![
            "v1alpha1", "v1", "foo", "v2beta1", "v1beta2", "v2", "v1beta1",
        ];
        v.sort_by(|a, b| version_priority(b).cmp(&version_priority(a)));
        assert_eq!(
            v,
            vec!["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }
}

/// Conversion `None` between a custom resource's versions: stored objects are in the
/// storage version and are served in the requested one by rewriting `apiVersion`.
#[derive(Clone, Debug, Default)]
pub struct Conversion {
    /// `(stored prefix, served prefix)` of the encoding, when they differ.
    prefixes: Option<(Vec<u8>, Vec<u8>)>,
    served: String,
}

impl Conversion {
    pub fn of(info: &ResourceInfo) -> Self {
        let served = info.api_version();
        let prefixes = info.ops.storage_api_version().map(|stored| {
            (
                format!("{{\"apiVersion\":\"{stored}\"").into_bytes(),
                format!("{{\"apiVersion\":\"{served}\"").into_bytes(),
            )
        });
        Conversion { prefixes, served }
    }

    /// The served form of a stored encoding (which has `apiVersion` first, as
    /// `codec::encode` writes it; anything else is decoded and rewritten).
    pub fn apply(&self, encoded: Vec<u8>) -> Vec<u8> {
        let Some((stored, served)) = &self.prefixes else {
            return encoded;
        };
        if let Some(rest) = encoded.strip_prefix(stored.as_slice()) {
            let mut out = Vec::with_capacity(encoded.len() + 8);
            out.extend_from_slice(served);
            out.extend_from_slice(rest);
            return out;
        }
        match serde_json::from_slice::<Value>(&encoded) {
            Ok(mut v) if v.is_object() => {
                v["apiVersion"] = json!(self.served);
                krust_machinery::codec::encode(&v)
            }
            _ => encoded,
        }
    }

    /// The stored form of an object written in the served version.
    pub fn to_storage(info: &ResourceInfo, obj: &mut Value) {
        if let (Some(stored), Some(map)) = (info.ops.storage_api_version(), obj.as_object_mut()) {
            map.insert("apiVersion".into(), json!(stored));
        }
    }
}
