//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) to and from the JSON
//! objects the server works on.
//!
//! kubectl 1.32+ and every client-go typed client send built-in kinds as protobuf: the magic
//! `k8s\0` and a `runtime.Unknown` envelope whose `raw` is the object's message. The result
//! of [`decode`] is what upstream produces when it decodes such a body into its Go struct and
//! serves it as JSON: the same names, field order, `omitempty` behaviour, `null`s and special
//! types (`Time`, `Quantity`, `IntOrString`, embedded JSON, ...), so the rest of the server
//! never learns which encoding a client used.
//!
//! Hand-written because no crate maps Kubernetes protobuf to its JSON shape: prost types
//! (k8s-pb) have neither the JSON names nor Go's zero-value rules, and k8s-openapi speaks
//! JSON only. The decoder walks `schema.rs`, a table generated from the upstream sources by
//! `examples/gen_proto_schema.rs`, with its own small wire-format reader.
//!
//! Unknown fields are skipped, as upstream's generated unmarshalers do (strict field
//! validation applies to JSON and YAML only); a known field with the wrong wire type is an
//! error, as upstream.

mod encode;
mod schema;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

pub use encode::encode;
use table::{Field, Message, Special, Ty, INLINE, MAP, OMITEMPTY, POINTER, REPEATED};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nesting limit: no Kubernetes type nests this deep, and it bounds the recursion that a
/// hostile body could otherwise drive.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be turned into JSON. All are the client's fault (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    BadMagic,
    #[error("empty body")]
    Empty,
    #[error("protobuf data is truncated or malformed: {0}")]
    Malformed(String),
    #[error("Object 'Kind' is missing in protobuf object")]
    MissingKind,
    #[error("Object 'apiVersion' is missing in protobuf object")]
    MissingVersion,
    #[error("no kind \"{kind}\" is registered for version \"{api_version}\" in protobuf")]
    UnknownKind { api_version: String, kind: String },
    #[error("proto: wrong wireType = {wire_type} for field {field} in {message}")]
    WrongWireType {
        message: &'static str,
        field: &'static str,
        wire_type: u8,
    },
    #[error("invalid value for {0}")]
    InvalidValue(String),
    #[error("protobuf message nested too deeply")]
    TooDeep,
    #[error("cannot encode as protobuf: {0}")]
    Unencodable(String),
}

/// Whether a `Content-Type` (or one `Accept` entry) names Kubernetes protobuf; parameters
/// such as `;stream=watch` are ignored.
pub fn is_protobuf(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(CONTENT_TYPE)
}

/// Decodes a protobuf request body into the JSON object upstream would see, `kind` and
/// `apiVersion` taken from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtoError::BadMagic)?;
    if rest.is_empty() {
        return Err(ProtoError::Empty);
    }
    let envelope = Envelope::parse(rest)?;
    if envelope.kind.is_empty() {
        return Err(ProtoError::MissingKind);
    }
    if envelope.api_version.is_empty() {
        return Err(ProtoError::MissingVersion);
    }
    let msg = lookup_kind(&envelope.api_version, &envelope.kind).ok_or_else(|| {
        ProtoError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        }
    })?;
    let msg = schema::MESSAGES
        .get(msg)
        .ok_or_else(|| ProtoError::Malformed("schema index".into()))?;
    let body = object(envelope.raw, msg, 1)?;
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(envelope.kind));
    out.insert("apiVersion".into(), Value::String(envelope.api_version));
    out.extend(body);
    Ok(Value::Object(out))
}

/// Index of the message for a kind; meta/v1 option kinds are accepted under any version.
fn lookup_kind(api_version: &str, kind: &str) -> Option<usize> {
    schema::KINDS
        .iter()
        .find(|k| k.kind == kind && (k.api_version == api_version || k.api_version.is_empty()))
        .map(|k| usize::from(k.msg))
}

/// `runtime.Unknown`: {1: TypeMeta {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
/// 4: contentType}. Upstream ignores the last two for objects, and so do we.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ProtoError> {
        let mut env = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
        };
        let mut reader = Reader::new(buf);
        while let Some((tag, value)) = reader.next_field()? {
            match (tag, value) {
                (1, Wire::Len(type_meta)) => {
                    let mut inner = Reader::new(type_meta);
                    while let Some((tag, value)) = inner.next_field()? {
                        match (tag, value) {
                            (1, Wire::Len(b)) => env.api_version = string(b),
                            (2, Wire::Len(b)) => env.kind = string(b),
                            _ => {}
                        }
                    }
                }
                (2, Wire::Len(raw)) => env.raw = raw,
                _ => {}
            }
        }
        Ok(env)
    }
}

/// One field as it appears on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl Wire<'_> {
    fn wire_type(&self) -> u8 {
        match self {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Len(_) => 2,
            Wire::Fixed32(_) => 5,
        }
    }
}

