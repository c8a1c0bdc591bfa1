//! The request chain's first two links: authentication (x509 client certificates, whose
//! subject's CN is the user and O entries the groups; else a service account bearer token,
//! checked by `serviceaccount`) and authorization.

use rustls::pki_types::CertificateDer;

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity in a client certificate the TLS layer already verified.
    pub fn from_cert(der: &CertificateDer<'_>) -> Option<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Identity { user, groups })
    }
}

/// Decides whether an authenticated identity may perform a request. RBAC slots in here.
pub trait Authorizer: Send + Sync {
    fn allowed(&self, who: &Identity, verb: &str, resource: &str, namespace: Option<&str>) -> bool;
}

/// Allows every authenticated identity everything: the stand-in until RBAC is enforced.
pub struct AllowAllAuthenticated;

impl Authorizer for AllowAllAuthenticated {
    fn allowed(&self, _: &Identity, _: &str, _: &str, _: Option<&str>) -> bool {
        true
    }
}

/// Paths anyone may read without credentials, as upstream's `system:public-info-viewer`.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}
