//! Patches and field management, as the Kubernetes API server does them.
//!
//! The API server picks the patch type from the request's Content-Type
//! ([`PatchType::from_content_type`]), then:
//!
//! - `json-patch+json`, `merge-patch+json`, `strategic-merge-patch+json`: [`patch_object`]
//!   turns the live object and the body into the patched object (RFC 6902, RFC 7386 and
//!   upstream's strategic merge patch, with `$patch`, `$retainKeys`, `$setElementOrder/…` and
//!   `$deleteFromPrimitiveList/…` directives, as `kubectl apply` (client-side) sends them).
//! - `apply-patch+yaml` (or `+json`): [`decode_apply_body`] then [`apply`] (server-side apply):
//!   merges the applied configuration into the live object, maintains
//!   `metadata.managedFields` and reports conflicts with other managers.
//! - every other write (create, update, non-apply patch): [`update_managed_fields`] records
//!   what the writer changed in `metadata.managedFields`.
//!
//! Every failure is a [`PatchError`]; [`PatchError::to_api_error`] gives the `Status` the
//! server answers with (400, 409, 415 or 422).
//!
//! Write order for the API server: patch (or apply) the live object, then for non-apply
//! writes call [`update_managed_fields`] with the stored object and the object about to be
//! stored (`apply` already maintains them), then default, validate and store. Times are
//! RFC 3339 strings supplied by the caller. Subresource writes use the `_subresource`
//! variants (`"status"`: only `status` is recorded; main-resource writes never record
//! `status` for kinds with a status subresource). Objects returned keep `status` as merged:
//! resetting it on main-resource writes is the server's (strategy's) job, as upstream.
//!
//! Merge rules (list merge keys, list types, atomic maps) come from [`facts`], a table written
//! from the Kubernetes API conventions for the built-in kinds, consulted through the kind's
//! OpenAPI schema by [`schema`].

mod apply;
pub mod facts;
pub mod fieldpath;
mod json;
mod managed;
pub mod schema;
mod strategic;
mod typed;

#[cfg(test)]
mod scenarios;

use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::status::{ApiError, Cause};

pub use apply::{
    apply, apply_subresource, update_managed_fields, update_managed_fields_in_place,
    update_managed_fields_subresource,
};
pub use json::{json_merge_patch, json_patch};
pub use strategic::strategic_merge_patch;

/// The patch formats the API server accepts, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (or `+json`): server-side apply.
    Apply,
}

/// The media types listed when a patch type is refused, as upstream lists them.
const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, \
                        application/strategic-merge-patch+json, application/apply-patch+yaml";

impl PatchType {
    /// The patch type of a request's Content-Type; parameters (`; charset=utf-8`) are ignored.
    pub fn from_content_type(content_type: &str) -> Result<PatchType, PatchError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(PatchError::Unsupported {
                content_type: content_type.to_string(),
            }),
        }
    }

    /// The canonical media type.
    pub fn media_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// One field that another manager owns and an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager's name, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the other manager wrote with (shown for `Update` managers).
    pub api_version: String,
    /// The subresource the other manager wrote through, empty for the main resource.
    pub subresource: String,
    /// The field, in upstream's path syntax: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

impl ApplyConflict {
    /// The manager as upstream prints it: `"kubectl"`, or `"mgr" using apps/v1` for an
    /// `Update` manager, with ` with subresource "status"` when it wrote a subresource.
    pub fn describe_manager(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// A failed patch or apply. Each variant maps to one HTTP status.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document is malformed (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well-formed but cannot be applied to this object, e.g. a JSON patch
    /// `test` that fails or a path that does not exist (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The patch is larger than upstream allows, e.g. too many JSON patch operations (413).
    #[error("{0}")]
    TooLarge(String),
    /// Server-side apply would change fields owned by other managers (409 Conflict).
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<ApplyConflict>),
    /// The Content-Type is not a patch type we accept (415).
    #[error("the body of the request was in an unknown format - accepted media types include: {ACCEPTED}")]
    Unsupported { content_type: String },
}

/// Upstream's message: one conflict on one line, several grouped by manager.
fn conflict_message(conflicts: &[ApplyConflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.describe_manager(),
            only.field
        );
    }
    let mut managers: Vec<String> = conflicts
        .iter()
        .map(ApplyConflict::describe_manager)
        .collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| &c.describe_manager() == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

impl PatchError {
    pub fn code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::TooLarge(_) => 413,
            PatchError::Conflict(_) => 409,
            PatchError::Unsupported { .. } => 415,
        }
    }

    /// The `Status.details.causes` of a conflict: one `FieldManagerConflict` per field.
    pub fn causes(&self) -> Vec<Cause> {
        match self {
            PatchError::Conflict(conflicts) => conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict",
                    message: format!("conflict with {}", c.describe_manager()),
                    field: c.field.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The API error for a patch of object `name` of resource `info`.
    pub fn to_api_error(&self, info: &ResourceInfo, name: &str) -> ApiError {
        match self {
            PatchError::BadRequest(m) => ApiError::bad_request(m.clone()),
            PatchError::Unprocessable(m) => ApiError::UnprocessableEntity { message: m.clone() },
            PatchError::TooLarge(m) => ApiError::RequestEntityTooLarge { message: m.clone() },
            PatchError::Conflict(_) => ApiError::ApplyConflict {
                group: info.group.to_string(),
                resource: info.plural.to_string(),
                name: name.to_string(),
                message: self.to_string(),
                causes: self.causes(),
            },
            PatchError::Unsupported { content_type } => ApiError::UnsupportedMediaType {
                content_type: content_type.clone(),
            },
        }
    }
}

/// Applies a JSON, merge or strategic merge patch `body` to `original` (the live object).
/// Apply patches go through [`apply`], which needs the field manager.
pub fn patch_object(
    info: &ResourceInfo,
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => json_patch(original, body),
        PatchType::Merge => json_merge_patch(original, body),
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| {
                PatchError::BadRequest(format!("error decoding strategic merge patch: {e}"))
            })?;
            let tree = schema::type_tree(info);
            strategic_merge_patch(tree.root(), original, &patch)
        }
        PatchType::Apply => Err(PatchError::BadRequest(
            "apply patches are applied with a field manager".into(),
        )),
    }
}

