//! The API server as a client of node agents (kubelets), for `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward`.
//!
//! It authenticates with a client certificate the cluster CA signs at start-up
//! (`kube-apiserver-kubelet-client`, group `system:masters`, as upstream's), and verifies the
//! agent's serving certificate against the cluster CA for the node's address (as
//! kube-apiserver with `--kubelet-certificate-authority`): agents serve certificates the
//! cluster issued them through `kubernetes.io/kubelet-serving` CSRs. One connection per request: a plain request
//! streams the agent's answer back (followed logs); an upgrade request (SPDY or WebSocket)
//! becomes, after the agent's `101`, a byte-for-byte tunnel between client and agent, except
//! the WebSocket protocols the node's runtime does not speak, which
//! [`crate::streamtranslator`] translates to SPDY.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use krust_machinery::ApiError;
use rustls::pki_types::ServerName;

use serde_json::Value;

use crate::body::{self, Body};
use crate::request::{Query, ResourcePath};
use crate::rest::Rest;
use crate::streamtranslator;

/// The identity the API server presents to agents.
pub const CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The port agents listen on when their Node does not say.
pub const DEFAULT_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that negotiates a stream protocol over a SPDY upgrade.
const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// What can go wrong making the client.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("making the kubelet client certificate")]
    Pki(#[from] crate::pki::PkiError),
    #[error("kubelet client TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("kubelet client TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// A client of node agents' HTTPS APIs.
#[derive(Clone)]
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

/// Where an agent listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl KubeletClient {
    /// A client with a fresh certificate signed by the cluster CA, trusting agents whose
    /// serving certificates it signed.
    pub fn new(ca_cert_pem: &str, ca_key_pem: &str) -> Result<KubeletClient, KubeletClientError> {
        let (cert, key) =
            crate::pki::client_cert(ca_cert_pem, ca_key_pem, CLIENT_USER, &["system:masters"])?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::certs(ca_cert_pem)? {
            roots.add(c)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(crate::tls::certs(&cert)?, crate::tls::key(&key)?)?;
        // Upgrades need HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens a TLS connection to the agent at `to` and sends `req` on it, keeping the
    /// connection open for an upgrade.
    async fn send(
        &self,
        to: &Endpoint,
        req: http::Request<Empty<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::internal(format!("error dialing backend: {}:{}: {e}", to.ip, to.port))
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect((to.ip, to.port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .tls
                .connect(ServerName::IpAddress(to.ip.into()), tcp)
                .await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok::<_, std::io::Error>(sender)
        })
        .await;
        let mut sender = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(unreachable(&"timed out")),
        };
        sender.send_request(req).await.map_err(|e| unreachable(&e))
    }

    /// Asks the agent at `to` to upgrade `path_and_query` to SPDY/3.1 with one of
    /// `versions` (`X-Stream-Protocol-Version`, best first), as a SPDY client would; returns
    /// the upgraded connection and the version the agent chose.
    pub async fn upgrade_spdy(
        &self,
        to: &Endpoint,
        path_and_query: &str,
        versions: &[&str],
    ) -> Result<(hyper::upgrade::Upgraded, String), ApiError> {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(path_and_query)
            .header(http::header::HOST, format!("{}:{}", to.ip, to.port))
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "SPDY/3.1");
        for v in versions {
            req = req.header(STREAM_PROTOCOL_VERSION, *v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(ApiError::internal)?;
        let mut resp = self.send(to, req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(error_answer(resp).await);
        }
        let version = resp
            .headers()
            .get(STREAM_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let upgraded = hyper::upgrade::on(&mut resp).await.map_err(|e| {
            ApiError::internal(format!("upgrading the stream to the node agent: {e}"))
        })?;
        Ok((upgraded, version))
    }

    /// Sends `method path_and_query` with `headers` to the agent at `to` and relays its
    /// answer. With `upgrade` (the client's pending upgrade), a `101` from the agent joins
    /// the client's connection to the agent's in a background task.
    pub async fn forward(
        &self,
        to: &Endpoint,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Response<Body>, ApiError> {
        let mut req = http::Request::builder().method(method).uri(path_and_query);
        for (k, v) in headers {
            // The client's own credentials are for the API server, not for the agent.
            if k != http::header::HOST
                && k != http::header::AUTHORIZATION
                && k != http::header::CONTENT_LENGTH
            {
                req = req.header(k, v);
            }
        }
        let req = req
            .header(http::header::HOST, format!("{}:{}", to.ip, to.port))
            .body(Empty::<Bytes>::new())
            .map_err(ApiError::internal)?;
        let mut resp = self.send(to, req).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = upgrade else {
                return Err(ApiError::internal(
                    "the node agent switched protocols on a plain request",
                ));
            };
            let agent_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::join!(client_upgrade, agent_upgrade) {
                    (Ok(c), Ok(a)) => {
                        let (mut c, mut a) = (TokioIo::new(c), TokioIo::new(a));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut a).await {
                            tracing::debug!("stream to the node agent ended: {e}");
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => tracing::debug!("stream upgrade failed: {e}"),
                }
            });
            let mut answer = Response::new(body::empty());
            *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *answer.headers_mut() = resp.headers().clone();
            return Ok(answer);
        }
        if !resp.status().is_success() {
            return Err(error_answer(resp).await);
        }
        let (parts, incoming) = resp.into_parts();
        let mut out = Response::new(incoming.map_err(std::io::Error::other).boxed());
        *out.status_mut() = parts.status;
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
            out.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        Ok(out)
    }
}

/// The Status for an agent's error answer (plain text; clients want a Status).
async fn error_answer(resp: Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&bytes).trim().to_string();
    agent_error(code, msg)
}

/// The Status for an agent's error answer.
fn agent_error(code: StatusCode, msg: String) -> ApiError {
    match code {
        StatusCode::NOT_FOUND => ApiError::bad_request(msg),
        StatusCode::BAD_REQUEST => ApiError::bad_request(msg),
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ApiError::forbidden(msg),
        _ => ApiError::internal(msg),
    }
}

/// `pods/{log,exec,attach,portforward}`: checks the pod and container as upstream does,
/// finds the pod's node and forwards the request to its agent.
pub async fn pod_subresource(
    rest: &Rest,
    client: Option<&KubeletClient>,
    rp: &ResourcePath<'_>,
    name: &str,
    sub: &str,
    mut parts: http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    let client = client.ok_or_else(|| ApiError::internal("no client for node agents"))?;
    let main = ResourcePath {
        info: rp.info,
        namespace: rp.namespace.clone(),
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    let (pod, _) = rest.get(&main, name).await?;
    let ns = rp.namespace.clone().unwrap_or_default();
    let query = Query::parse(parts.uri.query());
    let streaming = sub != "log";
    if streaming && !parts.headers.contains_key(http::header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let container = if sub == "portforward" {
        None
    } else {
        Some(pick_container(&pod, name, query.get("container"))?)
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let Some(node) = node else {
        if sub == "log" {
            // As upstream: an unscheduled pod has no logs yet.
            return Ok(Response::new(body::empty()));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let to = node_endpoint(rest, node).await?;
    let path = agent_path(sub, &ns, name, container.as_deref(), &query)?;
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    if let Some(kind) = streaming
        .then(|| streamtranslator::wanted(sub, &parts.headers))
        .flatten()
    {
        let streams = streamtranslator::Streams {
            stdin: query.flag("stdin"),
            stdout: query.flag("stdout"),
            stderr: query.flag("stderr"),
            tty: query.flag("tty"),
        };
        return streamtranslator::serve(client, &to, &path, &parts.headers, kind, streams, upgrade)
            .await;
    }
    client
        .forward(
            &to,
            parts.method.clone(),
            &path,
            &parts.headers,
            streaming.then_some(upgrade).flatten(),
        )
        .await
}

/// The agent's path and query for a pod subresource request (upstream's kubelet API).
fn agent_path(
    sub: &str,
    ns: &str,
    name: &str,
    container: Option<&str>,
    query: &Query,
) -> Result<String, ApiError> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let path = match sub {
        "log" => {
            // Booleans and integers decoded as upstream's PodLogOptions, then written in
            // the kubelet's spelling.
            for k in ["follow", "previous", "timestamps"] {
                if query.flag(k) {
                    q.append_pair(k, "true");
                }
            }
            for k in ["tailLines", "sinceSeconds", "limitBytes"] {
                if let Some(v) = query.int(k)? {
                    q.append_pair(k, &v.to_string());
                }
            }
            if let Some(v) = query.get("sinceTime") {
                q.append_pair("sinceTime", v);
            }
            format!(
                "/containerLogs/{}/{}/{}",
                enc(ns),
                enc(name),
                enc(container.unwrap_or_default())
            )
        }
        "exec" | "attach" => {
            for v in query.all("command") {
                q.append_pair("command", v);
            }
            // Upstream's names for the kubelet's stream parameters.
            for (api, kubelet) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if query.flag(api) {
                    q.append_pair(kubelet, "1");
                }
            }
            let verb = if sub == "exec" { "exec" } else { "attach" };
            format!(
                "/{verb}/{}/{}/{}",
                enc(ns),
                enc(name),
                enc(container.unwrap_or_default())
            )
        }
        _ => {
            for v in query.all("ports") {
                q.append_pair("ports", v);
            }
            format!("/portForward/{}/{}", enc(ns), enc(name))
        }
    };
    let q = q.finish();
    Ok(if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    })
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request means: the one it names (any kind), else the pod's only one.
fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let app = names(pod, "containers");
    if let Some(c) = asked {
        let known = app
            .iter()
            .chain(names(pod, "initContainers").iter())
            .chain(names(pod, "ephemeralContainers").iter())
            .any(|n| n == c);
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        return Ok(c.to_string());
    }
    match app.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        many => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            let init = names(pod, "initContainers");
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// A node's agent: its first InternalIP (else ExternalIP) and the port its status names.
async fn node_endpoint(rest: &Rest, node: &str) -> Result<Endpoint, ApiError> {
    let info = rest
        .registry
        .lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let rp = ResourcePath {
        info: &info,
        namespace: None,
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    let (obj, _) = rest.get(&rp, node).await?;
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"].iter().find_map(|t| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(*t))
            .find_map(|a| a.get("address").and_then(Value::as_str)?.parse().ok())
    });
    let Some(ip) = ip else {
        return Err(ApiError::bad_request(format!(
            "node {node} has no InternalIP or ExternalIP address; known addresses: {}",
            Value::Array(addresses)
        )));
    };
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PORT);
    Ok(Endpoint { ip, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_a_request_means() {
        let pod = serde_json::json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(pick_container(&pod, "p", Some("b")).expect("b"), "b");
        assert_eq!(
            pick_container(&pod, "p", Some("init")).expect("init"),
            "init"
        );
        let e = pick_container(&pod, "p", Some("x")).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            ApiError::bad_request("container x is not valid for pod p").to_string()
        );
        let e = pick_container(&pod, "p", None).expect_err("ambiguous");
        assert_eq!(e.code(), 400);
        assert!(e.to_status()["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("choose one of: [a b] or one of the init containers: [init]"));
        let one = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", None).expect("only"), "only");
    }

    #[test]
    fn makes_a_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki =
            crate::pki::Pki::load_or_create(dir.path(), &["127.0.0.1".to_string()]).expect("pki");
        KubeletClient::new(&pki.ca_cert_pem, &pki.ca_key_pem).expect("client");
    }
}
