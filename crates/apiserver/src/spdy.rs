//! A small SPDY/3.1 client: what the stream translator needs to speak to a node's runtime,
//! whose streaming server (containerd's CRI server, through `moby/spdystream`) talks only
//! SPDY for exec and attach.
//!
//! Written here because no maintained Rust crate implements SPDY/3.1 framing (the protocol
//! was retired in favour of HTTP/2). It covers framing ([`FrameEncoder`], [`FrameDecoder`],
//! header blocks compressed with the spec's zlib dictionary, one context per direction) and
//! a client session ([`client`]) that opens streams, sends data and answers the peer's
//! control frames. Server push, priorities and send-side flow control are left out: the
//! node's side pushes nothing and does not enforce windows.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const CONTROL_BIT: u8 = 0x80;
const HEADER_LEN: usize = 8;
/// Limit on an inflated header block, against decompression bombs.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// RST_STREAM status for a stream the receiver will not accept.
pub const REFUSED_STREAM: u32 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header names and values, in order, as on the wire (lower-case names).
pub type Headers = Vec<(String, String)>;

/// One SPDY/3.1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// Settings as (id, value); their per-entry flags are dropped.
    Settings(Vec<(u32, u32)>),
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame of a type this client does not know; skipped, as the spec asks.
    Unknown(u16),
}

/// What can go wrong speaking SPDY.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("malformed SPDY {0} frame")]
    Malformed(&'static str),
    #[error("SPDY header block compression: {0}")]
    Zlib(String),
    #[error("the SPDY session is closed")]
    Closed,
}

/// The zlib dictionary of SPDY/3 header blocks (spec section 2.6.10.1): length-prefixed
/// common header names and values, then a run of common value fragments.
fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut d = Vec::new();
        for w in WORDS {
            d.put_u32(w.len() as u32);
            d.extend_from_slice(w.as_bytes());
        }
        for t in TAIL {
            d.extend_from_slice(t.as_bytes());
        }
        d
    })
}

fn zlib_err(e: impl std::fmt::Display) -> SpdyError {
    SpdyError::Zlib(e.to_string())
}

/// Writes frames; owns the sending direction's header compression context.
pub struct FrameEncoder {
    zlib: Compress,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder::new()
    }
}

