//! The AdmissionReview v1 wire format: the request the API server sends and the checks upstream
//! applies to a webhook's answer, with its wording (these strings reach users).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::{Attributes, WebhookError};

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// The AdmissionReview for one call; `uid` ties the answer to it.
pub fn request(attrs: &Attributes, uid: &str) -> Value {
    let kind = json!({"group": attrs.group, "version": attrs.version, "kind": attrs.kind});
    let resource =
        json!({"group": attrs.group, "version": attrs.version, "resource": attrs.resource});
    let mut req = Map::new();
    req.insert("uid".into(), uid.into());
    req.insert("kind".into(), kind.clone());
    req.insert("resource".into(), resource.clone());
    if !attrs.subresource.is_empty() {
        req.insert("subResource".into(), attrs.subresource.clone().into());
    }
    // No equivalent-resource conversion: what was requested is what the webhook sees.
    req.insert("requestKind".into(), kind);
    req.insert("requestResource".into(), resource);
    if !attrs.subresource.is_empty() {
        req.insert(
            "requestSubResource".into(),
            attrs.subresource.clone().into(),
        );
    }
    if !attrs.name.is_empty() {
        req.insert("name".into(), attrs.name.clone().into());
    }
    if let Some(ns) = attrs.namespace.as_ref().filter(|n| !n.is_empty()) {
        req.insert("namespace".into(), ns.clone().into());
    }
    req.insert("operation".into(), attrs.operation.as_str().into());
    req.insert("userInfo".into(), user_info(attrs));
    req.insert("object".into(), attrs.object.clone().unwrap_or(Value::Null));
    req.insert(
        "oldObject".into(),
        attrs.old_object.clone().unwrap_or(Value::Null),
    );
    req.insert("dryRun".into(), attrs.dry_run.into());
    req.insert(
        "options".into(),
        attrs.options.clone().unwrap_or(Value::Null),
    );
    json!({"apiVersion": API_VERSION, "kind": KIND, "request": Value::Object(req)})
}

/// authentication/v1 UserInfo; empty fields are left out, as Go's omitempty does.
fn user_info(attrs: &Attributes) -> Value {
    let u = &attrs.user;
    let mut out = Map::new();
    if !u.username.is_empty() {
        out.insert("username".into(), u.username.clone().into());
    }
    if !u.uid.is_empty() {
        out.insert("uid".into(), u.uid.clone().into());
    }
    if !u.groups.is_empty() {
        out.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        out.insert("extra".into(), json!(u.extra));
    }
    Value::Object(out)
}

/// The parts of a verified answer that admission uses.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub allowed: bool,
    /// Decoded `patch` bytes with its `patchType` (mutating webhooks only).
    pub patch: Option<(String, Vec<u8>)>,
    /// The metav1.Status of a denial.
    pub status: Option<Value>,
    pub warnings: Vec<String>,
}

/// Upstream's VerifyAdmissionResponse: the answer must be an AdmissionReview v1 for our uid;
/// patches come only from mutating webhooks and only with their type. Errors are the reason
/// text that follows `received invalid webhook response: `.
pub fn verify(uid: &str, mutating: bool, review: &Value) -> Result<Response, String> {
    let Some(resp) = review.get("response").filter(|r| r.is_object()) else {
        return Err("webhook response was absent".into());
    };
    let got_uid = resp.get("uid").and_then(Value::as_str).unwrap_or_default();
    if got_uid != uid {
        return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
    }
    let api_version = str_at(review, "apiVersion");
    let kind = str_at(review, "kind");
    if api_version != API_VERSION || kind != KIND {
        return Err(format!(
            "expected webhook response of {API_VERSION}, Kind={KIND}, got {api_version}, Kind={kind}"
        ));
    }
    let patch = resp
        .get("patch")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let patch_type = resp.get("patchType").and_then(Value::as_str);
    let patch = if mutating {
        match (patch.is_empty(), patch_type) {
            (false, None) => {
                return Err("webhook returned response.patch but not response.patchType".into())
            }
            (true, Some(_)) => {
                return Err("webhook returned response.patchType but not response.patch".into())
            }
            (_, Some("")) => {
                return Err("webhook returned invalid response.patchType of \"\"".into())
            }
            (true, None) => None,
            (false, Some(t)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .map_err(|e| format!("illegal base64 data in response.patch: {e}"))?;
                Some((t.to_string(), bytes))
            }
        }
    } else {
        if !patch.is_empty() {
            return Err("validating webhook may not return response.patch".into());
        }
        if patch_type.is_some() {
            return Err("validating webhook may not return response.patchType".into());
        }
        None
    };
    let warnings = resp
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    Ok(Response {
        allowed: resp
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        patch,
        status: resp.get("status").filter(|s| s.is_object()).cloned(),
        warnings,
    })
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Upstream's ToStatusErr: the webhook's own status, its message prefixed with who denied.
pub fn denial(webhook: &str, status: Option<&Value>) -> WebhookError {
    let empty = Value::Null;
    let status = status.unwrap_or(&empty);
    let denied_by = format!("admission webhook {webhook:?} denied the request");
    let message = str_at(status, "message");
    let reason = str_at(status, "reason");
    let message = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..600).contains(c))
        .unwrap_or(403);
    let reason = if reason.is_empty() {
        reason_for(code).to_string()
    } else {
        reason.to_string()
    };
    WebhookError::Denied {
        code,
        reason,
        message,
    }
}

/// The metav1.StatusReason the API server pairs with a code, for a status without one.
fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Forbidden",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verify_checks_uid_kind_and_patches() {
        let ok = |resp: Value| json!({"apiVersion": API_VERSION, "kind": KIND, "response": resp});
        assert_eq!(
            verify("a", false, &json!({})).unwrap_err(),
            "webhook response was absent"
        );
        assert_eq!(
            verify("a", false, &ok(json!({"uid": "b"}))).unwrap_err(),
            "expected response.uid=\"a\", got \"b\""
        );
        assert_eq!(
            verify("a", false, &json!({"response": {"uid": "a"}})).unwrap_err(),
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got , Kind="
        );
        let with_patch =
            ok(json!({"uid": "a", "allowed": true, "patch": "W10=", "patchType": "JSONPatch"}));
        assert_eq!(
            verify("a", false, &with_patch).unwrap_err(),
            "validating webhook may not return response.patch"
        );
        let r = verify("a", true, &with_patch).unwrap();
        assert_eq!(r.patch, Some(("JSONPatch".into(), b"[]".to_vec())));
        assert!(r.allowed);
        assert_eq!(
            verify("a", true, &ok(json!({"uid": "a", "patch": "W10="}))).unwrap_err(),
            "webhook returned response.patch but not response.patchType"
        );
    }

    #[test]
    fn denial_wording() {
        let d = denial(
            "h.example.com",
            Some(&json!({"message": "no", "reason": "Nope", "code": 422})),
        );
        assert_eq!(
            d,
            WebhookError::Denied {
                code: 422,
                reason: "Nope".into(),
                message: "admission webhook \"h.example.com\" denied the request: no".into()
            }
        );
        let d = denial("h", None);
        assert_eq!(
            d,
            WebhookError::Denied {
                code: 403,
                reason: "Forbidden".into(),
                message: "admission webhook \"h\" denied the request without explanation".into()
            }
        );
    }
}
