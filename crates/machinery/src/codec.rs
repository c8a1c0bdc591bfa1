//! Decoding request bodies as upstream does: JSON or YAML, with `fieldValidation`
//! (Strict, Warn, Ignore) reporting duplicate and unknown fields in upstream's words, and
//! encoding stored objects with `apiVersion`, `kind` and `metadata` first.

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How to treat unknown and duplicate fields (`fieldValidation` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(format!("fieldValidation parameter unsupported: {other}")),
        }
    }
}

/// A JSON document and the duplicate keys seen while reading it.
pub struct Parsed {
    pub value: Value,
    pub duplicates: Vec<String>,
}

/// Parses JSON keeping the last of duplicated keys (as Go does) and recording their paths.
pub fn parse_json(bytes: &[u8]) -> Result<Parsed, serde_json::Error> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(Parsed { value, duplicates })
}

/// Parses YAML (one document) the same way, keys of any scalar type becoming strings as
/// YAML-to-JSON conversion does upstream.
pub fn parse_yaml(bytes: &[u8]) -> Result<Parsed, String> {
    let mut duplicates = Vec::new();
    let de = serde_yaml::Deserializer::from_slice(bytes);
    let value = Seed {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(de)
    .map_err(|e| e.to_string())?;
    Ok(Parsed { value, duplicates })
}

/// A map key: strings as they are, other scalars (YAML allows them) in their text form.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Key {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or scalar map key")
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
}

struct Seed<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = Seed {
                path: format!("{}[{}]", self.path, out.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let path = child(&self.path, &key);
            let v = map.next_value_seed(Seed {
                path: path.clone(),
                duplicates: &mut *self.duplicates,
            })?;
            if out.insert(key, v).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Paths of fields in `input` that decoding into the typed form dropped (`output`).
/// Nulls do not count: they mean "unset" to every decoder.
pub fn unknown_fields(input: &Value, output: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, output, "", &mut out);
    out
}

fn walk(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = child(path, k);
                match o.get(k) {
                    Some(ov) => walk(v, ov, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                walk(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// The upstream message for strict decoding failures.
pub fn strict_error(unknown: &[String], duplicates: &[String]) -> String {
    let mut parts: Vec<String> = duplicates
        .iter()
        .map(|d| format!("json: duplicate field \"{d}\""))
        .collect();
    parts.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
    format!("strict decoding error: {}", parts.join(", "))
}

/// Serialises an object with `apiVersion`, `kind`, `metadata` first, so stored encodings
/// have a predictable head (the API server splices `resourceVersion` into it).
pub fn encode(obj: &Value) -> Vec<u8> {
    let Value::Object(map) = obj else {
        return serde_json::to_vec(obj).unwrap_or_default();
    };
    let mut ordered = Map::new();
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = map.get(k) {
            ordered.insert(k.to_string(), v.clone());
        }
    }
    for (k, v) in map {
        if !ordered.contains_key(k) {
            ordered.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(ordered)).unwrap_or_default()
}

/// Inserts `"resourceVersion":"<rv>"` into the top-level metadata of an encoding made by
/// [`encode`] without re-parsing it: the first `"metadata":{` is the top-level one because
/// only `apiVersion` and `kind` (validated strings) precede it.
pub fn splice_resource_version(encoded: &[u8], rv: i64) -> Vec<u8> {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    let rv_field = format!("\"resourceVersion\":\"{rv}\"");
    let mut out = Vec::with_capacity(encoded.len() + rv_field.len() + 1);
    match encoded.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        Some(at) => {
            let split = at + NEEDLE.len();
            out.extend_from_slice(&encoded[..split]);
            out.extend_from_slice(rv_field.as_bytes());
            if encoded.get(split) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&encoded[split..]);
        }
        None => out.extend_from_slice(encoded),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicates_are_found_with_paths() {
        let p = parse_json(br#"{"a":1,"b":{"c":1,"c":2},"l":[{"x":1,"x":2}]}"#).expect("parses");
        assert_eq!(p.duplicates, vec!["b.c", "l[0].x"]);
        assert_eq!(p.value["b"]["c"], 2);
        assert!(parse_json(b"{").is_err());
        assert!(parse_json(b"{} x").is_err());
    }

    #[test]
    fn unknown_fields_are_reported_but_nulls_are_not() {
        let input = json!({"spec": {"a": 1, "bogus": 2, "n": null, "l": [{"k": 1, "z": 3}]}, "extra": true});
        let output = json!({"spec": {"a": 1, "l": [{"k": 1}]}});
        assert_eq!(
            unknown_fields(&input, &output),
            vec!["spec.bogus", "spec.l[0].z", "extra"]
        );
        assert_eq!(
            strict_error(&["x".into()], &[]),
            "strict decoding error: unknown field \"x\""
        );
    }

    #[test]
    fn splicing_resource_version() {
        let enc = encode(
            &json!({"metadata": {"name": "a"}, "kind": "Pod", "apiVersion": "v1", "spec": {"metadata": {}}}),
        );
        let spliced = splice_resource_version(&enc, 42);
        let v: Value = serde_json::from_slice(&spliced).expect("valid json");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        let empty = splice_resource_version(&encode(&json!({"kind": "X", "metadata": {}})), 7);
        let v: Value = serde_json::from_slice(&empty).expect("valid json");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn yaml_documents_parse() {
        let p =
            parse_yaml(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n").expect("parses");
        assert_eq!(p.value["metadata"]["name"], "x");
        let dup = parse_yaml(b"a: 1\nb:\n  c: 1\n  c: 2\n80: x\n").expect("parses");
        assert_eq!(dup.duplicates, vec!["b.c"]);
        assert_eq!(dup.value["80"], "x");
        assert!(parse_yaml(b"a: [unclosed\n").is_err());
    }
}
