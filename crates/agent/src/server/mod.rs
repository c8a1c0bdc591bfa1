//! The agent's own HTTPS API (upstream's kubelet server on port 10250): what the API server
//! calls for `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`.
//!
//! - Transport: HTTP/1.1 over TLS with the node's serving certificate (issued by the cluster
//!   through a `kubernetes.io/kubelet-serving` CSR and swapped in when renewed; the API
//!   server verifies it against the cluster CA). Callers must present a client certificate
//!   signed by the cluster CA whose subject is `kube-apiserver-kubelet-client` or in
//!   `system:masters`.
//! - `GET /containerLogs/{ns}/{pod}/{container}`: [`logs`] reads the CRI log file.
//! - `/exec/{ns}/{pod}/{container}`, `/attach/...`, `/portForward/{ns}/{pod}`: the CRI
//!   `Exec`/`Attach`/`PortForward` call returns a URL on containerd's streaming server
//!   (loopback); [`proxy`] forwards the client's upgrade request there and, after the
//!   `101 Switching Protocols`, copies bytes both ways. The stream protocol (SPDY/3.1 or
//!   WebSocket `channel.k8s.io`) is spoken end to end between the client and containerd.

pub mod logs;
pub mod proxy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::labels;
use crate::runtime::{api, container_state, sandbox_ready, Runtime};

/// Response bodies: whole buffers, or streams for followed logs.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The identity the API server presents (upstream's name for it).
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";
/// The group whose members may call the agent too (cluster administrators).
pub const MASTERS: &str = "system:masters";

/// How often a followed log looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What can stop the agent's server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("the client CA: {0}")]
    ClientCa(String),
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers need.
pub struct Context {
    pub runtime: Arc<dyn Runtime>,
    pub node_name: String,
}

/// A bound server, ready to [`Server::serve`].
pub struct Server {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Context>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and prepares TLS: the certificate `serving`
    /// holds at each handshake, client certificates verified against `client_ca` (DER).
    pub async fn bind(
        addr: SocketAddr,
        serving: Arc<dyn rustls::server::ResolvesServerCert>,
        client_ca: &[Vec<u8>],
        ctx: Context,
    ) -> Result<Server, ServerError> {
        let tls = tls_config(serving, client_ca)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            tls: Arc::new(tls),
            ctx: Arc::new(ctx),
        })
    }

    /// The port it listens on (the Node's `daemonEndpoints.kubeletEndpoint.Port`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves connections until the task is dropped or aborted.
    pub async fn serve(self) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("kubelet server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let ctx = self.ctx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "kubelet server: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let allowed = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .is_some_and(authorized);
                let service = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(handle(ctx, allowed, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "kubelet server: connection ended: {e}");
                }
            });
        }
    }
}

/// Whether a (CA-verified) client certificate may use the API: the API server's identity or
/// a cluster administrator.
fn authorized(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let subject = cert.subject();
    let cn_ok = subject
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .any(|c| c == APISERVER_CLIENT);
    let group_ok = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .any(|o| o == MASTERS);
    cn_ok || group_ok
}

