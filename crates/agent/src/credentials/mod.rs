//! The node's identity: a client certificate for `system:node:<name>` (group `system:nodes`)
//! and a serving certificate for its addresses, both issued by the cluster through
//! CertificateSigningRequests and renewed before they expire, as the kubelet's TLS
//! bootstrapping and certificate rotation do.
//!
//! - [`join`]: join tokens, the CA pin, learning the CA from the server's handshake.
//! - [`csr`]: one certificate through the CSR API.
//! - [`slot`]: certificates that can be swapped while clients and listeners use them.
//! - [`rotate`]: the loop that renews both.
//!
//! [`NodeCredentials::establish`] turns what the agent was started with (a join token, a
//! bootstrap kubeconfig, or certificates its host issued) into the node's own credentials,
//! kept under `<data dir>/pki` so that a restart needs neither the token nor the bootstrap
//! kubeconfig again.

pub mod csr;
pub mod join;
pub mod rotate;
pub mod slot;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use krust_machinery::object::now_unix as now;
use kube::client::ConfigExt;

pub use join::JoinToken;
pub use slot::{CertSlot, Issued};

/// How long a join waits for its client certificate (approval and signing).
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("invalid join token: {0}")]
    Token(String),
    #[error("the server at {server} is not the cluster the token was made for: its CA's public key hash is not {expected} (it presented {})", .found.join(", "))]
    CaMismatch {
        server: String,
        expected: String,
        found: Vec<String>,
    },
    #[error("the server refused the join token (401 Unauthorized): it is wrong, expired, or not for authentication")]
    Unauthorized,
    #[error("the server forbade the request: {0}")]
    Forbidden(String),
    #[error("certificate signing request {name} was {condition}: {reason}: {message}")]
    Refused {
        name: String,
        condition: String,
        reason: String,
        message: String,
    },
    #[error("certificate signing request {name} was not approved and signed within {timeout:?}; approve it with `kubectl certificate approve {name}`")]
    NotIssued { name: String, timeout: Duration },
    #[error("{0}")]
    Server(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("talking to the API server")]
    Api(#[source] Box<kube::Error>),
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CredentialsError {
    /// An API error while joining, with 401 and 403 spelled out.
    pub(crate) fn from_join(e: kube::Error) -> CredentialsError {
        match &e {
            kube::Error::Api(s) if s.code == 401 => CredentialsError::Unauthorized,
            kube::Error::Api(s) if s.code == 403 => CredentialsError::Forbidden(s.message.clone()),
            _ => CredentialsError::Api(Box::new(e)),
        }
    }

    /// Whether retrying cannot help (a refused join must end the agent, not loop).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CredentialsError::Token(_)
                | CredentialsError::CaMismatch { .. }
                | CredentialsError::Unauthorized
                | CredentialsError::Forbidden(_)
                | CredentialsError::Refused { .. }
        )
    }
}

/// What the agent starts from.
pub enum Bootstrap {
    /// `--server URL --token TOKEN`: a bootstrap token, the CA pinned by the token's hash
    /// (or `ca_hash` when the token is bare).
    Token { server: http::Uri, token: JoinToken },
    /// `--kubeconfig`: credentials allowed to request a node client certificate (a
    /// bootstrap kubeconfig, or an admin's).
    Kubeconfig(Box<kube::Config>),
    /// Certificates the caller issued itself (the agent `krust server` hosts).
    Issued {
        server: http::Uri,
        ca_pem: String,
        client: Issued,
        serving: Issued,
    },
}

/// The node's credentials, current and renewable.
pub struct NodeCredentials {
    pub node_name: String,
    pub server: http::Uri,
    pub ca_pem: String,
    pub client_cert: Arc<CertSlot>,
    pub serving_cert: Arc<CertSlot>,
    dir: PathBuf,
    client: kube::Client,
}

const CA_FILE: &str = "ca.crt";
const CLIENT_FILE: &str = "kubelet-client-current.pem";
const SERVING_FILE: &str = "kubelet-server-current.pem";

