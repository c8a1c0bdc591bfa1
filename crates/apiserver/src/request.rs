//! Parsing of API paths and query parameters into a typed request description.

use krust_machinery::{ApiError, Registry, ResourceInfo};

/// What an API path addresses.
#[derive(Debug)]
pub enum Target<'r> {
    /// `/api`, `/apis`: group lists.
    RootCore,
    RootGroups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<g>/<v>`: resource lists.
    GroupVersion(String, String),
    /// A resource collection, object or subresource.
    Resource(ResourcePath<'r>),
}

#[derive(Debug)]
pub struct ResourcePath<'r> {
    pub info: &'r ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Set by the legacy `/watch/` path prefix.
    pub legacy_watch: bool,
}

impl ResourcePath<'_> {
    /// What authorization and admission see of the addressed resource.
    pub fn attributes(&self) -> crate::auth::ResourceAttributes<'_> {
        crate::auth::ResourceAttributes {
            group: self.info.group,
            resource: self.info.plural,
            subresource: self.subresource.as_deref(),
            namespace: self.namespace.as_deref(),
            name: self.name.as_deref(),
        }
    }
}

fn bad_path() -> ApiError {
    ApiError::NoRoute
}

/// Splits `/api/...` and `/apis/...` paths as upstream's request-info resolver does.
pub fn parse_path<'r>(registry: &'r Registry, path: &str) -> Result<Target<'r>, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Ok(Target::RootCore),
        ["apis"] => return Ok(Target::RootGroups),
        ["apis", g] => return Ok(Target::Group(g.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(bad_path()),
    };
    if rest.is_empty() {
        return Ok(Target::GroupVersion(group.to_string(), version.to_string()));
    }
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    // `namespaces/<ns>/<resource>...` scopes a namespaced resource; `namespaces/<name>` and
    // `namespaces/<name>/status|finalize` address the namespace object itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && matches!(*resource, "status" | "finalize")) =>
        {
            let mut r = vec![*resource];
            r.extend_from_slice(tail);
            (Some(ns.to_string()), r)
        }
        other => (None, other.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(bad_path()),
    };
    let info = registry
        .lookup(group, version, resource)
        .ok_or_else(bad_path)?;
    if namespace.is_some() && !info.namespaced {
        return Err(bad_path());
    }
    if let Some(sub) = &subresource {
        if !info.has_subresource(sub) {
            return Err(bad_path());
        }
    }
    Ok(Target::Resource(ResourcePath {
        info,
        namespace,
        name,
        subresource,
        legacy_watch,
    }))
}

/// Query parameters in request order. A single-valued option reads the first value of its
/// name, as upstream's parameter codec; lists (`command`, `ports`) read them all.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `k`, empty or not.
    fn first(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// Every value of `k`, in order.
    pub fn all<'q>(&'q self, k: &'q str) -> impl Iterator<Item = &'q str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `k`; an empty value counts as absent, as upstream's string options.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.first(k).filter(|s| !s.is_empty())
    }

    /// A boolean as upstream decodes one: true when present, unless `false` or `0` (in any
    /// case), so Python's `True` and an empty `?watch=` are true.
    pub fn flag(&self, k: &str) -> bool {
        self.opt_flag(k).unwrap_or(false)
    }

    /// [`Query::flag`] for an optional boolean (`*bool` upstream): unset when absent.
    pub fn opt_flag(&self, k: &str) -> Option<bool> {
        self.first(k).map(parse_bool)
    }

    /// An integer as Go's `strconv.ParseInt` reads it, with its message when it can't.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        self.first(k).map(parse_int).transpose()
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: only All is supported"
            ))),
        }
    }
}

/// Upstream's `Convert_Slice_string_To_bool`.
fn parse_bool(v: &str) -> bool {
    !(v.eq_ignore_ascii_case("false") || v == "0")
}

/// Go's `strconv.ParseInt(v, 10, 64)`, whose error text upstream returns as a 400.
fn parse_int(v: &str) -> Result<i64, ApiError> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_quote(v)
        )));
    }
    v.parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(v)
        ))
    })
}

/// The `timeout` query parameter every request may carry, as upstream's request-deadline
/// filter reads it (Go's `time.ParseDuration`).
pub fn request_timeout(q: &Query) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(v) = q.get("timeout") else {
        return Ok(None);
    };
    let seconds = parse_duration(v).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid timeout specified in the request URL - time: invalid duration {}",
            go_quote(v)
        ))
    })?;
    Ok((seconds > 0.0).then(|| std::time::Duration::from_secs_f64(seconds)))
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`), in seconds. Written here
/// because the duration crates read other grammars (humantime takes `1 hour`, not `1h30m`
/// only), and upstream's exact acceptance is what clients rely on.
pub fn parse_duration(v: &str) -> Option<f64> {
    let (negative, mut rest) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    // Go counts in int64 nanoseconds and refuses what does not fit ("invalid duration");
    // past that, a deadline could not be represented either.
    if total > MAX_DURATION_SECONDS {
        return None;
    }
    Some(if negative { -total } else { total })
}

