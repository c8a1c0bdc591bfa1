//! Joining with a token: the token names a bootstrap token (`<id>.<secret>`) and pins the
//! cluster CA by the SHA-256 of its public key (kubeadm's `--discovery-token-ca-cert-hash`),
//! so a new machine needs no CA file. The printed form is `K10<hash>::<id>.<secret>` (the
//! shape of k3s's secure tokens); a bare `<id>.<secret>` needs the hash given separately.
//!
//! The CA is learnt from the server's own TLS handshake: the chain it presents must hold a
//! certificate whose public key has the pinned hash, and the serving certificate must verify
//! against that certificate as the only root. Only then is the token sent.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krust_machinery::bootstrap::Token;
use ring::digest::{digest, SHA256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::CredentialsError;

const PREFIX: &str = "K10";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA's SubjectPublicKeyInfo.
    pub ca_hash: Option<String>,
    pub token: Token,
}

impl JoinToken {
    pub fn parse(s: &str) -> Result<JoinToken, CredentialsError> {
        let s = s.trim();
        let bad = || {
            CredentialsError::Token(
                "a join token is K10<ca-hash>::<id>.<secret> or <id>.<secret> (as `krust token create` prints)".into(),
            )
        };
        let (hash, rest) = match s.strip_prefix(PREFIX).and_then(|r| r.split_once("::")) {
            Some((h, rest)) => (Some(parse_hash(h).ok_or_else(bad)?), rest),
            None => (None, s),
        };
        let token = Token::parse(rest).ok_or_else(bad)?;
        Ok(JoinToken {
            ca_hash: hash,
            token,
        })
    }
}

/// The printed token.
pub fn format_token(ca_hash: &str, token: &Token) -> String {
    format!("{PREFIX}{ca_hash}::{token}")
}

/// A hash as given: hex, optionally `sha256:`-prefixed (kubeadm's form).
pub fn parse_hash(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Hex SHA-256 of a certificate's SubjectPublicKeyInfo (DER).
pub fn spki_hash(der: &[u8]) -> Result<String, CredentialsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CredentialsError::Certificate(format!("parsing a certificate: {e}")))?;
    Ok(hex(digest(&SHA256, cert.public_key().raw).as_ref()))
}

/// The pin of the first certificate in a PEM bundle (the CA file).
pub fn ca_hash(ca_pem: &str) -> Result<String, CredentialsError> {
    spki_hash(super::slot::first_cert(ca_pem)?.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the chain against the pin and remembers the CA that matched.
#[derive(Debug)]
struct Pinned {
    hash: String,
    provider: Arc<CryptoProvider>,
    found: Mutex<Result<CertificateDer<'static>, Vec<String>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = Vec::new();
        for c in std::iter::once(end_entity).chain(intermediates) {
            let Ok(h) = spki_hash(c.as_ref()) else {
                continue;
            };
            if h != self.hash {
                seen.push(h);
                continue;
            }
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.clone().into_owned())?;
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
            *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Ok(c.clone().into_owned());
            return Ok(ServerCertVerified::assertion());
        }
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Err(seen);
        Err(rustls::Error::General(
            "no certificate matches the CA hash".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `host` and `port` of an `https://` URL.
pub fn host_port(server: &http::Uri) -> Result<(String, u16), CredentialsError> {
    if server.scheme_str() != Some("https") {
        return Err(CredentialsError::Server(format!(
            "{server}: the server URL must be https://HOST:PORT"
        )));
    }
    let host = server
        .host()
        .ok_or_else(|| CredentialsError::Server(format!("{server}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, server.port_u16().unwrap_or(443)))
}

/// The cluster CA (PEM) of the server at `server`, learnt from its handshake and checked
/// against `hash`.
pub async fn discover_ca(server: &http::Uri, hash: &str) -> Result<String, CredentialsError> {
    let (host, port) = host_port(server)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Arc::new(Pinned {
        hash: hash.to_string(),
        provider: provider.clone(),
        found: Mutex::new(Err(Vec::new())),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CredentialsError::Server(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())
            .map_err(|e| CredentialsError::Server(format!("{host}: {e}")))?,
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
    let found = pinned
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match (handshake, found) {
        (Ok(Ok(_)), Ok(ca)) => Ok(der_to_pem(ca.as_ref())),
        (_, Err(seen)) if !seen.is_empty() => Err(CredentialsError::CaMismatch {
            server: server.to_string(),
            expected: hash.to_string(),
            found: seen,
        }),
        (Ok(Err(e)), _) => Err(CredentialsError::Server(format!("{server}: {e}"))),
        (Err(_), _) => Err(CredentialsError::Server(format!(
            "{server}: no answer within {CONNECT_TIMEOUT:?}"
        ))),
        (Ok(Ok(_)), Err(_)) => Err(CredentialsError::Server(format!(
            "{server}: the handshake presented no certificate"
        ))),
    }
}

/// A DER certificate as PEM.
pub(crate) fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_forms() {
        let hash = "ab".repeat(32);
        let t = JoinToken::parse(&format!("K10{hash}::abcdef.0123456789abcdef")).expect("full");
        assert_eq!(t.ca_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(t.token.id, "abcdef");
        assert_eq!(
            format_token(&hash, &t.token),
            format!("K10{hash}::abcdef.0123456789abcdef")
        );
        let bare = JoinToken::parse("abcdef.0123456789abcdef").expect("bare");
        assert!(bare.ca_hash.is_none());
        for bad in ["K10abc::abcdef.0123456789abcdef", "abcdef", "K10::x", ""] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_hash(&format!("sha256:{}", "AB".repeat(32))),
            Some("ab".repeat(32))
        );
        assert!(parse_hash("sha256:12").is_none());
    }

    #[test]
    fn hash_is_of_the_public_key_and_pem_round_trips() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ca".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let h = ca_hash(&cert.pem()).expect("hash");
        assert_eq!(h.len(), 64);
        let again = der_to_pem(cert.der());
        assert_eq!(ca_hash(&again).expect("hash"), h);
        // Same key, another certificate: same pin (kubeadm pins the key, not the cert).
        let other = rcgen::CertificateParams::new(vec!["ca2".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert_eq!(ca_hash(&other.pem()).expect("hash"), h);
    }

    #[test]
    fn server_urls() {
        let u: http::Uri = "https://10.0.0.1:6443".parse().expect("uri");
        assert_eq!(host_port(&u).expect("ok"), ("10.0.0.1".to_string(), 6443));
        let plain: http::Uri = "http://10.0.0.1:6443".parse().expect("uri");
        assert!(host_port(&plain).is_err());
    }
}
