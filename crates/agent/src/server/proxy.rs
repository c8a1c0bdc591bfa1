//! Forwards an upgrade request (SPDY/3.1 or WebSocket) to the runtime's streaming server and,
//! once it answers `101 Switching Protocols`, joins the two connections byte for byte.
//! Any other answer goes back to the client as it came.

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{text, Body};

/// How long connecting to the streaming server and its answer may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `req`'s method and headers to `url` (an `http://` URL on loopback from the CRI) and
/// relays the answer; a 101 joins the connections in a background task.
pub async fn upgrade(url: &str, mut req: Request<Incoming>) -> Response<Body> {
    let target: Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the runtime returned a bad streaming URL {url:?}"),
            )
        }
    };
    let (Some(host), Some(port)) = (target.host(), target.port_u16()) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} has no host and port"),
        );
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let path = target
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut out = Request::builder().method(req.method().clone()).uri(path);
    for (k, v) in req.headers() {
        if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let out = match out
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(out)
            .await
            .map_err(std::io::Error::other)
    })
    .await;
    let mut resp = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("connecting to the runtime's streaming server: {e}"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "the runtime's streaming server did not answer",
            )
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, body.map_err(std::io::Error::other).boxed());
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!("stream upgrade failed: {e}");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!("stream ended: {e}");
        }
    });
    let mut answer = Response::new(super::full(Bytes::new()));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = resp.headers().clone();
    answer
}
