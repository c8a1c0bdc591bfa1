//! Continue tokens of paged lists, as upstream's `storage.EncodeContinue`/`DecodeContinue`:
//! base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}`, decoded strictly (the key
//! comes from the client), and the errors a continued page answers with.

use krust_machinery::ApiError;
use krust_store::{Revision, StoreError};
use serde_json::{json, Map, Value};

/// Continue tokens: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}` as upstream.
pub fn encode_continue(key: &str, rv: Revision) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": key});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

/// A continue token back into its start key and revision, refusing what upstream's
/// `DecodeContinue` refuses, in its words: an unknown version, revision 0, an empty start
/// key, and a key that path cleaning would change (no climbing out of the prefix with `..`).
pub fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    use base64::Engine;
    let invalid = "continue key is not valid";
    let bad = |why: &str| ApiError::bad_request(format!("{invalid}{why}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|e| bad(&format!(": {e}")))?;
    let v: Map<String, Value> = serde_json::from_slice(&raw).map_err(|e| bad(&format!(": {e}")))?;
    match v.get("v").and_then(Value::as_str) {
        Some("meta.k8s.io/v1") => {}
        other => {
            return Err(bad(&format!(
                ": server does not recognize this encoded version {}",
                other.unwrap_or_default()
            )))
        }
    }
    let rv = match v.get("rv").and_then(Value::as_i64) {
        Some(rv) if rv != 0 => rv,
        _ => {
            return Err(bad(
                ": incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ))
        }
    };
    let key = match v.get("start").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => k,
        _ => return Err(bad(": encoded start key empty (version meta.k8s.io/v1)")),
    };
    if !is_clean_path(key) {
        return Err(bad(&format!(": {key}")));
    }
    Ok((key.to_string(), rv))
}

/// Whether Go's `path.Clean` leaves `key` as it is, for an absolute key: no empty, `.` or
/// `..` segment and no trailing slash.
fn is_clean_path(key: &str) -> bool {
    match key.strip_prefix('/') {
        Some("") => true,
        Some(rest) => rest
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."),
        None => false,
    }
}

/// A continued list's store error: a compacted revision is upstream's 410 for an expired
/// continue token, carrying a token that goes on at the latest revision.
pub(crate) fn continue_err(e: StoreError, key: &str, at: Revision) -> ApiError {
    match e {
        StoreError::Compacted { .. } => ApiError::ContinueExpired {
            continue_token: encode_continue(key, -1),
        },
        StoreError::FutureRevision { current, .. } => ApiError::Timeout {
            message: format!("Too large resource version: {at}, current: {current}"),
        },
        StoreError::Unavailable(m) => ApiError::ServiceUnavailable { message: m },
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(v: Value) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
    }

    #[test]
    fn continue_tokens_round_trip_and_refuse_what_upstream_refuses() {
        let key = "/registry/configmaps/default/c-0499";
        assert_eq!(
            decode_continue(&encode_continue(key, 42)).expect("decodes"),
            (key.to_string(), 42)
        );
        // The token of a 410 goes on from the latest revision.
        assert_eq!(
            decode_continue(&encode_continue(key, -1)).expect("-1").1,
            -1
        );
        let msg = |t: &str| decode_continue(t).expect_err("refused").to_string();
        assert_eq!(
            msg(&token(json!({"v": "meta.k8s.io/v1", "rv": 0, "start": key}))),
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&token(json!({"v": "meta.k8s.io/v1", "rv": 3, "start": ""}))),
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&token(json!({"v": "v9", "rv": 3, "start": key}))),
            "continue key is not valid: server does not recognize this encoded version v9"
        );
        for k in [
            "/registry/configmaps/default/../../secrets/kube-system/x",
            "/registry//configmaps",
            "/registry/configmaps/./x",
            "/registry/configmaps/",
            "registry/configmaps/x",
        ] {
            let t = token(json!({"v": "meta.k8s.io/v1", "rv": 3, "start": k}));
            assert_eq!(msg(&t), format!("continue key is not valid: {k}"));
        }
        assert!(msg("%%%").starts_with("continue key is not valid: "));
        assert!(msg(&token(json!([1]))).starts_with("continue key is not valid: "));
    }
}