impl FrameEncoder {
    pub fn new() -> FrameEncoder {
        FrameEncoder {
            zlib: Compress::new(Compression::default(), true),
        }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        if self.zlib.total_in() == 0 {
            self.zlib.set_dictionary(dictionary()).map_err(zlib_err)?;
        }
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (k, v) in headers {
            plain.put_u32(k.len() as u32);
            plain.extend_from_slice(k.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&plain[pos..], &mut out, FlushCompress::Sync)
                .map_err(zlib_err)?;
            pos += (self.zlib.total_in() - before) as usize;
            // A sync flush is complete once input is used up and output did not fill.
            if pos >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

fn put_control(dst: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u8(flags);
    dst.put_uint(body.len() as u64, 3);
    dst.extend_from_slice(body);
}

impl Encoder<Frame> for FrameEncoder {
    type Error = SpdyError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        let is_reply = matches!(frame, Frame::SynReply { .. });
        let mut body = Vec::new();
        match frame {
            Frame::Data {
                stream,
                fin: f,
                data,
            } => {
                dst.put_u32(stream & 0x7fff_ffff);
                dst.put_u8(fin(f));
                dst.put_uint(data.len() as u64, 3);
                dst.extend_from_slice(&data);
                return Ok(());
            }
            Frame::SynStream {
                stream,
                fin: f,
                headers,
            } => {
                body.put_u32(stream);
                body.put_u32(0); // not associated with another stream
                body.put_u16(0); // priority 0 (highest), slot 0
                body.extend(self.header_block(&headers)?);
                put_control(dst, SYN_STREAM, fin(f), &body);
            }
            // The same layout, as the decoder reads them.
            Frame::SynReply {
                stream,
                fin: f,
                headers,
            }
            | Frame::Headers {
                stream,
                fin: f,
                headers,
            } => {
                let kind = if is_reply { SYN_REPLY } else { HEADERS };
                body.put_u32(stream);
                body.extend(self.header_block(&headers)?);
                put_control(dst, kind, fin(f), &body);
            }
            Frame::RstStream { stream, status } => {
                body.put_u32(stream);
                body.put_u32(status);
                put_control(dst, RST_STREAM, 0, &body);
            }
            Frame::Settings(entries) => {
                body.put_u32(entries.len() as u32);
                for (id, value) in entries {
                    body.put_u32(id & 0x00ff_ffff);
                    body.put_u32(value);
                }
                put_control(dst, SETTINGS, 0, &body);
            }
            Frame::Ping(id) => put_control(dst, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                body.put_u32(last_good);
                body.put_u32(status);
                put_control(dst, GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream, delta } => {
                body.put_u32(stream);
                body.put_u32(delta);
                put_control(dst, WINDOW_UPDATE, 0, &body);
            }
            Frame::Unknown(kind) => put_control(dst, kind, 0, &[]),
        }
        Ok(())
    }
}

/// Reads frames; owns the receiving direction's header decompression context.
pub struct FrameDecoder {
    zlib: Decompress,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            zlib: Decompress::new(true),
        }
    }

    fn header_block(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let before = self.zlib.total_in();
            let r = self
                .zlib
                .decompress_vec(&input[pos..], &mut plain, FlushDecompress::Sync);
            pos += (self.zlib.total_in() - before) as usize;
            match r {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(dictionary()).map_err(zlib_err)?;
                    continue;
                }
                Err(e) => return Err(zlib_err(e)),
            }
            if pos >= input.len() && plain.len() < plain.capacity() {
                break;
            }
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Malformed("header block (too large)"));
            }
            plain.reserve(plain.capacity().max(64));
        }
        let mut b = plain.as_slice();
        let bad = SpdyError::Malformed("header block");
        let take = |b: &mut &[u8]| -> Option<String> {
            if b.remaining() < 4 {
                return None;
            }
            let n = b.get_u32() as usize;
            if b.remaining() < n {
                return None;
            }
            let s = String::from_utf8_lossy(&b[..n]).into_owned();
            b.advance(n);
            Some(s)
        };
        if b.remaining() < 4 {
            return Err(bad);
        }
        let count = b.get_u32();
        let mut headers = Vec::new();
        for _ in 0..count {
            let (Some(k), Some(v)) = (take(&mut b), take(&mut b)) else {
                return Err(bad);
            };
            headers.push((k, v));
        }
        Ok(headers)
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = (usize::from(src[5]) << 16) | (usize::from(src[6]) << 8) | usize::from(src[7]);
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let mut head = src.split_to(HEADER_LEN);
        let mut body = src.split_to(len);
        let first = head.get_u32();
        let flags = head.get_u8();
        let fin = flags & FLAG_FIN != 0;
        if (first >> 24) as u8 & CONTROL_BIT == 0 {
            return Ok(Some(Frame::Data {
                stream: first & 0x7fff_ffff,
                fin,
                data: body.freeze(),
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |body: &BytesMut, n: usize, what: &'static str| {
            if body.len() < n {
                Err(SpdyError::Malformed(what))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(&body, 10, "SYN_STREAM")?;
                let stream = body.get_u32() & 0x7fff_ffff;
                body.advance(6);
                Frame::SynStream {
                    stream,
                    fin,
                    headers: self.header_block(&body)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(&body, 4, "SYN_REPLY")?;
                let stream = body.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(&body, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(&body, 4, "SETTINGS")?;
                let n = body.get_u32() as usize;
                need(&body, n.saturating_mul(8), "SETTINGS")?;
                Frame::Settings(
                    (0..n)
                        .map(|_| (body.get_u32() & 0x00ff_ffff, body.get_u32()))
                        .collect(),
                )
            }
            PING => {
                need(&body, 4, "PING")?;
                Frame::Ping(body.get_u32())
            }
            GOAWAY => {
                need(&body, 8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(&body, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        };
        Ok(Some(frame))
    }
}

/// The sending side of a client session: opens streams and writes on them. Frames go to a
/// writer task, so both directions of the translator can send without sharing a lock.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<Frame>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// What the peer sent that the session's user must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Data { stream: u32, data: Bytes, fin: bool },
    Reset { stream: u32, status: u32 },
    GoAway,
}

/// The receiving side of a client session.
pub struct Incoming<R> {
    frames: FramedRead<R, FrameDecoder>,
    out: mpsc::Sender<Frame>,
}

/// Starts a client session on `io` (already upgraded to SPDY/3.1).
pub fn client<IO>(io: IO) -> (Client, Incoming<ReadHalf<IO>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        let mut sink = FramedWrite::new(w, FrameEncoder::new());
        while let Some(f) = rx.recv().await {
            if let Err(e) = sink.send(f).await {
                tracing::debug!("writing to the SPDY peer: {e}");
                return;
            }
        }
        // Every sender is gone: the session is over.
        let _ = sink.close().await;
    });
    (
        Client {
            out: tx.clone(),
            next_id: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(1)),
        },
        Incoming {
            frames: FramedRead::new(r, FrameDecoder::new()),
            out: tx,
        },
    )
}

impl Client {
    /// Opens a stream (client streams have odd ids) with `headers`.
    pub async fn open(&self, headers: Headers) -> Result<u32, SpdyError> {
        let stream = self
            .next_id
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        self.send(Frame::SynStream {
            stream,
            fin: false,
            headers,
        })
        .await?;
        Ok(stream)
    }

    /// Writes `data` on `stream`; `fin` half-closes it.
    pub async fn data(&self, stream: u32, data: Bytes, fin: bool) -> Result<(), SpdyError> {
        self.send(Frame::Data { stream, fin, data }).await
    }

    pub async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.out.send(frame).await.map_err(|_| SpdyError::Closed)
    }
}

impl<R: AsyncRead + Unpin> Incoming<R> {
    /// The next event; `None` when the peer closed the connection. PING is echoed, data is
    /// acknowledged with WINDOW_UPDATE as it is handed over, SETTINGS, WINDOW_UPDATE and
    /// replies are absorbed, and pushed streams are refused.
    ///
    /// Cancel-safe: control answers are queued without waiting, so no frame is lost when
    /// a `select!` drops this future.
    pub async fn next(&mut self) -> Result<Option<Event>, SpdyError> {
        while let Some(frame) = self.frames.next().await {
            match frame? {
                Frame::Data { stream, data, fin } => {
                    if !data.is_empty() && !fin {
                        // Stream-level only: SPDY/3 peers reject a session-level update.
                        self.answer(Frame::WindowUpdate {
                            stream,
                            delta: data.len() as u32,
                        });
                    }
                    return Ok(Some(Event::Data { stream, data, fin }));
                }
                Frame::SynReply {
                    stream, fin: true, ..
                }
                | Frame::Headers {
                    stream, fin: true, ..
                } => {
                    return Ok(Some(Event::Data {
                        stream,
                        data: Bytes::new(),
                        fin: true,
                    }))
                }
                Frame::RstStream { stream, status } => {
                    return Ok(Some(Event::Reset { stream, status }))
                }
                Frame::GoAway { .. } => return Ok(Some(Event::GoAway)),
                Frame::Ping(id) => self.answer(Frame::Ping(id)),
                Frame::SynStream { stream, .. } => self.answer(Frame::RstStream {
                    stream,
                    status: REFUSED_STREAM,
                }),
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings(_)
                | Frame::WindowUpdate { .. }
                | Frame::Unknown(_) => {}
            }
        }
        Ok(None)
    }

    fn answer(&self, frame: Frame) {
        if self.out.try_send(frame).is_err() {
            tracing::debug!("SPDY control answer dropped: the writer is full or gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn the_spec_dictionary() {
        // Its size and zlib dictionary id, as every SPDY/3 peer computes them.
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(adler32(dictionary()), 0xe3c6_a7c2);
    }

    fn round_trip(frames: Vec<Frame>) {
        let (mut enc, mut dec) = (FrameEncoder::new(), FrameDecoder::new());
        let mut buf = BytesMut::new();
        for f in &frames {
            enc.encode(f.clone(), &mut buf).expect("encode");
        }
        // Fed a byte at a time, the decoder waits for whole frames.
        let mut got = Vec::new();
        let mut input = BytesMut::new();
        for b in buf {
            input.put_u8(b);
            while let Some(f) = dec.decode(&mut input).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn frames_round_trip() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        round_trip(vec![
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: h("streamtype", "error"),
            },
            Frame::SynStream {
                stream: 3,
                fin: true,
                headers: h("streamtype", "stdin"),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Headers {
                stream: 3,
                fin: true,
                headers: h("a", "b\0c"),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream: 5,
                fin: false,
                data: Bytes::from(vec![7u8; 70_000]),
            },
            Frame::RstStream {
                stream: 5,
                status: REFUSED_STREAM,
            },
            Frame::Settings(vec![(7, 65536), (4, 100)]),
            Frame::Ping(2),
            Frame::GoAway {
                last_good: 5,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 1024,
            },
            Frame::Unknown(42),
        ]);
    }

    #[test]
    fn header_blocks_use_the_dictionary() {
        let mut enc = FrameEncoder::new();
        let block = enc
            .header_block(&vec![("streamtype".into(), "stdout".into())])
            .expect("compress");
        // zlib header with FDICT set, then the dictionary's id.
        assert_eq!(block[1] & 0x20, 0x20, "{block:02x?}");
        assert_eq!(block[2..6], adler32(dictionary()).to_be_bytes());
        let mut dec = FrameDecoder::new();
        assert_eq!(
            dec.header_block(&block).expect("inflate"),
            vec![("streamtype".to_string(), "stdout".to_string())]
        );
        // The context carries over: a later block refers back to earlier ones.
        let again = enc
            .header_block(&vec![("streamtype".into(), "stdout".into())])
            .expect("compress");
        assert!(again.len() < block.len());
        assert_eq!(dec.header_block(&again).expect("inflate").len(), 1);
    }

    /// A client session against a fake server: streams opened, data both ways, PING echoed,
    /// WINDOW_UPDATE sent for data consumed, half-close, GOAWAY.
    #[tokio::test]
    async fn client_session_against_a_fake_server() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (client, mut incoming) = client(ours);
        let mut server = tokio_util::codec::Framed::new(theirs, ServerCodec::default());

        let error = client
            .open(vec![("streamtype".into(), "error".into())])
            .await
            .expect("open");
        let stdin = client
            .open(vec![("streamtype".into(), "stdin".into())])
            .await
            .expect("open");
        assert_eq!((error, stdin), (1, 3));
        client
            .data(stdin, Bytes::from_static(b"hi"), true)
            .await
            .expect("data");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(server.next().await.expect("frame").expect("decode"));
        }
        assert!(
            matches!(&seen[0], Frame::SynStream { stream: 1, headers, .. } if headers[0].1 == "error")
        );
        assert!(matches!(&seen[1], Frame::SynStream { stream: 3, .. }));
        assert_eq!(
            seen[2],
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            }
        );

        for f in [
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Settings(vec![(7, 1 << 16)]),
            Frame::Ping(2),
            Frame::Data {
                stream: 1,
                fin: false,
                data: Bytes::from_static(b"status"),
            },
            Frame::Data {
                stream: 1,
                fin: true,
                data: Bytes::new(),
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ] {
            server.send(f).await.expect("send");
        }
        assert_eq!(
            incoming.next().await.expect("next"),
            Some(Event::Data {
                stream: 1,
                data: Bytes::from_static(b"status"),
                fin: false
            })
        );
        assert_eq!(
            incoming.next().await.expect("next"),
            Some(Event::Data {
                stream: 1,
                data: Bytes::new(),
                fin: true
            })
        );
        assert_eq!(incoming.next().await.expect("next"), Some(Event::GoAway));
        assert_eq!(
            server.next().await.expect("frame").expect("decode"),
            Frame::Ping(2)
        );
        assert_eq!(
            server.next().await.expect("frame").expect("decode"),
            Frame::WindowUpdate {
                stream: 1,
                delta: 6
            }
        );
        drop(server);
        assert_eq!(incoming.next().await.expect("eof"), None);
    }

    /// Both directions' codecs, for the fake server.
    #[derive(Default)]
    struct ServerCodec {
        enc: FrameEncoder,
        dec: FrameDecoder,
    }

    impl Decoder for ServerCodec {
        type Item = Frame;
        type Error = SpdyError;
        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
            self.dec.decode(src)
        }
    }

    impl Encoder<Frame> for ServerCodec {
        type Error = SpdyError;
        fn encode(&mut self, f: Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
            self.enc.encode(f, dst)
        }
    }
}
