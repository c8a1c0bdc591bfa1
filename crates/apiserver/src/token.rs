//! Service account tokens, as upstream's `pkg/serviceaccount`: ES256 JWTs signed with a key
//! made once beside the cluster CA (`sa.key`), carrying the ServiceAccount (and the Pod or
//! Secret they are bound to) in upstream's private `kubernetes.io` claim, so that a token
//! dies with the object it names. This module signs and checks the JWT itself; whether the
//! named objects still exist is [`check_bound`]'s question, answered from the store by
//! `serviceaccount`.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Identity;

/// Upstream's default issuer (and API audience) for kubeadm clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// TokenRequest's default lifetime.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Extra keys of a service account token's identity, as upstream's.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest, as upstream's validation (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("service account signing key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("service account signing key {path} is not an ECDSA P-256 key")]
    KeyType { path: String },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("signing: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token is malformed, badly signed, expired, or for another audience or issuer.
    #[error("invalid bearer token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// A well-signed token whose ServiceAccount, Pod or Secret is gone or was recreated.
    #[error("invalid bearer token: {0}")]
    Stale(String),
}

/// A name and uid, as the `kubernetes.io` claim carries objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    pub name: String,
    pub uid: String,
}

/// Upstream's private `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
    pub serviceaccount: ObjectClaim,
}

/// The claims of a service account token, in upstream's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
    pub nbf: i64,
    pub sub: String,
}

/// What a token is asked for.
#[derive(Clone, Debug)]
pub struct Request {
    pub namespace: String,
    pub service_account: ObjectClaim,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod: Option<ObjectClaim>,
    pub secret: Option<ObjectClaim>,
}

impl Claims {
    /// The authenticated identity the token stands for: the ServiceAccount's uid, and as
    /// extra the bound pod and the token's id, as upstream's.
    pub fn identity(&self) -> Identity {
        let k = &self.kubernetes;
        let ns = &k.namespace;
        let mut id = Identity::new(
            format!("system:serviceaccount:{ns}:{}", k.serviceaccount.name),
            vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
            ],
        );
        id.uid = k.serviceaccount.uid.clone();
        if let Some(pod) = &k.pod {
            let extra = &mut id.extra;
            extra.insert(EXTRA_POD_NAME.into(), vec![pod.name.clone()]);
            extra.insert(EXTRA_POD_UID.into(), vec![pod.uid.clone()]);
        }
        if !self.jti.is_empty() {
            let jti = format!("JTI={}", self.jti);
            id.extra.insert(EXTRA_CREDENTIAL_ID.into(), vec![jti]);
        }
        id
    }
}

/// The signing key and what tokens must say to be accepted.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key's coordinates, base64url, for the JWKS document.
    x: String,
    y: String,
    pub issuer: String,
    /// Audiences the API server accepts, and the default of a TokenRequest.
    pub api_audiences: Vec<String>,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Tokens {
    /// Loads `dir/sa.key`, making it on first start.
    pub fn load_or_create(dir: &Path, issuer: &str) -> Result<Tokens, TokenError> {
        let path = dir.join("sa.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => KeyPair::from_pem(&pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                crate::pki::write_private(&path, &key.serialize_pem())?;
                key
            }
            Err(source) => {
                return Err(crate::pki::PkiError::Io { path, source }.into());
            }
        };
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(TokenError::KeyType {
                path: path.display().to_string(),
            });
        }
        Tokens::from_key(&key, issuer)
    }

    fn from_key(key: &KeyPair, issuer: &str) -> Result<Tokens, TokenError> {
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let raw = key.public_key_raw();
        if raw.len() != 65 {
            return Err(TokenError::KeyType {
                path: "(in memory)".to_string(),
            });
        }
        let (x, y) = (b64url(&raw[1..33]), b64url(&raw[33..]));
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(TokenError::Invalid)?;
        // As upstream: the key id is the SHA-256 of the public key's PKIX encoding.
        use rcgen::PublicKeyData;
        let spki = key.subject_public_key_info();
        let kid = b64url(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
        Ok(Tokens {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding,
            kid,
            x,
            y,
            issuer: issuer.to_string(),
            api_audiences: vec![issuer.to_string()],
        })
    }

    /// Signs a token for `req`, issued at `now` (Unix seconds).
    pub fn issue(&self, req: &Request, now: i64) -> Result<(String, Claims), TokenError> {
        let claims = Claims {
            aud: if req.audiences.is_empty() {
                self.api_audiences.clone()
            } else {
                req.audiences.clone()
            },
            exp: now + req.expiration_seconds,
            iat: now,
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaim {
                namespace: req.namespace.clone(),
                pod: req.pod.clone(),
                secret: req.secret.clone(),
                serviceaccount: req.service_account.clone(),
            },
            nbf: now,
            sub: format!(
                "system:serviceaccount:{}:{}",
                req.namespace, req.service_account.name
            ),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(TokenError::Sign)?;
        Ok((token, claims))
    }

    /// Checks the signature, the issuer, the times (60 s leeway, as upstream) and that the
    /// token is meant for one of `audiences`.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(audiences);
        v.set_issuer(&[&self.issuer]);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(TokenError::Invalid)?;
        Ok(data.claims)
    }

    /// `/openid/v1/jwks`: the public key, for those who verify tokens elsewhere.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256",
            "alg": "ES256", "x": self.x, "y": self.y}]})
    }

    /// `/.well-known/openid-configuration`, as upstream's issuer discovery.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// Whether the objects a token names still exist as they were when it was issued: `sa` and
