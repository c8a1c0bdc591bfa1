//! Bootstrap token cleaner, as upstream's `tokencleaner`: deletes the bootstrap token
//! Secrets (type `bootstrap.kubernetes.io/token` in `kube-system`) whose expiration has
//! passed, so that an expired join token stops existing rather than merely failing.
//!
//! It watches only those Secrets (namespace `kube-system`, field selector
//! `type=bootstrap.kubernetes.io/token`). [`evaluate`] decides from the token's
//! `expiration`: passed (or unparseable, as upstream) means delete, with the cached uid as a
//! precondition so that a Secret recreated under the same name survives; a future one means
//! look again at that moment; none means keep.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use krust_machinery::bootstrap::{self, TokenSecret, TokenSecretError};
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::util::{is_conflict, is_not_found, Backoff, Result};
use crate::{Shared, Shutdown};

/// What to do with one token Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Expired: delete it.
    Delete,
    /// Expires in this long: look again then.
    RecheckIn(Duration),
    /// Never expires (or is no token Secret): nothing to do.
    Keep,
}

/// The verdict on `secret` at `now` (seconds since the epoch), as upstream's
/// `GetExpiration`: only the `expiration` key counts, an unparseable one is expired.
pub fn evaluate(secret: &Secret, now: i64) -> Verdict {
    if secret.type_.as_deref() != Some(bootstrap::SECRET_TYPE) {
        return Verdict::Keep;
    }
    let expires_at = match serde_json::to_value(secret)
        .map_err(|_| TokenSecretError::WrongType)
        .and_then(|v| TokenSecret::from_secret(&v))
    {
        Ok(token) => token.expires_at(),
        Err(TokenSecretError::BadExpiration(_)) => return Verdict::Delete,
        // Not a usable token otherwise; its expiration still decides, as upstream.
        Err(_) => match raw_expiration(secret) {
            None => None,
            Some(e) => match bootstrap::parse_time(&e) {
                Some(t) => Some(t),
                None => return Verdict::Delete,
            },
        },
    };
    match expires_at {
        None => Verdict::Keep,
        Some(t) if t <= now => Verdict::Delete,
        Some(t) => Verdict::RecheckIn(Duration::from_secs(u64::try_from(t - now).unwrap_or(0))),
    }
}

/// The `expiration` data of a Secret, whatever else it holds.
fn raw_expiration(secret: &Secret) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(bootstrap::KEY_EXPIRATION))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(bootstrap::KEY_EXPIRATION))
            .cloned()
    };
    from_data
        .or_else(from_string_data)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

struct Ctx {
    api: Api<Secret>,
    backoff: Backoff,
}

/// Runs the cleaner until `shutdown` resolves.
pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), bootstrap::NAMESPACE);
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        backoff: Backoff::default(),
    });
    let selector = format!("type={}", bootstrap::SECRET_TYPE);
    Controller::new(api, watcher::Config::default().fields(&selector))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |s, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&s.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = secret.name_any();
    let now = Timestamp::now().as_second();
    let action = match evaluate(&secret, now) {
        Verdict::Keep => Action::await_change(),
        Verdict::RecheckIn(d) => Action::requeue(d),
        Verdict::Delete => {
            tracing::info!(secret = %name, "deleting expired bootstrap token");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match ctx.api.delete(&name, &dp).await {
                Ok(_) => {}
                // Gone already, or replaced by another Secret of that name.
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Action::await_change()
        }
    };
    ctx.backoff.forget(&name);
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn token(expiration: Option<&str>) -> Secret {
        let mut data = BTreeMap::from([
            (
                bootstrap::KEY_ID.to_string(),
                ByteString(b"abcdef".to_vec()),
            ),
            (
                bootstrap::KEY_SECRET.to_string(),
                ByteString(b"0123456789abcdef".to_vec()),
            ),
        ]);
        if let Some(e) = expiration {
            data.insert(
                bootstrap::KEY_EXPIRATION.to_string(),
                ByteString(e.as_bytes().to_vec()),
            );
        }
        Secret {
            metadata: ObjectMeta {
                name: Some("bootstrap-token-abcdef".into()),
                namespace: Some(bootstrap::NAMESPACE.into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            type_: Some(bootstrap::SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn expired_tokens_are_deleted_and_others_rechecked() {
        let at = bootstrap::parse_time("2030-01-01T00:00:00Z").expect("time");
        let s = token(Some("2030-01-01T00:00:00Z"));
        assert_eq!(evaluate(&s, at), Verdict::Delete);
        assert_eq!(evaluate(&s, at + 10), Verdict::Delete);
        assert_eq!(
            evaluate(&s, at - 90),
            Verdict::RecheckIn(Duration::from_secs(90))
        );
        assert_eq!(evaluate(&token(None), at), Verdict::Keep);
    }

    #[test]
    fn unparseable_expirations_count_as_expired() {
        assert_eq!(evaluate(&token(Some("tomorrow")), 0), Verdict::Delete);
        // Not a valid token otherwise (no secret), but expired all the same.
        let mut s = token(Some("2000-01-01T00:00:00Z"));
        if let Some(d) = s.data.as_mut() {
            d.remove(bootstrap::KEY_SECRET);
        }
        assert_eq!(evaluate(&s, 1_000_000_000), Verdict::Delete);
        assert_eq!(
            evaluate(&s, 900_000_000),
            Verdict::RecheckIn(Duration::from_secs(46_684_800))
        );
        if let Some(d) = s.data.as_mut() {
            d.insert(
                bootstrap::KEY_EXPIRATION.to_string(),
                ByteString(b"soon".to_vec()),
            );
        }
        assert_eq!(evaluate(&s, 0), Verdict::Delete);
    }

    #[test]
    fn other_secrets_are_kept() {
        let mut s = token(Some("2000-01-01T00:00:00Z"));
        s.type_ = Some("Opaque".into());
        assert_eq!(evaluate(&s, i64::MAX), Verdict::Keep);
    }
}
