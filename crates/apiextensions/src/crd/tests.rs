//! Unit tests; unwrapping is how a test says "this must be there".
#![allow(clippy::unwrap_used)]

use krust_machinery::Cause;
use serde_json::{json, Value};

use super::{default_crd, storage_version, validate_crd, CrdView};

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "listKind": "WidgetList", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                     "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                 }}},
                 "subresources": {"status": {}, "scale": {
                     "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [
                     {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                {"name": "v1beta1", "served": true, "storage": false, "deprecated": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    })
}

fn described(errs: &[Cause]) -> Vec<String> {
    errs.iter().map(Cause::describe).collect()
}

#[test]
fn valid_crd_passes() {
    let errs = validate_crd(&crd(), None);
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(storage_version(&crd()).as_deref(), Some("v1"));
}

#[test]
fn name_mismatch() {
    let mut c = crd();
    c["metadata"]["name"] = json!("gadgets.example.com");
    assert_eq!(
        described(&validate_crd(&c, None)),
        vec![
            r#"metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group"#
        ]
    );
}

#[test]
fn group_scope_and_names() {
    let mut c = crd();
    c["spec"]["group"] = json!("example");
    c["metadata"]["name"] = json!("widgets.example");
    c["spec"]["scope"] = json!("Global");
    c["spec"]["names"]["plural"] = json!("Widgets");
    c["metadata"]["name"] = json!("Widgets.example");
    let got = described(&validate_crd(&c, None));
    for want in [
        "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
    ] {
        assert!(
            got.iter().any(|g| g == want),
            "missing {want:?} in {got:#?}"
        );
    }
    assert!(got
        .iter()
        .any(|g| g.starts_with("spec.names.plural: Invalid value: \"Widgets\": a DNS-1035 label")));
}

#[test]
fn storage_versions() {
    let mut c = crd();
    c["spec"]["versions"][1]["storage"] = json!(true);
    let errs = validate_crd(&c, None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.versions");
    assert!(errs[0]
        .message
        .ends_with(": must have exactly one version marked as storage version"));
}

#[test]
fn schemas() {
    let mut c = crd();
    c["spec"]["versions"][1]["schema"] = json!({});
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["replicas"] = json!({"description": "no type"});
    let got = described(&validate_crd(&c, None));
    assert_eq!(
        got,
        vec![
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].type: Required value: must not be empty for specified object fields",
            "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
        ]
    );
    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["minProperties"] = json!(1);
    let got = described(&validate_crd(&c, None));
    assert_eq!(
        got,
        vec!["spec.versions[0].schema.openAPIV3Schema: Forbidden: must only have \"properties\", \"required\" or \"description\" at the root if the status subresource is enabled"]
    );
}

#[test]
fn subresources_columns_conversion() {
    let mut c = crd();
    let v = &mut c["spec"]["versions"][0];
    v["subresources"]["scale"]["specReplicasPath"] = json!(".status.replicas");
    v["subresources"]["scale"]["statusReplicasPath"] = json!("status.replicas");
    v["additionalPrinterColumns"] = json!([{"name": "X", "type": "money", "jsonPath": ".spec.x"},
                                           {"name": "Y", "type": "string"}]);
    c["spec"]["conversion"] = json!({"strategy": "Webhook"});
    c["spec"]["preserveUnknownFields"] = json!(true);
    let got = described(&validate_crd(&c, None));
    let want = vec![
        "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".status.replicas\": should be a json path under .spec",
        "spec.versions[0].subresources.scale.statusReplicasPath: Invalid value: \"status.replicas\": must be a simple json path starting with .",
        "spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"money\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
        "spec.versions[0].additionalPrinterColumns[1].jsonPath: Required value",
        "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook",
        "spec.conversion.conversionReviewVersions: Required value: must specify at least one version",
        "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
    ];
    assert_eq!(got, want);
}

#[test]
fn immutable_on_update() {
    let old = crd();
    let mut new = crd();
    new["spec"]["scope"] = json!("Cluster");
    assert_eq!(
        described(&validate_crd(&new, Some(&old))),
        vec!["spec.scope: Invalid value: \"Cluster\": field is immutable"]
    );
}

#[test]
fn defaults_and_view() {
    let mut c = crd();
    let names = c["spec"]["names"].as_object_mut().unwrap();
    names.remove("singular");
    names.remove("listKind");
    default_crd(&mut c);
    assert_eq!(c["spec"]["names"]["singular"], json!("widget"));
    assert_eq!(c["spec"]["names"]["listKind"], json!("WidgetList"));
    assert_eq!(c["spec"]["conversion"], json!({"strategy": "None"}));
    let view = CrdView::from_crd(&c).unwrap();
    assert_eq!(view.plural, "widgets");
    assert_eq!(view.short_names, vec!["wd"]);
    assert!(view.namespaced);
    let v1 = view.version("v1").unwrap();
    assert!(v1.storage && v1.status_subresource && v1.schema.is_some());
    assert_eq!(v1.scale.as_ref().unwrap().spec_replicas, ".spec.replicas");
    assert_eq!(v1.printer_columns.len(), 1);
    assert!(view.version("v1beta1").unwrap().deprecated);
    assert_eq!(view.storage_version().unwrap().name, "v1");
}
