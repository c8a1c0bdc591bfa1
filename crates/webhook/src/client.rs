//! The HTTPS client that posts AdmissionReviews: one HTTP/1.1 connection per call (upstream
//! also forces HTTP/1.1, so that calls spread over a service's endpoints), trust from the
//! webhook's `caBundle` or the system roots, and errors worded as Go's HTTP client words them,
//! since users see them inside `failed calling webhook "<name>": ...`.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig as TlsConfig, RootCertStore};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::Webhook;
use crate::ServiceResolver;

/// Largest answer read from a webhook; a patch of a large object still fits.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Where the system's trust roots usually are, in the order tried (after `$SSL_CERT_FILE`).
const SYSTEM_ROOTS: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Posts reviews; keeps one TLS configuration per distinct caBundle.
pub struct Client {
    resolver: Arc<dyn ServiceResolver>,
    tls: Mutex<HashMap<String, Arc<TlsConfig>>>,
}

/// Where one webhook is reached.
struct Target {
    /// The URL as Go's client would print it, `?timeout=` included.
    url: String,
    authority: String,
    path_and_query: String,
    server_name: String,
    dial: Dial,
}

enum Dial {
    /// host and port, resolved by the system.
    Host(String, u16),
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
}

impl Client {
    pub fn new(resolver: Arc<dyn ServiceResolver>) -> Client {
        Client {
            resolver,
            tls: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `body` to `hook` and decodes its answer. The error is upstream's reason for an
    /// ErrCallingWebhook (the text after `failed calling webhook "<name>": `).
    pub async fn post(&self, hook: &Webhook, body: Vec<u8>) -> Result<Value, String> {
        let target = target(hook)?;
        let tls = self
            .tls_config(hook.client.ca_bundle.as_deref().unwrap_or_default())
            .map_err(|e| format!("could not get REST client: {e}"))?;
        let exchange = self.exchange(&target, tls, body);
        let answer = match tokio::time::timeout(hook.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err("context deadline exceeded".to_string()),
        };
        answer.map_err(|e| format!("failed to call webhook: Post {:?}: {e}", target.url))
    }

    fn tls_config(&self, ca_bundle: &str) -> Result<Arc<TlsConfig>, String> {
        let mut cache = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cfg) = cache.get(ca_bundle) {
            return Ok(cfg.clone());
        }
        let cfg = Arc::new(build_tls(ca_bundle)?);
        cache.insert(ca_bundle.to_string(), cfg.clone());
        Ok(cfg)
    }

    async fn connect(&self, dial: &Dial) -> Result<TcpStream, String> {
        let (stream, addr) = match dial {
            Dial::Host(host, port) => {
                let addr = join_host_port(host, *port);
                (TcpStream::connect((host.as_str(), *port)).await, addr)
            }
            Dial::Service {
                namespace,
                name,
                port,
            } => {
                let sock = self.resolver.resolve(namespace, name, *port).await?;
                (TcpStream::connect(sock).await, sock.to_string())
            }
        };
        stream.map_err(|e| format!("dial tcp {addr}: {}", dial_error(&e)))
    }

    async fn exchange(
        &self,
        target: &Target,
        tls: Arc<TlsConfig>,
        body: Vec<u8>,
    ) -> Result<Value, String> {
        let tcp = self.connect(&target.dial).await?;
        let name = ServerName::try_from(target.server_name.clone())
            .map_err(|e| format!("invalid TLS server name {:?}: {e}", target.server_name))?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| tls_error(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let request = http::Request::post(target.path_and_query.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async move {
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            decode(status, &bytes)
        };
        tokio::pin!(exchange);
        // The connection must be driven while the exchange runs; it ends with the exchange.
        tokio::select! {
            biased;
            answer = &mut exchange => answer,
            done = conn => match done {
                Ok(()) => exchange.await,
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// The answer of a 2xx is the review; otherwise, like client-go, the Status's message.
fn decode(status: http::StatusCode, body: &[u8]) -> Result<Value, String> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status.is_success() {
        return parsed.map_err(|e| e.to_string());
    }
    if let Ok(v) = &parsed {
        if v.get("kind").and_then(Value::as_str) == Some("Status") {
            if let Some(m) = v.get("message").and_then(Value::as_str) {
                return Err(m.to_string());
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(256).collect();
    Err(format!(
        "an error on the server ({text:?}) has prevented the request from succeeding (status {})",
        status.as_u16()
    ))
}

/// The URL and dialing plan of a webhook; upstream's messages for unusable client configs.
fn target(hook: &Webhook) -> Result<Target, String> {
    let timeout = format!("timeout={}s", hook.timeout.as_secs());
    if let Some(svc) = &hook.client.service {
        let port = svc.port.unwrap_or(443);
        let server_name = format!("{}.{}.svc", svc.name, svc.namespace);
        let authority = join_host_port(&server_name, port);
        let path = with_query(svc.path.as_deref().unwrap_or("/"), &timeout);
        return Ok(Target {
            url: format!("https://{authority}{path}"),
            authority,
            path_and_query: path,
            server_name,
            dial: Dial::Service {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port,
            },
        });
    }
    let Some(url) = hook.client.url.as_deref().filter(|u| !u.is_empty()) else {
        return Err("webhook configuration must have either service or URL".into());
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("Unparsable URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("Unparsable URL: {url:?}: only https is supported"));
    }
    let Some(host) = uri.host() else {
        return Err(format!("Unparsable URL: {url:?}: no host"));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    // Upstream drops any query of the URL (validation forbids one) and adds the timeout.
    let path = with_query(uri.path(), &timeout);
    Ok(Target {
        url: format!("https://{authority}{path}"),
        authority,
        path_and_query: path,
        server_name: host.clone(),
        dial: Dial::Host(host, port),
    })
}

fn with_query(path: &str, query: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let sep = if path.starts_with('/') { "" } else { "/" };
    format!("{sep}{path}?{query}")
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's wording for the common dial failures.
fn dial_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// Go's wording for an untrusted or mismatched certificate.
fn tls_error(e: &io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            let detail = match c {
                // A CA of the same name whose key did not sign it is still unknown.
                rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature => {
                    "certificate signed by unknown authority".to_string()
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "certificate is not valid for the requested name".to_string()
                }
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => {
                    "certificate has expired or is not yet valid".to_string()
                }
                other => format!("{other:?}"),
            };
            format!("tls: failed to verify certificate: x509: {detail}")
        }
        Some(other) => format!("tls: {other}"),
        None => e.to_string(),
    }
}

/// TLS for one caBundle (base64 PEM, as in the JSON object); none means the system roots.
fn build_tls(ca_bundle: &str) -> Result<TlsConfig, String> {
    let pem = if ca_bundle.is_empty() {
        system_roots()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(ca_bundle)
            .map_err(|e| format!("unable to decode caBundle: {e}"))?
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unable to load root certificates: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(
            "unable to load root certificates: unable to parse bytes as PEM block".to_string(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = TlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// PEM bytes of the host's trust roots (what Go's x509.SystemCertPool reads on Linux).
fn system_roots() -> Result<Vec<u8>, String> {
    let from_env = std::env::var("SSL_CERT_FILE").ok();
    let paths = from_env.iter().map(String::as_str).chain(SYSTEM_ROOTS);
    for path in paths {
        if let Ok(pem) = std::fs::read(path) {
            return Ok(pem);
        }
    }
    Err("no caBundle given and no system trust roots found".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::webhooks;
    use serde_json::json;

    fn hook(client: Value) -> Webhook {
        let cfg = json!({"metadata": {"name": "c"}, "webhooks": [{"name": "h", "clientConfig": client, "timeoutSeconds": 5}]});
        webhooks(&[cfg]).unwrap().remove(0)
    }

    #[test]
    fn urls_as_go_prints_them() {
        let t = target(&hook(json!({"url": "https://10.0.0.1:8443/validate"}))).unwrap();
        assert_eq!(t.url, "https://10.0.0.1:8443/validate?timeout=5s");
        assert_eq!(t.server_name, "10.0.0.1");
        assert_eq!(t.path_and_query, "/validate?timeout=5s");
        let t = target(&hook(json!({"url": "https://hooks.example.com"}))).unwrap();
        assert_eq!(t.url, "https://hooks.example.com/?timeout=5s");
        assert!(matches!(t.dial, Dial::Host(ref h, 443) if h == "hooks.example.com"));
        let t = target(&hook(
            json!({"service": {"namespace": "ns", "name": "svc", "path": "/m"}}),
        ))
        .unwrap();
        assert_eq!(t.url, "https://svc.ns.svc:443/m?timeout=5s");
        assert_eq!(t.server_name, "svc.ns.svc");
        assert_eq!(
            target(&hook(json!({}))).err().unwrap(),
            "webhook configuration must have either service or URL"
        );
        assert!(target(&hook(json!({"url": "http://x/"}))).is_err());
    }

    #[test]
    fn a_bad_ca_bundle_is_reported() {
        let garbage = base64::engine::general_purpose::STANDARD.encode("not pem");
        assert_eq!(
            build_tls(&garbage).err().unwrap(),
            "unable to load root certificates: unable to parse bytes as PEM block"
        );
    }
}
