//! The cluster's certificates, made at first start as k3s does: a CA, a serving certificate
//! signed by it (never the CA itself presented as the server), and an admin client
//! certificate for the kubeconfig. All X.509 v3, which rustls-based clients insist on.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid subject alternative name {0}")]
    San(String),
}

/// PEM-encoded material the server and its kubeconfig need.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "krust-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

fn leaf_params(
    cn: &str,
    orgs: &[&str],
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

fn sans(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut out = Vec::new();
    for h in hosts {
        let san = match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.as_str()
                    .try_into()
                    .map_err(|_| PkiError::San(h.clone()))?,
            ),
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// A client certificate signed by the cluster CA (CN = user, O = groups).
pub fn client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = leaf_params(
        user,
        groups,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate signed by the cluster CA for `hosts` (addresses and names), with
/// subject CN `cn` and O `orgs`: what the agent `krust server` hosts serves with, as a joined
/// node's would be issued through a `kubernetes.io/kubelet-serving` CSR.
pub fn serving_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    orgs: &[&str],
    hosts: &[String],
) -> Result<(String, String), PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = leaf_params(cn, orgs, sans(hosts)?, ExtendedKeyUsagePurpose::ServerAuth)
        .signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// Loads the CA and admin credentials from `dir`, making any that are missing, and signs
    /// a fresh serving certificate for `hosts` (addresses and names clients dial).
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_cert_pem, ca_key_pem) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params().self_signed(&key)?;
                let (c, k) = (cert.pem(), key.serialize_pem());
                write_private(&ca_key_path, &k)?;
                write_private(&ca_cert_path, &c)?;
                (c, k)
            }
        };
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

        let server_key = KeyPair::generate()?;
        let server_cert = leaf_params(
            "krust-apiserver",
            &[],
            sans(hosts)?,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
        .signed_by(&server_key, &issuer)?;

        let admin_cert_path = dir.join("admin.crt");
        let admin_key_path = dir.join("admin.key");
        let (admin_cert_pem, admin_key_pem) =
            match (read(&admin_cert_path)?, read(&admin_key_path)?) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    let (c, k) = client_cert(
                        &ca_cert_pem,
                        &ca_key_pem,
                        "system:admin",
                        &["system:masters"],
                    )?;
                    write_private(&admin_key_path, &k)?;
                    write_private(&admin_cert_path, &c)?;
                    (c, k)
                }
            };
        Ok(Pki {
            ca_cert_pem,
            ca_key_pem,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            admin_cert_pem,
            admin_key_pem,
        })
    }

    /// An admin kubeconfig for `server` (an https URL), with everything inline.
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: krust\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: krust-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: krust\n  context:\n    cluster: krust\n    user: krust-admin\ncurrent-context: krust\n",
            b64(&self.ca_cert_pem),
            b64(&self.admin_cert_pem),
            b64(&self.admin_key_pem),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = Pki::load_or_create(dir.path(), &hosts).expect("pki");
        let b = Pki::load_or_create(dir.path(), &hosts).expect("pki again");
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
        assert_ne!(a.server_cert_pem, a.ca_cert_pem);
        let (_, der) = x509_parser::pem::parse_x509_pem(a.server_cert_pem.as_bytes()).expect("pem");
        let cert = der.parse_x509().expect("x509");
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        let san = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("san present");
        assert_eq!(san.value.general_names.len(), 2);
        assert!(a
            .admin_kubeconfig("https://127.0.0.1:6443")
            .contains("client-certificate-data"));
    }
}
