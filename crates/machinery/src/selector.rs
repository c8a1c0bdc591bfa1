//! Label and field selectors: upstream's string syntax (`a=b,c!=d,e in (x,y),!f`), its parse
//! errors (the API server answers them with 400), matching, and metav1.LabelSelector JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;
use crate::validation::field::{quote, render};
use crate::validation::names;

/// Anything labels can be read from.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
}

/// A JSON labels map; anything that is not an object has no labels.
impl Labels for Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key op values` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// Upstream's `NewRequirement`: validates key, values and their count for the operator.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs: Vec<String> = Vec::new();
        let msgs = names::is_qualified_name(key);
        if !msgs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {}: {}",
                quote(key),
                msgs.join("; ")
            ));
        }
        let shown = || {
            render(&Value::Array(
                values.iter().map(|v| Value::String(v.clone())).collect(),
            ))
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(format!("values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty", shown()))
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                errs.push(format!("values: Invalid value: {}: exact-match compatibility requires one single value", shown()))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
                "values: Invalid value: {}: values set must be empty for exists and does not exist",
                shown()
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!("values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required", shown()));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                            quote(v)
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = names::is_label_value(v);
            if !msgs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {}: {}",
                    quote(v),
                    msgs.join("; ")
                ));
            }
        }
        match errs.len() {
            0 => Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            }),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let got = labels.label(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                got.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotIn | Operator::NotEquals => {
                got.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), [want]) = (
                    got.and_then(|v| v.parse::<i64>().ok()),
                    self.values.as_slice(),
                ) else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let mut values = self.values.clone();
        values.sort();
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: all requirements must match. `nothing` is the selector a missing
/// metav1.LabelSelector stands for, which matches no object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn nothing() -> Selector {
        Selector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the query-string form (`labelSelector=`). Errors read like upstream's.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Parser::new(s).parse()?;
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector {
            requirements: reqs,
            nothing: false,
        })
    }

    /// From a metav1.LabelSelector as JSON: `null` selects nothing, `{}` everything.
    pub fn from_label_selector(sel: &Value) -> Result<Selector, String> {
        if sel.is_null() {
            return Ok(Selector::nothing());
        }
        let mut reqs = Vec::new();
        for (k, v) in sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            reqs.push(Requirement::new(
                k,
                Operator::Equals,
                vec![v.as_str().unwrap_or_default().to_string()],
            )?);
        }
        for expr in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let op = expr
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let operator = match op {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "{} is not a valid label selector operator",
                        quote(other)
                    ))
                }
            };
            let values = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
            reqs.push(Requirement::new(key, operator, values)?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector {
            requirements: reqs,
            nothing: false,
        })
    }

    /// Equality on every entry of a plain label map (ReplicationController, Service).
    /// An empty map selects everything, as upstream's `SelectorFromSet`.
    pub fn from_map(map: &Map<String, Value>) -> Selector {
        let mut reqs: Vec<Requirement> = map
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.as_str().unwrap_or_default().to_string()],
            })
            .collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Selector {
            requirements: reqs,
            nothing: false,
        }
    }

    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object by its `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .unwrap_or(&Value::Null);
        self.matches(labels)
    }

    /// True for the selector that matches every object (an empty one).
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The value an equality requirement pins `key` to, if any (for indexing).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Whether a metav1.LabelSelector (JSON) matches a labels map: what controllers need. An
/// invalid selector matches nothing.
pub fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    Selector::from_label_selector(selector).is_ok_and(|s| s.matches(labels))
}

