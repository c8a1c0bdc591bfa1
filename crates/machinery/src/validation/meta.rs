//! `metadata` rules shared by every kind, and the building blocks other kinds reuse (label
//! maps, metav1.LabelSelector).

use serde_json::{Map, Value};

use super::field::{self, Path};
use super::names::{self, check_name, NameRule};
use super::{arr, int, semantic_eq, str_of};
use crate::status::Cause;

/// Upstream's limit on the summed size of annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

/// `ValidateObjectMeta` for a create. The API server generates the name from
/// `generateName` before validating, so an empty name next to a generateName is tolerated.
pub fn validate_create(obj: &Value, namespaced: bool, rule: NameRule) -> Vec<Cause> {
    let m = meta(obj);
    let path = Path::new("metadata");
    let mut errs = Vec::new();
    let generate_name = str_of(m, "generateName");
    if !generate_name.is_empty() {
        for msg in check_name(rule, generate_name, true) {
            errs.push(field::invalid_str(
                &path.child("generateName"),
                generate_name,
                &msg,
            ));
        }
    }
    let name = str_of(m, "name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(field::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in check_name(rule, name, false) {
            errs.push(field::invalid_str(&path.child("name"), name, &msg));
        }
    }
    let ns = str_of(m, "namespace");
    if namespaced {
        if ns.is_empty() {
            errs.push(field::required(&path.child("namespace"), ""));
        } else {
            for msg in names::is_dns1123_label(ns) {
                errs.push(field::invalid_str(&path.child("namespace"), ns, &msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(field::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    errs.extend(common(m, &path));
    errs.extend(validate_finalizers(m, &path.child("finalizers")));
    errs
}

/// What both create and update check: generation, labels, annotations, owners, managedFields.
fn common(m: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Some(g) = int(m, "generation") {
        if g < 0 {
            errs.push(field::invalid_int(
                &path.child("generation"),
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    errs.extend(validate_labels(m.get("labels"), &path.child("labels")));
    errs.extend(validate_annotations(
        m.get("annotations"),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        arr(m, "ownerReferences"),
        &path.child("ownerReferences"),
    ));
    for (i, mf) in arr(m, "managedFields").iter().enumerate() {
        let op = str_of(mf, "operation");
        if op != "Apply" && op != "Update" {
            errs.push(field::invalid_str(
                &path.child("managedFields").index(i).child("operation"),
                op,
                "must be `Apply` or `Update`",
            ));
        }
    }
    errs
}

/// `ValidateObjectMetaUpdate`: identity fields are immutable and a resourceVersion is required.
pub fn validate_update(new: &Value, old: &Value) -> Vec<Cause> {
    let (nm, om) = (meta(new), meta(old));
    let path = Path::new("metadata");
    let mut errs = Vec::new();
    if om.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let list = extra
                .iter()
                .map(|f| field::quote(f))
                .collect::<Vec<_>>()
                .join(", ");
            errs.push(field::forbidden(
                &path.child("finalizers"),
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
            ));
        }
    }
    if str_of(nm, "resourceVersion").is_empty() {
        errs.push(field::invalid_str(
            &path.child("resourceVersion"),
            "",
            "must be specified for an update",
        ));
    }
    let (ng, og) = (
        int(nm, "generation").unwrap_or(0),
        int(om, "generation").unwrap_or(0),
    );
    if ng < 0 {
        errs.push(field::invalid_int(
            &path.child("generation"),
            ng,
            "must be greater than or equal to 0",
        ));
    }
    if ng < og {
        errs.push(field::invalid_int(
            &path.child("generation"),
            ng,
            "must not be decremented",
        ));
    }
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        if !semantic_eq(nm.get(f), om.get(f)) {
            let shown = match (f, nm.get(f)) {
                (_, Some(v)) => v.clone(),
                ("deletionTimestamp" | "deletionGracePeriodSeconds", None) => Value::Null,
                (_, None) => Value::String(String::new()),
            };
            errs.push(field::immutable(&path.child(f), &shown));
        }
    }
    errs.extend(common(nm, &path));
    errs
}

/// `ValidateLabels`: both key and value errors are reported at the map's path.
pub fn validate_labels(labels: Option<&Value>, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        for msg in names::is_qualified_name(k) {
            errs.push(field::invalid_str(path, k, &msg));
        }
        let v = v.as_str().unwrap_or_default();
        for msg in names::is_label_value(v) {
            errs.push(field::invalid_str(path, v, &msg));
        }
    }
    errs
}

pub fn validate_annotations(annotations: Option<&Value>, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else {
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(field::invalid_str(path, k, &msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(field::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(refs: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for (i, r) in refs.iter().enumerate() {
        let p = path.index(i);
        let api_version = str_of(r, "apiVersion");
        let kind = str_of(r, "kind");
        if api_version.is_empty() {
            errs.push(field::required(&p.child("apiVersion"), "must not be empty"));
        } else if api_version.matches('/').count() > 1 || api_version.ends_with('/') {
            errs.push(field::invalid_str(
                &p.child("apiVersion"),
                api_version,
                "must be <group>/<version> or <version>",
            ));
        }
        if kind.is_empty() {
            errs.push(field::required(&p.child("kind"), "must not be empty"));
        }
        if str_of(r, "name").is_empty() {
            errs.push(field::required(&p.child("name"), "must not be empty"));
        }
        if str_of(r, "uid").is_empty() {
            errs.push(field::required(&p.child("uid"), "must not be empty"));
        }
        if api_version == "v1" && kind == "Event" {
            errs.push(field::invalid(
                &p,
                r,
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let this = format!("{kind}/{}", str_of(r, "name"));
            match &first_controller {
                Some(first) => errs.push(field::invalid(
                    path,
                    &Value::Array(refs.to_vec()),
                    &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"),
                )),
                None => first_controller = Some(this),
            }
        }
    }
    errs
}

fn validate_finalizers(m: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let list = arr(m, "finalizers");
    for f in list.iter().filter_map(Value::as_str) {
        for msg in names::is_qualified_name(f) {
            errs.push(field::invalid_str(path, f, &msg));
        }
    }
    let has = |n: &str| list.iter().any(|f| f.as_str() == Some(n));
    if has("orphan") && has("foregroundDeletion") {
        errs.push(field::invalid(
            path,
            &Value::Array(list.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// `ValidateLabelSelector` for a metav1.LabelSelector.
pub fn validate_label_selector(sel: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = validate_labels(sel.get("matchLabels"), &path.child("matchLabels"));
    for (i, expr) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = arr(expr, "values");
        match str_of(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(field::required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(field::forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(field::invalid_str(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = str_of(expr, "key");
        for msg in names::is_qualified_name(key) {
            errs.push(field::invalid_str(&p.child("key"), key, &msg));
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or_default();
            for msg in names::is_label_value(v) {
                errs.push(field::invalid_str(&p.child("values").index(j), v, &msg));
            }
        }
    }
    errs
}

/// Whether a metav1.LabelSelector has no requirements at all (matches everything).
pub fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && arr(sel, "matchExpressions").is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::describe).collect()
    }

    #[test]
    fn create_checks_name_namespace_labels() {
        let obj = json!({"metadata": {"name": "Bad_Name", "namespace": "default"}});
        let e = validate_create(&obj, true, NameRule::Subdomain);
        assert_eq!(e.len(), 1);
        assert!(e[0].describe().starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        let e = validate_create(&json!({"metadata": {}}), true, NameRule::Subdomain);
        assert_eq!(
            fields(&e),
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value"
            ]
        );
        let e = validate_create(
            &json!({"metadata": {"generateName": "web-"}}),
            false,
            NameRule::Subdomain,
        );
        assert!(e.is_empty(), "{e:?}");
        let e = validate_create(
            &json!({"metadata": {"name": "n", "namespace": "x"}}),
            false,
            NameRule::Subdomain,
        );
        assert_eq!(
            fields(&e),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let e = validate_create(
            &json!({"metadata": {"name": "n", "labels": {"a/b/c": "x", "ok": "-bad"}, "annotations": {"Example.COM/Key": "v"}}}),
            false,
            NameRule::Subdomain,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|c| c.field == "metadata.labels"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let e = validate_create(
            &json!({"metadata": {"name": "n", "annotations": {"a": big}}}),
            false,
            NameRule::Subdomain,
        );
        assert_eq!(
            fields(&e),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn owner_references_and_finalizers() {
        let obj = json!({"metadata": {"name": "n", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true}
        ], "finalizers": ["orphan", "foregroundDeletion", "bad/x/y"]}});
        let e = fields(&validate_create(&obj, false, NameRule::Subdomain));
        assert!(
            e.contains(
                &"metadata.ownerReferences[1].apiVersion: Required value: must not be empty"
                    .to_string()
            ),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and /")));
        assert!(e
            .iter()
            .any(|m| m.ends_with("finalizer orphan and foregroundDeletion cannot be both set")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("metadata.finalizers: Invalid value: \"bad/x/y\"")));
    }

    #[test]
    fn update_checks_immutables() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1", "resourceVersion": "5", "generation": 3, "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a"]}});
        let new = json!({"metadata": {"name": "b", "namespace": "d", "uid": "u2", "generation": 2, "finalizers": ["a", "b"]}});
        let e = fields(&validate_update(&new, &old));
        assert_eq!(
            e,
            vec![
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"b\"}",
                "metadata.resourceVersion: Invalid value: \"\": must be specified for an update",
                "metadata.generation: Invalid value: 2: must not be decremented",
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
                "metadata.deletionTimestamp: Invalid value: null: field is immutable",
            ]
        );
    }

    #[test]
    fn label_selectors() {
        let sel = json!({"matchLabels": {"app": "x"}, "matchExpressions": [
            {"key": "a", "operator": "In", "values": []},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Foo"}
        ]});
        let e = fields(&validate_label_selector(
            &sel,
            &Path::new("spec").child("selector"),
        ));
        assert_eq!(
            e,
            vec![
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Foo\": not a valid selector operator",
            ]
        );
        assert!(selector_is_empty(&json!({})));
        assert!(!selector_is_empty(&sel));
    }
}
