//! `certificates.k8s.io/v1` CertificateSigningRequest, as upstream's
//! `pkg/apis/certificates/validation`: the request must be a PEM `CERTIFICATE REQUEST`
//! whose signature verifies, the signer a `example.com/name` qualified name, usages from the
//! known set and not repeated, conditions well formed, `status.certificate` PEM
//! `CERTIFICATE` blocks. Updates go through three doors: the object itself (neither
//! approval conditions nor the certificate may change), `status` (the certificate may be
//! set once) and `approval` (Approved and Denied conditions may be added). Problems already
//! in the stored object are tolerated on update, as upstream does.
//!
//! `spec.request` and `status.certificate` arrive base64-encoded (JSON's form of `[]byte`).

use base64::Engine;
use serde_json::Value;

use super::field::{self, Path};
use super::names;
use super::{arr, diff, int, semantic_eq, str_of, sub};
use crate::status::Cause;

/// Upstream's `allValidUsages`, sorted as its `sets.List()` prints them.
pub const KEY_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

pub const APPROVED: &str = "Approved";
pub const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";
/// The signer name only v1beta1 accepted.
const LEGACY_UNKNOWN_SIGNER: &str = "kubernetes.io/legacy-unknown";
const STATUS_VALUES: &[&str] = &["False", "True", "Unknown"];
const TRUE_ONLY: &[&str] = &["True"];
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_MAX: usize = 63;

/// Which update door a write comes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Create,
    Update,
    Status,
    Approval,
}

/// Upstream's `certificateValidationOptions`: what this write may do, and what it tolerates
/// because the stored object already has it.
#[derive(Default)]
struct Options {
    allow_setting_approval_conditions: bool,
    allow_setting_certificate: bool,
    allow_both_approved_and_denied: bool,
    allow_legacy_signer_name: bool,
    allow_duplicate_condition_types: bool,
    allow_empty_condition_type: bool,
    allow_arbitrary_certificate: bool,
    allow_unknown_usages: bool,
    allow_duplicate_usages: bool,
}

fn conditions(csr: &Value) -> &[Value] {
    arr(sub(csr, "status"), "conditions")
}

fn usages(csr: &Value) -> Vec<&str> {
    arr(sub(csr, "spec"), "usages")
        .iter()
        .map(|u| u.as_str().unwrap_or_default())
        .collect()
}

fn has_duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> bool {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().any(|i| !seen.insert(i))
}

fn bytes_of(v: &Value, key: &str) -> Vec<u8> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

fn certificate(csr: &Value) -> Vec<u8> {
    bytes_of(sub(csr, "status"), "certificate")
}

fn options(new: &Value, old: Option<&Value>, door: Door) -> Options {
    let Some(old) = old else {
        return Options::default();
    };
    let types = |t: &str| conditions(old).iter().any(|c| str_of(c, "type") == t);
    let old_cert = certificate(old);
    Options {
        allow_setting_approval_conditions: door == Door::Approval,
        allow_setting_certificate: door == Door::Status,
        allow_both_approved_and_denied: types(APPROVED) && types(DENIED),
        allow_legacy_signer_name: str_of(sub(old, "spec"), "signerName") == LEGACY_UNKNOWN_SIGNER,
        allow_duplicate_condition_types: has_duplicates(
            conditions(old).iter().map(|c| str_of(c, "type")),
        ),
        allow_empty_condition_type: types(""),
        allow_arbitrary_certificate: certificate(new) == old_cert
            || check_certificate(&old_cert).is_err(),
        allow_unknown_usages: usages(old).iter().any(|u| !KEY_USAGES.contains(u)),
        allow_duplicate_usages: has_duplicates(usages(old)),
    }
}

/// Validates a CSR written through `door`; `old` is the stored object on updates. Metadata
/// is the caller's (`validate_create`/`validate_update` run it first).
pub fn validate(csr: &Value, old: Option<&Value>, door: Door) -> Vec<Cause> {
    let opts = options(csr, old, door);
    let mut errs = validate_object(csr, &opts);
    if let Some(old) = old {
        errs.extend(validate_transition(csr, old, &opts));
    }
    errs
}