/// `metav1.FormatLabelSelector`: the string form, `<none>` when empty, `<error>` if invalid.
pub fn format_label_selector(selector: &Value) -> String {
    match Selector::from_label_selector(selector) {
        Err(_) => "<error>".into(),
        Ok(s) => {
            let out = s.to_string();
            if out.is_empty() {
                "<none>".into()
            } else {
                out
            }
        }
    }
}

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
pub fn format_labels(map: &Value) -> String {
    let mut pairs: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Error(String),
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier(String),
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

impl Token {
    fn literal(&self) -> String {
        match self {
            Token::Error(s) | Token::Identifier(s) => s.clone(),
            Token::End => String::new(),
            Token::ClosedPar => ")".into(),
            Token::Comma => ",".into(),
            Token::DoesNotExist => "!".into(),
            Token::DoubleEquals => "==".into(),
            Token::Equals => "=".into(),
            Token::GreaterThan => ">".into(),
            Token::In => "in".into(),
            Token::LessThan => "<".into(),
            Token::NotEquals => "!=".into(),
            Token::NotIn => "notin".into(),
            Token::OpenPar => "(".into(),
        }
    }

    /// In value position `in` and `notin` are ordinary words.
    fn as_value(&self) -> Token {
        match self {
            Token::In | Token::NotIn => Token::Identifier(self.literal()),
            other => other.clone(),
        }
    }
}

fn symbol_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn lex(s: &str) -> Vec<Token> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_space(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push(Token::End);
            return out;
        }
        if is_special(b[pos]) {
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                pos += 1;
                match symbol_token(&s[start..pos]) {
                    Some(t) => last = Some((t, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((t, end)) => {
                    pos = end;
                    out.push(t);
                }
                None => out.push(Token::Error(format!(
                    "error expected: keyword found '{}'",
                    &s[start..pos]
                ))),
            }
        } else {
            let start = pos;
            while pos < b.len() && !is_special(b[pos]) && !is_space(b[pos]) {
                pos += 1;
            }
            out.push(match &s[start..pos] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                word => Token::Identifier(word.to_string()),
            });
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn new(s: &str) -> Parser {
        Parser {
            tokens: lex(s),
            pos: 0,
        }
    }

    fn lookahead(&self, values: bool) -> Token {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Token::End);
        if values {
            t.as_value()
        } else {
            t
        }
    }

    fn consume(&mut self, values: bool) -> Token {
        let t = self.lookahead(values);
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.lookahead(true) {
                Token::Identifier(_) | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.consume(true) {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let t = self.lookahead(true);
                            if !matches!(t, Token::Identifier(_) | Token::DoesNotExist) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ))
                        }
                    }
                }
                Token::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut t = self.consume(true);
        let mut op = None;
        if t == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            t = self.consume(true);
        }
        let Token::Identifier(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.literal()));
        };
        let msgs = names::is_qualified_name(&key);
        if !msgs.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                quote(&key),
                msgs.join("; ")
            ));
        }
        if matches!(self.lookahead(true), Token::End | Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        if let Some(op) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = match self.consume(false) {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            t => {
                return Err(format!(
                    "found '{}', expected: {BINARY_OPERATORS}",
                    t.literal()
                ))
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values.into_iter().collect())
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let t = self.consume(true);
        if t != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let t = self.lookahead(true);
        match t {
            Token::Identifier(_) | Token::Comma => {
                let set = self.parse_identifiers()?;
                if self.consume(true) != Token::ClosedPar {
                    return Err(format!("found '{}', expected: ')'", t.literal()));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(true);
                Ok(BTreeSet::from([String::new()]))
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }

    fn parse_identifiers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            match self.consume(true) {
                Token::Identifier(v) => {
                    set.insert(v);
                    match self.lookahead(true) {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set),
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.lookahead(true) {
                        Token::ClosedPar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ))
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.lookahead(true), Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.consume(true) {
            Token::Identifier(v) => Ok(BTreeSet::from([v])),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

/// One `field op value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    pub value: String,
}

/// A field selector (`fieldSelector=`): all terms must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parses the syntax only; see [`FieldSelector::parse_for`] to check the fields too.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                negated: op == "!=",
                value: unescape(rhs)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Parses and checks every field is selectable on the kind, with upstream's errors.
    pub fn parse_for(info: &ResourceInfo, s: &str) -> Result<FieldSelector, String> {
        let mut sel = FieldSelector::parse(s)?;
        for t in &mut sel.terms {
            t.field = convert_field_label(info, &t.field)?;
        }
        Ok(sel)
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    pub fn is_everything(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object satisfies every term. Fields the kind does not expose read as "".
    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(info, obj, &t.field).unwrap_or_default();
            (have == t.value) != t.negated
        })
    }

    /// The value an equality term pins `field` to, if any (for indexing).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                format!(
                    "{}{}{}",
                    t.field,
                    if t.negated { "!=" } else { "=" },
                    escape(&t.value)
                )
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".into());
    }
    Ok(out)
}

/// The fields each kind allows in field selectors, as upstream registers them; `None` for
/// kinds that only have upstream's default (`metadata.name`, `metadata.namespace`).
pub fn supported_fields(info: &ResourceInfo) -> Option<&'static [&'static str]> {
    Some(match (info.group, info.kind) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("", "Event") | ("events.k8s.io", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        ("", "Namespace") => &["status.phase", "metadata.name"],
        ("", "Secret") => &["type", "metadata.namespace", "metadata.name"],
        ("", "Service") => &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        ("batch", "Job") | ("apps", "StatefulSet") => {
            &["metadata.name", "metadata.namespace", "status.successful"]
        }
        _ => return None,
    })
}

