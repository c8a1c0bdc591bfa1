//! Per-version checks of a CRD (`spec.versions[i]`) and its conversion settings.

use krust_machinery::validation::names::is_dns1035_label;
use krust_machinery::Cause;
use serde_json::Value;

use super::str_at;
use crate::columns::valid_json_path;
use crate::path::{child, index, invalid, invalid_str, not_supported, required};
use crate::schema::Schema;

/// Printer column types and formats upstream accepts, in its sorted order.
const COLUMN_TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
const COLUMN_FORMATS: [&str; 8] = [
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];

/// Root keywords allowed when the status subresource is enabled.
const STATUS_ROOT: [&str; 7] = [
    "type",
    "properties",
    "required",
    "description",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-embedded-resource",
];

pub(super) fn validate(crd: &Value, errs: &mut Vec<Cause>) {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list = Value::Array(versions.clone());
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let path = index("spec.versions", i);
        let name = str_at(v, &["name"]);
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        version(v, &path, errs);
    }
    if !unique {
        errs.push(invalid(
            "spec.versions",
            &list,
            "must contain unique version names",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        let detail = "must have exactly one version marked as storage version";
        errs.push(invalid("spec.versions", &list, detail));
    }
    conversion(crd, errs);
}

fn version(v: &Value, path: &str, errs: &mut Vec<Cause>) {
    let name = str_at(v, &["name"]);
    let msgs = is_dns1035_label(name);
    if !msgs.is_empty() {
        errs.push(invalid_str(child(path, "name"), name, &msgs.join(",")));
    }
    let status = v.pointer("/subresources/status").is_some();
    schema(v, path, status, errs);
    if let Some(scale) = v.pointer("/subresources/scale") {
        validate_scale(scale, &child(path, "subresources.scale"), errs);
    }
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (j, col) in columns.iter().enumerate() {
        let p = index(&child(path, "additionalPrinterColumns"), j);
        column(col, &p, errs);
    }
}

fn schema(v: &Value, path: &str, status: bool, errs: &mut Vec<Cause>) {
    let base = child(path, "schema.openAPIV3Schema");
    let Some(raw) = v.pointer("/schema/openAPIV3Schema") else {
        errs.push(required(base, "schemas are required"));
        return;
    };
    if status {
        let extra = raw
            .as_object()
            .map(|o| o.keys().any(|k| !STATUS_ROOT.contains(&k.as_str())))
            .unwrap_or(false);
        if extra {
            errs.push(Cause::forbidden(
                &base,
                "must only have \"properties\", \"required\" or \"description\" at the root if the status subresource is enabled",
            ));
        }
    }
    if let Err(causes) = Schema::compile(raw) {
        for mut c in causes {
            c.field = if c.field.is_empty() {
                base.clone()
            } else {
                child(&base, &c.field)
            };
            errs.push(c);
        }
    }
}

/// Upstream's `validateSimpleJSONPath`.
fn simple_path(p: &str, field: &str, errs: &mut Vec<Cause>) -> bool {
    if !p.starts_with('.') {
        errs.push(invalid_str(
            field,
            p,
            "must be a simple json path starting with .",
        ));
        return false;
    }
    true
}

fn validate_scale(scale: &Value, path: &str, errs: &mut Vec<Cause>) {
    for (k, under) in [
        ("specReplicasPath", ".spec"),
        ("statusReplicasPath", ".status"),
    ] {
        let p = str_at(scale, &[k]);
        let field = child(path, k);
        if p.is_empty() {
            errs.push(Cause::required(field));
        } else if simple_path(p, &field, errs) && !p.starts_with(&format!("{under}.")) {
            let detail = format!("should be a json path under {under}");
            errs.push(invalid_str(field, p, &detail));
        }
    }
    let sel = str_at(scale, &["labelSelectorPath"]);
    let field = child(path, "labelSelectorPath");
    if !sel.is_empty()
        && simple_path(sel, &field, errs)
        && !sel.starts_with(".spec.")
        && !sel.starts_with(".status.")
    {
        errs.push(invalid_str(
            field,
            sel,
            "should be a json path under either .spec or .status",
        ));
    }
}

fn column(col: &Value, path: &str, errs: &mut Vec<Cause>) {
    if str_at(col, &["name"]).is_empty() {
        errs.push(Cause::required(child(path, "name")));
    }
    let allowed = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match str_at(col, &["type"]) {
        "" => {
            let detail = format!("must be one of {}", COLUMN_TYPES.join(","));
            errs.push(required(child(path, "type"), &detail));
        }
        t if !COLUMN_TYPES.contains(&t) => {
            let v = Value::String(t.into());
            errs.push(not_supported(
                child(path, "type"),
                &v,
                &allowed(&COLUMN_TYPES),
            ));
        }
        _ => {}
    }
    let format = str_at(col, &["format"]);
    if !format.is_empty() && !COLUMN_FORMATS.contains(&format) {
        let v = Value::String(format.into());
        errs.push(not_supported(
            child(path, "format"),
            &v,
            &allowed(&COLUMN_FORMATS),
        ));
    }
    let jp = str_at(col, &["jsonPath"]);
    let field = child(path, "jsonPath");
    if jp.is_empty() {
        errs.push(Cause::required(field));
    } else if simple_path(jp, &field, errs) {
        if let Err(e) = valid_json_path(jp) {
            errs.push(invalid_str(
                field,
                jp,
                &format!("must be a valid JSONPath: {e}"),
            ));
        }
    }
}

/// `spec.conversion`; paths name upstream's internal fields (`webhookClientConfig`), as
/// its messages do.
fn conversion(crd: &Value, errs: &mut Vec<Cause>) {
    let Some(conv) = crd.pointer("/spec/conversion") else {
        return;
    };
    let strategy = str_at(conv, &["strategy"]);
    let webhook = conv.get("webhook");
    let client = webhook.and_then(|w| w.get("clientConfig"));
    match strategy {
        "None" | "" => {
            if client.is_some() {
                errs.push(Cause::forbidden(
                    "spec.conversion.webhookClientConfig",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        "Webhook" => {
            if client.is_none() {
                errs.push(required(
                    "spec.conversion.webhookClientConfig",
                    "required when strategy is set to Webhook",
                ));
            }
            let versions = webhook
                .and_then(|w| w.get("conversionReviewVersions"))
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            if versions == 0 {
                errs.push(required(
                    "spec.conversion.conversionReviewVersions",
                    "must specify at least one version",
                ));
            }
        }
        other => errs.push(not_supported(
            "spec.conversion.strategy",
            &Value::String(other.into()),
            &["None".into(), "Webhook".into()],
        )),
    }
}
