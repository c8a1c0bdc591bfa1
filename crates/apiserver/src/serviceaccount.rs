//! The API server's side of service account tokens (keys and claims are `token`'s):
//!
//! - `serviceaccounts/<name>/token` (TokenRequest), as upstream's
//!   `pkg/registry/core/serviceaccount/storage/token.go`: a token for the ServiceAccount,
//!   optionally bound to a Pod or Secret of its namespace;
//! - bearer-token authentication (bootstrap tokens are `bootstraptoken`'s): a token is good while its signature, times and audience
//!   are, and the objects it names still exist with the uids it names;
//! - the identity endpoints that need no storage: `authentication.k8s.io/v1`
//!   SelfSubjectReview (`kubectl auth whoami`) and TokenReview, and the issuer's
//!   `/.well-known/openid-configuration` and `/openid/v1/jwks`.

use bytes::Bytes;
use http::{HeaderMap, Method};
use krust_machinery::{ApiError, Cause};
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::request::ResourcePath;
use crate::rest::Reply;
use crate::server::{decode_body, ApiServer};
use crate::token::{self, Claims, ObjectClaim, TokenError};

const AUTHN: &str = "authentication.k8s.io/v1";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn uid_of(obj: &Value) -> String {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `authentication.k8s.io/v1` UserInfo; uid and extra only when set (`omitempty`).
fn user_info(id: &Identity) -> Value {
    let mut v = json!({"username": id.user});
    if !id.uid.is_empty() {
        v["uid"] = json!(id.uid);
    }
    v["groups"] = json!(id.groups);
    if !id.extra.is_empty() {
        v["extra"] = json!(id.extra);
    }
    v
}

impl ApiServer {
    /// A namespaced object of core/v1 `plural`, or `None` when it does not exist.
    pub(crate) async fn core_object(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let info = self
            .registry
            .lookup("", "v1", plural)
            .ok_or(ApiError::NoRoute)?;
        let rp = ResourcePath {
            info: &info,
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            subresource: None,
            legacy_watch: false,
        };
        match self.rest.get(&rp, name).await {
            Ok((obj, _)) => Ok(Some(obj)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks a bearer token: its JWT and the objects it names.
    pub(crate) async fn authenticate_token(
        &self,
        jwt: &str,
        audiences: Option<&[String]>,
    ) -> Result<Claims, TokenError> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or_else(|| TokenError::Stale("service account tokens are not enabled".into()))?;
        let claims = tokens.verify(jwt, audiences.unwrap_or(&tokens.api_audiences))?;
        let k = &claims.kubernetes;
        let lookup = |plural: &'static str, name: Option<String>| async move {
            match name {
                Some(n) => self
                    .core_object(plural, &k.namespace, &n)
                    .await
                    .map_err(|e| TokenError::Stale(format!("looking up {plural}/{n}: {e}"))),
                None => Ok(None),
            }
        };
        let sa = lookup("serviceaccounts", Some(k.serviceaccount.name.clone())).await?;
        let pod = lookup("pods", k.pod.as_ref().map(|p| p.name.clone())).await?;
        let secret = lookup("secrets", k.secret.as_ref().map(|s| s.name.clone())).await?;
        token::check_bound(&claims, sa.as_ref(), pod.as_ref(), secret.as_ref())?;
        Ok(claims)
    }

    /// The identity of a request without a client certificate, from its bearer token: a
    /// bootstrap token (`bootstraptoken`) or a service account token. A token in the
    /// bootstrap format is only ever a bootstrap token.
    pub(crate) async fn bearer_identity(&self, headers: &HeaderMap) -> Option<Identity> {
        let jwt = bearer(headers)?;
        if let Some(token) = krust_machinery::bootstrap::Token::parse(jwt) {
            return match self.bootstrap_identity(&token).await {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::debug!(?token, "bootstrap token refused: {e}");
                    None
                }
            };
        }
        match self.authenticate_token(jwt, None).await {
            Ok(claims) => Some(claims.identity()),
            Err(e) => {
                tracing::debug!("bearer token refused: {e}");
                None
            }
        }
    }

    /// `POST serviceaccounts/<name>/token`.
    pub(crate) async fn token_request(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ct: &str,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let tokens = self.tokens.as_ref().ok_or(ApiError::NoRoute)?;
        let ns = rp.namespace.clone().ok_or(ApiError::NoRoute)?;
        let mut req = decode_body(ct, body)?.value;
        if !req.is_object() {
            return Err(ApiError::bad_request("TokenRequest must be an object"));
        }
        let invalid = |causes: Vec<Cause>| {
            ApiError::invalid("authentication.k8s.io", "TokenRequest", name, causes)
        };
        let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
        let expiration = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => token::DEFAULT_EXPIRATION_SECONDS,
            Some(v) => v.as_i64().ok_or_else(|| {
                invalid(vec![Cause::invalid(
                    "spec.expirationSeconds",
                    v,
                    "must be an integer",
                )])
            })?,
        };
        if expiration < token::MIN_EXPIRATION_SECONDS {
            return Err(invalid(vec![Cause::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 10 minutes",
            )]));
        }
        if expiration > token::MAX_EXPIRATION_SECONDS {
            return Err(invalid(vec![Cause::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration larger than 2^32 seconds",
            )]));
        }
        let audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let sa = self
            .core_object("serviceaccounts", &ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        let mut request = token::Request {
            namespace: ns.clone(),
            service_account: ObjectClaim {
                name: name.to_string(),
                uid: uid_of(&sa),
            },
            audiences,
            expiration_seconds: expiration,
            pod: None,
            secret: None,
        };
        let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
        if let Some(b) = bound {
            let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
            let (kind, bname, buid) = (s("kind"), s("name"), s("uid"));
            let plural = match (s("apiVersion"), kind) {
                ("v1" | "", "Pod") => "pods",
                ("v1" | "", "Secret") => "secrets",
                _ => {
                    return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to object of kind \"{kind}\""
                )))
                }
            };
            if bname.is_empty() {
                return Err(invalid(vec![Cause::required("spec.boundObjectRef.name")]));
            }
            let obj = self
                .core_object(plural, &ns, bname)
                .await?
                .ok_or_else(|| ApiError::not_found("", plural, bname))?;
            let live = uid_of(&obj);
            if !buid.is_empty() && buid != live {
                return Err(ApiError::conflict(
                    "",
                    plural,
                    bname,
                    format!("the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
            let claim = Some(ObjectClaim {
                name: bname.to_string(),
                uid: live,
            });
            if plural == "pods" {
                request.pod = claim;
            } else {
                request.secret = claim;
            }
        }
        let (jwt, claims) = tokens.issue(&request, now()).map_err(ApiError::internal)?;
        req["apiVersion"] = json!(AUTHN);
        req["kind"] = json!("TokenRequest");
        req["metadata"] = json!({"name": name, "namespace": ns,
            "creationTimestamp": sa.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)});
        req["spec"] = json!({"audiences": claims.aud, "expirationSeconds": expiration,
            "boundObjectRef": bound.cloned().unwrap_or(Value::Null)});
        req["status"] = json!({"token": jwt, "expirationTimestamp": rfc3339(claims.exp)});
        Ok(Reply::value(201, &req))
    }

    /// The identity endpoints outside the resource registry; `None` for any other path.
    pub(crate) async fn identity_route(
        &self,
        who: &Identity,
        method: &Method,
        path: &str,
        ct: &str,
        body: &Bytes,
    ) -> Option<Result<Reply, ApiError>> {
        let tokens = self.tokens.as_ref()?;
        let review = |resource| crate::auth::ResourceAttributes {
            group: "authentication.k8s.io",
            resource,
            subresource: None,
            namespace: None,
            name: None,
        };
        let resource = match (method, path) {
            (&Method::GET, "/.well-known/openid-configuration" | "/openid/v1/jwks") => None,
            (&Method::POST, "/apis/authentication.k8s.io/v1/selfsubjectreviews") => {
                Some(review("selfsubjectreviews"))
            }
            (&Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews") => {
                Some(review("tokenreviews"))
            }
            _ => return None,
        };
        let verb = if resource.is_some() { "create" } else { "get" };
        let attrs = crate::auth::Attributes {
            verb,
            resource,
            path,
        };
        if let Err(e) = crate::auth::check(self.authorizer.as_ref(), who, &attrs) {
            return Some(Err(e));
        }
        Some(match (method, path) {
            (&Method::GET, "/.well-known/openid-configuration") => {
                Ok(Reply::value(200, &tokens.openid_configuration()))
            }
            (&Method::GET, "/openid/v1/jwks") => Ok(Reply::value(200, &tokens.jwks())),
            (&Method::POST, "/apis/authentication.k8s.io/v1/selfsubjectreviews") => {
                Ok(Reply::value(
                    201,
                    &json!({"kind": "SelfSubjectReview", "apiVersion": AUTHN,
                        "metadata": {"creationTimestamp": null},
                        "status": {"userInfo": user_info(who)}}),
                ))
            }
            (&Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews") => {
                self.token_review(ct, body).await
            }
            _ => return None,
        })
    }

    /// TokenReview: whether a token authenticates, and as whom.
    async fn token_review(&self, ct: &str, body: &[u8]) -> Result<Reply, ApiError> {
        let mut review = decode_body(ct, body)?.value;
        let jwt = review
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let audiences: Option<Vec<String>> = review
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            });
        let status = match self.authenticate_token(&jwt, audiences.as_deref()).await {
            Ok(claims) => {
                let user = user_info(&claims.identity());
                json!({"authenticated": true, "user": user, "audiences": claims.aud})
            }
            Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
        };
        review["apiVersion"] = json!(AUTHN);
        review["kind"] = json!("TokenReview");
        review["status"] = status;
        Ok(Reply::value(201, &review))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        assert_eq!(bearer(&h), None);
    }
}