fn tls_config(
    serving: Arc<dyn rustls::server::ResolvesServerCert>,
    client_ca: &[Vec<u8>],
) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in client_ca {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    if roots.is_empty() {
        return Err(ServerError::ClientCa(
            "no CA certificate in the kubeconfig".into(),
        ));
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ServerError::ClientCa(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An error answer: plain text, as upstream's kubelet writes them (the API server wraps
/// them into a Status).
pub fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(msg.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn handle(ctx: Arc<Context>, allowed: bool, req: Request<Incoming>) -> Response<Body> {
    if !allowed {
        return text(
            StatusCode::FORBIDDEN,
            "Forbidden: only the API server may call the node agent",
        );
    }
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = req.method() == Method::GET;
    let get_or_post = get || req.method() == Method::POST;
    match segs.as_slice() {
        ["healthz"] if get => text(StatusCode::OK, "ok"),
        ["containerLogs", ns, pod, container] if get => {
            let query = req.uri().query().map(str::to_string);
            container_logs(&ctx, ns, pod, container, query.as_deref()).await
        }
        // The uid-qualified forms upstream also serves; the uid is not needed to find the pod.
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if get_or_post => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec_or_attach(&ctx, true, &ns, &pod, &container, req).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if get_or_post => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec_or_attach(&ctx, false, &ns, &pod, &container, req).await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if get_or_post => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(&ctx, &ns, &pod, req).await
        }
        _ => text(StatusCode::NOT_FOUND, format!("404 page not found: {path}")),
    }
}

fn percent(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The sandboxes of `ns/pod` this node runs, newest first.
async fn sandboxes(
    ctx: &Context,
    ns: &str,
    pod: &str,
) -> Result<Vec<api::PodSandbox>, Response<Body>> {
    let selector = HashMap::from([
        (labels::POD_NAMESPACE.to_string(), ns.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::NODE.to_string(), ctx.node_name.clone()),
    ]);
    let mut found = ctx
        .runtime
        .list_pod_sandboxes(selector)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    found.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(found)
}

/// The instances of container `name` of `ns/pod` on this node, newest first (by restart
/// attempt, then creation).
async fn containers(
    ctx: &Context,
    ns: &str,
    pod: &str,
    name: &str,
) -> Result<Vec<api::Container>, Response<Body>> {
    let uids: Vec<String> = sandboxes(ctx, ns, pod)
        .await?
        .into_iter()
        .filter_map(|s| s.labels.get(labels::POD_UID).cloned())
        .collect();
    if uids.is_empty() {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{ns}\" does not exist on this node"),
        ));
    }
    let selector = HashMap::from([
        (labels::POD_NAMESPACE.to_string(), ns.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::CONTAINER_NAME.to_string(), name.to_string()),
    ]);
    let mut found: Vec<api::Container> = ctx
        .runtime
        .list_containers(selector)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .into_iter()
        .filter(|c| {
            c.labels
                .get(labels::POD_UID)
                .is_some_and(|u| uids.contains(u))
        })
        .collect();
    found.sort_by_key(|c| {
        std::cmp::Reverse((
            c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            c.created_at,
        ))
    });
    if found.is_empty() {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("container \"{name}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        ));
    }
    Ok(found)
}

async fn container_logs(
    ctx: &Arc<Context>,
    ns: &str,
    pod: &str,
    name: &str,
    query: Option<&str>,
) -> Response<Body> {
    let opts = match logs::Options::parse(query, time::OffsetDateTime::now_utc()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let found = match containers(ctx, ns, pod, name).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let current = &found[0];
    let status = match ctx.runtime.container_status(&current.id).await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let attempt = current.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let (path, id) = if opts.previous {
        let prev = found
            .iter()
            .find(|c| c.metadata.as_ref().map(|m| m.attempt) == Some(attempt.wrapping_sub(1)));
        let path = match prev {
            Some(p) => ctx
                .runtime
                .container_status(&p.id)
                .await
                .ok()
                .map(|s| PathBuf::from(s.log_path)),
            // The instance may be gone from the runtime while its log file is kept.
            None if attempt > 0 => Path::new(&status.log_path)
                .parent()
                .map(|d| d.join(format!("{}.log", attempt - 1))),
            None => None,
        };
        match path.filter(|p| p.exists()) {
            Some(p) => (p, None),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container \"{name}\" in pod \"{pod}\" not found"),
                )
            }
        }
    } else {
        (PathBuf::from(&status.log_path), Some(current.id.clone()))
    };
    // Only the running instance's log can grow.
    let follow = opts.follow
        && id.is_some()
        && container_state(status.state) == api::ContainerState::ContainerRunning;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(StatusCode::OK, String::new())
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", path.display()),
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let runtime = ctx.runtime.clone();
    tokio::spawn(stream_log(
        file,
        opts,
        follow.then_some(id).flatten(),
        runtime,
        tx,
    ));
    let stream =
        futures::StreamExt::map(tokio_stream_from(rx), |r| r.map(hyper::body::Frame::data));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends a log file's lines to `tx`; with `follow` (the running container's id), keeps
