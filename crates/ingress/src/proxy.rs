//! The data path: HTTP and HTTPS listeners that route each request through the current
//! [`Table`] and forward it to a backend endpoint.
//!
//! - Connections are served by hyper (HTTP/1.1; HTTP/2 too when negotiated by ALPN on TLS
//!   or sent with prior knowledge). Request headers must arrive within
//!   [`HEADER_READ_TIMEOUT`] and TLS handshakes within [`TLS_HANDSHAKE_TIMEOUT`], so idle
//!   or slow clients cannot pin connections forever.
//! - Each request opens a fresh HTTP/1.1 connection to an endpoint picked round-robin;
//!   a failed connect moves on to the next endpoint (each tried at most once) before the
//!   request body is touched, so the retry is always safe. No connection pool: simpler,
//!   and a cluster-local connect is cheap.
//! - Answers of our own: 404 (no host or path matches), 503 (the backend has no endpoint,
//!   or its Service, port or kind is not usable), 502 (every endpoint failed, or the
//!   backend broke the exchange), 405 for `CONNECT`.
//! - `Connection: upgrade` requests (WebSocket and others) are forwarded with their
//!   upgrade headers; on `101 Switching Protocols` both upgraded connections are spliced.
//! - Hop-by-hop headers are dropped both ways; `Host` is kept; `X-Forwarded-For` (appended
//!   to), `X-Real-IP`, `X-Forwarded-Host` and `X-Forwarded-Proto` are set.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::backend::Backend;
use crate::table::{Table, TableHandle};

/// The body of every response we send.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one endpoint may take to accept a connection before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request's handler knows about its client connection.
#[derive(Clone, Copy, Debug)]
struct Conn {
    peer: SocketAddr,
    scheme: &'static str,
}

/// Serves plain HTTP on `listener` until `shutdown`. Connections already accepted finish
/// on their own.
pub async fn serve_http(
    listener: TcpListener,
    table: TableHandle,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, shutdown, move |stream, peer| {
        let table = table.clone();
        async move {
            let conn = Conn {
                peer,
                scheme: "http",
            };
            serve_connection(stream, conn, table).await;
        }
    })
    .await
}

/// Serves HTTPS on `listener` with `tls` (see [`crate::tls::server_config`]) until
/// `shutdown`.
pub async fn serve_https(
    listener: TcpListener,
    table: TableHandle,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(listener, shutdown, move |stream, peer| {
        let (table, acceptor) = (table.clone(), acceptor.clone());
        async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = Conn {
                peer,
                scheme: "https",
            };
            serve_connection(stream, conn, table).await;
        }
    })
    .await
}

/// Accepts until `shutdown`, one task per connection. Accept errors (out of file
/// descriptors, mostly) pause briefly instead of ending the listener.
async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: impl Future<Output = ()>, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(on_conn(stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<I>(io: I, conn: Conn, table: TableHandle)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let table = table.load();
        async move { Ok::<_, Infallible>(handle(req, conn, table).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(peer = %conn.peer, error = %e, "client connection ended with an error");
    }
}

/// Routes one request and answers it.
async fn handle(req: Request<Incoming>, conn: Conn, table: Arc<Table>) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    let host = request_host(&req);
    let Some(backend) = table.router.route(&host, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if let Some(why) = &backend.unavailable {
        tracing::debug!(backend = %backend.label, reason = %why, "no endpoint for request");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 service unavailable: {why}\n"),
        );
    }
    let backend = backend.clone();
    drop(table);
    forward(req, conn, &host, &backend).await
}

/// The host a request is for: the authority on HTTP/2 (where `Host` is optional), else
/// the `Host` header, else an absolute-form URI's authority. Empty when none is usable.
fn request_host<B>(req: &Request<B>) -> String {
    let from_uri = req.uri().authority().map(|a| a.as_str().to_string());
    let from_header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let best = if req.version() == Version::HTTP_2 {
        from_uri.or(from_header)
    } else {
        from_header.or(from_uri)
    };
    best.unwrap_or_default()
}

/// Sends the request to the first endpoint that accepts a connection and relays the
/// answer.
async fn forward(
    req: Request<Incoming>,
    conn: Conn,
    host: &str,
    backend: &Backend,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let upgrade = upgrade_protocol(&parts.headers)
        .and_then(|proto| parts.extensions.remove::<OnUpgrade>().map(|on| (proto, on)));
    let (proto, client_upgrade) = match upgrade {
        Some((proto, on)) => (Some(proto), Some(on)),
        None => (None, None),
    };
    prepare_request_headers(&mut parts.headers, conn, host, proto);
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;

    let Some((addr, stream)) = connect_any(backend).await else {
        tracing::info!(backend = %backend.label, "every endpoint refused the connection");
        return text(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: no endpoint reachable\n",
        );
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway(backend, addr, &e),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "backend connection ended with an error");
        }
    });
    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(backend, addr, &e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client_upgrade, backend_upgrade, addr));
            return resp.map(|_| empty());
        }
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.map(|b| b.boxed())
}

