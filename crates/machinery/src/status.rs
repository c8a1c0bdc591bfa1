//! Typed API failures and their `Status` encoding, with upstream's codes and reasons.

use serde_json::{json, Map, Value};

/// One field-level problem, as carried in `Status.details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    pub message: String,
    /// JSON path of the field, e.g. `metadata.name`.
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl AsRef<str>,
    ) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {}", detail.as_ref()),
            field: field.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", detail.into()),
            field: field.into(),
        }
    }

    pub fn not_supported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: &[&str],
    ) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{value}\": supported values: {}",
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: \"{value}\""),
            field: field.into(),
        }
    }

    /// Renders as upstream does in the aggregated message: `field: message`.
    pub fn describe(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// A failed API request. Every variant maps to one HTTP code and `Status.reason`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{} \"{name}\" not found", qualified(.group, .resource))]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    /// A path or kind the server does not serve.
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{} \"{name}\" already exists", qualified(.group, .resource))]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {message}", qualified(.group, .resource))]
    Conflict {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    /// An apply whose fields are owned by other managers (server-side apply).
    #[error("{message}")]
    ApplyConflict {
        group: String,
        resource: String,
        name: String,
        message: String,
        causes: Vec<Cause>,
    },
    #[error("{message}")]
    Gone { message: String },
    /// A continue token whose revision was compacted; `continue_token` goes on from the
    /// latest revision (sent in the Status's `metadata.continue`, as upstream).
    #[error("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")]
    ContinueExpired { continue_token: String },
    #[error("{} \"{name}\" is invalid: {}", qualified(.group, .kind), describe_causes(causes))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf")]
    UnsupportedMediaType { content_type: String },
    #[error("the server could not provide the requested media type")]
    NotAcceptable,
    /// 413, in upstream's words: `Request entity too large: limit is 3145728`.
    #[error("Request entity too large: {message}")]
    RequestEntityTooLarge { message: String },
    #[error("{message}")]
    UnprocessableEntity { message: String },
    #[error("Internal error occurred: {message}")]
    Internal { message: String },
    #[error("{message}")]
    ServiceUnavailable { message: String },
    #[error("Timeout: {message}")]
    Timeout { message: String },
    /// A refusal whose code and reason come from elsewhere (an admission webhook's answer).
    #[error("{message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            message: message.to_string(),
        }
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::AlreadyExists {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    pub fn conflict(group: &str, resource: &str, name: &str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        ApiError::Invalid {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            causes,
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            message: message.into(),
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::NotAcceptable => 406,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Gone { .. } | ApiError::ContinueExpired { .. } => 410,
            ApiError::RequestEntityTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Invalid { .. } | ApiError::UnprocessableEntity { .. } => 422,
            ApiError::Internal { .. } => 500,
            ApiError::ServiceUnavailable { .. } => 503,
            ApiError::Timeout { .. } => 504,
            ApiError::Status { code, .. } => *code,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable => "NotAcceptable",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Gone { .. } | ApiError::ContinueExpired { .. } => "Expired",
            ApiError::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::UnprocessableEntity { .. } => "Invalid",
            ApiError::Internal { .. } => "InternalError",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::Timeout { .. } => "Timeout",
            ApiError::Status { reason, .. } => reason,
        }
    }

    /// The `metav1.Status` object for this error, its fields in the order upstream's encoder
    /// writes them (clients and their tests compare error bodies byte for byte).
    pub fn to_status(&self) -> Value {
        let details = match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => Some(details(name, group, resource, &[])),
            ApiError::ApplyConflict {
                group,
                resource,
                name,
                causes,
                ..
            } => Some(details(name, group, resource, causes)),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(details(name, group, kind, causes)),
            _ => None,
        };
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        let meta = match self {
            ApiError::ContinueExpired { continue_token } => json!({"continue": continue_token}),
            _ => json!({}),
        };
        status.insert("metadata".into(), meta);
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.to_string()));
        status.insert("reason".into(), json!(self.reason()));
        if let Some(d) = details {
            status.insert("details".into(), d);
        }
        status.insert("code".into(), json!(self.code()));
        Value::Object(status)
    }
}

/// One cause as is; several in brackets, as upstream's aggregate errors print.
fn describe_causes(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(Cause::describe).collect();
    if parts.len() == 1 {
        parts.join("")
    } else {
        format!("[{}]", parts.join(", "))
    }
}

/// `resource.group` (or `Kind.group`), or just `resource` for the core group, as upstream
/// prints it.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// `StatusDetails`: name, group, kind, causes, each omitted when empty (all `omitempty`).
fn details(name: &str, group: &str, kind: &str, causes: &[Cause]) -> Value {
    let mut d = Map::new();
    for (k, v) in [("name", name), ("group", group), ("kind", kind)] {
        if !v.is_empty() {
            d.insert(k.into(), json!(v));
        }
    }
    if !causes.is_empty() {
        d.insert(
            "causes".into(),
            causes
                .iter()
                .map(|c| {
                    let mut m = Map::new();
                    m.insert("reason".into(), json!(c.reason));
                    m.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect(),
        );
    }
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_carries_causes() {
        let e = ApiError::invalid(
            "",
            "Pod",
            "Bad_Name",
            vec![Cause::invalid(
                "metadata.name",
                "Bad_Name",
                "must be lowercase",
            )],
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert!(s["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value"));
    }

    /// Byte for byte what kube-apiserver answers for a second create of a ConfigMap, and
    /// for an invalid Deployment (field order, no empty `group`, `Kind.group` in messages).
    #[test]
    fn status_bodies_match_upstream_bytes() {
        let e = ApiError::already_exists("", "configmaps", "x");
        assert_eq!(
            serde_json::to_string(&e.to_status()).unwrap_or_default(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"x\" already exists","reason":"AlreadyExists","details":{"name":"x","kind":"configmaps"},"code":409}"#
        );
        let e = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![Cause::required("spec.selector")],
        );
        assert_eq!(
            serde_json::to_string(&e.to_status()).unwrap_or_default(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Deployment.apps \"web\" is invalid: spec.selector: Required value","reason":"Invalid","details":{"name":"web","group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.selector"}]},"code":422}"#
        );
    }

    #[test]
    fn not_found_message_matches_upstream() {
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.to_string(), "deployments.apps \"web\" not found");
        assert_eq!(e.code(), 404);
    }
}
