//! Bootstrap tokens, as upstream stores them: a `<id>.<secret>` bearer token whose Secret
//! `bootstrap-token-<id>` (type `bootstrap.kubernetes.io/token`, in `kube-system`) says
//! whether it may authenticate, until when, and which extra groups it carries. The one home
//! of the format: the API server's authenticator, the token cleaner, `krust token` and the
//! joining agent all read it from here.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde_json::{json, Value};

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const NAMESPACE: &str = "kube-system";
/// A token authenticates as `system:bootstrap:<id>`.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token's user is in.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group `krust token create` gives its tokens (kubeadm's is
/// `system:bootstrappers:kubeadm:default-node-token`).
pub const DEFAULT_EXTRA_GROUP: &str = "system:bootstrappers:krust:default-node-token";
/// Data keys of the Secret.
pub const KEY_ID: &str = "token-id";
pub const KEY_SECRET: &str = "token-secret";
pub const KEY_EXPIRATION: &str = "expiration";
pub const KEY_DESCRIPTION: &str = "description";
pub const KEY_EXTRA_GROUPS: &str = "auth-extra-groups";
pub const USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
pub const USAGE_SIGNING: &str = "usage-bootstrap-signing";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token as a client presents it: `<id>.<secret>`, `[a-z0-9]{6}.[a-z0-9]{16}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// Never prints the secret.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}.<redacted>)", self.id)
    }
}

fn valid_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl Token {
    /// Parses `<id>.<secret>`; anything else (a service account JWT, say) is `None`.
    pub fn parse(s: &str) -> Option<Token> {
        let (id, secret) = s.split_once('.')?;
        (valid_part(id, ID_LEN) && valid_part(secret, SECRET_LEN)).then(|| Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A token from 22 random bytes (the caller's generator), each mapped onto the alphabet.
    pub fn from_random(bytes: &[u8; ID_LEN + SECRET_LEN]) -> Token {
        let pick = |b: &u8| ALPHABET[usize::from(*b) % ALPHABET.len()] as char;
        Token {
            id: bytes[..ID_LEN].iter().map(pick).collect(),
            secret: bytes[ID_LEN..].iter().map(pick).collect(),
        }
    }

    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }

    /// The user the token authenticates as.
    pub fn user(&self) -> String {
        format!("{USER_PREFIX}{}", self.id)
    }
}

pub fn secret_name(id: &str) -> String {
    format!("{SECRET_PREFIX}{id}")
}

/// What a token Secret says, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSecret {
    pub id: String,
    pub secret: String,
    /// RFC 3339, as stored; `None` never expires.
    pub expiration: Option<String>,
    pub description: Option<String>,
    pub extra_groups: Vec<String>,
    pub authentication: bool,
    pub signing: bool,
}

/// Why a Secret is no usable token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenSecretError {
    #[error("secret is not of type {SECRET_TYPE}")]
    WrongType,
    #[error("secret has no valid {0}")]
    Missing(&'static str),
    #[error("expiration {0:?} is not an RFC 3339 time")]
    BadExpiration(String),
    #[error("extra group {0:?} does not start with \"system:bootstrappers:\"")]
    BadGroup(String),
}

impl TokenSecret {
    /// Decodes a Secret as JSON (`data` base64, or `stringData` when not yet stored).
    pub fn from_secret(secret: &Value) -> Result<TokenSecret, TokenSecretError> {
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return Err(TokenSecretError::WrongType);
        }
        let mut data = BTreeMap::new();
        if let Some(map) = secret.get("data").and_then(Value::as_object) {
            for (k, v) in map {
                let decoded = v
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some(d) = decoded {
                    data.insert(k.clone(), d);
                }
            }
        }
        if let Some(map) = secret.get("stringData").and_then(Value::as_object) {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    data.insert(k.clone(), s.to_string());
                }
            }
        }
        Self::from_data(&data)
    }

    /// Decodes the Secret's (already base64-decoded) data.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<TokenSecret, TokenSecretError> {
        let get = |k: &str| data.get(k).map(|s| s.trim().to_string());
        let id = get(KEY_ID)
            .filter(|s| valid_part(s, ID_LEN))
            .ok_or(TokenSecretError::Missing(KEY_ID))?;
        let secret = get(KEY_SECRET)
            .filter(|s| valid_part(s, SECRET_LEN))
            .ok_or(TokenSecretError::Missing(KEY_SECRET))?;
        let expiration = get(KEY_EXPIRATION).filter(|s| !s.is_empty());
        if let Some(e) = &expiration {
            if parse_time(e).is_none() {
                return Err(TokenSecretError::BadExpiration(e.clone()));
            }
        }
        let extra_groups: Vec<String> = get(KEY_EXTRA_GROUPS)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(g) = extra_groups
            .iter()
            .find(|g| !g.starts_with("system:bootstrappers:"))
        {
            return Err(TokenSecretError::BadGroup(g.clone()));
        }
        Ok(TokenSecret {
            id,
            secret,
            expiration,
            description: get(KEY_DESCRIPTION),
            extra_groups,
            authentication: get(USAGE_AUTHENTICATION).as_deref() == Some("true"),
            signing: get(USAGE_SIGNING).as_deref() == Some("true"),
        })
    }

    /// Whether the token's expiration is at or before `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }

    /// The expiration in seconds since the epoch.
    pub fn expires_at(&self) -> Option<i64> {
        self.expiration.as_deref().and_then(parse_time)
    }

    /// Whether `token` is this Secret's (compared in constant time).
    pub fn matches(&self, token: &Token) -> bool {
        self.id == token.id && constant_time_eq(self.secret.as_bytes(), token.secret.as_bytes())
    }

    /// The groups its user is in: `system:bootstrappers` and the extra ones.
    pub fn groups(&self) -> Vec<String> {
        let mut groups = vec![GROUP.to_string()];
        for g in &self.extra_groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        groups
    }

    /// The Secret that stores this token, as JSON (`stringData`, which the API server
    /// turns into `data`).
    pub fn to_secret(&self) -> Value {
        let mut data = serde_json::Map::new();
        data.insert(KEY_ID.into(), json!(self.id));
        data.insert(KEY_SECRET.into(), json!(self.secret));
        if let Some(e) = &self.expiration {
            data.insert(KEY_EXPIRATION.into(), json!(e));
        }
        if let Some(d) = &self.description {
            data.insert(KEY_DESCRIPTION.into(), json!(d));
        }
        if !self.extra_groups.is_empty() {
            data.insert(KEY_EXTRA_GROUPS.into(), json!(self.extra_groups.join(",")));
        }
        if self.authentication {
            data.insert(USAGE_AUTHENTICATION.into(), json!("true"));
        }
        if self.signing {
            data.insert(USAGE_SIGNING.into(), json!("true"));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name(&self.id), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "stringData": data,
        })
    }
}