fn bad_gateway(backend: &Backend, addr: SocketAddr, e: &hyper::Error) -> Response<ProxyBody> {
    tracing::info!(backend = %backend.label, %addr, error = %e, "backend failed the request");
    text(StatusCode::BAD_GATEWAY, "502 bad gateway\n")
}

/// Tries the backend's endpoints in round-robin order, each once.
async fn connect_any(backend: &Backend) -> Option<(SocketAddr, TcpStream)> {
    for addr in backend.attempt_order() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((addr, stream));
            }
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "endpoint refused; trying the next"),
            Err(_) => tracing::debug!(%addr, "endpoint connect timed out; trying the next"),
        }
    }
    None
}

/// Copies bytes both ways between the client's and the backend's upgraded connections.
async fn splice(client: OnUpgrade, backend: OnUpgrade, addr: SocketAddr) {
    match tokio::try_join!(client, backend) {
        Ok((client, backend)) => {
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(%addr, error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(%addr, error = %e, "upgrade failed"),
    }
}

/// The `Upgrade` value of a request that asks for one (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Headers meaningful for one hop only (RFC 9110 7.6.1), plus those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The headers sent to the backend. `upgrade`: the protocol to ask the backend for.
fn prepare_request_headers(
    headers: &mut HeaderMap,
    conn: Conn,
    host: &str,
    upgrade: Option<HeaderValue>,
) {
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    let ip = conn.peer.ip().to_string();
    let prior = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let xff = if prior.is_empty() {
        ip.clone()
    } else {
        format!("{prior}, {ip}")
    };
    set_header(headers, "x-forwarded-for", &xff);
    set_header(headers, "x-real-ip", &ip);
    set_header(headers, "x-forwarded-proto", conn.scheme);
    if !host.is_empty() {
        set_header(headers, "x-forwarded-host", host);
        if !headers.contains_key(header::HOST) {
            set_header(headers, header::HOST.as_str(), host);
        }
    }
}

/// Replaces a header; a value that is not a valid header is skipped, never a panic.
fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Path and query only, as an HTTP/1.1 origin server expects.
fn origin_form(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let pq = if pq.starts_with('/') { pq } else { "/" };
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text answer of our own.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.append(k, v);
            }
        }
        h
    }

    fn conn() -> Conn {
        Conn {
            peer: SocketAddr::from(([192, 0, 2, 7], 5555)),
            scheme: "https",
        }
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn forwarded_headers_are_set() {
        let mut h = headers(&[
            ("host", "a.example.com"),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        prepare_request_headers(&mut h, conn(), "a.example.com", None);
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.1, 192.0.2.7"));
        assert_eq!(get(&h, "x-real-ip"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("a.example.com"));
        assert_eq!(get(&h, "host"), Some("a.example.com"));
        let mut h = HeaderMap::new();
        prepare_request_headers(&mut h, conn(), "h2.example.com:8443", None);
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&h, "host"), Some("h2.example.com:8443"));
    }

    #[test]
    fn upgrades_are_detected_and_kept() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let proto = upgrade_protocol(&h);
        assert_eq!(
            proto.as_ref().and_then(|v| v.to_str().ok()),
            Some("websocket")
        );
        assert!(upgrade_protocol(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_protocol(&headers(&[("connection", "upgrade")])).is_none());
        let mut h = h.clone();
        prepare_request_headers(&mut h, conn(), "x", proto);
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
    }

    #[test]
    fn request_host_prefers_the_right_source() {
        let mut req = Request::new(());
        assert_eq!(request_host(&req), "");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("h1.example.com"));
        assert_eq!(request_host(&req), "h1.example.com");
        *req.uri_mut() = Uri::from_static("https://h2.example.com/x");
        assert_eq!(request_host(&req), "h1.example.com");
        *req.version_mut() = Version::HTTP_2;
        assert_eq!(request_host(&req), "h2.example.com");
    }

    #[test]
    fn origin_form_keeps_path_and_query() {
        assert_eq!(
            origin_form(&Uri::from_static("http://h/a/b?c=d")),
            "/a/b?c=d"
        );
        assert_eq!(origin_form(&Uri::from_static("/x")), "/x");
        assert_eq!(origin_form(&Uri::from_static("h:80")), "/");
    }

    #[test]
    fn own_answers_are_plain_text() {
        let r = text(StatusCode::NOT_FOUND, "404 page not found\n");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get(r.headers(), "content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
}