/// The protobuf wire format, just enough of it: varints, fixed 32/64, length-delimited, and
/// skipping (deprecated) groups.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or_else(|| truncated("varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed("varint overflows 64 bits".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| truncated("field"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field, or `None` at the end. Groups are skipped whole.
    fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtoError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let tag = u32::try_from(key >> 3)
                .map_err(|_| ProtoError::Malformed("field number too large".into()))?;
            if tag == 0 {
                return Err(ProtoError::Malformed("illegal field number 0".into()));
            }
            let value = match key & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => Wire::Fixed64(u64::from_le_bytes(array(self.take(8)?)?)),
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| truncated("length"))?;
                    Wire::Len(self.take(len)?)
                }
                3 => {
                    self.skip_group(tag, 0)?;
                    continue;
                }
                5 => Wire::Fixed32(u32::from_le_bytes(array(self.take(4)?)?)),
                other => return Err(ProtoError::Malformed(format!("illegal wire type {other}"))),
            };
            return Ok(Some((tag, value)));
        }
    }

    fn skip_group(&mut self, group: u32, depth: usize) -> Result<(), ProtoError> {
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep);
        }
        loop {
            if self.pos >= self.buf.len() {
                return Err(truncated("group"));
            }
            let key = self.varint()?;
            let tag = key >> 3;
            match key & 7 {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| truncated("length"))?;
                    self.take(len)?;
                }
                3 => self.skip_group(u32::try_from(tag).unwrap_or(u32::MAX), depth + 1)?,
                4 if tag == u64::from(group) => return Ok(()),
                5 => {
                    self.take(4)?;
                }
                other => {
                    return Err(ProtoError::Malformed(format!(
                        "illegal wire type {other} in group"
                    )))
                }
            }
        }
    }
}

fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], ProtoError> {
    b.try_into().map_err(|_| truncated("fixed-size field"))
}

fn truncated(what: &str) -> ProtoError {
    ProtoError::Malformed(format!("unexpected end of data in {what}"))
}

/// Go keeps invalid UTF-8 in strings and its JSON encoder writes U+FFFD for it.
fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A field's value while its message is being read.
enum Slot<'a> {
    Absent,
    One(Value),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A singular message: protobuf merges repeated occurrences, which is decoding their
    /// concatenation.
    Parts(Vec<&'a [u8]>),
}

/// Decodes one message to its JSON value (an object, or a string/number for the special
/// types).
fn message(buf: &[u8], idx: usize, depth: usize) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep);
    }
    let msg = schema::MESSAGES
        .get(idx)
        .ok_or_else(|| ProtoError::Malformed("schema index".into()))?;
    match msg.special {
        Special::None => Ok(Value::Object(object(buf, msg, depth)?)),
        Special::Items => {
            let mut obj = object(buf, msg, depth)?;
            match obj.remove("items") {
                Some(Value::Array(items)) if !items.is_empty() => Ok(Value::Array(items)),
                _ => Ok(Value::Null),
            }
        }
        Special::Time | Special::MicroTime => {
            if buf.is_empty() {
                return Ok(Value::Null);
            }
            let (mut seconds, mut nanos) = (0i64, 0i32);
            each_scalar(buf, |tag, w| match (tag, w) {
                (1, Wire::Varint(v)) => seconds = v as i64,
                (2, Wire::Varint(v)) => nanos = v as i32,
                _ => {}
            })?;
            if msg.special == Special::Time {
                // Upstream drops the nanoseconds of a Time read from protobuf.
                format_time(seconds, 0, false)
            } else {
                format_time(seconds, nanos / 1000 * 1000, true)
            }
        }
        Special::Duration => {
            let mut nanos = 0i64;
            each_scalar(buf, |tag, w| {
                if let (1, Wire::Varint(v)) = (tag, w) {
                    nanos = v as i64;
                }
            })?;
            Ok(Value::String(go_duration(nanos)))
        }
        Special::Quantity => {
            // A zero Quantity is "0"; the string is kept as sent (kubectl sends the canonical
            // form) and validated with the rest of the object.
            let mut s = "0".to_string();
            each_scalar(buf, |tag, w| {
                if let (1, Wire::Len(b)) = (tag, w) {
                    s = string(b);
                }
            })?;
            Ok(Value::String(s))
        }
        Special::IntOrString => {
            let (mut kind, mut int, mut text) = (0u64, 0i32, String::new());
            each_scalar(buf, |tag, w| match (tag, w) {
                (1, Wire::Varint(v)) => kind = v,
                (2, Wire::Varint(v)) => int = v as i32,
                (3, Wire::Len(b)) => text = string(b),
                _ => {}
            })?;
            match kind {
                0 => Ok(Value::from(int)),
                1 => Ok(Value::String(text)),
                _ => Err(ProtoError::InvalidValue(
                    "IntOrString: impossible type".into(),
                )),
            }
        }
        Special::Json => {
            let mut raw: &[u8] = &[];
            each_scalar(buf, |tag, w| {
                if let (1, Wire::Len(b)) = (tag, w) {
                    raw = b;
                }
            })?;
            if raw.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            serde_json::from_slice(raw).map_err(|e| {
                ProtoError::InvalidValue(format!("{}: embedded JSON: {e}", msg.name()))
            })
        }
    }
}

