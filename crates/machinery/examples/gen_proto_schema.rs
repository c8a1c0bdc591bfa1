//! Generates `src/proto/schema.rs`, the table the protobuf decoder walks.
//!
//! Usage (from `crates/machinery`):
//!
//! ```text
//! git clone --branch v0.33.9 --depth 1 https://github.com/kubernetes/api /tmp/k8s-src/api
//! git clone --branch v0.33.9 --depth 1 https://github.com/kubernetes/apimachinery /tmp/k8s-src/apimachinery
//! cargo run --example gen_proto_schema -- /tmp/k8s-src/api /tmp/k8s-src/apimachinery src/proto/schema.rs v0.33.9
//! ```
//!
//! Why the Go sources and not a Rust crate: `generated.proto` gives the wire layout (tags,
//! types), but the JSON an upstream server produces from a protobuf body depends on the Go
//! struct: the `json` tag (exact name, `omitempty`, `,inline`), whether the field is a pointer,
//! and the declaration order. gogo-protobuf writes every non-pointer field, zero or not, so
//! without `omitempty`/pointer facts a decoded Pod would carry `"restartPolicy": ""` and a
//! kept `"replicas": 0` could not be told from a dropped one. Neither k8s-pb (prost, proto
//! only) nor k8s-openapi (OpenAPI `required`, no pointers) has those facts; `types.go` has.
//!
//! Only standard library; the parsers handle exactly the regular shape of the generated
//! `.proto` files and the one-line field declarations of the API `types.go` files, and the
//! generator fails loudly when a proto field has no Go field.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// API packages (under kubernetes/api) whose registered kinds can be decoded. Adding a
/// group/version to the decoder is one line here and a regeneration.
const API_PACKAGES: &[&str] = &[
    "core/v1",
    "apps/v1",
    "batch/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "coordination/v1",
    "discovery/v1",
    "events/v1",
    "storage/v1",
    "scheduling/v1",
    "rbac/v1",
    "policy/v1",
    "networking/v1",
    "certificates/v1",
    "authentication/v1",
    "authorization/v1",
];

/// Packages under kubernetes/apimachinery the API packages import.
const MACHINERY_PACKAGES: &[&str] = &[
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/api/resource",
    "pkg/util/intstr",
];

/// Messages whose JSON form is not an object: Go types with their own `MarshalJSON`.
const SPECIALS: &[(&str, &str)] = &[
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", "Json"),
    ("k8s.io.apimachinery.pkg.runtime.RawExtension", "Json"),
    ("k8s.io.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    (
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
];

/// The start of `schema.rs`, as rustfmt leaves it (the tables themselves are `rustfmt::skip`).
const PRELUDE: &str = r#"use super::table::{
    Field as F, Kind as K, Message as M, Special as S, Ty::*, INLINE as I, MAP as P,
    OMITEMPTY as O, POINTER as R, REPEATED as L,
};

/// A field: tag, JSON name (offset and length in `NAMES`), type, flags.
const fn f(tag: u16, name: u16, len: u8, ty: super::table::Ty, flags: u8) -> F {
    F::new(tag, name, len, ty, flags)
}

/// A message: name (offset and length in `NAMES`), kind, its fields in `FIELDS`.
const fn m(name: u16, len: u8, special: S, first: u16, count: u8) -> M {
    M::new(name, len, special, first, count)
}

"#;

/// Kinds from meta/v1 that every group version registers and clients send as bodies.
const META_KINDS: &[&str] = &["DeleteOptions"];

