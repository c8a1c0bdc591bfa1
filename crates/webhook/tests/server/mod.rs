//! A real HTTPS admission webhook on 127.0.0.1 for the tests: an rcgen CA, a serving
//! certificate for the names asked for, and a handler per request path.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// base64 of the CA's PEM, as a caBundle.
    pub bundle: String,
}

pub fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "webhook-test-ca");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        bundle: base64::engine::general_purpose::STANDARD.encode(cert.pem()),
        issuer: Issuer::new(params, key),
    }
}

/// What the handler answers: the review to send back and how long to wait first.
pub struct Reply {
    pub review: Value,
    pub delay: Duration,
}

pub type Handler = dyn Fn(&str, &Value) -> Reply + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    /// Every review received, with its path.
    pub seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn calls(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    pub fn requests(&self, path: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// Starts a server whose certificate, signed by `ca`, names `sans`.
pub async fn start(ca: &Ca, sans: &[&str], handler: Arc<Handler>) -> Server {
    let params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = (handler, seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (handler, seen) = (state.0.clone(), state.1.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| serve(handler.clone(), seen.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Server { addr, seen }
}

async fn serve(
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    assert_eq!(
        req.headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let body = req.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push((path.clone(), review.clone()));
    let reply = handler(&path, &review);
    tokio::time::sleep(reply.delay).await;
    let out = serde_json::to_vec(&reply.review).unwrap();
    Ok(hyper::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(out)))
        .unwrap())
}

/// An answer to `review` with `fields` merged into `response` (uid already set).
pub fn answer(review: &Value, fields: Value) -> Reply {
    let mut resp = json!({"uid": review["request"]["uid"], "allowed": true});
    for (k, v) in fields.as_object().unwrap() {
        resp[k] = v.clone();
    }
    Reply {
        review: json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}),
        delay: Duration::ZERO,
    }
}

/// A JSONPatch response field set.
pub fn patch(ops: Value) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
    json!({"patch": encoded, "patchType": "JSONPatch"})
}

/// Labels of the object under review.
pub fn labels(review: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(review["request"]["object"]["metadata"]["labels"].clone())
        .unwrap_or_default()
}
