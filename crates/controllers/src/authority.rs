//! The certificate authority of `csrsigning`, as upstream's `pkg/controller/certificates/
//! authority`: turns a parsed request into a certificate signed by the cluster CA, under
//! upstream's PermissiveSigningPolicy (see [`Authority::sign`]).

use std::time::Duration;

use base64::Engine;
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

use crate::certificates::{Csr, ParseError, PolicyError};

/// How far NotBefore lies in the past, for clocks that lag.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Certificates shorter-lived than this do not lose the backdate off their NotAfter.
pub const SHORT: Duration = Duration::from_secs(8 * 60 * 60);
/// The least lifetime a request may ask for (twice the backdate).
pub const MIN_DURATION: Duration = Duration::from_secs(10 * 60);

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("invalid CA certificate: {0}")]
    CaCert(String),
    #[error("invalid CA key: {0}")]
    CaKey(#[source] rcgen::Error),
    #[error("the CA key does not match the CA certificate")]
    CaKeyMismatch,
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("unrecognized usage values: {0:?}")]
    Usages(Vec<String>),
    #[error("unsupported public key algorithm")]
    KeyAlgorithm,
    #[error("invalid subjectAltName {0:?}")]
    San(String),
    #[error("the signer has expired: NotAfter={0}")]
    CaExpired(OffsetDateTime),
    #[error("failed to sign certificate: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("failed to sign certificate: malformed DER")]
    Der,
}

impl SignError {
    /// Whether the request itself is at fault, so that retrying cannot help: it gets a
    /// Failed condition rather than a retry.
    pub fn is_request_fault(&self) -> bool {
        matches!(
            self,
            SignError::Parse(_)
                | SignError::Policy(_)
                | SignError::Usages(_)
                | SignError::KeyAlgorithm
                | SignError::San(_)
        )
    }
}

/// The cluster CA, parsed once.
pub struct Authority {
    cert_pem: String,
    key: KeyPair,
    not_after: OffsetDateTime,
}

impl Authority {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Authority, SignError> {
        let bad = |e: String| SignError::CaCert(e);
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|e| bad(e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(SignError::CaKey)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(SignError::CaKeyMismatch);
        }
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(|e| bad(e.to_string()))?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key,
            not_after,
        })
    }

    /// The CA's own NotAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a certificate (PEM) for `csr` with `usages`, living `ttl` from `now`.
    pub fn sign(
        &self,
        csr: &Csr,
        usages: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<String, SignError> {
        csr.verify_signature()?;
        let (key_usages, ekus) = key_usages(usages)?;
        let (not_before, not_after) = self.validity(ttl, now)?;
        let mut params = CertificateParams::default();
        // rcgen keeps one value per attribute type, so the request's subject is put in
        // byte for byte afterwards; a non-empty stand-in keeps the SAN extension
        // non-critical, as RFC 5280 wants for a certificate with a subject.
        let mut stand_in = DistinguishedName::new();
        if !csr.subject_empty {
            stand_in.push(DnType::CommonName, "subject");
        }
        params.distinguished_name = stand_in;
        params.subject_alt_names = sans(csr)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = key_usages;
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from(rand::random::<[u8; 16]>().to_vec()));
        params.not_before = not_before;
        params.not_after = not_after;
        let public_key =
            SubjectPublicKeyInfo::from_der(&csr.spki_der).map_err(|_| SignError::KeyAlgorithm)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| SignError::CaCert(e.to_string()))?;
        let cert = params
            .signed_by(&public_key, &issuer)
            .map_err(SignError::Sign)?;
        let der = with_subject(cert.der(), &csr.subject_der, &self.key)?;
        Ok(pem_certificate(&der))
    }

    /// Upstream's PermissiveSigningPolicy boundaries.
    fn validity(
        &self,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), SignError> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let later = |d: Duration| {
            time::Duration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d))
                .unwrap_or(self.not_after)
        };
        let not_before = now - BACKDATE;
        let mut not_after = if ttl < SHORT {
            later(ttl)
        } else {
            later(ttl.saturating_sub(BACKDATE))
        };
        if not_after >= self.not_after {
            not_after = self.not_after;
        }
        if not_before >= self.not_after || now >= self.not_after {
            return Err(SignError::CaExpired(self.not_after));
        }
        Ok((not_before, not_after))
    }
}

