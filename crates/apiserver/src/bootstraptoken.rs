//! Bootstrap token authentication, as upstream's
//! `plugin/pkg/auth/authenticator/token/bootstrap`: a bearer token in the `<id>.<secret>`
//! format is looked up as Secret `kube-system/bootstrap-token-<id>` and is good while that
//! Secret is of the bootstrap token type, holds the same secret, allows authentication
//! (`usage-bootstrap-authentication: "true"`), has not expired and is not being deleted.
//! It authenticates as `system:bootstrap:<id>` in `system:bootstrappers`, the Secret's
//! `auth-extra-groups` and `system:authenticated`. The format and the Secret's keys are
//! `krust_machinery::bootstrap`'s; what such an identity may do is `auth::NodeBootstrapper`'s.

use krust_machinery::bootstrap::{self, Token, TokenSecret, TokenSecretError};
use serde_json::Value;

use crate::auth::Identity;
use crate::server::ApiServer;

/// Why a bootstrap token does not authenticate. The client only ever sees 401.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("no secret {0}/{1}")]
    NoSecret(&'static str, String),
    #[error("reading secret {name}: {source}")]
    Lookup {
        name: String,
        #[source]
        source: Box<krust_machinery::ApiError>,
    },
    #[error(transparent)]
    Malformed(#[from] TokenSecretError),
    #[error("secret {0} is being deleted")]
    Deleted(String),
    #[error("the token does not match secret {0}")]
    Mismatch(String),
    #[error("secret {0} does not allow authentication")]
    NotForAuthentication(String),
    #[error("token {0} has expired")]
    Expired(String),
}

/// Whether `token` is good by its Secret (as stored, or `None` when there is none) at `now`
/// (seconds since the epoch), and as whom.
pub fn check(
    token: &Token,
    secret: Option<&Value>,
    now: i64,
) -> Result<Identity, BootstrapTokenError> {
    let name = token.secret_name();
    let secret =
        secret.ok_or_else(|| BootstrapTokenError::NoSecret(bootstrap::NAMESPACE, name.clone()))?;
    if secret
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return Err(BootstrapTokenError::Deleted(name));
    }
    let stored = TokenSecret::from_secret(secret)?;
    if !stored.matches(token) {
        return Err(BootstrapTokenError::Mismatch(name));
    }
    if !stored.authentication {
        return Err(BootstrapTokenError::NotForAuthentication(name));
    }
    if stored.expired_at(now) {
        return Err(BootstrapTokenError::Expired(token.id.clone()));
    }
    Ok(Identity::new(token.user(), stored.groups()))
}

impl ApiServer {
    /// Authenticates a bootstrap token against its Secret in the store.
    pub(crate) async fn bootstrap_identity(
        &self,
        token: &Token,
    ) -> Result<Identity, BootstrapTokenError> {
        let name = token.secret_name();
        let secret = self
            .core_object("secrets", bootstrap::NAMESPACE, &name)
            .await
            .map_err(|e| BootstrapTokenError::Lookup {
                name: name.clone(),
                source: Box::new(e),
            })?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        check(token, secret.as_ref(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token() -> Token {
        Token::parse("abcdef.0123456789abcdef").expect("token")
    }

    fn secret(extra: Value) -> Value {
        let mut data = json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:krust:default-node-token"});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": bootstrap::SECRET_TYPE, "stringData": data})
    }

    #[test]
    fn a_good_token_authenticates_as_its_bootstrapper() {
        let id = check(&token(), Some(&secret(json!({}))), 0).expect("authenticates");
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert_eq!(
            id.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:krust:default-node-token",
                "system:authenticated"
            ]
        );
        assert!(id.uid.is_empty() && id.extra.is_empty());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let t = token();
        assert!(matches!(
            check(&t, None, 0),
            Err(BootstrapTokenError::NoSecret(..))
        ));
        let wrong = Token::parse("abcdef.0123456789abcdee").expect("token");
        assert!(matches!(
            check(&wrong, Some(&secret(json!({}))), 0),
            Err(BootstrapTokenError::Mismatch(_))
        ));
        let no_auth = secret(json!({"usage-bootstrap-authentication": "false"}));
        assert!(matches!(
            check(&t, Some(&no_auth), 0),
            Err(BootstrapTokenError::NotForAuthentication(_))
        ));
        let expiring = secret(json!({"expiration": "2020-01-01T00:00:00Z"}));
        let at = bootstrap::parse_time("2020-01-01T00:00:00Z").expect("time");
        assert!(check(&t, Some(&expiring), at - 1).is_ok());
        assert!(matches!(
            check(&t, Some(&expiring), at),
            Err(BootstrapTokenError::Expired(_))
        ));
        let mut opaque = secret(json!({}));
        opaque["type"] = json!("Opaque");
        assert!(matches!(
            check(&t, Some(&opaque), 0),
            Err(BootstrapTokenError::Malformed(TokenSecretError::WrongType))
        ));
        let mut deleting = secret(json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        assert!(matches!(
            check(&t, Some(&deleting), 0),
            Err(BootstrapTokenError::Deleted(_))
        ));
    }
}