/// sending new lines until the container stops, the limit is reached or the client goes.
async fn stream_log(
    mut file: tokio::fs::File,
    opts: logs::Options,
    follow: Option<String>,
    runtime: Arc<dyn Runtime>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut decoder = logs::Decoder::default();
    let mut limit = logs::Limit::new(opts.limit_bytes);
    let mut data = Vec::new();
    if let Err(e) = file.read_to_end(&mut data).await {
        let _ = tx.send(Err(e)).await;
        return;
    }
    let lines = logs::initial_lines(&mut decoder, &data, &opts, follow.is_none());
    let out = logs::render(&lines, &opts, &mut limit);
    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
        return;
    }
    let Some(id) = follow else { return };
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_checks = 0u32;
    while !limit.reached() && !tx.is_closed() {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if n > 0 {
            let lines = decoder.feed(&buf[..n]);
            let out = logs::render(&lines, &opts, &mut limit);
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            continue;
        }
        // At the end of the file: stop once the container no longer runs (after reading
        // what it wrote last), else wait for more.
        idle_checks += 1;
        if idle_checks.is_multiple_of(5) {
            let running = runtime
                .container_status(&id)
                .await
                .is_ok_and(|s| container_state(s.state) == api::ContainerState::ContainerRunning);
            if !running {
                // containerd may still be flushing the last lines.
                tokio::time::sleep(FOLLOW_POLL).await;
                let mut rest = Vec::new();
                let _ = file.read_to_end(&mut rest).await;
                let mut lines = decoder.feed(&rest);
                lines.extend(decoder.finish());
                let out = logs::render(&lines, &opts, &mut limit);
                if !out.is_empty() {
                    let _ = tx.send(Ok(Bytes::from(out))).await;
                }
                return;
            }
        }
        // A truncated file (log reopened) starts again from its beginning.
        if let (Ok(pos), Ok(meta)) = (file.stream_position().await, file.metadata().await) {
            if meta.len() < pos {
                let _ = file.seek(std::io::SeekFrom::Start(0)).await;
            }
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// A boolean stream option: upstream's kubelet names (`input`, `output`, `error`) or the
/// API's (`stdin`, `stdout`, `stderr`).
fn stream_flags(query: Option<&str>) -> (Vec<String>, bool, bool, bool, bool) {
    let (mut cmd, mut stdin, mut stdout, mut stderr, mut tty) =
        (Vec::new(), false, false, false, false);
    let on = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T");
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "command" => cmd.push(v.into_owned()),
            "input" | "stdin" => stdin = on(&v),
            "output" | "stdout" => stdout = on(&v),
            "error" | "stderr" => stderr = on(&v),
            "tty" => tty = on(&v),
            _ => {}
        }
    }
    (cmd, stdin, stdout, stderr, tty)
}

async fn exec_or_attach(
    ctx: &Context,
    exec: bool,
    ns: &str,
    pod: &str,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (cmd, stdin, stdout, stderr, tty) = stream_flags(req.uri().query());
    if !stdin && !stdout && !stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    if exec && cmd.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let found = match containers(ctx, ns, pod, name).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let id = found[0].id.clone();
    // With a TTY, stderr is merged into stdout, so the runtime is asked for none.
    let stderr = stderr && !tty;
    let url = if exec {
        ctx.runtime
            .exec(api::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
            .await
    } else {
        ctx.runtime
            .attach(api::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr,
            })
            .await
    };
    match url {
        Ok(url) => proxy::upgrade(&url, req).await,
        Err(e) if e.is_not_found() => text(
            StatusCode::NOT_FOUND,
            format!("container not found (\"{name}\")"),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn port_forward(
    ctx: &Context,
    ns: &str,
    pod: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let found = match sandboxes(ctx, ns, pod).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(sandbox) = found.into_iter().find(|s| sandbox_ready(s.state)) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{ns}\" has no running sandbox on this node"),
        );
    };
    match ctx.runtime.port_forward(&sandbox.id).await {
        Ok(url) => proxy::upgrade(&url, req).await,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