/// The longest Go `time.Duration`: `math.MaxInt64` nanoseconds (about 292 years).
const MAX_DURATION_SECONDS: f64 = i64::MAX as f64 / 1e9;

/// Go's `strconv.Quote` for what a query may hold: `"` and `\` escaped, controls as `\x..`.
fn go_quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_integers_as_upstream_decodes_them() {
        let q = Query::parse(Some("a=True&b=FALSE&c=0&d=&e=yes&f=1&f=0&n=%2B7&bad=1e3"));
        assert!(q.flag("a") && !q.flag("b") && !q.flag("c"));
        assert!(
            q.flag("d") && q.flag("e"),
            "any other value is true, the empty one too"
        );
        assert!(q.flag("f"), "the first value counts");
        assert_eq!(q.all("f").collect::<Vec<_>>(), ["1", "0"]);
        assert!(!q.flag("absent") && q.opt_flag("absent").is_none());
        assert_eq!(q.int("n").ok().flatten(), Some(7));
        assert_eq!(
            q.int("bad")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            "strconv.ParseInt: parsing \"1e3\": invalid syntax"
        );
    }

    #[test]
    fn durations_as_go_parses_them() {
        for (v, want) in [
            ("5s", 5.0),
            ("1m30s", 90.0),
            ("300ms", 0.3),
            ("1.5h", 5400.0),
            ("-2s", -2.0),
            ("0", 0.0),
            ("2h45m0.5s", 9900.5),
        ] {
            let got = parse_duration(v).unwrap_or(f64::NAN);
            assert!((got - want).abs() < 1e-9, "{v}: {got}");
        }
        for v in ["", "5", "s", "1x", "1..2s", "--1s", "1 s"] {
            assert_eq!(parse_duration(v), None, "{v:?}");
        }
        // Found by fuzzing (query_params): Go refuses durations past int64 nanoseconds, and
        // the deadline used to panic converting them.
        for v in [
            "33333333333333333355m",
            "9223372037s",
            "2562048h",
            "-2562048h",
        ] {
            assert_eq!(parse_duration(v), None, "{v:?}");
        }
        assert!(parse_duration("2562047h").is_some());
        let e = request_timeout(&Query::parse(Some("timeout=33333333333333333355m")))
            .expect_err("too long");
        assert_eq!(
            e.to_string(),
            "invalid timeout specified in the request URL - time: invalid duration \"33333333333333333355m\""
        );
        let e = request_timeout(&Query::parse(Some("timeout=soon"))).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "invalid timeout specified in the request URL - time: invalid duration \"soon\""
        );
        assert_eq!(
            request_timeout(&Query::parse(Some("timeout=2s")))
                .ok()
                .flatten(),
            Some(std::time::Duration::from_secs(2))
        );
    }

    fn resource<'r>(t: Target<'r>) -> ResourcePath<'r> {
        match t {
            Target::Resource(r) => r,
            other => panic!("not a resource: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let reg = Registry::builtin();
        let r =
            resource(parse_path(&reg, "/api/v1/namespaces/default/pods/web/status").expect("ok"));
        assert_eq!(
            (
                r.info.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let r = resource(parse_path(&reg, "/api/v1/namespaces/kube-system").expect("ok"));
        assert_eq!(
            (r.info.plural, r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = resource(parse_path(&reg, "/api/v1/namespaces/x/status").expect("ok"));
        assert_eq!(
            (r.info.plural, r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let r = resource(parse_path(&reg, "/apis/apps/v1/deployments").expect("ok"));
        assert_eq!((r.info.plural, r.namespace), ("deployments", None));
        let r = resource(parse_path(&reg, "/api/v1/watch/namespaces/a/configmaps").expect("ok"));
        assert!(r.legacy_watch);
        assert!(matches!(
            parse_path(&reg, "/apis/apps/v1"),
            Ok(Target::GroupVersion(..))
        ));
        assert!(parse_path(&reg, "/api/v1/namespaces/a/nodes").is_err());
        assert!(parse_path(&reg, "/api/v1/bogus").is_err());
        assert!(parse_path(&reg, "/api/v1/namespaces/a/pods/x/nosuch").is_err());
    }
}