/// Upstream's field label conversion: the canonical field name, or its error.
fn convert_field_label(info: &ResourceInfo, label: &str) -> Result<String, String> {
    match supported_fields(info) {
        Some(fields) => {
            if info.kind == "Pod" && info.group.is_empty() && label == "spec.host" {
                return Ok("spec.nodeName".into());
            }
            if fields.contains(&label) {
                Ok(label.to_string())
            } else {
                Err(format!("field label not supported: {label}"))
            }
        }
        None => match label {
            "metadata.name" | "metadata.namespace" => Ok(label.to_string()),
            _ => Err(format!(
                "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                quote(label)
            )),
        },
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The value of a selectable field of an object, as upstream's field sets render it
/// (booleans `true`/`false`, counts in decimal, absent as "").
pub fn field_value(info: &ResourceInfo, obj: &Value, field: &str) -> Option<String> {
    let at = |p: &str| text(crate::object::path(obj, p));
    let events_v1 = info.group == "events.k8s.io";
    Some(match field {
        "metadata.name" => at("metadata.name"),
        "metadata.namespace" => at("metadata.namespace"),
        "spec.hostNetwork" => crate::object::path(obj, field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        "spec.unschedulable" => crate::object::path(obj, field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        "status.podIP" => {
            let first = crate::object::path(obj, "status.podIPs")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .map(|p| text(p.get("ip")));
            first.unwrap_or_else(|| at("status.podIP"))
        }
        "status.podIPs" => crate::object::path(obj, "status.podIPs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| text(p.get("ip")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        "status.replicas" => crate::object::path(obj, field)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        "status.successful" => crate::object::path(obj, "status.succeeded")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        "source" if events_v1 => at("deprecatedSource.component"),
        "source" => at("source.component"),
        "reportingComponent" if events_v1 => at("reportingController"),
        "reportingComponent" => at("reportingComponent"),
        f if f.starts_with("involvedObject.") && events_v1 => {
            at(&f.replacen("involvedObject", "regarding", 1))
        }
        other => at(other),
    })
}

/// Whether one node selector requirement holds for `value`: a node label, or for
/// `matchFields` the node's name. One definition for the scheduler, the controllers and the
/// volume binder, which must agree on which nodes a term admits.
pub fn node_requirement_holds(
    r: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
    value: Option<&str>,
) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), Some(b)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" {
                v > b
            } else {
                v < b
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_all_operators() {
        let s = parse("a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>1,l<5");
        assert_eq!(
            s.to_string(),
            "a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>1,l<5"
        );
        let labels =
            json!({"a": "b", "c": "x", "e": "y", "f": "w", "g": "", "i": "j", "k": "2", "l": "4"});
        assert!(s.matches(&labels));
        let mut other = labels.clone();
        other["h"] = json!("present");
        assert!(!s.matches(&other));
        assert!(parse("x in (in,notin)").matches(&json!({"x": "in"})));
        assert!(parse("").is_everything());
        assert!(parse(" app = web ").matches(&json!({"app": "web"})));
        assert_eq!(parse("b=1,a=2").to_string(), "a=2,b=1");
        assert!(parse("x in ()").matches(&json!({"x": ""})));
        assert!(parse("x=").matches(&json!({"x": ""})));
        assert_eq!(
            parse("x in (b,a,b)").requirements()[0].values,
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn parse_errors_read_like_upstream() {
        let err = |s: &str| Selector::parse(s).err().unwrap_or_default();
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a (b)"),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert!(err("a/b/c=x").starts_with("unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist"));
        assert!(err("a=-x").starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-x\": a valid label must be"));
        assert_eq!(err("a>x"), "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer");
    }

    #[test]
    fn label_selector_json() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "x", "operator": "DoesNotExist"}]});
        assert!(label_selector_matches(
            &sel,
            &json!({"app": "web", "tier": "b"})
        ));
        assert!(!label_selector_matches(
            &sel,
            &json!({"app": "web", "tier": "c"})
        ));
        assert!(!label_selector_matches(
            &sel,
            &json!({"app": "web", "tier": "a", "x": "1"})
        ));
        assert!(!label_selector_matches(&Value::Null, &json!({"a": "b"})));
        assert!(label_selector_matches(&json!({}), &json!({"a": "b"})));
        assert!(!label_selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            &json!({})
        ));
        assert_eq!(format_label_selector(&sel), "app=web,tier in (a,b),!x");
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(format_labels(&json!({"b": "2", "a": "1"})), "a=1,b=2");
        assert_eq!(format_labels(&json!({})), "<none>");
        let pairs: &[(&str, &str)] = &[("app", "web")];
        assert!(Selector::parse("app=web").is_ok_and(|s| s.matches(pairs)));
        assert_eq!(
            parse("app=web,x in (a)").requires_exact_match("x"),
            Some("a")
        );
    }

    fn info(api_version: &str, kind: &str) -> ResourceInfo {
        crate::Registry::builtin()
            .by_kind(api_version, kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind}"))
    }

    #[test]
    fn field_selectors() {
        let pods = info("v1", "Pod");
        let sel = FieldSelector::parse_for(
            &pods,
            "metadata.name=x,metadata.namespace!=y,spec.nodeName==n1",
        )
        .unwrap_or_default();
        assert_eq!(sel.terms().len(), 3);
        let pod = json!({"metadata": {"name": "x", "namespace": "z"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(sel.matches(&pods, &pod));
        assert!(!FieldSelector::parse_for(&pods, "status.phase=Pending")
            .unwrap_or_default()
            .matches(&pods, &pod));
        assert!(FieldSelector::parse_for(&pods, "spec.hostNetwork=false")
            .unwrap_or_default()
            .matches(&pods, &pod));
        assert_eq!(
            FieldSelector::parse_for(&pods, "spec.host=n1").map(|s| s.terms()[0].field.clone()),
            Ok("spec.nodeName".into())
        );
        assert_eq!(
            FieldSelector::parse_for(&pods, "foo=bar"),
            Err("field label not supported: foo".into())
        );
        let nodes = info("v1", "Node");
        assert_eq!(
            FieldSelector::parse_for(&nodes, "metadata.namespace=x"),
            Err("field label not supported: metadata.namespace".into())
        );
        assert!(FieldSelector::parse_for(&nodes, "spec.unschedulable=true")
            .unwrap_or_default()
            .matches(&nodes, &json!({"spec": {"unschedulable": true}})));
        let cms = info("v1", "ConfigMap");
        assert_eq!(
            FieldSelector::parse_for(&cms, "data.x=1"),
            Err("\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"".into())
        );
        assert_eq!(
            FieldSelector::parse("abc"),
            Err("invalid selector: 'abc'; can't understand 'abc'".into())
        );
        assert_eq!(
            FieldSelector::parse("a=b=c"),
            Err("invalid field selector: unescaped character in value: 61".into())
        );
        assert_eq!(
            FieldSelector::parse("a=b\\=c").map(|s| s.terms()[0].value.clone()),
            Ok("b=c".into())
        );
        assert_eq!(
            FieldSelector::parse("a=b\\x"),
            Err("invalid field selector: invalid escape sequence: \\x".into())
        );
        let events = info("v1", "Event");
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}});
        assert!(
            FieldSelector::parse_for(&events, "involvedObject.kind=Pod,source=kubelet")
                .unwrap_or_default()
                .matches(&events, &ev)
        );
        let jobs = info("batch/v1", "Job");
        assert!(FieldSelector::parse_for(&jobs, "status.successful=2")
            .unwrap_or_default()
            .matches(&jobs, &json!({"status": {"succeeded": 2}})));
        assert_eq!(
            FieldSelector::parse("b=1,a!=2").map(|s| s.to_string()),
            Ok("a!=2,b=1".into())
        );
    }
}