fn validate_object(csr: &Value, opts: &Options) -> Vec<Cause> {
    let spec = sub(csr, "spec");
    let path = Path::new("spec");
    let mut errs = Vec::new();
    let request = bytes_of(spec, "request");
    if let Err(e) = check_request(&request) {
        let rendered = go_bytes(spec.get("request").map(|_| request.as_slice()));
        errs.push(field::invalid_raw(&path.child("request"), &rendered, &e));
    }
    errs.extend(validate_usages(csr, &path.child("usages"), opts));
    let signer = str_of(spec, "signerName");
    if !opts.allow_legacy_signer_name && signer == LEGACY_UNKNOWN_SIGNER {
        errs.push(field::invalid_str(
            &path.child("signerName"),
            signer,
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(validate_signer_name(&path.child("signerName"), signer));
    }
    if let Some(secs) = int(spec, "expirationSeconds").filter(|s| *s < 600) {
        errs.push(field::invalid_int(
            &path.child("expirationSeconds"),
            secs,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs.extend(validate_conditions(csr, opts));
    if !opts.allow_arbitrary_certificate {
        if let Err(e) = check_certificate(&certificate(csr)) {
            errs.push(field::invalid_str(
                &Path::new("status").child("certificate"),
                "<certificate data>",
                &e,
            ));
        }
    }
    errs
}

fn validate_usages(csr: &Value, path: &Path, opts: &Options) -> Vec<Cause> {
    let usages = usages(csr);
    let mut errs = Vec::new();
    if usages.is_empty() {
        errs.push(field::required(path, "usages must be provided"));
    }
    if !opts.allow_unknown_usages {
        for (i, u) in usages.iter().enumerate() {
            if !KEY_USAGES.contains(u) {
                errs.push(field::not_supported_str(&path.index(i), u, KEY_USAGES));
            }
        }
    }
    if !opts.allow_duplicate_usages {
        let mut seen = std::collections::HashSet::new();
        for (i, u) in usages.iter().enumerate() {
            if !seen.insert(*u) {
                errs.push(field::duplicate_str(&path.index(i), u));
            }
        }
    }
    errs
}

fn validate_conditions(csr: &Value, opts: &Options) -> Vec<Cause> {
    let path = Path::new("status").child("conditions");
    let mut errs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut approved, mut denied) = (false, false);
    for (i, c) in conditions(csr).iter().enumerate() {
        let at = path.index(i);
        let t = str_of(c, "type");
        if !opts.allow_empty_condition_type && t.is_empty() {
            errs.push(field::required(&at.child("type"), ""));
        }
        let allowed = if [APPROVED, DENIED, FAILED].contains(&t) {
            TRUE_ONLY
        } else {
            STATUS_VALUES
        };
        let status = str_of(c, "status");
        if status.is_empty() {
            errs.push(field::required(&at.child("status"), ""));
        } else if !allowed.contains(&status) {
            errs.push(field::not_supported_str(
                &at.child("status"),
                status,
                allowed,
            ));
        }
        if !opts.allow_both_approved_and_denied {
            let clash = match t {
                APPROVED => {
                    approved = true;
                    denied
                }
                DENIED => {
                    denied = true;
                    approved
                }
                _ => false,
            };
            if clash {
                errs.push(field::invalid_str(
                    &at.child("type"),
                    t,
                    "Approved and Denied conditions are mutually exclusive",
                ));
            }
        }
        if !opts.allow_duplicate_condition_types && !seen.insert(t) {
            errs.push(field::duplicate_str(&at.child("type"), t));
        }
    }
    errs
}

fn of_type<'a>(csr: &'a Value, t: &str) -> Vec<&'a Value> {
    conditions(csr)
        .iter()
        .filter(|c| str_of(c, "type") == t)
        .collect()
}

/// What an update may not do to conditions and the certificate.
fn validate_transition(new: &Value, old: &Value, opts: &Options) -> Vec<Cause> {
    let path = Path::new("status").child("conditions");
    let mut errs = Vec::new();
    for t in [APPROVED, DENIED, FAILED] {
        if of_type(new, t).len() < of_type(old, t).len() {
            let msg = format!(
                "updates may not remove a condition of type {}",
                field::quote(t)
            );
            errs.push(field::forbidden(&path, &msg));
        }
    }
    if !opts.allow_setting_approval_conditions {
        for t in [APPROVED, DENIED] {
            let (o, n) = (of_type(old, t), of_type(new, t));
            let quoted = field::quote(t);
            if n.len() > o.len() {
                let msg = format!("updates may not add a condition of type {quoted}");
                errs.push(field::forbidden(&path, &msg));
            } else if n.len() == o.len() {
                let (ov, nv) = (
                    Value::from_iter(o.into_iter().cloned()),
                    Value::from_iter(n.into_iter().cloned()),
                );
                if !semantic_eq(Some(&ov), Some(&nv)) {
                    let msg = format!(
                        "updates may not modify a condition of type {quoted}\n{}",
                        diff(&ov, &nv)
                    );
                    errs.push(field::forbidden(&path, &msg));
                }
            }
        }
    }
    let (new_cert, old_cert) = (certificate(new), certificate(old));
    if new_cert != old_cert {
        let cert_path = Path::new("status").child("certificate");
        if !opts.allow_setting_certificate {
            errs.push(field::forbidden(
                &cert_path,
                "updates may not set certificate content",
            ));
        } else if !old_cert.is_empty() {
            errs.push(field::forbidden(
                &cert_path,
                "updates may not modify existing certificate content",
            ));
        }
    }
    errs
}

/// `ValidateCertificateSigningRequestSignerName`: `<domain>/<path>`.
pub fn validate_signer_name(path: &Path, signer: &str) -> Vec<Cause> {
    if signer.is_empty() {
        return vec![field::required(path, "signerName must be provided")];
    }
    let segments: Vec<&str> = signer.split('/').collect();
    let [domain, name] = segments[..] else {
        return vec![field::invalid_str(
            path,
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut errs = Vec::new();
    if domain.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(field::too_long(path, DNS1123_SUBDOMAIN_MAX));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        let msgs = names::is_dns1123_label(label);
        if !msgs.is_empty() {
            for m in msgs {
                let detail = format!("validating label {}: {m}", field::quote(label));
                errs.push(field::invalid_str(path, domain, &detail));
            }
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(field::invalid_str(
            path,
            domain,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for label in name.split('.') {
        let msgs = names::is_dns1123_subdomain(label);
        if !msgs.is_empty() {
            for m in msgs {
                let detail = format!("validating label {}: {m}", field::quote(label));
                errs.push(field::invalid_str(path, name, &detail));
            }
            break;
        }
    }
    let max = DNS1123_SUBDOMAIN_MAX + (DNS1123_SUBDOMAIN_MAX + DNS1123_LABEL_MAX + 1) + 1;
    if signer.len() > max {
        errs.push(field::too_long(path, max));
    }
    errs
}

/// Go's `%#v` of a `[]byte`: `[]byte(nil)` when absent, else `[]byte{0x2d, ...}`.
fn go_bytes(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "[]byte(nil)".into(),
        Some(b) => {
            let parts: Vec<String> = b.iter().map(|x| format!("{x:#x}")).collect();
            format!("[]byte{{{}}}", parts.join(", "))
        }
    }
}

/// One PEM block: its label, whether it had headers, and its decoded bytes.
struct PemBlock {
    label: String,
    headers: bool,
    der: Vec<u8>,
}

/// The PEM blocks of `data`, as Go's `pem.Decode` finds them one after another; a block
/// whose body is no base64 ends the scan.
fn pem_blocks(data: &[u8]) -> Vec<PemBlock> {
    let text = String::from_utf8_lossy(data);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_string();
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            break;
        };
        let body = &body_start[..end];
        let headers = body.lines().any(|l| l.contains(':'));
        let b64: String = body
            .lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            break;
        };
        out.push(PemBlock {
            label,
            headers,
            der,
        });
        rest = &body_start[end + end_marker.len()..];
    }
    out
}

/// `ParseCSR` and `CheckSignature`: the first PEM block is a `CERTIFICATE REQUEST` signed
/// by its own key. Errors in Go's words.
pub fn check_request(pem: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let blocks = pem_blocks(pem);
    let block = blocks
        .first()
        .filter(|b| b.label == "CERTIFICATE REQUEST")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.der)
            .map_err(|_| "x509: malformed certificate request".to_string())?;
    let key_oid = csr
        .certification_request_info
        .subject_pki
        .algorithm
        .algorithm
        .to_id_string();
    csr.verify_signature().map_err(|e| match e {
        x509_parser::error::X509Error::SignatureUnsupportedAlgorithm => {
            "x509: cannot verify signature: algorithm unimplemented".to_string()
        }
        _ => match key_oid.as_str() {
            "1.2.840.10045.2.1" => "x509: ECDSA verification failure".to_string(),
            "1.3.101.112" => "x509: Ed25519 verification failure".to_string(),
            _ => "crypto/rsa: verification error".to_string(),
        },
    })
}

/// `validateCertificate`: nothing, or only `CERTIFICATE` blocks without headers, each
/// holding certificates.
pub fn check_certificate(pem: &[u8]) -> Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    let blocks = pem_blocks(pem);
    if blocks.is_empty() {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    for b in blocks {
        if b.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {}",
                field::quote(&b.label)
            ));
        }
        if b.headers {
            return Err("no PEM block headers are permitted".into());
        }
        let mut der: &[u8] = &b.der;
        if der.is_empty() {
            return Err("found CERTIFICATE PEM block containing 0 certificates".into());
        }
        while !der.is_empty() {
            let (rest, _) = x509_parser::parse_x509_certificate(der)
                .map_err(|_| "x509: malformed certificate".to_string())?;
            der = rest;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
