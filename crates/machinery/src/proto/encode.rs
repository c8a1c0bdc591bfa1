//! JSON objects to Kubernetes protobuf, byte for byte as a Go client (gogo-protobuf) writes
//! them: fields in tag order, every non-pointer field written even when zero, map entries
//! sorted by key. Serves clients that accept only protobuf, and lets tests round-trip.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::table::{Field, Message, Special, Ty, INLINE, MAP, POINTER, REPEATED};
use super::{lookup_kind, schema, ProtoError, MAGIC, MAX_DEPTH};

/// Encodes a JSON object of a known kind as a protobuf body (magic + `runtime.Unknown`).
/// Fields the schema does not know are dropped, as a Go client's struct would drop them.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtoError> {
    let map = obj
        .as_object()
        .ok_or_else(|| ProtoError::Unencodable("not a JSON object".into()))?;
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let kind = text("kind").ok_or(ProtoError::MissingKind)?;
    let api_version = text("apiVersion").ok_or(ProtoError::MissingVersion)?;
    let idx = lookup_kind(api_version, kind).ok_or_else(|| ProtoError::UnknownKind {
        api_version: api_version.into(),
        kind: kind.into(),
    })?;
    let mut raw = Vec::new();
    object(&mut raw, map, &schema::MESSAGES[idx], 1)?;
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    put_bytes(&mut out, 3, b""); // contentEncoding
    put_bytes(&mut out, 4, b""); // contentType
    Ok(out)
}

fn object(
    buf: &mut Vec<u8>,
    map: &Map<String, Value>,
    msg: &Message,
    depth: usize,
) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep);
    }
    let mut fields: Vec<&Field> = msg.fields().iter().collect();
    fields.sort_by_key(|f| f.tag);
    for field in fields {
        let bad = |what: &str| {
            ProtoError::Unencodable(format!("{}.{}: {what}", msg.name(), field.json()))
        };
        if field.has(INLINE) {
            let Ty::Msg(m) = field.ty else {
                return Err(bad("inline scalar"));
            };
            let mut sub = Vec::new();
            object(&mut sub, map, message_at(m)?, depth + 1)?;
            put_bytes(buf, u32::from(field.tag), &sub);
            continue;
        }
        let value = map.get(field.json()).filter(|v| !v.is_null());
        if field.has(MAP) {
            let Some(value) = value else { continue };
            let entries = value.as_object().ok_or_else(|| bad("expected an object"))?;
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            for key in keys {
                let mut entry = Vec::new();
                put_bytes(&mut entry, 1, key.as_bytes());
                match entries.get(key).filter(|v| !v.is_null()) {
                    Some(v) => single(&mut entry, 2, field.ty, v, depth, &bad)?,
                    None => zero(&mut entry, 2, field.ty, depth)?,
                }
                put_bytes(buf, u32::from(field.tag), &entry);
            }
        } else if field.has(REPEATED) {
            let Some(value) = value else { continue };
            for item in value.as_array().ok_or_else(|| bad("expected an array"))? {
                single(buf, u32::from(field.tag), field.ty, item, depth, &bad)?;
            }
        } else {
            match value {
                Some(v) => single(buf, u32::from(field.tag), field.ty, v, depth, &bad)?,
                // Go writes non-pointer fields whatever their value; nil slices (bytes,
                // named slices) and pointers not at all.
                None if field.has(POINTER) || field.ty == Ty::Bytes || is_items(field.ty) => {}
                None => zero(buf, u32::from(field.tag), field.ty, depth)?,
            }
        }
    }
    Ok(())
}

fn message_at(m: u16) -> Result<&'static Message, ProtoError> {
    schema::MESSAGES
        .get(usize::from(m))
        .ok_or_else(|| ProtoError::Unencodable("schema index".into()))
}

fn is_items(ty: Ty) -> bool {
    matches!(ty, Ty::Msg(m) if message_at(m).map(|m| m.special == Special::Items).unwrap_or(false))
}

/// The Go zero value of a non-pointer field.
fn zero(buf: &mut Vec<u8>, tag: u32, ty: Ty, depth: usize) -> Result<(), ProtoError> {
    match ty {
        Ty::Str | Ty::Bytes => put_bytes(buf, tag, b""),
        Ty::F64 => put_fixed64(buf, tag, 0),
        Ty::F32 => put_fixed32(buf, tag, 0),
        Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::Bool => put_varint_field(buf, tag, 0),
        Ty::Msg(m) => {
            let msg = message_at(m)?;
            let mut sub = Vec::new();
            match msg.special {
                Special::None => object(&mut sub, &Map::new(), msg, depth + 1)?,
                Special::Quantity => put_bytes(&mut sub, 1, b"0"),
                Special::IntOrString => int_or_string(&mut sub, &Value::from(0)),
                Special::Duration => put_varint_field(&mut sub, 1, 0),
                Special::Time | Special::MicroTime | Special::Json | Special::Items => {}
            }
            put_bytes(buf, tag, &sub);
        }
    }
    Ok(())
}

