//! What the CertificateSigningRequest controllers share, as upstream's
//! `pkg/apis/certificates` helpers and `pkg/controller/certificates`: the signer names, a
//! parsed certificate request, the kubelet signers' constraints and the condition
//! predicates.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Client certificates for the API server, for any user (never auto-approved).
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Kubelets' client certificates (`system:node:<name>` in `system:nodes`).
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Kubelets' serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// A node's user is `system:node:<node name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

pub const APPROVED: &str = "Approved";
pub const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";

pub const USAGE_CLIENT_AUTH: &str = "client auth";
pub const USAGE_SERVER_AUTH: &str = "server auth";
pub const USAGE_DIGITAL_SIGNATURE: &str = "digital signature";
pub const USAGE_KEY_ENCIPHERMENT: &str = "key encipherment";

const PEM_LABEL: &str = "CERTIFICATE REQUEST";

/// Why `spec.request` is no usable certificate request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("malformed certificate request: {0}")]
    Malformed(String),
    #[error("unable to verify certificate request signature: {0}")]
    Signature(String),
}

/// A certificate request, parsed: what the approver and the signer look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Csr {
    /// The request's DER (the signature is checked on it).
    pub der: Vec<u8>,
    /// The subject as DER, copied unchanged into the certificate.
    pub subject_der: Vec<u8>,
    /// Whether the subject has no attribute at all.
    pub subject_empty: bool,
    /// The SubjectPublicKeyInfo as DER.
    pub spki_der: Vec<u8>,
    /// The (last) common name, as Go's `pkix.Name` keeps it; empty when there is none.
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

impl Csr {
    /// Parses the PEM of `spec.request` (upstream's `ParseCSR`): the first PEM block, which
    /// must be a `CERTIFICATE REQUEST`. The signature is not checked here.
    pub fn parse_pem(pem: &[u8]) -> Result<Csr, ParseError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| ParseError::NotPem)?;
        if block.label != PEM_LABEL {
            return Err(ParseError::NotPem);
        }
        Csr::parse_der(&block.contents)
    }

    pub fn parse_der(der: &[u8]) -> Result<Csr, ParseError> {
        let malformed = |e: String| ParseError::Malformed(e);
        let (_, req) =
            X509CertificationRequest::from_der(der).map_err(|e| malformed(e.to_string()))?;
        let info = &req.certification_request_info;
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            a.as_str()
                .map(str::to_string)
                .map_err(|e| malformed(format!("subject: {e}")))
        };
        let mut csr = Csr {
            der: der.to_vec(),
            subject_der: info.subject.as_raw().to_vec(),
            subject_empty: info.subject.iter().next().is_none(),
            spki_der: info.subject_pki.raw.to_vec(),
            common_name: match info.subject.iter_common_name().last() {
                Some(a) => text(a)?,
                None => String::new(),
            },
            organizations: info
                .subject
                .iter_organization()
                .map(text)
                .collect::<Result<_, _>>()?,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            emails: Vec::new(),
            uris: Vec::new(),
        };
        for ext in req.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    csr.add_san(name)?;
                }
            }
        }
        Ok(csr)
    }

    /// Keeps the SAN kinds Go's `x509.CertificateRequest` keeps; others are ignored as there.
    fn add_san(&mut self, name: &GeneralName<'_>) -> Result<(), ParseError> {
        match name {
            GeneralName::DNSName(d) => self.dns_names.push(d.to_string()),
            GeneralName::RFC822Name(e) => self.emails.push(e.to_string()),
            GeneralName::URI(u) => self.uris.push(u.to_string()),
            GeneralName::IPAddress(b) => {
                self.ip_addresses.push(ip_from_bytes(b).ok_or_else(|| {
                    ParseError::Malformed(format!("IP subjectAltName of {} bytes", b.len()))
                })?)
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks the request's self-signature (proof that the requester holds the key).
    pub fn verify_signature(&self) -> Result<(), ParseError> {
        let (_, req) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        req.verify_signature()
            .map_err(|e| ParseError::Signature(e.to_string()))
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// How a request breaks a signer's constraints; the messages are upstream's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("subject organization is not system:nodes")]
    OrganizationNotSystemNodes,
    #[error("subject common name does not begin with system:node:")]
    CommonNameNotSystemNode,
    #[error("DNS or IP subjectAltName is required")]
    DnsOrIpRequired,
    #[error("DNS subjectAltNames are not allowed")]
    DnsNotAllowed,
    #[error("Email subjectAltNames are not allowed")]
    EmailNotAllowed,
    #[error("IP subjectAltNames are not allowed")]
    IpNotAllowed,
    #[error("URI subjectAltNames are not allowed")]
    UriNotAllowed,
    #[error(
        "usages did not match {allowed:?}: {required:?} is required and no other usage is allowed"
    )]
    Usages {
        allowed: Vec<&'static str>,
        required: &'static str,
    },
    #[error("invalid usage for client certificate: {0}")]
    InvalidClientUsage(String),
    #[error("missing required usage for client certificate: client auth")]
    MissingClientAuth,
}

/// `usages` contains `required` and nothing outside `allowed`.
fn usages_within(usages: &[String], allowed: &[&'static str], required: &'static str) -> bool {
    usages.iter().any(|u| u == required) && usages.iter().all(|u| allowed.contains(&u.as_str()))
}

fn usage_error(allowed: &[&'static str], required: &'static str) -> PolicyError {
    let allowed: BTreeSet<&'static str> = allowed.iter().copied().collect();
    PolicyError::Usages {
        allowed: allowed.into_iter().collect(),
        required,
    }
}

fn nodes_organization(csr: &Csr) -> Result<(), PolicyError> {
    if csr.organizations != [NODES_GROUP] {
        return Err(PolicyError::OrganizationNotSystemNodes);
    }
    Ok(())
}

/// A kubelet client certificate (upstream's `ValidateKubeletClientCSR`): O exactly
/// `system:nodes`, CN `system:node:*`, no SAN at all, usages within client auth, digital
/// signature and key encipherment, client auth included.
pub fn validate_kubelet_client(csr: &Csr, usages: &[String]) -> Result<(), PolicyError> {
    const ALLOWED: [&str; 3] = [
        USAGE_CLIENT_AUTH,
        USAGE_DIGITAL_SIGNATURE,
        USAGE_KEY_ENCIPHERMENT,
    ];
    nodes_organization(csr)?;
    if !csr.dns_names.is_empty() {
        return Err(PolicyError::DnsNotAllowed);
    }
    if !csr.emails.is_empty() {
        return Err(PolicyError::EmailNotAllowed);
    }
    if !csr.ip_addresses.is_empty() {
        return Err(PolicyError::IpNotAllowed);
    }
    if !csr.uris.is_empty() {
        return Err(PolicyError::UriNotAllowed);
    }
    if !csr.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(PolicyError::CommonNameNotSystemNode);
    }
    if !usages_within(usages, &ALLOWED, USAGE_CLIENT_AUTH) {
        return Err(usage_error(&ALLOWED, USAGE_CLIENT_AUTH));
    }
    Ok(())
}

/// A kubelet serving certificate (upstream's `ValidateKubeletServingCSR`): O exactly
/// `system:nodes`, at least one DNS or IP SAN and no email or URI SAN, usages within server
/// auth, digital signature and key encipherment, server auth included, CN `system:node:*`.
pub fn validate_kubelet_serving(csr: &Csr, usages: &[String]) -> Result<(), PolicyError> {
    const ALLOWED: [&str; 3] = [
        USAGE_SERVER_AUTH,
        USAGE_DIGITAL_SIGNATURE,
        USAGE_KEY_ENCIPHERMENT,
    ];
    nodes_organization(csr)?;
    if csr.dns_names.is_empty() && csr.ip_addresses.is_empty() {
        return Err(PolicyError::DnsOrIpRequired);
    }
    if !csr.emails.is_empty() {
        return Err(PolicyError::EmailNotAllowed);
    }
    if !csr.uris.is_empty() {
        return Err(PolicyError::UriNotAllowed);
    }
    if !usages_within(usages, &ALLOWED, USAGE_SERVER_AUTH) {
        return Err(usage_error(&ALLOWED, USAGE_SERVER_AUTH));
    }
    if !csr.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(PolicyError::CommonNameNotSystemNode);
    }
    Ok(())
}

/// An API server client certificate (upstream's `validAPIServerClientUsages`): client auth,
/// optionally digital signature and key encipherment, nothing else (so never server auth).
pub fn validate_apiserver_client(usages: &[String]) -> Result<(), PolicyError> {
    if let Some(u) = usages.iter().find(|u| {
        ![
            USAGE_CLIENT_AUTH,
            USAGE_DIGITAL_SIGNATURE,
            USAGE_KEY_ENCIPHERMENT,
        ]
        .contains(&u.as_str())
    }) {
        return Err(PolicyError::InvalidClientUsage(u.clone()));
    }
    if !usages.iter().any(|u| u == USAGE_CLIENT_AUTH) {
        return Err(PolicyError::MissingClientAuth);
    }
    Ok(())
}

/// The constraints of one of the signers krust signs for; `None` for any other signer.
pub fn validate_for_signer(
    signer: &str,
    csr: &Csr,
    usages: &[String],
) -> Option<Result<(), PolicyError>> {
    match signer {
        KUBE_APISERVER_CLIENT => Some(validate_apiserver_client(usages)),
        KUBE_APISERVER_CLIENT_KUBELET => Some(validate_kubelet_client(csr, usages)),
        KUBELET_SERVING => Some(validate_kubelet_serving(csr, usages)),
        _ => None,
    }
}

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// `(approved, denied)`: whether an Approved or a Denied condition is present (upstream's
/// `GetCertApprovalCondition`; the API admits them only with status True).
pub fn approval(csr: &CertificateSigningRequest) -> (bool, bool) {
    let cs = conditions(csr);
    (
        cs.iter().any(|c| c.type_ == APPROVED),
        cs.iter().any(|c| c.type_ == DENIED),
    )
}

/// Approved and not denied.
pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    approval(csr) == (true, false)
}

pub fn has_true_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    conditions(csr)
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether `status.certificate` is set.
pub fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// A True condition of `type_`, stamped now.
pub fn condition(type_: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// `csr` with `cond` appended to its conditions.
pub fn with_condition(
    csr: &CertificateSigningRequest,
    cond: CertificateSigningRequestCondition,
) -> CertificateSigningRequest {
    let mut next = csr.clone();
    next.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(cond);
    next
}

#[cfg(test)]
pub(crate) mod testing {
    //! Requests made with rcgen, for the tests of the CSR controllers.

    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    /// A PEM request with CN `cn`, the organizations `orgs` and `sans` (DNS names, or IP
    /// addresses when they parse as one).
    pub fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let key = KeyPair::generate().expect("key");
        request_with_key(cn, orgs, sans, &key)
    }

    pub fn request_with_key(cn: &str, orgs: &[&str], sans: &[&str], key: &KeyPair) -> String {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        // rcgen keeps one value per attribute type; a second organization goes in as a
        // custom attribute of the same OID, which encodes identically.
        let mut orgs = orgs.iter();
        if let Some(o) = orgs.next() {
            dn.push(DnType::OrganizationName, *o);
        }
        if let Some(o) = orgs.next() {
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *o);
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().expect("dns name")),
            })
            .collect();
        p.serialize_request(key).expect("csr").pem().expect("pem")
    }

    pub fn usages(us: &[&str]) -> Vec<String> {
        us.iter().map(|u| u.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{request, usages};
    use super::*;

    #[test]
    fn parses_subject_and_sans() {
        let pem = request(
            "system:node:n1",
            &["system:nodes", "extra"],
            &["n1.local", "10.0.0.1"],
        );
        let csr = Csr::parse_pem(pem.as_bytes()).expect("parses");
        assert_eq!(csr.common_name, "system:node:n1");
        assert_eq!(csr.organizations, vec!["system:nodes", "extra"]);
        assert_eq!(csr.dns_names, vec!["n1.local"]);
        assert_eq!(
            csr.ip_addresses,
            vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert!(csr.verify_signature().is_ok());
        assert!(!csr.subject_empty);
    }

    #[test]
    fn refuses_what_is_no_request() {
        assert_eq!(Csr::parse_pem(b"garbage"), Err(ParseError::NotPem));
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert_eq!(Csr::parse_pem(cert.as_bytes()), Err(ParseError::NotPem));
        let bad = "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(
            Csr::parse_pem(bad.as_bytes()),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn kubelet_client_constraints() {
        let ok = Csr::parse_pem(request("system:node:n1", &["system:nodes"], &[]).as_bytes())
            .expect("parses");
        let u = usages(&[USAGE_DIGITAL_SIGNATURE, USAGE_CLIENT_AUTH]);
        assert_eq!(validate_kubelet_client(&ok, &u), Ok(()));
        assert_eq!(
            validate_kubelet_client(&ok, &usages(&[USAGE_CLIENT_AUTH, USAGE_SERVER_AUTH])),
            Err(usage_error(
                &[
                    USAGE_CLIENT_AUTH,
                    USAGE_DIGITAL_SIGNATURE,
                    USAGE_KEY_ENCIPHERMENT
                ],
                USAGE_CLIENT_AUTH
            ))
        );
        assert!(validate_kubelet_client(&ok, &usages(&[USAGE_DIGITAL_SIGNATURE])).is_err());
        let parse = |cn, orgs: &[&str], sans: &[&str]| {
            Csr::parse_pem(request(cn, orgs, sans).as_bytes()).expect("parses")
        };
        assert_eq!(
            validate_kubelet_client(&parse("system:node:n1", &["x"], &[]), &u),
            Err(PolicyError::OrganizationNotSystemNodes)
        );
        assert_eq!(
            validate_kubelet_client(&parse("system:node:n1", &["system:nodes", "x"], &[]), &u),
            Err(PolicyError::OrganizationNotSystemNodes)
        );
        assert_eq!(
            validate_kubelet_client(&parse("alice", &["system:nodes"], &[]), &u),
            Err(PolicyError::CommonNameNotSystemNode)
        );
        assert_eq!(
            validate_kubelet_client(&parse("system:node:n1", &["system:nodes"], &["a"]), &u),
            Err(PolicyError::DnsNotAllowed)
        );
        assert_eq!(
            validate_kubelet_client(
                &parse("system:node:n1", &["system:nodes"], &["1.2.3.4"]),
                &u
            ),
            Err(PolicyError::IpNotAllowed)
        );
    }

    #[test]
    fn kubelet_serving_and_apiserver_client_constraints() {
        let u = usages(&[
            USAGE_SERVER_AUTH,
            USAGE_DIGITAL_SIGNATURE,
            USAGE_KEY_ENCIPHERMENT,
        ]);
        let no_san = Csr::parse_pem(request("system:node:n1", &["system:nodes"], &[]).as_bytes())
            .expect("parses");
        assert_eq!(
            validate_kubelet_serving(&no_san, &u),
            Err(PolicyError::DnsOrIpRequired)
        );
        let ok = Csr::parse_pem(
            request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]).as_bytes(),
        )
        .expect("parses");
        assert_eq!(validate_kubelet_serving(&ok, &u), Ok(()));
        assert!(validate_kubelet_serving(&ok, &usages(&[USAGE_CLIENT_AUTH])).is_err());

        assert_eq!(
            validate_apiserver_client(&usages(&[USAGE_CLIENT_AUTH, USAGE_KEY_ENCIPHERMENT])),
            Ok(())
        );
        assert_eq!(
            validate_apiserver_client(&usages(&[USAGE_CLIENT_AUTH, USAGE_SERVER_AUTH])),
            Err(PolicyError::InvalidClientUsage(USAGE_SERVER_AUTH.into()))
        );
        assert_eq!(
            validate_apiserver_client(&usages(&[USAGE_DIGITAL_SIGNATURE])),
            Err(PolicyError::MissingClientAuth)
        );
        assert!(validate_for_signer("example.com/other", &ok, &u).is_none());
        assert_eq!(validate_for_signer(KUBELET_SERVING, &ok, &u), Some(Ok(())));
    }

    #[test]
    fn conditions_are_read_as_upstream() {
        let mut csr = CertificateSigningRequest::default();
        assert_eq!(approval(&csr), (false, false));
        csr = with_condition(&csr, condition(APPROVED, "AutoApproved", "ok".into()));
        assert!(is_approved(&csr));
        assert!(!has_true_condition(&csr, FAILED));
        csr = with_condition(&csr, condition(DENIED, "No", "no".into()));
        assert!(!is_approved(&csr));
        assert!(!has_certificate(&csr));
    }
}