struct ProtoField {
    label: Label,
    ty: String,
    name: String,
    tag: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Label {
    Optional,
    Repeated,
    Map,
}

struct ProtoMessage {
    fields: Vec<ProtoField>,
}

struct GoField {
    name: String,
    ty: String,
    tag: Option<u32>,
    json_name: String,
    omitempty: bool,
    embedded: bool,
}

#[derive(Default)]
struct GoPackage {
    structs: HashMap<String, Vec<GoField>>,
    named_slices: BTreeSet<String>,
    group: Option<String>,
    kinds: Vec<String>,
}

struct Package {
    proto_name: String,
    version: String,
    messages: BTreeMap<String, ProtoMessage>,
    go: GoPackage,
    is_api: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: gen_proto_schema API_DIR APIMACHINERY_DIR OUT_FILE [VERSION_LABEL]");
        return ExitCode::from(2);
    }
    let label = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "unknown version".into());
    match run(
        Path::new(&args[0]),
        Path::new(&args[1]),
        Path::new(&args[2]),
        &label,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_proto_schema: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(api: &Path, machinery: &Path, out: &Path, label: &str) -> Result<(), String> {
    let mut packages = Vec::new();
    for p in API_PACKAGES {
        packages.push(load_package(&api.join(p), p, true)?);
    }
    for p in MACHINERY_PACKAGES {
        packages.push(load_package(&machinery.join(p), p, false)?);
    }
    let by_proto: HashMap<String, usize> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.proto_name.clone(), i))
        .collect();

    // Roots: registered kinds of the API packages (lists excluded: never request bodies).
    let mut roots: Vec<(String, String, String)> = Vec::new(); // (apiVersion, kind, full message)
    for p in packages.iter().filter(|p| p.is_api) {
        let group =
            p.go.group
                .clone()
                .ok_or_else(|| format!("{}: no GroupName", p.proto_name))?;
        let api_version = if group.is_empty() {
            p.version.clone()
        } else {
            format!("{group}/{}", p.version)
        };
        for k in &p.go.kinds {
            if k.ends_with("List") || !p.messages.contains_key(k) {
                continue;
            }
            roots.push((
                api_version.clone(),
                k.clone(),
                format!("{}.{k}", p.proto_name),
            ));
        }
    }
    for k in META_KINDS {
        roots.push((
            String::new(),
            k.to_string(),
            format!("k8s.io.apimachinery.pkg.apis.meta.v1.{k}"),
        ));
    }

    // Everything reachable from the roots.
    let specials: HashMap<&str, &str> = SPECIALS.iter().copied().collect();
    let mut reachable: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.iter().map(|r| r.2.clone()).collect();
    while let Some(name) = queue.pop_front() {
        if !reachable.insert(name.clone()) || specials.contains_key(name.as_str()) {
            continue;
        }
        let (pkg, msg) = lookup(&packages, &by_proto, &name)?;
        for f in &msg.fields {
            if let Some(t) = message_type(&f.ty, &packages[pkg].proto_name) {
                queue.push_back(t);
            }
        }
    }
    let index: HashMap<String, usize> = reachable
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();

    // Collect, then emit: names live in one string blob and fields in one array, so the
    // tables hold no pointers (no relocations) and fields take 10 bytes each.
    let mut messages: Vec<(String, &str, Vec<FieldOut>)> = Vec::new();
    for name in &reachable {
        let special = specials.get(name.as_str()).copied();
        let (pkg_idx, msg) = lookup(&packages, &by_proto, name)?;
        let pkg = &packages[pkg_idx];
        let short = name.rsplit('.').next().unwrap_or(name);
        let items = pkg.go.named_slices.contains(short);
        let special = match (special, items) {
            (Some(s), _) => s,
            (None, true) => "Items",
            (None, false) => "None",
        };
        let mut fields = Vec::new();
        if special == "Items" {
            let f = msg
                .fields
                .first()
                .filter(|f| msg.fields.len() == 1 && f.tag == 1 && f.label == Label::Repeated);
            let f = f.ok_or_else(|| format!("{name}: named slice is not `repeated items = 1`"))?;
            fields.push(field_out(f, "items", "L", &pkg.proto_name, &index)?);
        } else if special == "None" {
            let go = pkg
                .go
                .structs
                .get(short)
                .ok_or_else(|| format!("{name}: no Go struct {short}"))?;
            let mut seen = BTreeSet::new();
            for g in go {
                let Some(tag) = g.tag else { continue };
                let f = msg
                    .fields
                    .iter()
                    .find(|f| f.tag == tag)
                    .ok_or_else(|| format!("{name}.{}: no proto field {tag}", g.name))?;
                seen.insert(tag);
                let inline = g.json_name.is_empty() && g.embedded;
                if !inline && g.json_name != f.name {
                    eprintln!(
                        "note: {name}: proto name {} differs from JSON name {}",
                        f.name, g.json_name
                    );
                }
                let mut flags = Vec::new();
                if g.omitempty {
                    flags.push("O");
                }
                if g.ty.starts_with('*') {
                    flags.push("R");
                }
                if inline {
                    flags.push("I");
                }
                match f.label {
                    Label::Repeated => flags.push("L"),
                    Label::Map => flags.push("P"),
                    Label::Optional => {}
                }
                let flags = if flags.is_empty() {
                    "0".to_string()
                } else {
                    flags.join(" | ")
                };
                fields.push(field_out(f, &g.json_name, &flags, &pkg.proto_name, &index)?);
            }
            if let Some(f) = msg.fields.iter().find(|f| !seen.contains(&f.tag)) {
                return Err(format!(
                    "{name}.{}: proto field {} has no Go field",
                    f.name, f.tag
                ));
            }
        }
        if fields.len() > usize::from(u8::MAX) {
            return Err(format!("{name}: too many fields"));
        }
        messages.push((name.clone(), special, fields));
    }

    let mut blob = String::new();
    let mut offsets: HashMap<String, usize> = HashMap::new();
    let mut intern = |s: &str| -> Result<(usize, usize), String> {
        let off = *offsets.entry(s.to_string()).or_insert_with(|| {
            blob.push_str(s);
            blob.len() - s.len()
        });
        if off + s.len() > usize::from(u16::MAX) || s.len() > usize::from(u8::MAX) {
            return Err("name blob exceeds u16 offsets".into());
        }
        Ok((off, s.len()))
    };
    let mut fields_text = String::new();
    let mut messages_text = String::new();
    let mut field_count = 0;
    for (i, (name, special, fields)) in messages.iter().enumerate() {
        let (off, len) = intern(name)?;
        let _ = writeln!(
            messages_text,
            "    m({off}, {len}, S::{special}, {field_count}, {}), // {i} {name}",
            fields.len()
        );
        if !fields.is_empty() {
            let _ = writeln!(fields_text, "    // {i} {name}");
        }
        for f in fields {
            let (off, len) = intern(&f.json)?;
            let _ = writeln!(
                fields_text,
                "    f({}, {off}, {len}, {}, {}), // {}",
                f.tag, f.ty, f.flags, f.json
            );
        }
        field_count += fields.len();
    }
    if field_count > usize::from(u16::MAX) {
        return Err("too many fields".into());
    }

    let mut text = String::new();
    let _ = writeln!(
        text,
        "// @generated by `cargo run --example gen_proto_schema` from kubernetes/api and"
    );
    let _ = writeln!(
        text,
        "// kubernetes/apimachinery {label} (generated.proto + types.go). Do not edit."
    );
    let _ = writeln!(
        text,
        "// Fields are in Go declaration order, the order upstream JSON has them."
    );
    let _ = writeln!(text);
    text.push_str(PRELUDE);
    let _ = writeln!(text, "/// Every message and JSON name, back to back.");
    let _ = writeln!(text, "#[rustfmt::skip]");
    let _ = writeln!(text, "pub(super) static NAMES: &str = concat!(");
    let mut rest = blob.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(96);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = writeln!(text, "    \"{}\",", &rest[..cut]);
        rest = &rest[cut..];
    }
    let _ = writeln!(text, ");");
    let _ = writeln!(text);
    let _ = writeln!(text, "#[rustfmt::skip]");
    let _ = writeln!(text, "pub(super) static FIELDS: &[F] = &[");
    text.push_str(&fields_text);
    let _ = writeln!(text, "];");
    let _ = writeln!(text);
    let _ = writeln!(text, "#[rustfmt::skip]");
    let _ = writeln!(text, "pub(super) static MESSAGES: &[M] = &[");
    text.push_str(&messages_text);
    let _ = writeln!(text, "];");
    let _ = writeln!(text);
    let _ = writeln!(text, "/// Kinds by `apiVersion` and `kind`; an empty `apiVersion` matches any (meta/v1 options).");
    let _ = writeln!(text, "#[rustfmt::skip]");
    let _ = writeln!(text, "pub(super) static KINDS: &[K] = &[");
    roots.sort();
    for (api_version, kind, msg) in &roots {
        let _ = writeln!(
            text,
            "    K {{ api_version: \"{api_version}\", kind: \"{kind}\", msg: {} }},",
            index[msg]
        );
    }
    let _ = writeln!(text, "];");
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {}: {} messages, {field_count} fields, {} kinds, {} name bytes",
        out.display(),
        reachable.len(),
        roots.len(),
        blob.len()
    );
    Ok(())
}