/// Decodes a server-side apply body: YAML, or JSON (which is also YAML). Must be an object.
pub fn decode_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| PatchError::BadRequest(format!("error decoding JSON: {e}")))?
    } else {
        serde_yaml::from_str(text)
            .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?
    };
    if !value.is_object() {
        return Err(PatchError::BadRequest(
            "the apply configuration must be an object".into(),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    #[test]
    fn patch_type_from_content_type() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Ok(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("Application/Strategic-Merge-Patch+JSON"),
            Ok(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Ok(PatchType::Apply)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+json"),
            Ok(PatchType::Apply)
        );
        for bad in [
            "application/apply-patch+cbor",
            "application/json",
            "text/plain",
            "",
        ] {
            let err = PatchType::from_content_type(bad).expect_err(bad);
            assert_eq!(err.code(), 415, "{bad}");
            assert!(err.to_string().contains("application/apply-patch+yaml"));
        }
        assert_eq!(
            PatchType::Strategic.media_type(),
            "application/strategic-merge-patch+json"
        );
    }

    fn conflict(manager: &str, operation: &str, field: &str) -> ApplyConflict {
        ApplyConflict {
            manager: manager.into(),
            operation: operation.into(),
            api_version: "apps/v1".into(),
            subresource: String::new(),
            field: field.into(),
        }
    }

    #[test]
    fn conflict_messages_match_upstream_shape() {
        let one = PatchError::Conflict(vec![conflict(
            "kubectl-client-side-apply",
            "Update",
            ".spec.replicas",
        )]);
        assert_eq!(
            one.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let causes = one.causes();
        assert_eq!(causes[0].reason, "FieldManagerConflict");
        assert_eq!(
            causes[0].message,
            "conflict with \"kubectl-client-side-apply\" using apps/v1"
        );
        assert_eq!(causes[0].field, ".spec.replicas");

        let two = PatchError::Conflict(vec![
            conflict("kubectl", "Apply", ".spec.replicas"),
            conflict("kubectl", "Apply", ".spec.paused"),
        ]);
        assert_eq!(
            two.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .spec.replicas\n- .spec.paused"
        );

        let r = Registry::builtin();
        let deploy = r.by_kind("apps/v1", "Deployment").expect("deployments");
        let api = one.to_api_error(deploy, "web");
        assert_eq!(api.code(), 409);
        let status = api.to_status();
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");
        assert_eq!(
            PatchError::BadRequest("x".into())
                .to_api_error(deploy, "web")
                .code(),
            400
        );
        assert_eq!(
            PatchError::Unprocessable("x".into())
                .to_api_error(deploy, "web")
                .code(),
            422
        );
        assert_eq!(
            PatchError::Unsupported {
                content_type: "a/b".into()
            }
            .to_api_error(deploy, "web")
            .code(),
            415
        );
    }

    #[test]
    fn apply_body_accepts_yaml_and_json() {
        let y = decode_apply_body(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
        )
        .expect("yaml");
        assert_eq!(y["data"]["k"], "v");
        let j =
            decode_apply_body(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#)
                .expect("json");
        assert_eq!(j["metadata"]["name"], "a");
        assert_eq!(
            decode_apply_body(b"- a\n- b\n").map_err(|e| e.code()),
            Err(400)
        );
        assert_eq!(decode_apply_body(b"a: [").map_err(|e| e.code()), Err(400));
        assert_eq!(
            decode_apply_body(&[0xff, 0xfe]).map_err(|e| e.code()),
            Err(400)
        );
    }

    #[test]
    fn patch_object_dispatches() {
        let r = Registry::builtin();
        let cm = r.lookup("", "v1", "configmaps").expect("configmaps");
        let live = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let out = patch_object(
            cm,
            PatchType::Merge,
            &live,
            br#"{"data":{"k":null,"n":"1"}}"#,
        )
        .expect("merge");
        assert_eq!(out["data"], serde_json::json!({"n": "1"}));
        let out = patch_object(
            cm,
            PatchType::Json,
            &live,
            br#"[{"op":"add","path":"/data/x","value":"y"}]"#,
        )
        .expect("json");
        assert_eq!(out["data"]["x"], "y");
        let out =
            patch_object(cm, PatchType::Strategic, &live, br#"{"data":{"k":"w"}}"#).expect("smp");
        assert_eq!(out["data"]["k"], "w");
        assert_eq!(
            patch_object(cm, PatchType::Strategic, &live, b"{").map_err(|e| e.code()),
            Err(400)
        );
        assert_eq!(
            patch_object(cm, PatchType::Apply, &live, b"{}").map_err(|e| e.code()),
            Err(400)
        );
    }
}
