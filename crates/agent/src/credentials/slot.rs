//! A certificate that can be replaced while connections use it: rustls asks the slot for the
//! current certificate at every handshake, so a renewed certificate takes effect on the next
//! connection without rebuilding clients or listeners.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::CredentialsError;

/// One certificate and key, PEM, with the certificate's lifetime.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl Issued {
    /// Parses `cert_pem` for its lifetime; `key_pem` must hold the matching key.
    pub fn new(cert_pem: String, key_pem: String) -> Result<Issued, CredentialsError> {
        let der = first_cert(&cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| CredentialsError::Certificate(format!("parsing the certificate: {e}")))?;
        let validity = cert.validity();
        Ok(Issued {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            cert_pem,
            key_pem,
        })
    }

    /// When to renew: a point 70 to 90 per cent through the lifetime (as the kubelet's
    /// jittered deadline), `jitter` in [0, 1).
    pub fn renew_at(&self, jitter: f64) -> i64 {
        let life = (self.not_after - self.not_before).max(0) as f64;
        self.not_before + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
    }

    pub fn expired_at(&self, now: i64) -> bool {
        now >= self.not_after
    }

    fn certified_key(&self) -> Result<CertifiedKey, CredentialsError> {
        let chain = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| CredentialsError::Certificate(e.to_string()))?
            .ok_or_else(|| CredentialsError::Certificate("no private key".into()))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CredentialsError::Certificate(format!("loading the key: {e}")))?;
        Ok(CertifiedKey::new(chain, signing))
    }
}

/// The first certificate of a PEM bundle.
pub fn first_cert(pem: &str) -> Result<CertificateDer<'static>, CredentialsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| CredentialsError::Certificate("no CERTIFICATE block".into()))?
        .map_err(|e| CredentialsError::Certificate(e.to_string()))
}

/// The current certificate for a client identity or a listener.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<(Arc<CertifiedKey>, Issued)>,
}

impl CertSlot {
    pub fn new(issued: Issued) -> Result<Arc<CertSlot>, CredentialsError> {
        let key = Arc::new(issued.certified_key()?);
        Ok(Arc::new(CertSlot {
            current: RwLock::new((key, issued)),
        }))
    }

    /// Replaces the certificate; handshakes from now on present the new one.
    pub fn replace(&self, issued: Issued) -> Result<(), CredentialsError> {
        let key = Arc::new(issued.certified_key()?);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = (key, issued);
        Ok(())
    }

    pub fn issued(&self) -> Issued {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl ResolvesClientCert for CertSlot {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(cn: &str) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).expect("params");
        p.not_before = rcgen::date_time_ymd(2030, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 11);
        let cert = p.self_signed(&key).expect("cert");
        Issued::new(cert.pem(), key.serialize_pem()).expect("issued")
    }

    #[test]
    fn lifetime_and_renewal_point() {
        let i = self_signed("a");
        assert_eq!(i.not_after - i.not_before, 10 * 86_400);
        assert_eq!(i.renew_at(0.0), i.not_before + 7 * 86_400);
        assert_eq!(i.renew_at(1.0), i.not_before + 9 * 86_400);
        assert!(!i.expired_at(i.not_after - 1));
        assert!(i.expired_at(i.not_after));
    }

    #[test]
    fn replacing_changes_what_handshakes_get() {
        let slot = CertSlot::new(self_signed("a")).expect("slot");
        let before = ResolvesClientCert::resolve(slot.as_ref(), &[], &[]).expect("cert");
        let next = self_signed("b");
        slot.replace(next.clone()).expect("replace");
        let after = ResolvesClientCert::resolve(slot.as_ref(), &[], &[]).expect("cert");
        assert_ne!(before.cert[0], after.cert[0]);
        assert_eq!(slot.issued().cert_pem, next.cert_pem);
        assert!(Issued::new("junk".into(), String::new()).is_err());
    }
}
