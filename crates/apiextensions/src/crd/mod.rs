//! CustomResourceDefinition (`apiextensions.k8s.io/v1`) validation, as upstream's
//! `apis/apiextensions/validation`, and a typed view of what the server serves.
//!
//! - this module: object, names, group, scope and update checks;
//! - `versions`: per-version checks (names, storage, schemas, subresources, columns);
//! - `view`: [`CrdView`], the parsed parts the server routes and serves by.

#[cfg(test)]
mod tests;
mod versions;
mod view;

use krust_machinery::validation::names::{is_dns1035_label, is_dns1123_subdomain};
use krust_machinery::Cause;
use serde_json::Value;

use crate::path::{index, invalid, invalid_str, not_supported};

pub use view::{CrdView, ScalePaths, VersionView};

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// Validates a CRD; with `old`, as an update of it.
pub fn validate_crd(new: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    validate_name(new, &mut errs);
    validate_group(new, &mut errs);
    validate_names(new, &mut errs);
    validate_scope(new, &mut errs);
    versions::validate(new, &mut errs);
    if new
        .pointer("/spec/preserveUnknownFields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        errs.push(invalid(
            "spec.preserveUnknownFields",
            &Value::Bool(true),
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ));
    }
    if let Some(old) = old {
        for f in ["scope", "group"] {
            let (n, o) = (str_at(new, &["spec", f]), str_at(old, &["spec", f]));
            if n != o {
                errs.push(invalid_str(format!("spec.{f}"), n, "field is immutable"));
            }
        }
    }
    errs
}

/// The version marked `storage: true` (the first, should a bad object have several).
pub fn storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name")?.as_str().map(String::from))
}

fn validate_name(crd: &Value, errs: &mut Vec<Cause>) {
    let name = str_at(crd, &["metadata", "name"]);
    if name.is_empty() {
        errs.push(crate::path::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return;
    }
    let mut msgs = is_dns1123_subdomain(name);
    let plural = str_at(crd, &["spec", "names", "plural"]);
    let group = str_at(crd, &["spec", "group"]);
    if name != format!("{plural}.{group}") {
        msgs.push(r#"must be spec.names.plural+"."+spec.group"#.into());
    }
    for m in msgs {
        errs.push(invalid_str("metadata.name", name, &m));
    }
}

fn validate_group(crd: &Value, errs: &mut Vec<Cause>) {
    let group = str_at(crd, &["spec", "group"]);
    if group.is_empty() {
        errs.push(Cause::required("spec.group"));
        return;
    }
    let msgs = is_dns1123_subdomain(group);
    if !msgs.is_empty() {
        errs.push(invalid_str("spec.group", group, &msgs.join(",")));
    } else if !group.contains('.') {
        errs.push(invalid_str(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
}

/// `names`: plural, singular, kind and listKind are required (the v1 defaults fill in
/// singular and listKind, see [`default_crd`]); all must be DNS-1035 labels.
fn validate_names(crd: &Value, errs: &mut Vec<Cause>) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let get = |k: &str| str_at(&names, &[k]);
    for k in ["plural", "singular", "kind", "listKind"] {
        if get(k).is_empty() {
            errs.push(Cause::required(format!("spec.names.{k}")));
        }
    }
    for k in ["plural", "singular"] {
        label_check(&format!("spec.names.{k}"), get(k), "", errs);
    }
    let mixed = "may have mixed case, but should otherwise match: ";
    for k in ["kind", "listKind"] {
        let v = get(k);
        let msgs = is_dns1035_label(&v.to_lowercase());
        if !v.is_empty() && !msgs.is_empty() {
            let detail = format!("{mixed}{}", msgs.join(","));
            errs.push(invalid_str(format!("spec.names.{k}"), v, &detail));
        }
    }
    if !get("kind").is_empty() && get("kind") == get("listKind") {
        let detail = "kind and listKind may not be the same";
        errs.push(invalid_str("spec.names.listKind", get("listKind"), detail));
    }
    for list in ["shortNames", "categories"] {
        let items = names
            .get(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let field = index(&format!("spec.names.{list}"), i);
            label_check(&field, item.as_str().unwrap_or(""), "", errs);
        }
    }
}

fn label_check(field: &str, v: &str, prefix: &str, errs: &mut Vec<Cause>) {
    if v.is_empty() && !field.contains('[') {
        return;
    }
    let msgs = is_dns1035_label(v);
    if !msgs.is_empty() {
        errs.push(invalid_str(
            field,
            v,
            &format!("{prefix}{}", msgs.join(",")),
        ));
    }
}

fn validate_scope(crd: &Value, errs: &mut Vec<Cause>) {
    match str_at(crd, &["spec", "scope"]) {
        "" => errs.push(Cause::required("spec.scope")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(not_supported(
            "spec.scope",
            &Value::String(other.into()),
            &["Cluster".into(), "Namespaced".into()],
        )),
    }
}

/// Upstream's v1 defaults that validation relies on: `names.singular` (lowercased
/// kind), `names.listKind` (`<kind>List`) and `conversion.strategy: None`.
pub fn default_crd(crd: &mut Value) {
    let kind = str_at(crd, &["spec", "names", "kind"]).to_string();
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if !kind.is_empty() {
            if str_at(&Value::Object(names.clone()), &["singular"]).is_empty() {
                names.insert("singular".into(), Value::String(kind.to_lowercase()));
            }
            if str_at(&Value::Object(names.clone()), &["listKind"]).is_empty() {
                names.insert("listKind".into(), Value::String(format!("{kind}List")));
            }
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        let conversion = spec
            .entry("conversion")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(c) = conversion.as_object_mut() {
            c.entry("strategy")
                .or_insert_with(|| Value::String("None".into()));
        }
    }
}
