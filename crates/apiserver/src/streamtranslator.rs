//! Serves the WebSocket stream protocols of kubectl 1.31+ for nodes whose runtime speaks
//! only SPDY, as kube-apiserver's stream translator and tunnel do.
//!
//! - `SPDY/3.1+portforward.k8s.io` (port-forward): the client runs SPDY itself inside
//!   binary WebSocket messages, so the API server upgrades to SPDY at the agent and copies
//!   bytes between the two ([`tunnel`]).
//! - `v5.channel.k8s.io` (exec, attach): the client sends and receives channel-prefixed
//!   messages (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, 255 close a channel); the
//!   API server is the SPDY client of the agent's `v4.channel.k8s.io` protocol, one SPDY
//!   stream per channel ([`exec`]).
//!
//! Older WebSocket protocols (`v4.channel.k8s.io`, ...) the runtime serves itself, so those
//! upgrades are proxied byte for byte instead.

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use http::{HeaderMap, Response, StatusCode};
use hyper_util::rt::TokioIo;
use krust_machinery::ApiError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::{self, Body};
use crate::kubelet::{Endpoint, KubeletClient};
use crate::spdy;

/// The WebSocket subprotocol of port-forward tunnelled SPDY.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket subprotocol of exec and attach that half-closes stdin.
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
/// What the translator asks the agent for, best first, as upstream's SPDY executor does.
const EXEC_SPDY_VERSIONS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A translation the API server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// Port-forward's SPDY inside WebSocket, copied to a SPDY upgrade at the agent.
    Tunnel,
    /// exec or attach over `v5.channel.k8s.io`, translated to SPDY streams.
    Exec,
}

/// The streams an exec or attach asked for (its `stdin`, `stdout`, `stderr`, `tty`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What can end a translated session early.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
    #[error("node agent stream: {0}")]
    Io(#[from] std::io::Error),
}

fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The translation a pod subresource upgrade needs, if any: a WebSocket upgrade offering a
/// protocol the node's runtime does not speak.
pub fn wanted(sub: &str, headers: &HeaderMap) -> Option<Translation> {
    let websocket = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return None;
    }
    match sub {
        "portforward" if offered(headers).any(|p| p == TUNNEL_PROTOCOL) => {
            Some(Translation::Tunnel)
        }
        "exec" | "attach" if offered(headers).any(|p| p == V5_PROTOCOL) => Some(Translation::Exec),
        _ => None,
    }
}

