//! One version's `openAPIV3Schema`, compiled: structural checks and CEL compilation up
//! front, then pruning, defaulting and validation of objects against it.

mod celwalk;
mod defaultcheck;
mod defaults;
mod listtype;
mod nested;
mod node;
mod openapi;
mod prune;
mod rules;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use krust_machinery::Cause;
use serde_json::Value;

use node::{Level, Node};

/// A compiled structural schema. Cloning is cheap (shared), and it is `Send + Sync` so the
/// server can keep one per served version.
#[derive(Clone)]
pub struct Schema {
    inner: Arc<Inner>,
}

struct Inner {
    raw: Value,
    root: Node,
    validator: jsonschema::Validator,
    /// Whether any node has CEL rules (upstream only runs its CEL validator then).
    has_rules: bool,
}

/// Causes that keep upstream from running CEL rules: the object's shape is wrong, so
/// rules would only report noise.
const BLOCKING: [&str; 5] = [
    "FieldValueNotSupported",
    "FieldValueRequired",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueTypeInvalid",
];

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("openapi", &self.inner.raw)
            .finish()
    }
}

impl Schema {
    /// Compiles `openAPIV3Schema`. Causes carry paths relative to the schema
    /// (`properties[spec].type`); the caller prefixes where the schema sits.
    pub fn compile(openapi_v3_schema: &Value) -> Result<Schema, Vec<Cause>> {
        let mut errs = Vec::new();
        let root = node::parse(openapi_v3_schema, "", Level::Root, &mut errs);
        if !errs.is_empty() {
            // Upstream sorts structural errors by their text, for stable output.
            errs.sort_by_key(|c| c.describe());
            return Err(errs);
        }
        let validator = openapi::build(openapi_v3_schema)
            .map_err(|e| vec![Cause::invalid("", "openAPIV3Schema", e)])?;
        Ok(Schema {
            inner: Arc::new(Inner {
                raw: openapi_v3_schema.clone(),
                has_rules: root.has_rules(),
                root,
                validator,
            }),
        })
    }

    /// The schema as it was given.
    pub fn openapi(&self) -> &Value {
        &self.inner.raw
    }

    /// Drops fields the schema does not describe, returning their dotted paths
    /// (`spec.bogus`) for `unknown field` warnings. `apiVersion`, `kind` and `metadata` at
    /// the root are left alone.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut out = Vec::new();
        prune::prune(&self.inner.root, obj, "", true, &mut out);
        out
    }

    /// Applies `default`s where properties are absent (or null while not nullable).
    pub fn apply_defaults(&self, obj: &mut Value) {
        defaults::apply(&self.inner.root, obj);
    }

    /// Validates the whole object: OpenAPI value validations, list types, then CEL rules
    /// (transition rules only when `old` is given). On updates, failures on values equal
    /// to their old values are ratcheted away, as upstream does.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut errs = openapi::validate(&self.inner.validator, obj, old);
        listtype::validate(&self.inner.root, obj, "", &mut errs);
        if !self.inner.has_rules {
            return errs;
        }
        if errs.iter().any(|c| BLOCKING.contains(&c.reason)) {
            errs.push(Cause {
                reason: "FieldValueInvalid",
                message: "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
                field: String::new(),
            });
            return errs;
        }
        let env = rules::env();
        celwalk::validate(&self.inner.root, obj, old, "", &env, &mut errs);
        errs
    }
}