/// One value of a singular, repeated or map field.
fn single(
    buf: &mut Vec<u8>,
    tag: u32,
    ty: Ty,
    v: &Value,
    depth: usize,
    bad: &dyn Fn(&str) -> ProtoError,
) -> Result<(), ProtoError> {
    match ty {
        Ty::Str => put_bytes(
            buf,
            tag,
            v.as_str()
                .ok_or_else(|| bad("expected a string"))?
                .as_bytes(),
        ),
        Ty::Bytes => {
            let text = v.as_str().ok_or_else(|| bad("expected a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad("invalid base64"))?;
            put_bytes(buf, tag, &bytes);
        }
        Ty::I32 => {
            let n = v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad("expected an int32"))?;
            put_varint_field(buf, tag, i64::from(n) as u64);
        }
        Ty::I64 => put_varint_field(
            buf,
            tag,
            v.as_i64().ok_or_else(|| bad("expected an int64"))? as u64,
        ),
        Ty::U32 => {
            let n = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("expected a uint32"))?;
            put_varint_field(buf, tag, u64::from(n));
        }
        Ty::U64 => put_varint_field(
            buf,
            tag,
            v.as_u64().ok_or_else(|| bad("expected a uint64"))?,
        ),
        Ty::Bool => put_varint_field(
            buf,
            tag,
            u64::from(v.as_bool().ok_or_else(|| bad("expected a boolean"))?),
        ),
        Ty::F64 => put_fixed64(
            buf,
            tag,
            v.as_f64()
                .ok_or_else(|| bad("expected a number"))?
                .to_bits(),
        ),
        Ty::F32 => put_fixed32(
            buf,
            tag,
            (v.as_f64().ok_or_else(|| bad("expected a number"))? as f32).to_bits(),
        ),
        Ty::Msg(m) => {
            let msg = message_at(m)?;
            let mut sub = Vec::new();
            match msg.special {
                Special::None => {
                    let map = v.as_object().ok_or_else(|| bad("expected an object"))?;
                    object(&mut sub, map, msg, depth + 1)?;
                }
                Special::Items => {
                    let items = v.as_array().ok_or_else(|| bad("expected an array"))?;
                    let Some(Field { ty, .. }) = msg.fields().first() else {
                        return Err(bad("schema"));
                    };
                    for item in items {
                        single(&mut sub, 1, *ty, item, depth + 1, bad)?;
                    }
                }
                Special::Time | Special::MicroTime => {
                    let text = v.as_str().ok_or_else(|| bad("expected an RFC 3339 time"))?;
                    let t = time::OffsetDateTime::parse(
                        text,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| bad("expected an RFC 3339 time"))?;
                    put_varint_field(&mut sub, 1, t.unix_timestamp() as u64);
                    let nanos = if msg.special == Special::MicroTime {
                        t.nanosecond() / 1000 * 1000
                    } else {
                        t.nanosecond()
                    };
                    put_varint_field(&mut sub, 2, u64::from(nanos));
                }
                Special::Quantity => {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(bad("expected a quantity")),
                    };
                    put_bytes(&mut sub, 1, text.as_bytes());
                }
                Special::IntOrString => {
                    if !(v.is_string() || v.as_i64().is_some_and(|n| i32::try_from(n).is_ok())) {
                        return Err(bad("expected an int32 or a string"));
                    }
                    int_or_string(&mut sub, v);
                }
                Special::Json => {
                    let raw = serde_json::to_vec(v).map_err(|e| bad(&e.to_string()))?;
                    put_bytes(&mut sub, 1, &raw);
                }
                Special::Duration => return Err(bad("durations are not encoded")),
            }
            put_bytes(buf, tag, &sub);
        }
    }
    Ok(())
}

/// {1: type (0 int, 1 string), 2: intVal, 3: strVal}, all three always written.
fn int_or_string(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => {
            put_varint_field(buf, 1, 1);
            put_varint_field(buf, 2, 0);
            put_bytes(buf, 3, s.as_bytes());
        }
        _ => {
            put_varint_field(buf, 1, 0);
            put_varint_field(buf, 2, v.as_i64().unwrap_or(0) as u64);
            put_bytes(buf, 3, b"");
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, tag: u32, wire_type: u8) {
    put_varint(buf, (u64::from(tag) << 3) | u64::from(wire_type));
}

fn put_varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    put_key(buf, tag, 0);
    put_varint(buf, v);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(buf, tag, 2);
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    put_key(buf, tag, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_fixed32(buf: &mut Vec<u8>, tag: u32, v: u32) {
    put_key(buf, tag, 5);
    buf.extend_from_slice(&v.to_le_bytes());
}