/// Upgrades to SPDY at the agent, answers the client's WebSocket handshake and translates
/// between the two in a background task.
pub async fn serve(
    client: &KubeletClient,
    to: &Endpoint,
    path: &str,
    headers: &HeaderMap,
    kind: Translation,
    streams: Streams,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, ApiError> {
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let upgrade = upgrade.ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let (protocol, versions): (&str, &[&str]) = match kind {
        Translation::Tunnel => (TUNNEL_PROTOCOL, &["portforward.k8s.io"]),
        Translation::Exec => (V5_PROTOCOL, EXEC_SPDY_VERSIONS),
    };
    // Upgrade at the agent first, so that its refusals reach the client as a Status.
    let (agent, version) = client.upgrade_spdy(to, path, versions).await?;
    tracing::info!(%path, protocol, agent_protocol = %version, "translating a WebSocket stream to SPDY");
    tokio::spawn(async move {
        let client = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("WebSocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        let agent = TokioIo::new(agent);
        let done = match kind {
            Translation::Tunnel => tunnel(ws, agent).await,
            Translation::Exec => exec(ws, agent, streams, &version).await,
        };
        if let Err(e) = done {
            tracing::debug!("translated stream ended: {e}");
        }
    });
    let mut answer = Response::new(body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = answer.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(protocol),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        derive_accept_key(key.as_bytes())
            .parse()
            .map_err(ApiError::internal)?,
    );
    Ok(answer)
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Copies binary messages' payloads to `agent` and its bytes back as binary messages, until
/// either side ends; then both are closed.
pub async fn tunnel<S, A>(ws: WebSocketStream<S>, agent: A) -> Result<(), TranslateError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut ar, mut aw) = tokio::io::split(agent);
    let up = async {
        while let Some(m) = ws_rx.next().await {
            match m? {
                Message::Binary(b) => aw.write_all(&b).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        aw.shutdown().await?;
        Ok::<_, TranslateError>(())
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = ar.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ws_tx
                .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
        ws_tx.send(normal_close()).await?;
        Ok::<_, TranslateError>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// The SPDY stream ids of one exec session.
#[derive(Clone, Copy, Debug, Default)]
struct Ids {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// Translates one `v5.channel.k8s.io` session to SPDY streams at the agent, which chose
/// `version` of the channel protocols. Ends, closing the WebSocket normally, once the agent
/// ends the error stream (its final Status) and the output streams, or closes.
pub async fn exec<S, A>(
    ws: WebSocketStream<S>,
    agent: A,
    streams: Streams,
    version: &str,
) -> Result<(), TranslateError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Send + 'static,
{
    let (spdy, mut incoming) = spdy::client(agent);
    let open = |t: &'static str| {
        let spdy = spdy.clone();
        async move { spdy.open(vec![("streamtype".into(), t.into())]).await }
    };
    // Upstream's order: error first, then the data streams.
    let mut ids = Ids {
        error: open("error").await?,
        ..Ids::default()
    };
    if streams.stdin {
        ids.stdin = Some(open("stdin").await?);
    }
    if streams.stdout {
        ids.stdout = Some(open("stdout").await?);
    }
    if streams.stderr && !streams.tty {
        ids.stderr = Some(open("stderr").await?);
    }
    if streams.tty {
        ids.resize = Some(open("resize").await?);
    }
    let (mut ws_tx, ws_rx) = ws.split();

    let down = async {
        let mut outputs = usize::from(ids.stdout.is_some()) + usize::from(ids.stderr.is_some());
        let mut error = Vec::new();
        let mut error_done = false;
        while let Some(ev) = incoming.next().await? {
            let (stream, data, fin) = match ev {
                spdy::Event::Data { stream, data, fin } => (stream, data, fin),
                spdy::Event::Reset { stream, .. } => (stream, Bytes::new(), true),
                spdy::Event::GoAway => break,
            };
            if stream == ids.error {
                error.extend_from_slice(&data);
                error_done |= fin;
            } else if Some(stream) == ids.stdout || Some(stream) == ids.stderr {
                let ch = if Some(stream) == ids.stdout {
                    STDOUT
                } else {
                    STDERR
                };
                if !data.is_empty() {
                    ws_tx.send(Message::Binary(channel(ch, &data))).await?;
                }
                if fin {
                    outputs = outputs.saturating_sub(1);
                }
            }
            if error_done && outputs == 0 {
                break;
            }
        }
        ws_tx
            .send(Message::Binary(channel(ERROR, &status(&error, version))))
            .await?;
        ws_tx.send(normal_close()).await?;
        Ok::<_, TranslateError>(())
    };
    tokio::select! {
        r = down => r,
        r = up(ws_rx, &spdy, ids) => r,
    }
}

/// Client to agent: stdin and resize messages onto their streams; `[255, 0]` half-closes
/// stdin. Returns when the client closes.
async fn up<R>(mut ws_rx: R, spdy: &spdy::Client, ids: Ids) -> Result<(), TranslateError>
where
    R: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(m) = ws_rx.next().await {
        let b = match m? {
            Message::Binary(b) => b,
            // Clients that write strings (the Python client) send text frames; upstream
            // reads both alike: a channel byte, then the data.
            Message::Text(t) => Bytes::from(t),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&ch, rest)) = b.split_first() else {
            continue;
        };
        let data = b.slice(b.len() - rest.len()..);
        match (ch, ids.stdin, ids.resize) {
            (STDIN, Some(id), _) => spdy.data(id, data, false).await?,
            (RESIZE, _, Some(id)) => spdy.data(id, data, false).await?,
            (CLOSE, Some(id), _) if rest.first() == Some(&STDIN) => {
                spdy.data(id, Bytes::new(), true).await?
            }
            _ => {}
        }
    }
    Ok(())
}

fn channel(ch: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    v.into()
}

/// The Status for the error channel: `v4.channel.k8s.io` already carries one (empty means
/// success); older protocols carry an error message.
fn status(error: &[u8], version: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(error);
    let text = text.trim();
    if text.is_empty() {
        return br#"{"metadata":{},"status":"Success"}"#.to_vec();
    }
    if version == "v4.channel.k8s.io" {
        return error.to_vec();
    }
    serde_json::json!({"metadata": {}, "status": "Failure", "message": text})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn headers(upgrade: &str, protocols: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(http::header::UPGRADE, upgrade.parse().expect("header"));
        m.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            protocols.parse().expect("header"),
        );
        m
    }

    #[test]
    fn which_upgrades_are_translated() {
        let h = headers("websocket", "v5.channel.k8s.io, v4.channel.k8s.io");
        assert_eq!(wanted("exec", &h), Some(Translation::Exec));
        assert_eq!(wanted("attach", &h), Some(Translation::Exec));
        assert_eq!(wanted("portforward", &h), None);
        let h = headers("websocket", "SPDY/3.1+portforward.k8s.io");
        assert_eq!(wanted("portforward", &h), Some(Translation::Tunnel));
        assert_eq!(wanted("exec", &h), None);
        // The runtime serves these itself.
        assert_eq!(
            wanted("exec", &headers("websocket", "v4.channel.k8s.io")),
            None
        );
        assert_eq!(
            wanted("exec", &headers("SPDY/3.1", "v5.channel.k8s.io")),
            None
        );
    }

    #[test]
    fn error_channel_status() {
        let ok = status(b"", "v4.channel.k8s.io");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ok).expect("json")["status"],
            "Success"
        );
        let exit = br#"{"status":"Failure","reason":"NonZeroExitCode"}"#;
        assert_eq!(status(exit, "v4.channel.k8s.io"), exit.to_vec());
        let v2 = status(b"boom\n", "v2.channel.k8s.io");
        let v2: serde_json::Value = serde_json::from_slice(&v2).expect("json");
        assert_eq!(v2["message"], "boom");
    }

    async fn ws_pair(
        role_here: Role,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = duplex(1 << 20);
        let other = if role_here == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        (
            WebSocketStream::from_raw_socket(a, role_here, None).await,
            WebSocketStream::from_raw_socket(b, other, None).await,
        )
    }

    #[tokio::test]
    async fn tunnel_copies_both_ways() {
        let (server_ws, mut client_ws) = ws_pair(Role::Server).await;
        let (agent_here, mut agent) = duplex(1 << 16);
        let task = tokio::spawn(tunnel(server_ws, agent_here));
        client_ws
            .send(Message::Binary(Bytes::from_static(b"\x80\x03syn")))
            .await
            .expect("send");
        let mut buf = [0u8; 5];
        agent.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"\x80\x03syn");
        agent.write_all(b"reply").await.expect("write");
        let m = client_ws.next().await.expect("message").expect("ok");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"reply")));
        drop(agent);
        assert!(matches!(
            client_ws.next().await.expect("close").expect("ok"),
            Message::Close(_)
        ));
        task.await.expect("join").expect("tunnel");
    }

    /// A v5 session against a fake SPDY agent: streams in upstream's order, stdin (text or
    /// binary frames) and its half-close, output and the final Status on their channels, then a normal close.
    #[tokio::test]
    async fn exec_translates_channels_to_streams() {
        use spdy::{Frame, FrameDecoder, FrameEncoder};
        use tokio_util::codec::{FramedRead, FramedWrite};

        let (server_ws, mut client_ws) = ws_pair(Role::Server).await;
        let (agent_here, agent) = duplex(1 << 20);
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let task = tokio::spawn(exec(server_ws, agent_here, streams, "v4.channel.k8s.io"));
        let (ar, aw) = tokio::io::split(agent);
        let mut from = FramedRead::new(ar, FrameDecoder::new());
        let mut to = FramedWrite::new(aw, FrameEncoder::new());
        let mut kinds = Vec::new();
        for _ in 0..4 {
            match from.next().await.expect("frame").expect("decode") {
                Frame::SynStream {
                    stream, headers, ..
                } => kinds.push((stream, headers[0].1.clone())),
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(
            kinds,
            vec![
                (1, "error".to_string()),
                (3, "stdin".to_string()),
                (5, "stdout".to_string()),
                (7, "stderr".to_string())
            ]
        );
        // stdin as a text frame, as the Python client writes strings.
        client_ws
            .send(Message::text("\u{0}hello"))
            .await
            .expect("send");
        client_ws
            .send(Message::Binary(Bytes::from_static(b"\xff\x00")))
            .await
            .expect("send");
        assert_eq!(
            from.next().await.expect("frame").expect("decode"),
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(
            from.next().await.expect("frame").expect("decode"),
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new()
            }
        );
        let exit = br#"{"status":"Failure","reason":"NonZeroExitCode"}"#;
        for f in [
            Frame::Data {
                stream: 5,
                fin: false,
                data: Bytes::from(vec![b'x'; 100_000]),
            },
            Frame::Data {
                stream: 7,
                fin: true,
                data: Bytes::from_static(b"oops"),
            },
            Frame::Data {
                stream: 5,
                fin: true,
                data: Bytes::new(),
            },
            Frame::Data {
                stream: 1,
                fin: true,
                data: Bytes::from_static(exit),
            },
        ] {
            to.send(f).await.expect("send");
        }
        let mut got = Vec::new();
        while let Some(m) = client_ws.next().await {
            match m.expect("message") {
                Message::Binary(b) => got.push(b),
                Message::Close(c) => {
                    assert_eq!(c.expect("frame").code, CloseCode::Normal);
                    break;
                }
                m => panic!("unexpected {m:?}"),
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].len(), 100_001);
        assert_eq!(got[0][0], STDOUT);
        assert_eq!(&got[1][..], b"\x02oops");
        assert_eq!(got[2][0], ERROR);
        assert_eq!(&got[2][1..], exit);
        task.await.expect("join").expect("exec");
    }
}
