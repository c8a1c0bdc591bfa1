//! CSR signing controller, as upstream's `csrsigning` (`signer.go`, `authority/`): issues the
//! certificates of approved requests for the built-in signers
//! `kubernetes.io/kube-apiserver-client`, `kubernetes.io/kube-apiserver-client-kubelet` and
//! `kubernetes.io/kubelet-serving`, with the cluster CA.
//!
//! A request that is approved, not failed and has no certificate yet is checked against its
//! signer's constraints ([`certificates::validate_for_signer`](crate::certificates)), then
//! [`Authority::sign`](crate::authority::Authority::sign) verifies its self-signature and issues an X.509 v3 certificate: the
//! request's subject and SANs, key usages and extended key usages from `spec.usages`, basic
//! constraints CA:false, the CA's key identifier, a random 128-bit serial, NotBefore 5
//! minutes in the past and NotAfter `min(spec.expirationSeconds, duration)` from now (no less
//! than 10 minutes, less the backdate for certificates of 8 hours or more) and never past the
//! CA's own NotAfter. The PEM goes to `status.certificate` through the `status` subresource.
//! A request that breaks its signer's constraints, does not parse or is not signed by its
//! key gets a `Failed` condition (reason `SignerValidationFailure`) instead.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use time::OffsetDateTime;

use crate::authority::{lifetime, Authority, SignError};
use crate::certificates::{self as certs, Csr};
use crate::informer::Informer;
use crate::util::{self, is_not_found, Backoff};
use crate::{Shared, Shutdown};

/// Upstream's default `--cluster-signing-duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
pub const REASON_FAILED: &str = "SignerValidationFailure";
/// The signers this controller signs for.
pub const SIGNERS: [&str; 3] = [
    certs::KUBE_APISERVER_CLIENT,
    certs::KUBE_APISERVER_CLIENT_KUBELET,
    certs::KUBELET_SERVING,
];

/// The cluster CA the controller signs with (upstream's `--cluster-signing-cert-file`,
/// `--cluster-signing-key-file` and `--cluster-signing-duration`).
#[derive(Clone)]
pub struct SigningConfig {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// The longest lifetime of an issued certificate.
    pub duration: Duration,
}

impl SigningConfig {
    /// The CA with the default duration.
    pub fn new(ca_cert_pem: String, ca_key_pem: String) -> SigningConfig {
        SigningConfig {
            ca_cert_pem,
            ca_key_pem,
            duration: DEFAULT_DURATION,
        }
    }
}

/// Never prints the key.
impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningConfig")
            .field(
                "ca_cert_pem",
                &format_args!("<{} bytes>", self.ca_cert_pem.len()),
            )
            .field("ca_key_pem", &format_args!("<redacted>"))
            .field("duration", &self.duration)
            .finish()
    }
}

/// What a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] util::Error),
    #[error("signing {csr}: {source}")]
    Sign {
        csr: String,
        #[source]
        source: SignError,
    },
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api(e.into())
    }
}

/// The certificate for an approved request of one of [`SIGNERS`], or why there is none.
pub fn issue(
    ca: &Authority,
    csr: &CertificateSigningRequest,
    max: Duration,
    now: OffsetDateTime,
) -> Result<String, SignError> {
    let spec = &csr.spec;
    let usages = spec.usages.as_deref().unwrap_or_default();
    let parsed = Csr::parse_pem(&spec.request.0)?;
    if let Some(checked) = certs::validate_for_signer(&spec.signer_name, &parsed, usages) {
        checked?;
    }
    ca.sign(&parsed, usages, lifetime(spec.expiration_seconds, max), now)
}

struct Ctx {
    api: Api<CertificateSigningRequest>,
    ca: Authority,
    duration: Duration,
    backoff: Backoff,
}