/// RFC 3339 to seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_bootstrap_format() {
        let t = Token::parse("abcdef.0123456789abcdef").expect("token");
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.user(), "system:bootstrap:abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "eyJhbGciOi.eyJzdWIi.sig",
            "",
        ] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
        let r = Token::from_random(&[255; 22]);
        assert!(Token::parse(&r.to_string()).is_some());
    }

    #[test]
    fn secret_round_trip_and_expiry() {
        let s = TokenSecret {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            expiration: Some(crate::object::format_unix(1_000)),
            description: Some("join".into()),
            extra_groups: vec![DEFAULT_EXTRA_GROUP.into()],
            authentication: true,
            signing: true,
        };
        let v = s.to_secret();
        assert_eq!(v["metadata"]["name"], "bootstrap-token-abcdef");
        let back = TokenSecret::from_secret(&v).expect("decodes");
        assert_eq!(back, s);
        assert!(back.expired_at(1_000));
        assert!(!back.expired_at(999));
        assert_eq!(back.groups(), vec![GROUP, DEFAULT_EXTRA_GROUP]);
        let token = Token::parse("abcdef.0123456789abcdef").expect("token");
        assert!(back.matches(&token));
        assert!(!back.matches(&Token::parse("abcdef.0123456789abcdee").expect("token")));

        // Stored form: base64 data.
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let stored = json!({"type": SECRET_TYPE, "data": {
            "token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true")}});
        let t = TokenSecret::from_secret(&stored).expect("decodes");
        assert!(t.authentication && !t.signing && t.expiration.is_none());
        assert!(!t.expired_at(i64::MAX));
    }

    #[test]
    fn refuses_malformed_secrets() {
        let mut v = json!({"type": "Opaque", "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef"}});
        assert_eq!(
            TokenSecret::from_secret(&v),
            Err(TokenSecretError::WrongType)
        );
        v["type"] = json!(SECRET_TYPE);
        v["stringData"]["expiration"] = json!("tomorrow");
        assert!(matches!(
            TokenSecret::from_secret(&v),
            Err(TokenSecretError::BadExpiration(_))
        ));
        v["stringData"]["expiration"] = json!("2030-01-01T00:00:00Z");
        v["stringData"]["auth-extra-groups"] = json!("system:masters");
        assert!(matches!(
            TokenSecret::from_secret(&v),
            Err(TokenSecretError::BadGroup(_))
        ));
        v["stringData"]["auth-extra-groups"] = json!("");
        v["stringData"]["token-secret"] = json!("short");
        assert_eq!(
            TokenSecret::from_secret(&v),
            Err(TokenSecretError::Missing(KEY_SECRET))
        );
    }
}