/// The lifetime to issue (upstream's `signer.duration`): the requested
/// `expirationSeconds`, at most `max` and at least 10 minutes; `max` when none is asked.
pub fn lifetime(expiration_seconds: Option<i32>, max: Duration) -> Duration {
    let Some(secs) = expiration_seconds else {
        return max;
    };
    let asked = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    if asked > max {
        max
    } else {
        asked.max(MIN_DURATION)
    }
}

/// `spec.usages` as key usages and extended key usages (upstream's `keyUsagesFromStrings`,
/// EKUs in Go's order).
fn key_usages(
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), SignError> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    let mut kus: Vec<K> = Vec::new();
    let mut ekus: Vec<(u8, E)> = Vec::new();
    let mut unknown = Vec::new();
    for u in usages {
        let ku = match u.as_str() {
            "signing" | "digital signature" => Some(K::DigitalSignature),
            "content commitment" => Some(K::ContentCommitment),
            "key encipherment" => Some(K::KeyEncipherment),
            "key agreement" => Some(K::KeyAgreement),
            "data encipherment" => Some(K::DataEncipherment),
            "cert sign" => Some(K::KeyCertSign),
            "crl sign" => Some(K::CrlSign),
            "encipher only" => Some(K::EncipherOnly),
            "decipher only" => Some(K::DecipherOnly),
            _ => None,
        };
        if let Some(ku) = ku {
            if !kus.contains(&ku) {
                kus.push(ku);
            }
            continue;
        }
        let eku = match u.as_str() {
            "any" => (0, E::Any),
            "server auth" => (1, E::ServerAuth),
            "client auth" => (2, E::ClientAuth),
            "code signing" => (3, E::CodeSigning),
            "email protection" | "s/mime" => (4, E::EmailProtection),
            "ipsec end system" => (5, E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
            "ipsec tunnel" => (6, E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
            "ipsec user" => (7, E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
            "timestamping" => (8, E::TimeStamping),
            "ocsp signing" => (9, E::OcspSigning),
            "microsoft sgc" => (10, E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
            "netscape sgc" => (11, E::Other(vec![2, 16, 840, 1, 113730, 4, 1])),
            _ => {
                unknown.push(u.clone());
                continue;
            }
        };
        if !ekus.iter().any(|(rank, _)| *rank == eku.0) {
            ekus.push(eku);
        }
    }
    if !unknown.is_empty() {
        return Err(SignError::Usages(unknown));
    }
    ekus.sort_by_key(|(rank, _)| *rank);
    Ok((kus, ekus.into_iter().map(|(_, e)| e).collect()))
}

/// The request's SANs, in the order Go writes them: DNS, email, IP, URI.
fn sans(csr: &Csr) -> Result<Vec<SanType>, SignError> {
    let ia5 = |s: &String| Ia5String::try_from(s.as_str()).map_err(|_| SignError::San(s.clone()));
    let mut out = Vec::new();
    for d in &csr.dns_names {
        out.push(SanType::DnsName(ia5(d)?));
    }
    for e in &csr.emails {
        out.push(SanType::Rfc822Name(ia5(e)?));
    }
    out.extend(csr.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    for u in &csr.uris {
        out.push(SanType::URI(ia5(u)?));
    }
    Ok(out)
}

/// `(header length, content length)` of the DER element at the start of `der`.
fn der_header(der: &[u8]) -> Option<(usize, usize)> {
    let first = usize::from(*der.get(1)?);
    if first < 0x80 {
        return Some((2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((2 + n, len))
}

/// Splits DER content into its elements.
fn der_elements(mut content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (h, l) = der_header(content)?;
        let (elem, rest) = content.split_at_checked(h.checked_add(l)?)?;
        out.push(elem);
        content = rest;
    }
    Some(out)
}

/// The content of the DER element `der`.
fn der_content(der: &[u8]) -> Option<&[u8]> {
    let (h, l) = der_header(der)?;
    der.get(h..h.checked_add(l)?)
}

fn der_wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `cert` (as rcgen wrote it: version, serial, signature, issuer, validity, subject, ...)
/// with `subject` (DER) as its subject, signed again by `key`.
fn with_subject(cert: &[u8], subject: &[u8], key: &KeyPair) -> Result<Vec<u8>, SignError> {
    let outer = der_content(cert)
        .and_then(der_elements)
        .ok_or(SignError::Der)?;
    let [tbs, sig_alg, _sig] = outer[..] else {
        return Err(SignError::Der);
    };
    let mut fields = der_content(tbs)
        .and_then(der_elements)
        .ok_or(SignError::Der)?;
    let slot = fields.get_mut(5).ok_or(SignError::Der)?;
    *slot = subject;
    let tbs = der_wrap(0x30, &fields.concat());
    let signature = key.sign(&tbs).map_err(SignError::Sign)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    let bits = der_wrap(0x03, &bits);
    let body = [tbs.as_slice(), sig_alg, bits.as_slice()].concat();
    Ok(der_wrap(0x30, &body))
}

fn pem_certificate(der: &[u8]) -> String {
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
pub(crate) mod testing {
    //! A CA made with rcgen, for the signing tests.

    use super::*;
    use rcgen::BasicConstraints;

    pub struct TestCa {
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub fn test_ca(not_after: OffsetDateTime) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = not_after;
        let cert = p.self_signed(&key).expect("ca");
        TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn far() -> OffsetDateTime {
        rcgen::date_time_ymd(2100, 1, 1)
    }

    pub fn authority(ca: &TestCa) -> Authority {
        Authority::new(&ca.cert_pem, &ca.key_pem).expect("authority")
    }

    pub fn der_of(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1
            .contents
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{authority, der_of, far, test_ca};
    use super::*;
    use crate::certificates::testing::{request_with_key, usages};

    #[test]
    fn refuses_a_request_not_signed_by_its_key() {
        let a = authority(&test_ca(far()));
        let key = KeyPair::generate().expect("key");
        let pem = request_with_key("alice", &["devs"], &[], &key);
        let mut der = der_of(&pem);
        // Flip a bit of the signature (the request's last byte).
        if let Some(last) = der.last_mut() {
            *last ^= 1;
        }
        let tampered = Csr::parse_der(&der).expect("still parses");
        let e = a
            .sign(
                &tampered,
                &usages(&["client auth"]),
                MIN_DURATION,
                OffsetDateTime::now_utc(),
            )
            .expect_err("bad signature");
        assert!(matches!(e, SignError::Parse(ParseError::Signature(_))));
        assert!(e.is_request_fault());
    }

    #[test]
    fn refuses_a_key_that_is_not_the_cas() {
        let ca = test_ca(far());
        let other = KeyPair::generate().expect("key").serialize_pem();
        assert!(matches!(
            Authority::new(&ca.cert_pem, &other),
            Err(SignError::CaKeyMismatch)
        ));
        assert!(matches!(
            Authority::new("nonsense", &ca.key_pem),
            Err(SignError::CaCert(_))
        ));
    }

    #[test]
    fn der_lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; n];
            let der = der_wrap(0x30, &content);
            assert_eq!(
                der_header(&der).map(|(h, l)| (h + l, l)),
                Some((der.len(), n))
            );
            assert_eq!(der_content(&der), Some(content.as_slice()));
        }
        assert!(der_elements(&[0x30, 0x05, 0x00]).is_none(), "truncated");
    }
}