/// One field of the table, as Rust source fragments.
struct FieldOut {
    tag: u32,
    json: String,
    ty: String,
    flags: String,
}

fn field_out(
    f: &ProtoField,
    json: &str,
    flags: &str,
    pkg: &str,
    index: &HashMap<String, usize>,
) -> Result<FieldOut, String> {
    if f.tag > u32::from(u16::MAX) {
        return Err(format!("{}: tag {} does not fit u16", f.name, f.tag));
    }
    let value_ty = match f.label {
        Label::Map => {
            let inner = f.ty.trim_start_matches("map<").trim_end_matches('>');
            let (key, value) = inner
                .split_once(',')
                .ok_or_else(|| format!("bad map type {}", f.ty))?;
            if key.trim() != "string" {
                return Err(format!("map key {key} unsupported"));
            }
            value.trim().to_string()
        }
        _ => f.ty.clone(),
    };
    let ty = match value_ty.as_str() {
        "string" => "Str".to_string(),
        "bytes" => "Bytes".to_string(),
        "int32" => "I32".to_string(),
        "int64" => "I64".to_string(),
        "uint32" => "U32".to_string(),
        "uint64" => "U64".to_string(),
        "bool" => "Bool".to_string(),
        "float" => "F32".to_string(),
        "double" => "F64".to_string(),
        other => {
            let full =
                message_type(other, pkg).ok_or_else(|| format!("unsupported type {other}"))?;
            format!(
                "Msg({})",
                index
                    .get(&full)
                    .ok_or_else(|| format!("unreachable {full}"))?
            )
        }
    };
    Ok(FieldOut {
        tag: f.tag,
        json: json.to_string(),
        ty,
        flags: flags.to_string(),
    })
}

