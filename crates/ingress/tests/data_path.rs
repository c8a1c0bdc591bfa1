//! Component test of the data path: real listeners and tiny hyper backends on 127.0.0.1,
//! a routing table built from API objects, no API server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use krust_ingress::{proxy, table, tls, Objects, TableHandle};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CTRL: &str = "krust.io/ingress";

/// Answers every request with `name path host x-forwarded-for x-real-ip proto fwd-host`,
/// and upgrade requests with 101 and an echo of the upgraded bytes.
async fn backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req)) });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn answer(name: &str, mut req: Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    if req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().expect("value"));
        resp.headers_mut()
            .insert("upgrade", "echo".parse().expect("value"));
        return resp;
    }
    let body = format!(
        "{name} {} host={} xff={} real={} proto={} fwdhost={}",
        req.uri().path(),
        h("host"),
        h("x-forwarded-for"),
        h("x-real-ip"),
        h("x-forwarded-proto"),
        h("x-forwarded-host"),
    );
    hyper::Response::new(Full::new(Bytes::from(body)))
}

fn service(name: &str) -> serde_json::Value {
    json!({"metadata": {"namespace": "ns", "name": name},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}})
}

/// A slice of `service`: all `ips` on `port`.
fn slice(service: &str, idx: usize, port: u16, ips: &[&str]) -> serde_json::Value {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"metadata": {"namespace": "ns", "name": format!("{service}-{idx}"),
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
           "endpoints": endpoints})
}

fn rule(host: &str, path: &str, ty: &str, service: &str) -> serde_json::Value {
    json!({"host": host, "http": {"paths": [
        {"path": path, "pathType": ty, "backend": {"service": {"name": service, "port": {"number": 80}}}}
    ]}})
}

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("valid object"))
}

fn tls_secret(name: &str, crt: &str, key: &str) -> Arc<Secret> {
    Arc::new(Secret {
        metadata: kube::api::ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".into(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".into(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Default::default()
    })
}

struct Harness {
    http: SocketAddr,
    https: SocketAddr,
    /// DER of the certificates for `a.example.com` and `*.wild.example.com`.
    cert_a: CertificateDer<'static>,
    cert_wild: CertificateDer<'static>,
}

async fn start() -> Harness {
    let (one, two, three) = (
        backend("one").await,
        backend("two").await,
        backend("three").await,
    );
    let a = rcgen::generate_simple_self_signed(vec!["a.example.com".into()]).expect("cert");
    let wild = rcgen::generate_simple_self_signed(vec!["*.wild.example.com".into()]).expect("cert");
    let rules = vec![
        rule("a.example.com", "/", "Prefix", "one"),
        rule("a.example.com", "/two", "Prefix", "two"),
        rule("a.example.com", "/exact", "Exact", "three"),
        rule("*.wild.example.com", "/", "Prefix", "three"),
        rule("empty.example.com", "/", "Prefix", "empty"),
        rule("missing.example.com", "/", "Prefix", "missing"),
        rule("retry.example.com", "/", "Prefix", "flaky"),
        rule("dead.example.com", "/", "Prefix", "dead"),
        rule("rr.example.com", "/", "Prefix", "rr"),
        rule("ws.example.com", "/", "Prefix", "one"),
    ];
    let ingress = json!({
        "metadata": {"namespace": "ns", "name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "krust", "rules": rules, "tls": [
            {"hosts": ["a.example.com"], "secretName": "a-tls"},
            {"hosts": ["*.wild.example.com"], "secretName": "wild-tls"},
        ]}
    });
    let objects = Objects {
        ingresses: vec![from(ingress)],
        classes: vec![from(
            json!({"metadata": {"name": "krust"}, "spec": {"controller": CTRL}}),
        )],
        services: ["one", "two", "three", "empty", "flaky", "dead", "rr"]
            .into_iter()
            .map(|s| from(service(s)))
            .collect(),
        slices: vec![
            from(slice("one", 0, one, &["127.0.0.1"])),
            from(slice("two", 0, two, &["127.0.0.1"])),
            from(slice("three", 0, three, &["127.0.0.1"])),
            // Nothing listens on 127.0.0.2-4: those connects are refused.
            from(slice(
                "flaky",
                0,
                two,
                &["127.0.0.2", "127.0.0.1", "127.0.0.3"],
            )),
            from(slice(
                "dead",
                0,
                two,
                &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
            )),
            from(slice("rr", 0, one, &["127.0.0.1"])),
            from(slice("rr", 1, two, &["127.0.0.1"])),
        ],
        secrets: vec![
            tls_secret("a-tls", &a.cert.pem(), &a.signing_key.serialize_pem()),
            tls_secret(
                "wild-tls",
                &wild.cert.pem(),
                &wild.signing_key.serialize_pem(),
            ),
        ],
    };
    let built = table::build(&objects, "krust", CTRL);
    assert_eq!(built.served.len(), 1);
    let handle = TableHandle::new(built.table);

    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let (http_addr, https_addr) = (
        http.local_addr().expect("addr"),
        https.local_addr().expect("addr"),
    );
    let fallback = tls::fallback_certificate().expect("fallback");
    let config = tls::server_config(handle.clone(), fallback).expect("tls config");
    tokio::spawn(proxy::serve_http(
        http,
        handle.clone(),
        std::future::pending(),
    ));
    tokio::spawn(proxy::serve_https(
        https,
        handle,
        config,
        std::future::pending(),
    ));
    Harness {
        http: http_addr,
        https: https_addr,
        cert_a: a.cert.der().clone(),
        cert_wild: wild.cert.der().clone(),
    }
}