/// Runs the signer over the shared CSR cache `csrs`; returns at once when the CA is unusable.
pub async fn run(
    shared: Arc<Shared>,
    csrs: Informer<CertificateSigningRequest>,
    config: SigningConfig,
    shutdown: Shutdown,
) {
    let ca = match Authority::new(&config.ca_cert_pem, &config.ca_key_pem) {
        Ok(ca) => ca,
        Err(e) => {
            tracing::error!(error = %e, "csrsigning does not run: unusable cluster CA");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        api: Api::all(shared.client.clone()),
        ca,
        duration: config.duration,
        backoff: Backoff::default(),
    });
    Controller::for_stream(csrs.subscribe(), csrs.store())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |csr, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&csr.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Whether the request waits for this controller: approved, not failed, no certificate, and
/// for one of [`SIGNERS`].
pub fn wants_signing(csr: &CertificateSigningRequest) -> bool {
    certs::is_approved(csr)
        && !certs::has_true_condition(csr, certs::FAILED)
        && !certs::has_certificate(csr)
        && SIGNERS.contains(&csr.spec.signer_name.as_str())
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = csr.name_any();
    if !wants_signing(&csr) {
        ctx.backoff.forget(&name);
        return Ok(Action::await_change());
    }
    let next = match issue(&ctx.ca, &csr, ctx.duration, OffsetDateTime::now_utc()) {
        Ok(pem) => {
            tracing::info!(csr = %name, signer = %csr.spec.signer_name, "signed csr");
            let mut next = (*csr).clone();
            next.status.get_or_insert_with(Default::default).certificate =
                Some(ByteString(pem.into_bytes()));
            next
        }
        Err(e) if e.is_request_fault() => {
            tracing::info!(csr = %name, error = %e, "csr failed signer validation");
            certs::with_condition(
                &csr,
                certs::condition(certs::FAILED, REASON_FAILED, e.to_string()),
            )
        }
        Err(source) => return Err(Error::Sign { csr: name, source }),
    };
    match ctx
        .api
        .replace_status(&name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    ctx.backoff.forget(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::testing::{authority, der_of, far, test_ca};
    use crate::authority::{BACKDATE, MIN_DURATION};
    use crate::certificates::testing::{request, usages};
    use crate::certificates::{ParseError, PolicyError};
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

    fn csr_object(
        signer: &str,
        pem: &str,
        us: &[&str],
        secs: Option<i32>,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                request: ByteString(pem.as_bytes().to_vec()),
                usages: Some(usages(us)),
                expiration_seconds: secs,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn issues_a_certificate_the_ca_verifies() {
        let ca = test_ca(far());
        let a = authority(&ca);
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("now");
        let pem = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1.example", "10.0.0.1"],
        );
        let obj = csr_object(
            certs::KUBELET_SERVING,
            &pem,
            &["digital signature", "key encipherment", "server auth"],
            None,
        );
        let issued = issue(&a, &obj, DEFAULT_DURATION, now).expect("issued");
        let der = der_of(&issued);
        let (_, cert) = X509Certificate::from_der(&der).expect("cert");
        let ca_der = der_of(&ca.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, vec![Some("system:node:n1")]);
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert!(!san.critical);
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"n1.example\"), IPAddress([10, 0, 0, 1])]"
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        let ku = cert.key_usage().expect("ku").expect("present").value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let bc = cert
            .basic_constraints()
            .expect("bc")
            .expect("present")
            .value;
        assert!(!bc.ca);
        assert!(cert.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        let validity = cert.validity();
        assert_eq!(
            validity.not_before.timestamp(),
            (now - BACKDATE).unix_timestamp()
        );
        assert_eq!(
            validity.not_after.timestamp(),
            (now + DEFAULT_DURATION - BACKDATE).unix_timestamp()
        );
        assert!(cert.raw_serial().len() >= 15);
        assert_eq!(
            cert.public_key().raw,
            Csr::parse_pem(pem.as_bytes()).expect("csr").spki_der
        );
    }

    #[test]
    fn keeps_every_organization_of_a_client_subject() {
        let a = authority(&test_ca(far()));
        let now = OffsetDateTime::now_utc();
        let pem = request("alice", &["devs", "ops"], &[]);
        let obj = csr_object(
            certs::KUBE_APISERVER_CLIENT,
            &pem,
            &["client auth"],
            Some(3600),
        );
        let issued = issue(&a, &obj, DEFAULT_DURATION, now).expect("issued");
        let der = der_of(&issued);
        let (_, cert) = X509Certificate::from_der(&der).expect("cert");
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(orgs, vec!["devs", "ops"]);
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        // One hour asked: short-lived, so NotAfter keeps the full hour.
        let v = cert.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            3600 + 300
        );
    }

    #[test]
    fn lifetime_is_bounded_by_the_request_the_config_and_the_ca() {
        assert_eq!(lifetime(None, DEFAULT_DURATION), DEFAULT_DURATION);
        assert_eq!(
            lifetime(Some(3600), DEFAULT_DURATION),
            Duration::from_secs(3600)
        );
        assert_eq!(lifetime(Some(60), DEFAULT_DURATION), MIN_DURATION);
        assert_eq!(lifetime(Some(i32::MAX), DEFAULT_DURATION), DEFAULT_DURATION);

        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("now");
        let ca_end = (now + Duration::from_secs(3600))
            .replace_nanosecond(0)
            .expect("end");
        let a = authority(&test_ca(ca_end));
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let obj = csr_object(
            certs::KUBE_APISERVER_CLIENT_KUBELET,
            &pem,
            &["digital signature", "client auth"],
            None,
        );
        let issued = issue(&a, &obj, DEFAULT_DURATION, now).expect("issued");
        let der = der_of(&issued);
        let (_, cert) = X509Certificate::from_der(&der).expect("cert");
        assert_eq!(
            cert.validity().not_after.timestamp(),
            ca_end.unix_timestamp()
        );

        let expired = authority(&test_ca(rcgen::date_time_ymd(2021, 1, 1)));
        assert!(matches!(
            issue(&expired, &obj, DEFAULT_DURATION, now),
            Err(SignError::CaExpired(_))
        ));
    }

    #[test]
    fn refuses_requests_that_break_the_rules() {
        let a = authority(&test_ca(far()));
        let now = OffsetDateTime::now_utc();
        let client = request("alice", &["devs"], &[]);
        let server_auth = csr_object(
            certs::KUBE_APISERVER_CLIENT,
            &client,
            &["client auth", "server auth"],
            None,
        );
        let e = issue(&a, &server_auth, DEFAULT_DURATION, now).expect_err("server auth");
        assert!(e.is_request_fault());
        assert_eq!(
            e.to_string(),
            "invalid usage for client certificate: server auth"
        );

        let not_node = csr_object(
            certs::KUBE_APISERVER_CLIENT_KUBELET,
            &client,
            &["client auth"],
            None,
        );
        let e = issue(&a, &not_node, DEFAULT_DURATION, now).expect_err("not a node");
        assert!(matches!(
            e,
            SignError::Policy(PolicyError::OrganizationNotSystemNodes)
        ));

        let garbage = csr_object(
            certs::KUBE_APISERVER_CLIENT,
            "nonsense",
            &["client auth"],
            None,
        );
        let e = issue(&a, &garbage, DEFAULT_DURATION, now).expect_err("garbage");
        assert!(matches!(e, SignError::Parse(ParseError::NotPem)) && e.is_request_fault());

        let odd = csr_object(
            certs::KUBE_APISERVER_CLIENT,
            &client,
            &["client auth", "flying"],
            None,
        );
        assert!(issue(&a, &odd, DEFAULT_DURATION, now).is_err());
        let parsed = Csr::parse_pem(client.as_bytes()).expect("parses");
        assert!(matches!(
            a.sign(&parsed, &usages(&["client auth", "flying"]), MIN_DURATION, now),
            Err(SignError::Usages(u)) if u == vec!["flying".to_string()]
        ));
    }

    #[test]
    fn only_approved_requests_of_its_signers_are_signed() {
        let pem = request("alice", &["devs"], &[]);
        let mut obj = csr_object(certs::KUBE_APISERVER_CLIENT, &pem, &["client auth"], None);
        assert!(!wants_signing(&obj), "not approved");
        obj = certs::with_condition(&obj, certs::condition(certs::APPROVED, "ok", "ok".into()));
        assert!(wants_signing(&obj));
        let mut other = obj.clone();
        other.spec.signer_name = "example.com/x".into();
        assert!(!wants_signing(&other));
        let failed = certs::with_condition(
            &obj,
            certs::condition(certs::FAILED, REASON_FAILED, "x".into()),
        );
        assert!(!wants_signing(&failed));
        let mut signed = obj.clone();
        signed
            .status
            .get_or_insert_with(Default::default)
            .certificate = Some(ByteString(b"x".to_vec()));
        assert!(!wants_signing(&signed));
    }
}