/// The full name of a message-typed field (or map value), `None` for scalars.
fn message_type(ty: &str, pkg: &str) -> Option<String> {
    let ty = match ty.strip_prefix("map<") {
        Some(inner) => inner.trim_end_matches('>').split_once(',')?.1.trim(),
        None => ty,
    };
    const SCALARS: &[&str] = &[
        "string", "bytes", "int32", "int64", "uint32", "uint64", "bool", "float", "double",
    ];
    if SCALARS.contains(&ty) {
        None
    } else if let Some(full) = ty.strip_prefix('.') {
        Some(full.to_string())
    } else if ty.contains('.') {
        Some(ty.to_string())
    } else {
        Some(format!("{pkg}.{ty}"))
    }
}

fn lookup<'a>(
    packages: &'a [Package],
    by_proto: &HashMap<String, usize>,
    name: &str,
) -> Result<(usize, &'a ProtoMessage), String> {
    let (pkg, short) = name
        .rsplit_once('.')
        .ok_or_else(|| format!("bad name {name}"))?;
    let i = *by_proto
        .get(pkg)
        .ok_or_else(|| format!("{name}: package {pkg} not loaded"))?;
    let m = packages[i]
        .messages
        .get(short)
        .ok_or_else(|| format!("{name}: no such message"))?;
    Ok((i, m))
}

fn load_package(dir: &Path, rel: &str, is_api: bool) -> Result<Package, String> {
    let proto_path = dir.join("generated.proto");
    let proto = std::fs::read_to_string(&proto_path)
        .map_err(|e| format!("{}: {e}", proto_path.display()))?;
    let (proto_name, messages) =
        parse_proto(&proto).map_err(|e| format!("{}: {e}", proto_path.display()))?;
    let mut go = GoPackage::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".go")
                && !n.ends_with("_test.go")
                && !n.starts_with("zz_generated")
                && n != "generated.pb.go"
        })
        .collect();
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        parse_go(&src, &mut go);
    }
    let version = rel.rsplit('/').next().unwrap_or(rel).to_string();
    Ok(Package {
        proto_name,
        version,
        messages,
        go,
        is_api,
    })
}

