//! TLS: certificates from `kubernetes.io/tls` Secrets, the choice by SNI, and the
//! self-signed fallback.
//!
//! The resolver reads the current routing table on every handshake, so a renewed Secret
//! is served from the next connection on without restarting the listener. A name no
//! Ingress `tls` entry covers gets the fallback certificate (like ingress-nginx's "fake
//! certificate"), so clients see a certificate error rather than a dropped connection.

use std::fmt;
use std::io::BufReader;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routes::HostMap;
use crate::table::TableHandle;

/// The Secret type whose `tls.crt` / `tls.key` we serve.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The subject of the fallback certificate, as ingress-nginx names its own.
pub const FALLBACK_COMMON_NAME: &str = "Kubernetes Ingress Controller Fake Certificate";

/// Why a Secret's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("secret type is {0:?}, not {TLS_SECRET_TYPE}")]
    WrongType(String),
    #[error("secret has no {0}")]
    Missing(&'static str),
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.key holds no PEM private key")]
    NoKey,
    #[error("PEM could not be read")]
    Pem(#[source] std::io::Error),
    #[error("certificate and key are unusable")]
    Rustls(#[source] rustls::Error),
    #[error("fallback certificate could not be made")]
    Generate(#[source] rcgen::Error),
}

/// The crypto provider used everywhere in this crate, explicit so nothing depends on a
/// process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a `kubernetes.io/tls` Secret into a servable certificate, checking that the key
/// belongs to the certificate.
pub fn certified_key_from_secret(secret: &Secret) -> Result<CertifiedKey, CertError> {
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(CertError::WrongType(ty.to_string()));
    }
    let data = secret.data.as_ref();
    let get = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or(CertError::Missing(key))
    };
    certified_key_from_pem(get("tls.crt")?, get("tls.key")?)
}

/// Parses a PEM chain and key.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(CertError::Pem)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(CertError::Pem)?
        .ok_or(CertError::NoKey)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(CertError::Rustls)
}

/// A self-signed certificate for names nobody configured, made once at start.
pub fn fallback_certificate() -> Result<Arc<CertifiedKey>, CertError> {
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
        .map_err(CertError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FALLBACK_COMMON_NAME);
    let key = rcgen::KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert.der().clone()], key, &provider())
        .map(Arc::new)
        .map_err(CertError::Rustls)
}

/// The certificates of one routing table.
#[derive(Clone, Default)]
pub struct CertTable {
    /// By `tls[].hosts` pattern (precise or wildcard); the oldest Ingress wins a host.
    pub by_host: HostMap<Arc<CertifiedKey>>,
    /// From the oldest `tls` entry without hosts: served for names nothing else covers
    /// and to clients that send no SNI.
    pub default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertTable")
            .field("hosts", &!self.by_host.is_empty())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl CertTable {
    /// The certificate for an SNI name (`None`: no SNI sent).
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|name| self.by_host.lookup(name))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// Chooses the certificate by SNI from the current table, else the fallback.
pub struct SniResolver {
    table: TableHandle,
    fallback: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(table: TableHandle, fallback: Arc<CertifiedKey>) -> SniResolver {
        SniResolver { table, fallback }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        Some(
            table
                .certs
                .choose(hello.server_name())
                .unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

/// The rustls server configuration of the HTTPS listener: SNI resolution and ALPN for
/// HTTP/2 and HTTP/1.1.
pub fn server_config(
    table: TableHandle,
    fallback: Arc<CertifiedKey>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(table, fallback)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    /// A self-signed certificate and key as PEM, for tests here and in the table builder.
    pub(crate) fn self_signed_pem(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    pub(crate) fn tls_secret(ns: &str, name: &str, crt: &str, key: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(TLS_SECRET_TYPE.into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec())),
                ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
            ])),
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_tls_secret() {
        let (crt, key) = self_signed_pem(&["a.example.com"]);
        let ck = certified_key_from_secret(&tls_secret("ns", "s", &crt, &key)).expect("usable");
        assert_eq!(ck.cert.len(), 1);
    }

    #[test]
    fn rejects_bad_secrets() {
        let (crt, key) = self_signed_pem(&["a.example.com"]);
        let (_, other_key) = self_signed_pem(&["b.example.com"]);
        let mut opaque = tls_secret("ns", "s", &crt, &key);
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(
            certified_key_from_secret(&opaque),
            Err(CertError::WrongType(_))
        ));
        let mut missing = tls_secret("ns", "s", &crt, &key);
        missing.data.as_mut().map(|d| d.remove("tls.key"));
        assert!(matches!(
            certified_key_from_secret(&missing),
            Err(CertError::Missing("tls.key"))
        ));
        assert!(matches!(
            certified_key_from_pem(b"junk", key.as_bytes()),
            Err(CertError::NoCertificate)
        ));
        assert!(matches!(
            certified_key_from_pem(crt.as_bytes(), b"junk"),
            Err(CertError::NoKey)
        ));
        assert!(matches!(
            certified_key_from_pem(crt.as_bytes(), other_key.as_bytes()),
            Err(CertError::Rustls(_))
        ));
    }

    #[test]
    fn chooses_by_sni_with_wildcards_and_default() {
        let key = |n: &str| {
            let (c, k) = self_signed_pem(&[n]);
            Arc::new(certified_key_from_pem(c.as_bytes(), k.as_bytes()).expect("usable"))
        };
        let (a, wild, dflt) = (key("a.example.com"), key("*.example.com"), key("default"));
        let mut t = CertTable::default();
        t.by_host.insert_if_absent("a.example.com", a.clone());
        t.by_host.insert_if_absent("*.example.com", wild.clone());
        let pick = |t: &CertTable, sni| t.choose(sni).map(|k| k.cert[0].clone());
        assert_eq!(pick(&t, Some("a.example.com")), Some(a.cert[0].clone()));
        assert_eq!(pick(&t, Some("B.example.com")), Some(wild.cert[0].clone()));
        assert_eq!(pick(&t, Some("x.b.example.com")), None);
        assert_eq!(pick(&t, None), None);
        t.default = Some(dflt.clone());
        assert_eq!(pick(&t, Some("other.org")), Some(dflt.cert[0].clone()));
        assert_eq!(pick(&t, None), Some(dflt.cert[0].clone()));
    }

    #[test]
    fn fallback_is_self_signed_and_usable() {
        let fb = fallback_certificate().expect("fallback");
        assert_eq!(fb.cert.len(), 1);
        assert!(fb.keys_match().is_ok());
    }
}
