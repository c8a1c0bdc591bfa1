use base64::Engine;
use serde_json::{json, Value};

use super::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A fresh PEM certificate request for `system:node:a`.
pub(crate) fn request_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:a");
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// A self-signed certificate, PEM.
fn certificate_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["a".to_string()]).expect("params");
    params.self_signed(&key).expect("cert").pem()
}

/// A CSR object (without metadata) that validates.
pub(crate) fn valid_csr() -> Value {
    json!({"spec": {"request": b64(&request_pem()), "signerName": "kubernetes.io/kube-apiserver-client",
        "usages": ["client auth"], "username": "admin"}})
}

fn csr() -> Value {
    let mut v = valid_csr();
    v["metadata"] = json!({"name": "x", "resourceVersion": "1"});
    v
}

fn msgs(errs: Vec<Cause>) -> Vec<String> {
    errs.iter().map(Cause::describe).collect()
}

fn create(v: &Value) -> Vec<String> {
    msgs(validate(v, None, Door::Create))
}

#[test]
fn a_good_request_validates() {
    assert!(create(&csr()).is_empty(), "{:?}", create(&csr()));
}

#[test]
fn requests_must_be_signed_pem_certificate_requests() {
    let mut v = csr();
    v["spec"]["request"] = json!(b64("hi"));
    assert_eq!(
        create(&v),
        ["spec.request: Invalid value: []byte{0x68, 0x69}: PEM block type must be CERTIFICATE REQUEST"]
    );
    v["spec"]["request"] = json!(b64(&certificate_pem()));
    assert!(create(&v)[0].ends_with(": PEM block type must be CERTIFICATE REQUEST"));
    v.pointer_mut("/spec")
        .and_then(Value::as_object_mut)
        .map(|s| s.remove("request"));
    assert_eq!(
        create(&v),
        ["spec.request: Invalid value: []byte(nil): PEM block type must be CERTIFICATE REQUEST"]
    );
    // A request whose signature does not match its key.
    let pem = request_pem();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(der_b64)
        .expect("der");
    let last = der.len() - 1;
    der[last] ^= 0xff;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let tampered =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n");
    v["spec"]["request"] = json!(b64(&tampered));
    let errs = create(&v);
    assert!(
        errs[0].ends_with(": x509: ECDSA verification failure"),
        "{errs:?}"
    );
}

#[test]
fn usages_signer_and_duration() {
    let mut v = csr();
    v["spec"]["usages"] = json!(["client auth", "bogus", "client auth"]);
    v["spec"]["signerName"] = json!("example");
    v["spec"]["expirationSeconds"] = json!(599);
    let errs = create(&v);
    assert!(errs[0].starts_with("spec.usages[1]: Unsupported value: \"bogus\": supported values: \"any\", \"cert sign\", \"client auth\""), "{errs:?}");
    assert_eq!(
        errs[1..],
        [
            "spec.usages[2]: Duplicate value: \"client auth\"",
            "spec.signerName: Invalid value: \"example\": must be a fully qualified domain and path of the form 'example.com/signer-name'",
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)",
        ]
    );
    v["spec"]["usages"] = json!([]);
    v["spec"]["signerName"] = json!("");
    v["spec"]["expirationSeconds"] = json!(600);
    assert_eq!(
        create(&v),
        [
            "spec.usages: Required value: usages must be provided",
            "spec.signerName: Required value: signerName must be provided"
        ]
    );
    v["spec"]["usages"] = json!(["server auth"]);
    v["spec"]["signerName"] = json!("example/Bad_Name");
    let errs = create(&v);
    assert_eq!(errs[0], "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots");
    assert!(errs[1].starts_with("spec.signerName: Invalid value: \"Bad_Name\": validating label \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{errs:?}");
    v["spec"]["signerName"] = json!("kubernetes.io/legacy-unknown");
    assert_eq!(
        create(&v),
        ["spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"]
    );
}

#[test]
fn conditions_are_checked() {
    let mut v = csr();
    v["status"] = json!({"conditions": [
        {"type": "Approved", "status": "True"},
        {"type": "Denied", "status": "False"},
        {"type": "", "status": ""},
        {"type": "Custom", "status": "Maybe"},
        {"type": "Custom", "status": "True"},
    ]});
    assert_eq!(
        create(&v),
        [
            "status.conditions[1].status: Unsupported value: \"False\": supported values: \"True\"",
            "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive",
            "status.conditions[2].type: Required value",
            "status.conditions[2].status: Required value",
            "status.conditions[3].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
            "status.conditions[4].type: Duplicate value: \"Custom\"",
        ]
    );
}

#[test]
fn certificates_must_be_pem_certificates() {
    let mut v = csr();
    let old = v.clone();
    v["status"] = json!({"certificate": b64("junk")});
    assert_eq!(
        msgs(validate(&v, Some(&old), Door::Status)),
        ["status.certificate: Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block"]
    );
    v["status"]["certificate"] = json!(b64(&request_pem()));
    assert_eq!(
        msgs(validate(&v, Some(&old), Door::Status)),
        ["status.certificate: Invalid value: \"<certificate data>\": only CERTIFICATE PEM blocks are allowed, found \"CERTIFICATE REQUEST\""]
    );
    v["status"]["certificate"] = json!(b64(&certificate_pem()));
    assert!(validate(&v, Some(&old), Door::Status).is_empty());
    // Only through status, and only once.
    assert_eq!(
        msgs(validate(&v, Some(&old), Door::Update)),
        ["status.certificate: Forbidden: updates may not set certificate content"]
    );
    let mut again = v.clone();
    again["status"]["certificate"] = json!(b64(&certificate_pem()));
    assert_eq!(
        msgs(validate(&again, Some(&v), Door::Status)),
        ["status.certificate: Forbidden: updates may not modify existing certificate content"]
    );
}

#[test]
fn approval_conditions_only_through_approval() {
    let old = csr();
    let mut v = old.clone();
    v["status"] =
        json!({"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}]});
    assert!(validate(&v, Some(&old), Door::Approval).is_empty());
    assert_eq!(
        msgs(validate(&v, Some(&old), Door::Status)),
        ["status.conditions: Forbidden: updates may not add a condition of type \"Approved\""]
    );
    // Once there, it stays.
    assert_eq!(
        msgs(validate(&old, Some(&v), Door::Approval)),
        ["status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""]
    );
    let mut modified = v.clone();
    modified["status"]["conditions"][0]["reason"] = json!("Other");
    assert!(validate(&modified, Some(&v), Door::Approval).is_empty());
    let errs = msgs(validate(&modified, Some(&v), Door::Status));
    assert!(
        errs[0].starts_with(
            "status.conditions: Forbidden: updates may not modify a condition of type \"Approved\"\n"
        ),
        "{errs:?}"
    );
    // Approved and Denied already both stored are tolerated.
    let mut both = v.clone();
    both["status"]["conditions"] =
        json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
    assert!(validate(&both, Some(&both), Door::Approval).is_empty());
    assert!(!validate(&both, Some(&v), Door::Approval).is_empty());
}