fn parse_proto(src: &str) -> Result<(String, BTreeMap<String, ProtoMessage>), String> {
    let mut package = None;
    let mut messages = BTreeMap::new();
    let mut current: Option<(String, ProtoMessage)> = None;
    let mut in_block_comment = false;
    for raw in src.lines() {
        let mut line = raw.trim();
        if in_block_comment {
            if line.contains("*/") {
                in_block_comment = false;
            }
            continue;
        }
        if line.starts_with("/*") {
            in_block_comment = !line.contains("*/");
            continue;
        }
        if let Some(i) = line.find("//") {
            line = line[..i].trim();
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("package ") {
            package = Some(rest.trim_end_matches(';').trim().to_string());
        } else if let Some(rest) = line.strip_prefix("message ") {
            if current.is_some() {
                return Err(format!("nested message {rest}"));
            }
            let name = rest.trim_end_matches('{').trim().to_string();
            current = Some((name, ProtoMessage { fields: Vec::new() }));
        } else if line == "}" {
            let (name, msg) = current.take().ok_or("unbalanced }")?;
            messages.insert(name, msg);
        } else if let Some((_, msg)) = current.as_mut() {
            msg.fields.push(parse_proto_field(line)?);
        }
    }
    Ok((package.ok_or("no package")?, messages))
}

fn parse_proto_field(line: &str) -> Result<ProtoField, String> {
    let line = line.trim_end_matches(';');
    let (decl, tag) = line
        .split_once('=')
        .ok_or_else(|| format!("bad field {line}"))?;
    let tag: u32 = tag
        .trim()
        .parse()
        .map_err(|_| format!("bad tag in {line}"))?;
    let decl = decl.trim();
    if decl.starts_with("map<") {
        let close = decl.find('>').ok_or_else(|| format!("bad map {line}"))?;
        return Ok(ProtoField {
            label: Label::Map,
            ty: decl[..=close].replace(' ', ""),
            name: decl[close + 1..].trim().to_string(),
            tag,
        });
    }
    let parts: Vec<&str> = decl.split_whitespace().collect();
    let (label, ty, name) = match parts.as_slice() {
        ["optional", ty, name] | ["required", ty, name] => (Label::Optional, ty, name),
        ["repeated", ty, name] => (Label::Repeated, ty, name),
        [ty, name] => (Label::Optional, ty, name),
        _ => return Err(format!("bad field {line}")),
    };
    Ok(ProtoField {
        label,
        ty: ty.to_string(),
        name: name.to_string(),
        tag,
    })
}

fn parse_go(src: &str, go: &mut GoPackage) {
    let mut current: Option<(String, Vec<GoField>)> = None;
    let mut in_known_types = false;
    for raw in src.lines() {
        let line = raw.trim();
        if let Some((name, fields)) = current.as_mut() {
            if raw.starts_with('}') {
                go.structs
                    .insert(std::mem::take(name), std::mem::take(fields));
                current = None;
            } else if !line.starts_with("//") {
                if let Some(f) = parse_go_field(line) {
                    fields.push(f);
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("type ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(ty)) = (it.next(), it.next()) else {
                continue;
            };
            if ty == "struct" && rest.trim_end().ends_with('{') {
                current = Some((name.to_string(), Vec::new()));
            } else if ty.starts_with("[]") {
                go.named_slices.insert(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("const GroupName = ") {
            go.group = Some(rest.trim().trim_matches('"').to_string());
        } else if line.starts_with("func addKnownTypes") {
            in_known_types = true;
        } else if in_known_types {
            if raw.starts_with('}') {
                in_known_types = false;
            } else if let Some(kind) = line.strip_prefix('&').and_then(|r| r.strip_suffix("{},")) {
                if !kind.contains('.') {
                    go.kinds.push(kind.to_string());
                }
            }
        }
    }
}

fn parse_go_field(line: &str) -> Option<GoField> {
    let (decl, rest) = line.split_once('`')?;
    let (tags, _) = rest.split_once('`')?;
    let parts: Vec<&str> = decl.split_whitespace().collect();
    let (name, ty, embedded) = match parts.as_slice() {
        [ty] => (
            ty.rsplit('.').next().unwrap_or(ty).to_string(),
            ty.to_string(),
            true,
        ),
        [name, ty] => (name.to_string(), ty.to_string(), false),
        _ => return None,
    };
    let json = tag_value(tags, "json").unwrap_or_default();
    let mut json_parts = json.split(',');
    let json_name = json_parts.next().unwrap_or("").to_string();
    let omitempty = json_parts.any(|o| o == "omitempty");
    let tag =
        tag_value(tags, "protobuf").and_then(|p| p.split(',').nth(1).and_then(|n| n.parse().ok()));
    Some(GoField {
        name,
        ty,
        tag,
        json_name,
        omitempty,
        embedded,
    })
}

/// The value of `key:"value"` in a Go struct tag.
fn tag_value(tags: &str, key: &str) -> Option<String> {
    let pat = format!("{key}:\"");
    let start = tags.find(&pat)? + pat.len();
    let end = tags[start..].find('"')?;
    Some(tags[start..start + end].to_string())
}
