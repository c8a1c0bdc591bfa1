//! The shape of the generated schema table (`schema.rs`): one entry per protobuf message
//! reachable from the decodable kinds, fields in Go declaration order.

use super::schema::{FIELDS, NAMES};

/// Field flags, from the Go declaration.
/// `omitempty` in the `json` tag.
pub(crate) const OMITEMPTY: u8 = 1;
/// The Go field is a pointer: present on the wire iff set, so zero values are kept.
pub(crate) const POINTER: u8 = 2;
/// Embedded with `json:",inline"`: its fields appear in the parent object.
pub(crate) const INLINE: u8 = 4;
/// A repeated field: a JSON array.
pub(crate) const REPEATED: u8 = 8;
/// A `map<string, ty>`: a JSON object.
pub(crate) const MAP: u8 = 16;

/// The protobuf type of a field (of a map's value; keys are always strings). Unsigned and
/// float types do not occur in today's packages; they are kept so that adding a group to the
/// generator needs no decoder change.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bytes,
    I32,
    I64,
    U32,
    U64,
    Bool,
    F32,
    F64,
    /// An index into `MESSAGES`.
    Msg(u16),
}

/// Messages whose JSON form is not a plain object (Go types with their own `MarshalJSON`).
/// (`Duration` is not reachable from today's kinds; see [`Ty`].)
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// `meta.v1.Time`: RFC 3339 string with seconds, `null` when zero.
    Time,
    /// `meta.v1.MicroTime`: RFC 3339 string with 6 fraction digits, `null` when zero.
    MicroTime,
    /// `meta.v1.Duration`: Go duration string (`1h0m0s`).
    Duration,
    /// `runtime.RawExtension`, `meta.v1.FieldsV1`: field 1 holds embedded JSON.
    Json,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: number or string.
    IntOrString,
    /// A Go named slice (`type ExtraValue []string`) wrapped as `repeated items = 1`: an array.
    Items,
}

/// One field. Names are offsets into [`NAMES`], so the table holds no pointers: it is
/// 10 bytes a field in read-only data, with no relocations.
#[derive(Debug)]
pub(crate) struct Field {
    pub tag: u16,
    name: u16,
    name_len: u8,
    pub flags: u8,
    pub ty: Ty,
}

impl Field {
    pub(crate) const fn new(tag: u16, name: u16, name_len: u8, ty: Ty, flags: u8) -> Self {
        Field {
            tag,
            name,
            name_len,
            flags,
            ty,
        }
    }

    /// The JSON name; empty for inline fields.
    pub(crate) fn json(&self) -> &'static str {
        slice_name(self.name, self.name_len)
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Debug)]
pub(crate) struct Message {
    name: u16,
    name_len: u8,
    pub special: Special,
    first: u16,
    count: u8,
}

impl Message {
    pub(crate) const fn new(
        name: u16,
        name_len: u8,
        special: Special,
        first: u16,
        count: u8,
    ) -> Self {
        Message {
            name,
            name_len,
            special,
            first,
            count,
        }
    }

    /// Full protobuf name, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        slice_name(self.name, self.name_len)
    }

    /// Its fields, in Go declaration order.
    pub(crate) fn fields(&self) -> &'static [Field] {
        let start = usize::from(self.first);
        FIELDS
            .get(start..start + usize::from(self.count))
            .unwrap_or(&[])
    }
}

fn slice_name(offset: u16, len: u8) -> &'static str {
    let start = usize::from(offset);
    NAMES.get(start..start + usize::from(len)).unwrap_or("")
}

/// A decodable kind and its message.
#[derive(Debug)]
pub(crate) struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub msg: u16,
}