/// `pod`/`secret` are the live objects (`None`: not found).
pub fn check_bound(
    claims: &Claims,
    sa: Option<&Value>,
    pod: Option<&Value>,
    secret: Option<&Value>,
) -> Result<(), TokenError> {
    let k = &claims.kubernetes;
    let same = |what: &str, want: &ObjectClaim, live: Option<&Value>| {
        let uid = live
            .and_then(|o| o.pointer("/metadata/uid"))
            .and_then(Value::as_str);
        match uid {
            None => Err(TokenError::Stale(format!(
                "{what} {}/{} has been deleted",
                k.namespace, want.name
            ))),
            Some(u) if u != want.uid => Err(TokenError::Stale(format!(
                "{what} UID ({u}) does not match claim ({})",
                want.uid
            ))),
            Some(_) => Ok(()),
        }
    };
    same("service account", &k.serviceaccount, sa)?;
    if let Some(p) = &k.pod {
        same("pod", p, pod)?;
    }
    if let Some(s) = &k.secret {
        same("secret", s, secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        Tokens::from_key(&key, DEFAULT_ISSUER).expect("tokens")
    }

    fn request() -> Request {
        Request {
            namespace: "ns".into(),
            service_account: ObjectClaim {
                name: "default".into(),
                uid: "sa-uid".into(),
            },
            audiences: vec![],
            expiration_seconds: 3600,
            pod: Some(ObjectClaim {
                name: "p".into(),
                uid: "pod-uid".into(),
            }),
            secret: None,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn issues_upstream_claims_and_verifies_them() {
        let t = tokens();
        let (jwt, claims) = t.issue(&request(), now()).expect("issue");
        assert_eq!(claims.sub, "system:serviceaccount:ns:default");
        assert_eq!(claims.aud, vec![DEFAULT_ISSUER.to_string()]);
        assert_eq!(claims.exp - claims.iat, 3600);
        let back = t.verify(&jwt, &t.api_audiences).expect("verify");
        assert_eq!(back, claims);
        // The wire shape is upstream's: a private claim named kubernetes.io.
        use base64::Engine;
        let payload = jwt.split('.').nth(1).expect("payload");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert_eq!(v["kubernetes.io"]["pod"]["name"], "p");
        assert_eq!(v["kubernetes.io"]["namespace"], "ns");
        let id = back.identity();
        assert_eq!(id.user, "system:serviceaccount:ns:default");
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        assert_eq!(id.uid, "sa-uid");
        assert_eq!(id.extra[EXTRA_POD_NAME], ["p"]);
        assert_eq!(t.jwks()["keys"][0]["kid"], t.kid);
    }

    #[test]
    fn refuses_expired_foreign_audience_and_bad_signature() {
        let t = tokens();
        let (old, _) = t.issue(&request(), now() - 7200).expect("issue");
        assert!(matches!(
            t.verify(&old, &t.api_audiences),
            Err(TokenError::Invalid(e)) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature
        ));
        let mut other = request();
        other.audiences = vec!["vault".into()];
        let (jwt, claims) = t.issue(&other, now()).expect("issue");
        assert_eq!(claims.aud, ["vault"]);
        assert!(matches!(
            t.verify(&jwt, &t.api_audiences),
            Err(TokenError::Invalid(e)) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidAudience
        ));
        assert!(t.verify(&jwt, &["vault".to_string()]).is_ok());
        // Signed by another key.
        let (forged, _) = tokens().issue(&request(), now()).expect("issue");
        assert!(matches!(
            t.verify(&forged, &t.api_audiences),
            Err(TokenError::Invalid(e)) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature
        ));
        assert!(t.verify("garbage", &t.api_audiences).is_err());
    }

    #[test]
    fn bound_objects_must_still_exist() {
        let t = tokens();
        let (_, claims) = t.issue(&request(), now()).expect("issue");
        let sa = json!({"metadata": {"uid": "sa-uid"}});
        let pod = json!({"metadata": {"uid": "pod-uid"}});
        assert!(check_bound(&claims, Some(&sa), Some(&pod), None).is_ok());
        assert!(matches!(
            check_bound(&claims, None, Some(&pod), None),
            Err(TokenError::Stale(m)) if m.contains("has been deleted")
        ));
        let recreated = json!({"metadata": {"uid": "other"}});
        assert!(check_bound(&claims, Some(&recreated), Some(&pod), None).is_err());
        assert!(check_bound(&claims, Some(&sa), None, None).is_err());
    }

    #[test]
    fn key_is_made_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Tokens::load_or_create(dir.path(), DEFAULT_ISSUER).expect("a");
        let b = Tokens::load_or_create(dir.path(), DEFAULT_ISSUER).expect("b");
        assert_eq!(a.kid, b.kid);
        let (jwt, _) = a.issue(&request(), now()).expect("issue");
        assert!(b.verify(&jwt, &b.api_audiences).is_ok());
    }
}
