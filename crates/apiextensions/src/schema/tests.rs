//! Unit tests; unwrapping is how a test says "this must be there".
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use super::Schema;
use krust_machinery::Cause;

fn compile(s: Value) -> Schema {
    match Schema::compile(&s) {
        Ok(s) => s,
        Err(e) => panic!("schema did not compile: {e:?}"),
    }
}

fn messages(causes: &[Cause]) -> Vec<String> {
    causes.iter().map(Cause::describe).collect()
}

#[test]
fn send_sync_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Schema>();
}

#[test]
fn non_structural_rejected() {
    let errs = Schema::compile(&json!({
        "type": "object",
        "properties": {
            "spec": {"properties": {"replicas": {"type": "integer"}}},
            "list": {"type": "array"},
            "m": {"type": "object", "properties": {"a": {"type": "string"}},
                  "additionalProperties": {"type": "string"}},
            "r": {"$ref": "#/definitions/x"}
        }
    }))
    .unwrap_err();
    let got = messages(&errs);
    for want in [
        "properties[spec].type: Required value: must not be empty for specified object fields",
        "properties[list].items: Required value: must be specified",
        "properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
        "properties[r].$ref: Forbidden: $ref is not supported",
    ] {
        assert!(got.iter().any(|g| g == want), "missing {want:?} in {got:#?}");
    }
    let root = Schema::compile(&json!({"type": "string"})).unwrap_err();
    assert_eq!(
        messages(&root),
        vec!["type: Invalid value: \"string\": must be object at the root"]
    );
    let meta = Schema::compile(&json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}
    }}))
    .unwrap_err();
    assert_eq!(meta[0].field, "properties[metadata]");
    assert_eq!(meta[0].reason, "FieldValueForbidden");
    let nested =
        Schema::compile(&json!({"type": "object", "anyOf": [{"type": "object"}]})).unwrap_err();
    assert_eq!(
        messages(&nested),
        vec!["anyOf[0].type: Forbidden: must be empty to be structural"]
    );
}

#[test]
fn int_or_string_patterns_are_structural() {
    compile(json!({"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": true,
                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "free": {"x-kubernetes-preserve-unknown-fields": true}
    }}));
}

fn prune_schema() -> Schema {
    compile(json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "name": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "a": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                     "properties": {"known": {"type": "object", "properties": {}}}},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "properties": {"spec": {"type": "object"}}}
        }}
    }}))
}

#[test]
fn prunes_unknown_fields() {
    let s = prune_schema();
    let mut obj = json!({
        "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "whatever": 1},
        "bogus": 1,
        "spec": {
            "name": "n", "extra": true,
            "items": [{"a": "x", "b": "y"}],
            "labels": {"k": "v"},
            "free": {"anything": {"deep": 1}, "known": {"dropped": 1}},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {}, "junk": 1}
        }
    });
    let mut pruned = s.prune(&mut obj);
    pruned.sort();
    assert_eq!(
        pruned,
        vec![
            "bogus",
            "spec.extra",
            "spec.free.known.dropped",
            "spec.items[0].b",
            "spec.template.junk"
        ]
    );
    assert_eq!(
        obj,
        json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "whatever": 1},
            "spec": {
                "name": "n",
                "items": [{"a": "x"}],
                "labels": {"k": "v"},
                "free": {"anything": {"deep": 1}, "known": {}},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                             "spec": {}}
            }
        })
    );
}

#[test]
fn applies_defaults() {
    let s = compile(json!({"type": "object", "properties": {
        "spec": {"type": "object", "default": {}, "properties": {
            "replicas": {"type": "integer", "default": 1},
            "mode": {"type": "string", "default": "fast"},
            "opt": {"type": "string", "nullable": true, "default": "x"},
            "ports": {"type": "array", "items": {"type": "object", "properties": {
                "protocol": {"type": "string", "default": "TCP"}}}},
            "byName": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"on": {"type": "boolean", "default": true}}}}
        }}
    }}));
    let mut obj = json!({"spec": {"mode": null, "opt": null, "ports": [{}, {"protocol": "UDP"}],
                                  "byName": {"a": {}}}});
    s.apply_defaults(&mut obj);
    assert_eq!(
        obj,
        json!({"spec": {"replicas": 1, "mode": "fast", "opt": null,
                        "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}],
                        "byName": {"a": {"on": true}}}})
    );
    let mut empty = json!({});
    s.apply_defaults(&mut empty);
    assert_eq!(
        empty,
        json!({"spec": {"replicas": 1, "mode": "fast", "opt": "x"}})
    );
}

fn value_schema() -> Schema {
    compile(json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "replicas": {"type": "integer", "maximum": 10, "minimum": 1},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "port": {"x-kubernetes-int-or-string": true},
            "when": {"type": "string", "format": "date-time"},
            "items": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
                "name": {"type": "string"}}}}
        }}
    }}))
}