impl NodeCredentials {
    /// The node's credentials for `node_name`: those kept in `data_dir` when they are still
    /// valid for this server, else new ones obtained through `bootstrap`.
    pub async fn establish(
        bootstrap: Bootstrap,
        node_name: &str,
        data_dir: &Path,
    ) -> Result<Arc<NodeCredentials>, CredentialsError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|source| CredentialsError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        let now = now();
        let (server, ca_pem, client, serving) = match bootstrap {
            Bootstrap::Issued {
                server,
                ca_pem,
                client,
                serving,
            } => (server, ca_pem, client, Some(serving)),
            Bootstrap::Token { server, token } => {
                let hash = token.ca_hash.clone().ok_or_else(|| {
                    CredentialsError::Token("the token has no CA hash (K10<hash>::...)".into())
                })?;
                let ca_pem = join::discover_ca(&server, &hash).await?;
                match kept(&dir, &ca_pem, now) {
                    Some(client) => (server, ca_pem, client, None),
                    None => {
                        let boot = bearer_client(&server, &ca_pem, &token.token.to_string())?;
                        let issued = request_client(&boot, node_name).await?;
                        (server, ca_pem, issued, None)
                    }
                }
            }
            Bootstrap::Kubeconfig(config) => {
                let ca_pem = config_ca(&config)?;
                let server = config.cluster_url.clone();
                match kept(&dir, &ca_pem, now) {
                    Some(client) => (server, ca_pem, client, None),
                    None => {
                        let boot = kube::Client::try_from(*config)
                            .map_err(|e| CredentialsError::Api(Box::new(e)))?;
                        let issued = request_client(&boot, node_name).await?;
                        (server, ca_pem, issued, None)
                    }
                }
            }
        };
        let serving = match serving.or_else(|| read_issued(&dir.join(SERVING_FILE))) {
            Some(s) if !s.expired_at(now) => s,
            _ => provisional_serving(node_name)?,
        };
        let client_cert = CertSlot::new(client)?;
        let serving_cert = CertSlot::new(serving)?;
        let creds = NodeCredentials {
            node_name: node_name.to_string(),
            client: cert_client(&server, &ca_pem, client_cert.clone())?,
            server,
            ca_pem,
            client_cert,
            serving_cert,
            dir,
        };
        creds.save()?;
        Ok(Arc::new(creds))
    }

    /// A client that authenticates as the node with whatever certificate is current.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The cluster CA as DER, for verifying callers of the agent's API.
    pub fn ca_der(&self) -> Vec<Vec<u8>> {
        rustls_pemfile::certs(&mut self.ca_pem.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Whether the serving certificate is one the cluster CA issued (not the stand-in the
    /// agent serves with until its request is signed).
    pub fn serving_is_issued(&self) -> bool {
        issued_by(&self.serving_cert.issued().cert_pem, &self.ca_pem)
    }

    /// Writes the CA and the current certificates (cert and key in one file, mode 0600, as
    /// the kubelet's `*-current.pem`) and a kubeconfig that uses them.
    pub fn save(&self) -> Result<(), CredentialsError> {
        write_private(&self.dir.join(CA_FILE), &self.ca_pem)?;
        let client = self.client_cert.issued();
        write_private(
            &self.dir.join(CLIENT_FILE),
            &format!("{}{}", client.cert_pem, client.key_pem),
        )?;
        let serving = self.serving_cert.issued();
        write_private(
            &self.dir.join(SERVING_FILE),
            &format!("{}{}", serving.cert_pem, serving.key_pem),
        )?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: krust\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {}\n  user:\n    client-certificate: {path}\n    client-key: {path}\ncontexts:\n- name: krust\n  context:\n    cluster: krust\n    user: {}\ncurrent-context: krust\n",
            self.server,
            self.dir.join(CA_FILE).display(),
            self.node_name,
            self.node_name,
            path = self.dir.join(CLIENT_FILE).display(),
        );
        write_private(&self.dir.join("kubelet.kubeconfig"), &kubeconfig)
    }
}

async fn request_client(boot: &kube::Client, node: &str) -> Result<Issued, CredentialsError> {
    tracing::info!(node, "requesting the node's client certificate");
    csr::request(boot, &csr::Request::node_client(node), JOIN_TIMEOUT).await
}

/// The kept client certificate, if the kept CA is `ca_pem` and it has not expired.
fn kept(dir: &Path, ca_pem: &str, now: i64) -> Option<Issued> {
    let kept_ca = std::fs::read_to_string(dir.join(CA_FILE)).ok()?;
    if kept_ca.trim() != ca_pem.trim() {
        return None;
    }
    read_issued(&dir.join(CLIENT_FILE)).filter(|c| !c.expired_at(now))
}

fn read_issued(path: &Path) -> Option<Issued> {
    let text = std::fs::read_to_string(path).ok()?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    Issued::new(
        text[..end].to_string() + "\n",
        text[end..].trim().to_string() + "\n",
    )
    .ok()
}

fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Ok(cert), Ok(ca)) = (slot::first_cert(cert_pem), slot::first_cert(ca_pem)) else {
        return false;
    };
    match (
        x509_parser::parse_x509_certificate(cert.as_ref()),
        x509_parser::parse_x509_certificate(ca.as_ref()),
    ) {
        (Ok((_, c)), Ok((_, ca))) => c.issuer() == ca.subject() && c.issuer() != c.subject(),
        _ => false,
    }
}