/// One GET over `io` with this Host; the status and body.
async fn get_over<I>(io: I, host: &str, path: &str) -> (StatusCode, String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    get_over(TcpStream::connect(addr).await.expect("connect"), host, path).await
}

#[tokio::test]
async fn routes_by_host_and_path() {
    let h = start().await;
    let (s, body) = get(h.http, "a.example.com", "/anything").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.starts_with("one /anything host=a.example.com "),
        "{body}"
    );
    let (_, body) = get(h.http, "A.example.com:8080", "/two/x").await;
    assert!(body.starts_with("two /two/x"), "{body}");
    let (_, body) = get(h.http, "a.example.com", "/twofold").await;
    assert!(body.starts_with("one "), "{body}");
    let (_, body) = get(h.http, "a.example.com", "/exact").await;
    assert!(body.starts_with("three "), "{body}");
    let (_, body) = get(h.http, "a.example.com", "/exact/").await;
    assert!(body.starts_with("one "), "{body}");
    let (_, body) = get(h.http, "x.wild.example.com", "/").await;
    assert!(body.starts_with("three "), "{body}");
}

#[tokio::test]
async fn forwarded_headers_reach_the_backend() {
    let h = start().await;
    let (_, body) = get(h.http, "a.example.com", "/").await;
    assert!(
        body.ends_with("host=a.example.com xff=203.0.113.9, 127.0.0.1 real=127.0.0.1 proto=http fwdhost=a.example.com"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_hosts_and_paths_are_404() {
    let h = start().await;
    let (s, body) = get(h.http, "nobody.example.com", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body, "404 page not found\n");
    let (s, _) = get(h.http, "y.x.wild.example.com", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn backends_without_endpoints_are_503() {
    let h = start().await;
    let (s, body) = get(h.http, "empty.example.com", "/").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (s, body) = get(h.http, "missing.example.com", "/").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("service not found"), "{body}");
}

#[tokio::test]
async fn refused_endpoints_are_retried_then_502() {
    let h = start().await;
    for _ in 0..6 {
        let (s, body) = get(h.http, "retry.example.com", "/r").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(body.starts_with("two /r"), "{body}");
    }
    let (s, _) = get(h.http, "dead.example.com", "/").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn round_robin_spreads_requests() {
    let h = start().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (_, body) = get(h.http, "rr.example.com", "/").await;
        seen.push(body.split(' ').next().unwrap_or_default().to_string());
    }
    assert!(
        seen.contains(&"one".to_string()) && seen.contains(&"two".to_string()),
        "{seen:?}"
    );
}

fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    Arc::new(config)
}

async fn tls_connect(
    h: &Harness,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(client_config(&[&h.cert_a, &h.cert_wild]));
    let name = ServerName::try_from(sni.to_string()).expect("name");
    connector
        .connect(name, TcpStream::connect(h.https).await?)
        .await
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni() {
    let h = start().await;
    let stream = tls_connect(&h, "a.example.com")
        .await
        .expect("trusted handshake");
    let peer = stream.get_ref().1.peer_certificates().map(|c| c[0].clone());
    assert_eq!(peer.as_ref(), Some(&h.cert_a));
    let (s, body) = get_over(stream, "a.example.com", "/two").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.starts_with("two /two") && body.contains("proto=https"),
        "{body}"
    );

    let stream = tls_connect(&h, "q.wild.example.com")
        .await
        .expect("wildcard handshake");
    let peer = stream.get_ref().1.peer_certificates().map(|c| c[0].clone());
    assert_eq!(peer.as_ref(), Some(&h.cert_wild));

    // Unknown names get the self-signed fallback, which this client does not trust.
    assert!(tls_connect(&h, "unknown.example.com").await.is_err());
}

#[tokio::test]
async fn upgrades_are_spliced() {
    let h = start().await;
    let stream = TcpStream::connect(h.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let req = Request::get("/ws")
        .header("host", "ws.example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers().get("upgrade").and_then(|v| v.to_str().ok()),
        Some("echo")
    );
    let upgraded = hyper::upgrade::on(resp).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    for msg in [&b"hello"[..], b"over the splice"] {
        io.write_all(msg).await.expect("write");
        let mut buf = vec![0; msg.len()];
        io.read_exact(&mut buf).await.expect("echo");
        assert_eq!(buf, msg);
    }
}

#[tokio::test]
async fn garbage_requests_get_an_error_not_a_crash() {
    let h = start().await;
    let mut s = TcpStream::connect(h.http).await.expect("connect");
    s.write_all(b"\x00\x01 not http\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    // Still serving afterwards.
    let (status, _) = get(h.http, "a.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn http2_is_offered_over_tls() {
    let h = start().await;
    let mut config = (*client_config(&[&h.cert_a])).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(h.https).await.expect("connect");
    let name = ServerName::try_from("a.example.com").expect("name");
    let stream = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://a.example.com/two/h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("two /two/h2 host=a.example.com "),
        "{body}"
    );
}