#[test]
fn value_validation_wording() {
    let s = value_schema();
    let errs = s.validate(
        &json!({"spec": {"replicas": "string", "mode": "medium", "port": true,
                         "items": [{"name": "a"}, {"name": "b"}, {"name": 3}]}}),
        None,
    );
    let got = messages(&errs);
    for want in [
        "spec.name: Required value",
        "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        "spec.items: Too many: 3: must have at most 2 items",
        "spec.items[2].name: Invalid value: \"integer\": spec.items[2].name in body must be of type string: \"integer\"",
    ] {
        assert!(got.iter().any(|g| g == want), "missing {want:?} in {got:#?}");
    }
    let replicas = errs.iter().find(|c| c.field == "spec.replicas").unwrap();
    assert_eq!(replicas.reason, "FieldValueTypeInvalid");
    assert_eq!(
        errs.iter().find(|c| c.field == "spec.mode").unwrap().reason,
        "FieldValueNotSupported"
    );

    let errs = s.validate(
        &json!({"spec": {"name": "ABCDEFG", "replicas": 11, "when": "yesterday"}}),
        None,
    );
    let got = messages(&errs);
    for want in [
        "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
        "spec.name: Too long: may not be longer than 5",
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
    ] {
        assert!(got.iter().any(|g| g == want), "missing {want:?} in {got:#?}");
    }
    let ok = s.validate(
        &json!({"spec": {"name": "abc", "replicas": 3, "port": "http", "when": "2024-01-01T00:00:00Z"}}),
        None,
    );
    assert!(ok.is_empty(), "{ok:?}");
    assert!(s
        .validate(&json!({"spec": {"name": "a", "port": 80}}), None)
        .is_empty());
}

#[test]
fn nullable() {
    let s = compile(json!({"type": "object", "properties": {
        "a": {"type": "string", "nullable": true},
        "b": {"type": "string"}
    }}));
    let errs = s.validate(&json!({"a": null, "b": null}), None);
    assert_eq!(
        messages(&errs),
        vec!["b: Invalid value: \"null\": b in body must be of type string: \"null\""]
    );
}

#[test]
fn list_types() {
    let s = compile(json!({"type": "object", "properties": {
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["port", "protocol"],
                  "items": {"type": "object", "properties": {
                      "port": {"type": "integer"}, "protocol": {"type": "string"}}}}
    }}));
    let errs = s.validate(
        &json!({"tags": ["a", "b", "a"],
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"},
                          {"port": 80, "protocol": "TCP"}]}),
        None,
    );
    assert_eq!(
        messages(&errs),
        vec![
            "tags[2]: Duplicate value: \"a\"",
            "ports[2]: Duplicate value: map[string]interface {}{\"port\":80, \"protocol\":\"TCP\"}",
        ]
    );
    assert!(errs.iter().all(|c| c.reason == "FieldValueDuplicate"));
    let bad = Schema::compile(&json!({"type": "object", "properties": {
        "l": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}}
    }}))
    .unwrap_err();
    assert_eq!(
        messages(&bad),
        vec!["properties[l].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"]
    );
}

fn cel_schema() -> Schema {
    compile(json!({"type": "object", "properties": {
        "spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "!has(self.name) || self.name.startsWith('app-')",
                 "messageExpression": "'name ' + self.name + ' must start with app-'"},
                {"rule": "self.items.all(i, i.size() < 4)", "fieldPath": ".items",
                 "reason": "FieldValueForbidden"},
                {"rule": "self.min == oldSelf.min", "message": "min is immutable"}
            ],
            "properties": {
                "min": {"type": "integer"}, "max": {"type": "integer"},
                "name": {"type": "string"},
                "items": {"type": "array", "items": {"type": "string",
                    "x-kubernetes-validations": [{"rule": "self != 'bad'"}]}}
            }}
    }}))
}

#[test]
fn cel_rules() {
    let s = cel_schema();
    let good = json!({"spec": {"min": 1, "max": 2, "name": "app-x", "items": ["a"]}});
    assert!(s.validate(&good, None).is_empty());
    let bad = json!({"spec": {"min": 3, "max": 2, "name": "web", "items": ["abcd", "bad"]}});
    let errs = s.validate(&bad, None);
    assert_eq!(
        messages(&errs),
        vec![
            "spec: Invalid value: \"object\": min must not exceed max",
            "spec: Invalid value: \"object\": name web must start with app-",
            "spec.items: Forbidden: failed rule: self.items.all(i, i.size() < 4)",
            "spec.items[1]: Invalid value: \"string\": failed rule: self != 'bad'",
        ]
    );
}

#[test]
fn cel_transition_rules() {
    let s = cel_schema();
    let new = json!({"spec": {"min": 2, "max": 5, "items": []}});
    assert!(
        s.validate(&new, None).is_empty(),
        "create skips oldSelf rules"
    );
    let old = json!({"spec": {"min": 1, "max": 5, "items": []}});
    assert_eq!(
        messages(&s.validate(&new, Some(&old))),
        vec!["spec: Invalid value: \"object\": min is immutable"]
    );
    assert!(s.validate(&new, Some(&new)).is_empty());
}

