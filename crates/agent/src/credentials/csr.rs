//! Asking the cluster for a certificate: a CertificateSigningRequest (`certificates.k8s.io/v1`)
//! for a fresh key, then waiting until a signer fills in `status.certificate`, or an approver
//! denies it, or the signer fails it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::slot::Issued;
use super::CredentialsError;

pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The user and group of a node's identity, as upstream's Node authorizer expects.
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODES_GROUP: &str = "system:nodes";
/// How often a pending request is looked at again.
const POLL: Duration = Duration::from_millis(250);

/// What certificate to ask for.
#[derive(Clone, Debug)]
pub struct Request {
    pub signer: &'static str,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usages: Vec<&'static str>,
    /// `spec.expirationSeconds` (the signer may give less).
    pub expiration_seconds: Option<i32>,
}

impl Request {
    /// The node's client certificate: `system:node:<name>` in `system:nodes`.
    pub fn node_client(node: &str) -> Request {
        Request {
            signer: SIGNER_KUBELET_CLIENT,
            common_name: format!("{NODE_USER_PREFIX}{node}"),
            organizations: vec![NODES_GROUP.to_string()],
            dns_names: Vec::new(),
            ips: Vec::new(),
            // ECDSA keys sign; they do not encipher (as the kubelet asks since 1.19).
            usages: vec!["digital signature", "client auth"],
            expiration_seconds: None,
        }
    }

    /// The node's serving certificate for its addresses and names.
    pub fn node_serving(node: &str, ips: Vec<IpAddr>, dns_names: Vec<String>) -> Request {
        Request {
            signer: SIGNER_KUBELET_SERVING,
            common_name: format!("{NODE_USER_PREFIX}{node}"),
            organizations: vec![NODES_GROUP.to_string()],
            dns_names,
            ips,
            usages: vec!["digital signature", "server auth"],
            expiration_seconds: None,
        }
    }

    /// A PEM CSR for `key`.
    pub fn csr_pem(&self, key: &KeyPair) -> Result<String, CredentialsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        for o in &self.organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        for name in &self.dns_names {
            let san = name
                .as_str()
                .try_into()
                .map_err(|_| CredentialsError::Certificate(format!("bad DNS name {name:?}")))?;
            params.subject_alt_names.push(SanType::DnsName(san));
        }
        for ip in &self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let csr = params
            .serialize_request(key)
            .map_err(|e| CredentialsError::Certificate(format!("making the CSR: {e}")))?;
        csr.pem()
            .map_err(|e| CredentialsError::Certificate(format!("encoding the CSR: {e}")))
    }

    fn object(&self, csr_pem: String) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                generate_name: Some("csr-".into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(csr_pem.into_bytes()),
                signer_name: self.signer.to_string(),
                usages: Some(self.usages.iter().map(|u| u.to_string()).collect()),
                expiration_seconds: self.expiration_seconds,
                ..Default::default()
            },
            status: None,
        }
    }
}

/// Sends `req` with `client`'s credentials and waits up to `timeout` for the certificate.
pub async fn request(
    client: &kube::Client,
    req: &Request,
    timeout: Duration,
) -> Result<Issued, CredentialsError> {
    let key = KeyPair::generate()
        .map_err(|e| CredentialsError::Certificate(format!("generating a key: {e}")))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &req.object(req.csr_pem(&key)?))
        .await
        .map_err(CredentialsError::from_join)?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, signer = req.signer, cn = %req.common_name, "certificate requested");
    let deadline = Instant::now() + timeout;
    loop {
        let csr = api.get(&name).await.map_err(CredentialsError::from_join)?;
        if let Some(cert) = outcome(&name, &csr)? {
            let mut issued = Issued::new(cert, key.serialize_pem())?;
            // Signers backdate NotBefore (upstream by 5 minutes); renewal counts from now, or
            // a short-lived certificate would be due the moment it arrives.
            issued.not_before = issued
                .not_before
                .max(krust_machinery::object::now_unix().min(issued.not_after));
            tracing::info!(csr = %name, not_after = issued.not_after, "certificate issued");
            return Ok(issued);
        }
        if Instant::now() >= deadline {
            return Err(CredentialsError::NotIssued { name, timeout });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The certificate once issued; an error once denied or failed; `None` while pending.
fn outcome(
    name: &str,
    csr: &CertificateSigningRequest,
) -> Result<Option<String>, CredentialsError> {
    let status = csr.status.as_ref();
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if c.status != "True" {
            continue;
        }
        if c.type_ == "Denied" || c.type_ == "Failed" {
            return Err(CredentialsError::Refused {
                name: name.to_string(),
                condition: c.type_.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
    }
    Ok(status
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| !c.0.is_empty())
        .and_then(|c| String::from_utf8(c.0.clone()).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    #[test]
    fn node_requests_carry_the_node_identity() {
        let key = KeyPair::generate().expect("key");
        let r = Request::node_serving(
            "n1",
            vec!["10.0.0.2".parse().expect("ip")],
            vec!["n1".into()],
        );
        let pem = r.csr_pem(&key).expect("csr");
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .expect("csr");
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let obj = r.object(pem);
        assert_eq!(obj.spec.signer_name, SIGNER_KUBELET_SERVING);
        assert_eq!(
            obj.spec.usages.as_deref(),
            Some(&["digital signature".to_string(), "server auth".to_string()][..])
        );
        assert_eq!(Request::node_client("n1").common_name, "system:node:n1");
    }

    #[test]
    fn outcomes() {
        let mut csr = CertificateSigningRequest::default();
        assert!(outcome("c", &csr).expect("pending").is_none());
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            certificate: None,
        });
        assert!(outcome("c", &csr).expect("approved, unsigned").is_none());
        if let Some(s) = csr.status.as_mut() {
            s.certificate = Some(ByteString(b"PEM".to_vec()));
        }
        assert_eq!(outcome("c", &csr).expect("issued").as_deref(), Some("PEM"));
        if let Some(s) = csr.status.as_mut() {
            s.certificate = None;
            s.conditions = Some(vec![CertificateSigningRequestCondition {
                type_: "Denied".into(),
                status: "True".into(),
                reason: Some("NodeNameMismatch".into()),
                message: Some("no".into()),
                ..Default::default()
            }]);
        }
        let e = outcome("c", &csr).expect_err("denied");
        assert!(e.to_string().contains("Denied"), "{e}");
        assert!(e.to_string().contains("NodeNameMismatch"), "{e}");
    }
}
