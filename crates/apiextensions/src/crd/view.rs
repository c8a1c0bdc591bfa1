//! [`CrdView`]: the parts of a CRD the server routes and serves by, parsed once.

use krust_machinery::Cause;
use serde_json::Value;

use super::str_at;
use crate::path::{child, index};
use crate::schema::Schema;

/// The scale subresource's paths (JSONPaths such as `.spec.replicas`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One entry of `spec.versions`.
#[derive(Clone, Debug)]
pub struct VersionView {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub schema: Option<Schema>,
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    /// `additionalPrinterColumns` as given; see `columns::cell`.
    pub printer_columns: Vec<Value>,
    pub deprecated: bool,
    pub deprecation_warning: Option<String>,
}

/// A CRD's names, scope and versions.
#[derive(Clone, Debug)]
pub struct CrdView {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub versions: Vec<VersionView>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl CrdView {
    /// Parses a CRD (already validated; v1 defaults filled in where absent). Schemas that
    /// do not compile come back as causes with their full paths.
    pub fn from_crd(crd: &Value) -> Result<CrdView, Vec<Cause>> {
        let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
        let kind = str_at(&names, &["kind"]).to_string();
        let or = |k: &str, d: String| match str_at(&names, &[k]) {
            "" => d,
            s => s.to_string(),
        };
        let mut errs = Vec::new();
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .enumerate()
                    .map(|(i, v)| version(v, &index("spec.versions", i), &mut errs))
                    .collect()
            })
            .unwrap_or_default();
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(CrdView {
            group: str_at(crd, &["spec", "group"]).to_string(),
            plural: str_at(&names, &["plural"]).to_string(),
            singular: or("singular", kind.to_lowercase()),
            list_kind: or("listKind", format!("{kind}List")),
            kind,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            namespaced: str_at(crd, &["spec", "scope"]) != "Cluster",
            versions,
        })
    }

    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<&VersionView> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The storage version.
    pub fn storage_version(&self) -> Option<&VersionView> {
        self.versions.iter().find(|v| v.storage)
    }
}

fn version(v: &Value, path: &str, errs: &mut Vec<Cause>) -> VersionView {
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let schema = v.pointer("/schema/openAPIV3Schema").and_then(|raw| {
        Schema::compile(raw)
            .map_err(|causes| {
                let base = child(path, "schema.openAPIV3Schema");
                errs.extend(causes.into_iter().map(|mut c| {
                    c.field = if c.field.is_empty() {
                        base.clone()
                    } else {
                        child(&base, &c.field)
                    };
                    c
                }));
            })
            .ok()
    });
    let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
        spec_replicas: str_at(s, &["specReplicasPath"]).to_string(),
        status_replicas: str_at(s, &["statusReplicasPath"]).to_string(),
        label_selector: s
            .get("labelSelectorPath")
            .and_then(Value::as_str)
            .map(String::from),
    });
    VersionView {
        name: str_at(v, &["name"]).to_string(),
        served: flag("served"),
        storage: flag("storage"),
        schema,
        status_subresource: v.pointer("/subresources/status").is_some(),
        scale,
        printer_columns: v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        deprecated: flag("deprecated"),
        deprecation_warning: v
            .get("deprecationWarning")
            .and_then(Value::as_str)
            .map(String::from),
    }
}