#[test]
fn ratcheting_on_update() {
    let s = value_schema();
    let old = json!({"spec": {"name": "abc", "replicas": 50}});
    let errs = s.validate(&old, None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let same = json!({"spec": {"name": "abd", "replicas": 50}});
    assert!(s.validate(&same, Some(&old)).is_empty());
    let changed = json!({"spec": {"name": "abc", "replicas": 51}});
    assert_eq!(s.validate(&changed, Some(&old)).len(), 1);
    let c = cel_schema();
    let bad = json!({"spec": {"min": 3, "max": 2, "items": []}});
    assert!(c.validate(&bad, Some(&bad)).is_empty());
}

#[test]
fn cel_evaluation_error_is_a_cause() {
    let s = compile(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.missing > 1"}],
        "properties": {"a": {"type": "integer"}}}}}),
    );
    let errs = s.validate(&json!({"spec": {"a": 1}}), None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert!(
        errs[0].message.starts_with("Invalid value: \"object\": ")
            && errs[0]
                .message
                .ends_with("evaluating rule: self.missing > 1"),
        "{}",
        errs[0].message
    );
}

#[test]
fn cel_compile_failure() {
    let errs = Schema::compile(
        &json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.a >"}]}}}),
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].field,
        "properties[spec].x-kubernetes-validations[0].rule"
    );
    assert!(
        errs[0].message.starts_with(
            "Invalid value: apiextensions.ValidationRule{Rule:\"self.a >\", Message:\"\""
        ),
        "{}",
        errs[0].message
    );
    assert!(errs[0].message.contains(": compilation failed: "));
}

#[test]
fn cel_functions() {
    let s = compile(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.tags.exists(t, t == 'a') && self.tags.exists_one(t, t == 'b')"},
            {"rule": "self.tags.map(t, t + 'x').filter(t, t.endsWith('x')).size() == 2"},
            {"rule": "self.name.matches('^[a-z]+$') && self.name.contains('b')"},
            {"rule": "int(self.n) + 1 == 3 && string(self.n) == '2' && self.ratio * 2.0 == 1.0"}
        ],
        "properties": {"tags": {"type": "array", "items": {"type": "string"}},
                       "name": {"type": "string"}, "n": {"type": "integer"},
                       "ratio": {"type": "number"}}}}}),
    );
    let obj = json!({"spec": {"tags": ["a", "b"], "name": "abc", "n": 2, "ratio": 0.5}});
    let errs = s.validate(&obj, None);
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn junctors() {
    let s = compile(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "not": {"required": ["c"]}}}}),
    );
    assert!(s.validate(&json!({"spec": {"a": "x"}}), None).is_empty());
    let errs = s.validate(&json!({"spec": {"a": "x", "b": "y"}}), None);
    assert_eq!(
        messages(&errs),
        vec!["Invalid value: \"\": \"spec\" must validate one and only one schema (oneOf). Found 2 valid alternatives"]
    );
    let errs = s.validate(&json!({"spec": {"c": 1}}), None);
    let got = messages(&errs);
    assert!(
        got.contains(
            &"Invalid value: \"\": \"spec\" must not validate the schema (not)".to_string()
        ),
        "{got:?}"
    );
}

#[test]
fn cel_runtime_error_wording() {
    let s = compile(json!({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.missing > 1"}, {"rule": "self.a + 1 > 'x'"}],
        "properties": {"a": {"type": "integer"}}}));
    assert_eq!(
        messages(&s.validate(&json!({"a": 1}), None)),
        vec![
            "Invalid value: \"object\": no such key: missing evaluating rule: self.missing > 1",
            "Invalid value: \"object\": 'no such overload': call arguments did not match a supported operator, function or macro signature for rule: self.a + 1 > 'x'",
        ]
    );
}

#[test]
fn cel_skipped_when_shape_is_wrong() {
    let s = cel_schema();
    let errs = s.validate(
        &json!({"spec": {"min": "one", "max": 2, "items": []}}),
        None,
    );
    assert_eq!(
        messages(&errs),
        vec![
            "spec.min: Invalid value: \"string\": spec.min in body must be of type integer: \"string\"",
            "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn bad_defaults_rejected() {
    let errs = Schema::compile(&json!({"type": "object", "properties": {
        "replicas": {"type": "integer", "default": "three"},
        "spec": {"type": "object", "default": {"bogus": 1}, "properties": {"a": {"type": "string"}}}
    }}))
    .unwrap_err();
    assert_eq!(
        messages(&errs),
        vec![
            "properties[replicas].default: Invalid value: \"string\":  in body must be of type integer: \"string\"",
            "properties[spec].default: Invalid value: map[string]interface {}{\"bogus\":1}: must not have unknown fields, got: [bogus]",
        ]
    );
}