/// Calls `f` for every field of a small fixed-layout message (Time, Quantity, ...).
fn each_scalar<'a>(buf: &'a [u8], mut f: impl FnMut(u32, Wire<'a>)) -> Result<(), ProtoError> {
    let mut reader = Reader::new(buf);
    while let Some((tag, value)) = reader.next_field()? {
        f(tag, value);
    }
    Ok(())
}

/// Decodes a plain message into a JSON object in Go field order, applying Go's JSON rules.
fn object(buf: &[u8], msg: &Message, depth: usize) -> Result<Map<String, Value>, ProtoError> {
    let fields = msg.fields();
    let mut slots: Vec<Slot<'_>> = fields.iter().map(|_| Slot::Absent).collect();
    let mut reader = Reader::new(buf);
    while let Some((tag, value)) = reader.next_field()? {
        let Some(i) = fields.iter().position(|f| u32::from(f.tag) == tag) else {
            continue; // unknown field: skipped, as upstream
        };
        let field = &fields[i];
        let wrong = || ProtoError::WrongWireType {
            message: msg.name(),
            field: field.json(),
            wire_type: value.wire_type(),
        };
        if field.has(MAP) {
            let Wire::Len(entry) = value else {
                return Err(wrong());
            };
            let (key, value) = map_entry(entry, field, depth)?;
            match &mut slots[i] {
                Slot::Map(m) => {
                    m.insert(key, value);
                }
                slot => *slot = Slot::Map(BTreeMap::from([(key, value)])),
            }
        } else if field.has(REPEATED) {
            let mut values = Vec::new();
            match (field.ty, value) {
                (Ty::Msg(m), Wire::Len(b)) => values.push(message(b, usize::from(m), depth + 1)?),
                (ty, Wire::Len(b)) if packable(ty) => {
                    let mut packed = Reader::new(b);
                    while packed.pos < b.len() {
                        let w = match ty {
                            Ty::F64 => Wire::Fixed64(u64::from_le_bytes(array(packed.take(8)?)?)),
                            Ty::F32 => Wire::Fixed32(u32::from_le_bytes(array(packed.take(4)?)?)),
                            _ => Wire::Varint(packed.varint()?),
                        };
                        values.push(scalar(ty, w).ok_or_else(wrong)??);
                    }
                }
                (ty, w) => values.push(scalar(ty, w).ok_or_else(wrong)??),
            }
            match &mut slots[i] {
                Slot::List(list) => list.extend(values),
                slot => *slot = Slot::List(values),
            }
        } else if let Ty::Msg(_) = field.ty {
            let Wire::Len(b) = value else {
                return Err(wrong());
            };
            match &mut slots[i] {
                Slot::Parts(parts) => parts.push(b),
                slot => *slot = Slot::Parts(vec![b]),
            }
        } else {
            slots[i] = Slot::One(scalar(field.ty, value).ok_or_else(wrong)??);
        }
    }

    let mut out = Map::new();
    for (field, slot) in msg.fields().iter().zip(slots) {
        let slot = if is_absent(&slot) { Slot::Absent } else { slot };
        let value = match slot {
            Slot::Absent => match absent(field, depth)? {
                Some(v) => v,
                None => continue,
            },
            Slot::One(v) => {
                if field.has(OMITEMPTY) && !field.has(POINTER) && is_zero(&v) {
                    continue;
                }
                v
            }
            Slot::List(list) => Value::Array(list),
            Slot::Map(map) => Value::Object(map.into_iter().collect()),
            Slot::Parts(parts) => {
                let Ty::Msg(m) = field.ty else { continue };
                let joined;
                let buf = match parts.as_slice() {
                    [one] => *one,
                    _ => {
                        joined = parts.concat();
                        joined.as_slice()
                    }
                };
                message(buf, usize::from(m), depth + 1)?
            }
        };
        if field.has(INLINE) {
            if let Value::Object(inner) = value {
                out.extend(inner);
            }
        } else {
            out.insert(field.json().to_string(), value);
        }
    }
    Ok(out)
}

