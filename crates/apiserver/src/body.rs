//! Response bodies: whole buffers for ordinary responses, streams for watches and logs.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed by a channel; the response ends when the sender is dropped.
pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    use futures::StreamExt;
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(hyper::body::Frame::data(b)));
    BodyExt::boxed(StreamBody::new(stream))
}