/// A self-signed stand-in the agent's API serves with until the cluster signs the real one
/// (the API server does not trust it, so nothing reaches the agent through it).
pub fn provisional_serving(node: &str) -> Result<Issued, CredentialsError> {
    let key =
        rcgen::KeyPair::generate().map_err(|e| CredentialsError::Certificate(e.to_string()))?;
    let cert = rcgen::CertificateParams::new(vec![node.to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
    Issued::new(cert.pem(), key.serialize_pem())
}

fn config_ca(config: &kube::Config) -> Result<String, CredentialsError> {
    let certs = config
        .root_cert
        .as_ref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            CredentialsError::Server(
            "the kubeconfig has no certificate-authority(-data); the agent needs the cluster CA"
                .into(),
        )
        })?;
    Ok(certs
        .iter()
        .map(|der| join::der_to_pem(der))
        .collect::<Vec<_>>()
        .join(""))
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, CredentialsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let c = c.map_err(|e| CredentialsError::Certificate(e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
    }
    Ok(roots)
}

/// A client that sends `token` as a bearer token, trusting only `ca_pem`.
fn bearer_client(
    server: &http::Uri,
    ca_pem: &str,
    token: &str,
) -> Result<kube::Client, CredentialsError> {
    let mut config = kube::Config::new(server.clone());
    config.root_cert = Some(
        rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect(),
    );
    let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| CredentialsError::Token(e.to_string()))?;
    config.headers.push((http::header::AUTHORIZATION, value));
    kube::Client::try_from(config).map_err(|e| CredentialsError::Api(Box::new(e)))
}

/// A client whose TLS identity is whatever `slot` holds at each new connection (kube-rs
/// reads a client certificate once; this stack asks rustls's resolver instead).
fn cert_client(
    server: &http::Uri,
    ca_pem: &str,
    slot: Arc<CertSlot>,
) -> Result<kube::Client, CredentialsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CredentialsError::Certificate(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_cert_resolver(slot);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let config = kube::Config::new(server.clone());
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), CredentialsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CredentialsError::Io {
        what: "writing",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "krust-ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("ca");
        let pem = cert.pem();
        (
            pem.clone(),
            rcgen::Issuer::from_ca_cert_pem(&pem, key).expect("issuer"),
        )
    }

    #[test]
    fn kept_credentials_and_issuer_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, issuer) = ca();
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let cert = p.signed_by(&key, &issuer).expect("cert");
        let issued = Issued::new(cert.pem(), key.serialize_pem()).expect("issued");
        assert!(issued_by(&issued.cert_pem, &ca_pem));
        let stand_in = provisional_serving("n1").expect("stand-in");
        assert!(!issued_by(&stand_in.cert_pem, &ca_pem));

        write_private(&dir.path().join(CA_FILE), &ca_pem).expect("ca");
        write_private(
            &dir.path().join(CLIENT_FILE),
            &format!("{}{}", issued.cert_pem, issued.key_pem),
        )
        .expect("client");
        let back = kept(dir.path(), &ca_pem, now()).expect("kept");
        assert_eq!(back.cert_pem.trim(), issued.cert_pem.trim());
        // Another cluster's CA: nothing kept. Expired: nothing kept.
        let (other_ca, _) = ca();
        assert!(kept(dir.path(), &other_ca, now()).is_none());
        assert!(kept(dir.path(), &ca_pem, back.not_after).is_none());
    }

    #[test]
    fn ca_from_der_round_trips() {
        let (ca_pem, _) = ca();
        let der = slot::first_cert(&ca_pem).expect("der");
        assert_eq!(join::der_to_pem(der.as_ref()).trim(), ca_pem.trim());
    }
}