fn is_absent(slot: &Slot<'_>) -> bool {
    match slot {
        Slot::Absent => true,
        Slot::List(l) => l.is_empty(),
        Slot::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// What Go's JSON encoder writes for a field the wire did not carry (its zero value), or
/// `None` to leave it out.
fn absent(field: &Field, depth: usize) -> Result<Option<Value>, ProtoError> {
    let list_like = field.has(REPEATED) || field.has(MAP);
    // A non-pointer struct is never omitted by encoding/json, `omitempty` or not.
    if let (Ty::Msg(m), false, false) = (field.ty, list_like, field.has(POINTER)) {
        let idx = usize::from(m);
        let special = schema::MESSAGES.get(idx).map(|m| m.special);
        if special != Some(Special::Items) {
            return message(&[], idx, depth + 1).map(Some);
        }
    }
    if field.has(OMITEMPTY) {
        return Ok(None);
    }
    if field.has(POINTER) || list_like || matches!(field.ty, Ty::Bytes | Ty::Msg(_)) {
        return Ok(Some(Value::Null));
    }
    Ok(Some(match field.ty {
        Ty::Str => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        _ => Value::from(0),
    }))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

fn packable(ty: Ty) -> bool {
    !matches!(ty, Ty::Str | Ty::Bytes | Ty::Msg(_))
}

/// A scalar's JSON value; `None` when the wire type does not fit the field's type.
fn scalar(ty: Ty, w: Wire<'_>) -> Option<Result<Value, ProtoError>> {
    Some(Ok(match (ty, w) {
        (Ty::Str, Wire::Len(b)) => Value::String(string(b)),
        (Ty::Bytes, Wire::Len(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::I32, Wire::Varint(v)) => Value::from(v as i32),
        (Ty::I64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::U32, Wire::Varint(v)) => Value::from(v as u32),
        (Ty::U64, Wire::Varint(v)) => Value::from(v),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::F64, Wire::Fixed64(v)) => return Some(float(f64::from_bits(v))),
        (Ty::F32, Wire::Fixed32(v)) => return Some(float(f64::from(f32::from_bits(v)))),
        _ => return None,
    }))
}

/// Go's encoder refuses NaN and infinities; so do we.
fn float(f: f64) -> Result<Value, ProtoError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ProtoError::InvalidValue(format!("unsupported float {f}")))
}

/// One `map<string, ty>` entry: {1: key, 2: value}; a missing value is the zero value.
fn map_entry(entry: &[u8], field: &Field, depth: usize) -> Result<(String, Value), ProtoError> {
    let mut key = String::new();
    let mut value = None;
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut reader = Reader::new(entry);
    while let Some((tag, w)) = reader.next_field()? {
        match (tag, field.ty, w) {
            (1, _, Wire::Len(b)) => key = string(b),
            (2, Ty::Msg(_), Wire::Len(b)) => parts.push(b),
            (2, ty, w) => {
                value = Some(scalar(ty, w).ok_or_else(|| ProtoError::WrongWireType {
                    message: "map entry",
                    field: field.json(),
                    wire_type: w.wire_type(),
                })??)
            }
            _ => {}
        }
    }
    let value = match (field.ty, value) {
        (Ty::Msg(m), _) => message(&parts.concat(), usize::from(m), depth + 1)?,
        (_, Some(v)) => v,
        (Ty::Str | Ty::Bytes, None) => Value::String(String::new()),
        (Ty::Bool, None) => Value::Bool(false),
        (_, None) => Value::from(0),
    };
    Ok((key, value))
}

/// Seconds before the Unix epoch of Go's zero `time.Time` (year 1), which encodes as `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// RFC 3339 in UTC, as `metav1.Time` (seconds) and `metav1.MicroTime` (6 fraction digits)
/// write it.
fn format_time(seconds: i64, nanos: i32, micro: bool) -> Result<Value, ProtoError> {
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let secs = total.div_euclid(1_000_000_000);
    let sub = total.rem_euclid(1_000_000_000);
    if secs == i128::from(GO_ZERO_TIME) && sub == 0 {
        return Ok(Value::Null);
    }
    let bad = || ProtoError::InvalidValue(format!("time {seconds}s out of range"));
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(bad)?;
    if !(0..=9999).contains(&t.year()) {
        return Err(bad());
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if micro {
        s.push_str(&format!(".{:06}", sub / 1000));
    }
    s.push('Z');
    Ok(Value::String(s))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let u = d.unsigned_abs();
    let sign = if d < 0 { "-" } else { "" };
    if u < 1_000_000_000 {
        let (unit, div, digits) = match u {
            0..1_000 => ("ns", 1, 0),
            1_000..1_000_000 => ("µs", 1_000, 3),
            _ => ("ms", 1_000_000, 6),
        };
        return format!("{sign}{}{unit}", decimal(u / div, u % div, digits));
    }
    let secs = u / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&decimal(s, u % 1_000_000_000, 9));
    out.push('s');
    out
}

/// `int.frac` with `frac` written in `digits` places and trailing zeros dropped.
fn decimal(int: u64, frac: u64, digits: usize) -> String {
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:0digits$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}
