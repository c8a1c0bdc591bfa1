//! Pure request routing: which backend a (host, path) pair goes to. No I/O and no API
//! types, so every upstream matching rule is unit tested here and the table builder only
//! translates Ingress objects into [`IngressRoutes`].
//!
//! Semantics (networking.k8s.io/v1 Ingress, with the choices upstream leaves open made
//! explicit):
//! - Hosts compare case-insensitively, without port and trailing dot. A precise host
//!   matches itself only; a wildcard `*.example.com` matches exactly one extra leading label
//!   (`a.example.com`, not `example.com` nor `a.b.example.com`). A rule without host
//!   matches every host.
//! - Paths: `Exact` is a case-sensitive string equality. `Prefix` is element-wise over `/`:
//!   `/foo` matches `/foo`, `/foo/` and `/foo/bar` but not `/foobar`; a trailing `/` in the
//!   rule is ignored and `/` matches everything. `ImplementationSpecific` is treated as
//!   `Prefix` (see [`PathKind::from_api`]).
//! - Within one host the longest matching rule path wins; at equal length `Exact` wins.
//! - Across hosts the most specific host is tried first: its paths, then the wildcard's,
//!   then the host-less rules (as in the Gateway API's precedence, so a host-less `/` still
//!   catches paths a host does not route). ingress-nginx instead stops at the most specific
//!   host; we fall through because a rule without host is specified to match all traffic.
//! - Several Ingresses naming the same host are merged. Two rules conflict when host, path
//!   and path type are all equal; the oldest Ingress (creationTimestamp, then
//!   namespace/name) keeps it, as ingress-nginx does.
//! - `defaultBackend` handles requests that match no rule. Upstream says only that; we use
//!   the defaultBackend of the oldest Ingress that routes the request's host (its precise
//!   host first, then the wildcard), and else the defaultBackend of the oldest Ingress that
//!   has one, which is then the catch-all for every host (like ingress-nginx's default
//!   server). So an Ingress's defaultBackend does catch unknown hosts too.

use std::collections::HashMap;

/// How a rule path compares with a request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitively.
    Exact,
    /// Element-wise prefix over `/`.
    Prefix,
}

impl PathKind {
    /// Reads an Ingress `pathType`. `ImplementationSpecific` (and an unknown or missing
    /// type) is treated as `Prefix`: upstream leaves its meaning to the controller, and
    /// `Prefix` is what users of it expect in practice.
    pub fn from_api(path_type: &str) -> PathKind {
        match path_type {
            "Exact" => PathKind::Exact,
            _ => PathKind::Prefix,
        }
    }
}

/// Who defined a rule; orders conflicting rules, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// creationTimestamp in seconds; objects without one sort last.
    pub created: i64,
    pub namespace: String,
    pub name: String,
}

/// One path of a rule.
#[derive(Clone, Debug)]
pub struct PathSpec<B> {
    pub path: String,
    pub kind: PathKind,
    pub backend: B,
}

/// One rule of an Ingress: a host (or none) and its paths.
#[derive(Clone, Debug)]
pub struct RuleSpec<B> {
    pub host: Option<String>,
    pub paths: Vec<PathSpec<B>>,
}

/// Everything one Ingress contributes to the router.
#[derive(Clone, Debug)]
pub struct IngressRoutes<B> {
    pub origin: Origin,
    pub rules: Vec<RuleSpec<B>>,
    pub default_backend: Option<B>,
}

/// A rule that lost to an older Ingress's rule for the same host, path and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub host: Option<String>,
    pub path: String,
    pub loser: Origin,
    pub winner: Origin,
}

/// A value per host pattern: precise hosts and `*.suffix` wildcards. Shared by the router
/// and the TLS certificate choice, so both match hosts the same way.
#[derive(Clone, Debug)]
pub struct HostMap<V> {
    exact: HashMap<String, V>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, V>,
}

impl<V> Default for HostMap<V> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V> HostMap<V> {
    /// The entry for a pattern (`a.example.com` or `*.example.com`), made by `make` when
    /// absent. `None` for an invalid pattern (empty, or a `*` not alone as the first label).
    pub fn entry_or_insert_with(
        &mut self,
        pattern: &str,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        let p = normalize_host(pattern);
        let (map, key) = match p.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, p),
        };
        if key.is_empty() || key.contains('*') {
            return None;
        }
        Some(map.entry(key).or_insert_with(make))
    }

    /// Inserts unless the pattern already has a value; false when it had one (or is
    /// invalid), so the first (oldest) writer wins.
    pub fn insert_if_absent(&mut self, pattern: &str, value: V) -> bool {
        let mut inserted = false;
        self.entry_or_insert_with(pattern, || {
            inserted = true;
            value
        });
        inserted
    }

    /// The value for exactly this (normalized) host.
    pub fn get_exact(&self, host: &str) -> Option<&V> {
        self.exact.get(host)
    }

    /// The value of the wildcard covering this (normalized) host: one leading label off.
    pub fn get_wildcard(&self, host: &str) -> Option<&V> {
        let (label, suffix) = host.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(suffix)
    }

    /// The precise host's value, else the wildcard's. `host` may carry a port or any case.
    pub fn lookup(&self, host: &str) -> Option<&V> {
        let host = normalize_host(host);
        self.get_exact(&host).or_else(|| self.get_wildcard(&host))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// Lower-cases a host and drops a port and a trailing dot (`Example.COM.:8080` ->
/// `example.com`); an IPv6 literal keeps its brackets.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// One compiled rule path.
#[derive(Clone, Debug)]
struct Route<B> {
    /// For `Prefix`, without trailing `/` (so `/` is empty).
    path: String,
    kind: PathKind,
    backend: B,
    origin: Origin,
}

impl<B> Route<B> {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => {
                path == self.path
                    || (path.starts_with(&self.path)
                        && path.as_bytes().get(self.path.len()) == Some(&b'/'))
            }
        }
    }
}

/// The rules of one host pattern, best first.
#[derive(Clone, Debug)]
struct VirtualHost<B> {
    routes: Vec<Route<B>>,
    /// The defaultBackend of the oldest Ingress routing this host that has one.
    default: Option<B>,
}

impl<B> Default for VirtualHost<B> {
    fn default() -> Self {
        VirtualHost {
            routes: Vec::new(),
            default: None,
        }
    }
}

impl<B> VirtualHost<B> {
    fn route(&self, path: &str) -> Option<&B> {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .map(|r| &r.backend)
    }

    /// Adds a route unless an older one has the same path and type; returns the winner's
    /// origin on a conflict.
    fn add(&mut self, route: Route<B>) -> Result<(), Origin> {
        if let Some(old) = self
            .routes
            .iter()
            .find(|r| r.kind == route.kind && r.path == route.path)
        {
            return Err(old.origin.clone());
        }
        self.routes.push(route);
        Ok(())
    }

    /// Longest path first; `Exact` before `Prefix` at equal length. Stable, so equal keys
    /// keep insertion (age) order.
    fn sort(&mut self) {
        self.routes
            .sort_by_key(|r| (std::cmp::Reverse(r.path.len()), r.kind != PathKind::Exact));
    }
}

/// The merged rules of every served Ingress. Immutable once built; a change builds a new
/// one.
#[derive(Clone, Debug)]
pub struct Router<B> {
    hosts: HostMap<VirtualHost<B>>,
    any_host: VirtualHost<B>,
    /// The catch-all: the oldest Ingress's defaultBackend.
    default: Option<B>,
}

impl<B> Default for Router<B> {
    fn default() -> Self {
        Router {
            hosts: HostMap::default(),
            any_host: VirtualHost::default(),
            default: None,
        }
    }
}

impl<B: Clone> Router<B> {
    /// Merges the Ingresses' rules, oldest Ingress first (the order of `ingresses` does
    /// not matter), and reports the rules that lost a conflict.
    pub fn build(mut ingresses: Vec<IngressRoutes<B>>) -> (Router<B>, Vec<Conflict>) {
        ingresses.sort_by(|a, b| a.origin.cmp(&b.origin));
        let mut router = Router::default();
        let mut conflicts = Vec::new();
        for ing in ingresses {
            router.add_ingress(ing, &mut conflicts);
        }
        for vhost in router.hosts.exact.values_mut() {
            vhost.sort();
        }
        for vhost in router.hosts.wildcard.values_mut() {
            vhost.sort();
        }
        router.any_host.sort();
        (router, conflicts)
    }

    fn add_ingress(&mut self, ing: IngressRoutes<B>, conflicts: &mut Vec<Conflict>) {
        if self.default.is_none() {
            self.default = ing.default_backend.clone();
        }
        for rule in ing.rules {
            let vhost = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                None => &mut self.any_host,
                Some(h) => match self.hosts.entry_or_insert_with(h, VirtualHost::default) {
                    Some(v) => v,
                    None => continue,
                },
            };
            if vhost.default.is_none() && rule.host.is_some() {
                vhost.default = ing.default_backend.clone();
            }
            for p in rule.paths {
                let path = match p.kind {
                    PathKind::Exact => p.path.clone(),
                    PathKind::Prefix => p.path.trim_end_matches('/').to_string(),
                };
                let route = Route {
                    path,
                    kind: p.kind,
                    backend: p.backend,
                    origin: ing.origin.clone(),
                };
                if let Err(winner) = vhost.add(route) {
                    conflicts.push(Conflict {
                        host: rule.host.clone(),
                        path: p.path,
                        loser: ing.origin.clone(),
                        winner,
                    });
                }
            }
        }
    }
}

impl<B> Router<B> {
    /// The backend for a request: `host` as sent (Host header or authority, port allowed),
    /// `path` without query. `None` means 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&B> {
        let host = normalize_host(host);
        let path = if path.is_empty() { "/" } else { path };
        let exact = self.hosts.get_exact(&host);
        let wildcard = self.hosts.get_wildcard(&host);
        exact
            .and_then(|v| v.route(path))
            .or_else(|| wildcard.and_then(|v| v.route(path)))
            .or_else(|| self.any_host.route(path))
            .or_else(|| exact.and_then(|v| v.default.as_ref()))
            .or_else(|| wildcard.and_then(|v| v.default.as_ref()))
            .or(self.default.as_ref())
    }

    /// True when nothing is routed at all.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.any_host.routes.is_empty() && self.default.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(created: i64, name: &str) -> Origin {
        Origin {
            created,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn path(p: &str, kind: PathKind, backend: &'static str) -> PathSpec<&'static str> {
        PathSpec {
            path: p.into(),
            kind,
            backend,
        }
    }

    fn ing(
        created: i64,
        name: &str,
        rules: Vec<(Option<&str>, Vec<PathSpec<&'static str>>)>,
        default_backend: Option<&'static str>,
    ) -> IngressRoutes<&'static str> {
        IngressRoutes {
            origin: origin(created, name),
            rules: rules
                .into_iter()
                .map(|(host, paths)| RuleSpec {
                    host: host.map(String::from),
                    paths,
                })
                .collect(),
            default_backend,
        }
    }

    fn one(rules: Vec<(Option<&str>, Vec<PathSpec<&'static str>>)>) -> Router<&'static str> {
        Router::build(vec![ing(1, "a", rules, None)]).0
    }

    use PathKind::{Exact, Prefix};

    #[test]
    fn path_kinds_read_from_the_api() {
        assert_eq!(PathKind::from_api("Exact"), Exact);
        assert_eq!(PathKind::from_api("Prefix"), Prefix);
        assert_eq!(PathKind::from_api("ImplementationSpecific"), Prefix);
    }

    #[test]
    fn exact_paths_match_only_themselves() {
        let r = one(vec![(None, vec![path("/foo", Exact, "x")])]);
        assert_eq!(r.route("h", "/foo"), Some(&"x"));
        for miss in ["/foo/", "/foo/bar", "/Foo", "/foobar", "/"] {
            assert_eq!(r.route("h", miss), None, "{miss}");
        }
        let r = one(vec![(None, vec![path("/foo/", Exact, "x")])]);
        assert_eq!(r.route("h", "/foo/"), Some(&"x"));
        assert_eq!(r.route("h", "/foo"), None);
    }

    #[test]
    fn prefix_paths_match_element_wise() {
        let r = one(vec![(None, vec![path("/foo", Prefix, "x")])]);
        for hit in ["/foo", "/foo/", "/foo/bar", "/foo/bar/baz"] {
            assert_eq!(r.route("h", hit), Some(&"x"), "{hit}");
        }
        for miss in ["/foobar", "/fo", "/", "/bar/foo", "/FOO"] {
            assert_eq!(r.route("h", miss), None, "{miss}");
        }
    }

    #[test]
    fn prefix_ignores_a_trailing_slash_in_the_rule() {
        let r = one(vec![(None, vec![path("/aaa/bbb/", Prefix, "x")])]);
        for hit in ["/aaa/bbb", "/aaa/bbb/", "/aaa/bbb/ccc"] {
            assert_eq!(r.route("h", hit), Some(&"x"), "{hit}");
        }
        assert_eq!(r.route("h", "/aaa/bbbxyz"), None);
        assert_eq!(r.route("h", "/aaa"), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let r = one(vec![(None, vec![path("/", Prefix, "x")])]);
        for hit in ["/", "/a", "/a/b/", "//x", ""] {
            assert_eq!(r.route("h", hit), Some(&"x"), "{hit}");
        }
    }

    #[test]
    fn longest_path_wins_whatever_the_order() {
        let r = one(vec![(
            None,
            vec![
                path("/", Prefix, "root"),
                path("/aaa", Prefix, "aaa"),
                path("/aaa/bbb", Prefix, "bbb"),
            ],
        )]);
        assert_eq!(r.route("h", "/aaa/bbb/c"), Some(&"bbb"));
        assert_eq!(r.route("h", "/aaa/ccc"), Some(&"aaa"));
        assert_eq!(r.route("h", "/aaabbb"), Some(&"root"));
        assert_eq!(r.route("h", "/x"), Some(&"root"));
    }

    #[test]
    fn exact_beats_prefix_at_equal_length() {
        let r = one(vec![(
            None,
            vec![path("/foo", Prefix, "prefix"), path("/foo", Exact, "exact")],
        )]);
        assert_eq!(r.route("h", "/foo"), Some(&"exact"));
        assert_eq!(r.route("h", "/foo/"), Some(&"prefix"));
        // A prefix with a trailing slash has the same length once normalized.
        let r = one(vec![(
            None,
            vec![
                path("/foo/", Prefix, "prefix"),
                path("/foo", Exact, "exact"),
            ],
        )]);
        assert_eq!(r.route("h", "/foo"), Some(&"exact"));
        // A longer prefix still beats a shorter exact path.
        let r = one(vec![(
            None,
            vec![
                path("/foo", Exact, "exact"),
                path("/foo/bar", Prefix, "long"),
            ],
        )]);
        assert_eq!(r.route("h", "/foo/bar"), Some(&"long"));
    }

    #[test]
    fn upstream_examples_table() {
        // The examples table of the Ingress concept page.
        let cases: &[(&str, PathKind, &str, bool)] = &[
            ("/", Prefix, "/", true),
            ("/foo", Exact, "/foo", true),
            ("/foo", Exact, "/bar", false),
            ("/foo", Exact, "/foo/", false),
            ("/foo/", Exact, "/foo", false),
            ("/foo", Prefix, "/foo", true),
            ("/foo", Prefix, "/foo/", true),
            ("/foo/", Prefix, "/foo", true),
            ("/foo/", Prefix, "/foo/", true),
            ("/aaa/bb", Prefix, "/aaa/bbb", false),
            ("/aaa/bbb", Prefix, "/aaa/bbb", true),
            ("/aaa/bbb/", Prefix, "/aaa/bbb", true),
            ("/aaa/bbb", Prefix, "/aaa/bbb/", true),
            ("/aaa/bbb", Prefix, "/aaa/bbb/ccc", true),
            ("/aaa/bbb", Prefix, "/aaa/bbbxyz", false),
        ];
        for (rule, kind, req, hit) in cases {
            let r = one(vec![(None, vec![path(rule, *kind, "x")])]);
            assert_eq!(r.route("h", req).is_some(), *hit, "{rule} {kind:?} {req}");
        }
        // Mixed: "/" and "/aaa" prefixes, "/aaa" exact.
        let r = one(vec![(
            None,
            vec![
                path("/", Prefix, "root"),
                path("/aaa", Prefix, "aaa-prefix"),
                path("/aaa", Exact, "aaa-exact"),
            ],
        )]);
        assert_eq!(r.route("h", "/aaa"), Some(&"aaa-exact"));
        assert_eq!(r.route("h", "/aaa/ccc"), Some(&"aaa-prefix"));
        assert_eq!(r.route("h", "/ccc"), Some(&"root"));
    }

    #[test]
    fn hosts_match_exactly_ignoring_case_port_and_dot() {
        let r = one(vec![(Some("foo.bar.com"), vec![path("/", Prefix, "x")])]);
        for hit in [
            "foo.bar.com",
            "FOO.bar.com",
            "foo.bar.com:8080",
            "foo.bar.com.",
        ] {
            assert_eq!(r.route(hit, "/"), Some(&"x"), "{hit}");
        }
        for miss in ["bar.com", "a.foo.bar.com", "foo.bar.co", ""] {
            assert_eq!(r.route(miss, "/"), None, "{miss}");
        }
    }

    #[test]
    fn wildcards_match_one_label() {
        let r = one(vec![(Some("*.foo.com"), vec![path("/", Prefix, "x")])]);
        assert_eq!(r.route("bar.foo.com", "/"), Some(&"x"));
        assert_eq!(r.route("BAR.foo.com:443", "/"), Some(&"x"));
        for miss in ["foo.com", "baz.bar.foo.com", ".foo.com", "barfoo.com"] {
            assert_eq!(r.route(miss, "/"), None, "{miss}");
        }
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_beat_hostless_rules() {
        let r = one(vec![
            (None, vec![path("/", Prefix, "any")]),
            (Some("*.foo.com"), vec![path("/", Prefix, "wild")]),
            (Some("a.foo.com"), vec![path("/", Prefix, "exact")]),
        ]);
        assert_eq!(r.route("a.foo.com", "/"), Some(&"exact"));
        assert_eq!(r.route("b.foo.com", "/"), Some(&"wild"));
        assert_eq!(r.route("other.org", "/"), Some(&"any"));
        assert_eq!(r.route("", "/"), Some(&"any"));
    }

    #[test]
    fn a_host_falls_through_to_less_specific_rules_for_paths_it_lacks() {
        let r = one(vec![
            (None, vec![path("/", Prefix, "any")]),
            (Some("*.foo.com"), vec![path("/wild", Prefix, "wild")]),
            (Some("a.foo.com"), vec![path("/api", Prefix, "api")]),
        ]);
        assert_eq!(r.route("a.foo.com", "/api/x"), Some(&"api"));
        assert_eq!(r.route("a.foo.com", "/wild"), Some(&"wild"));
        assert_eq!(r.route("a.foo.com", "/other"), Some(&"any"));
        // More specific hosts win even with a shorter path.
        let r = one(vec![
            (None, vec![path("/api/long", Prefix, "any")]),
            (Some("a.foo.com"), vec![path("/api", Prefix, "api")]),
        ]);
        assert_eq!(r.route("a.foo.com", "/api/long"), Some(&"api"));
    }

    #[test]
    fn ingresses_for_one_host_merge() {
        let (r, conflicts) = Router::build(vec![
            ing(
                2,
                "b",
                vec![(Some("h.com"), vec![path("/b", Prefix, "b")])],
                None,
            ),
            ing(
                1,
                "a",
                vec![(Some("h.com"), vec![path("/a", Prefix, "a")])],
                None,
            ),
        ]);
        assert!(conflicts.is_empty());
        assert_eq!(r.route("h.com", "/a"), Some(&"a"));
        assert_eq!(r.route("h.com", "/b/x"), Some(&"b"));
        assert_eq!(r.route("h.com", "/c"), None);
    }

    #[test]
    fn the_oldest_ingress_wins_a_conflict() {
        let (r, conflicts) = Router::build(vec![
            ing(
                5,
                "new",
                vec![(Some("h.com"), vec![path("/x", Prefix, "new")])],
                None,
            ),
            ing(
                3,
                "old",
                vec![(Some("h.com"), vec![path("/x/", Prefix, "old")])],
                None,
            ),
        ]);
        assert_eq!(r.route("h.com", "/x"), Some(&"old"));
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].loser.name, "new");
        assert_eq!(conflicts[0].winner.name, "old");
        // Same age: namespace/name decides.
        let (r, _) = Router::build(vec![
            ing(1, "zz", vec![(None, vec![path("/", Prefix, "zz")])], None),
            ing(1, "aa", vec![(None, vec![path("/", Prefix, "aa")])], None),
        ]);
        assert_eq!(r.route("h", "/"), Some(&"aa"));
        // Different types on the same path do not conflict.
        let (_, conflicts) = Router::build(vec![
            ing(1, "a", vec![(None, vec![path("/x", Exact, "a")])], None),
            ing(2, "b", vec![(None, vec![path("/x", Prefix, "b")])], None),
        ]);
        assert!(conflicts.is_empty());
    }

    #[test]
    fn default_backend_catches_requests_matching_no_rule() {
        let (r, _) = Router::build(vec![ing(
            1,
            "a",
            vec![(Some("h.com"), vec![path("/api", Prefix, "api")])],
            Some("default"),
        )]);
        assert_eq!(r.route("h.com", "/api"), Some(&"api"));
        assert_eq!(r.route("h.com", "/other"), Some(&"default"));
        assert_eq!(r.route("unknown.org", "/"), Some(&"default"));
    }

    #[test]
    fn a_hosts_own_default_backend_beats_the_catch_all() {
        let (r, _) = Router::build(vec![
            ing(1, "old", vec![(Some("a.com"), vec![])], Some("old-default")),
            ing(
                2,
                "new",
                vec![(Some("b.com"), vec![path("/x", Exact, "x")])],
                Some("new-default"),
            ),
            ing(
                3,
                "wild",
                vec![(Some("*.c.com"), vec![])],
                Some("wild-default"),
            ),
        ]);
        assert_eq!(r.route("b.com", "/y"), Some(&"new-default"));
        assert_eq!(r.route("a.com", "/y"), Some(&"old-default"));
        assert_eq!(r.route("z.c.com", "/"), Some(&"wild-default"));
        assert_eq!(r.route("other", "/"), Some(&"old-default"));
    }

    #[test]
    fn only_a_default_backend() {
        let (r, _) = Router::build(vec![ing(1, "a", vec![], Some("d"))]);
        assert!(!r.is_empty());
        assert_eq!(r.route("anything", "/x"), Some(&"d"));
        let (r, _) = Router::<&str>::build(vec![]);
        assert!(r.is_empty());
        assert_eq!(r.route("anything", "/x"), None);
    }

    #[test]
    fn invalid_host_patterns_are_skipped() {
        let r = one(vec![
            (Some("*"), vec![path("/", Prefix, "star")]),
            (Some("a.*.com"), vec![path("/", Prefix, "mid")]),
        ]);
        assert_eq!(r.route("x.y.com", "/"), None);
        assert_eq!(r.route("*", "/"), None);
    }

    #[test]
    fn normalize_host_handles_ports_and_ipv6() {
        assert_eq!(normalize_host("Example.COM.:8080"), "example.com");
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(normalize_host("host:notaport"), "host:notaport");
    }

    #[test]
    fn host_map_lookup_and_first_writer_wins() {
        let mut m = HostMap::default();
        assert!(m.insert_if_absent("*.example.com", 1));
        assert!(m.insert_if_absent("a.example.com", 2));
        assert!(!m.insert_if_absent("A.example.com", 3));
        assert!(!m.insert_if_absent("*", 4));
        assert_eq!(m.lookup("a.example.com"), Some(&2));
        assert_eq!(m.lookup("b.Example.com:443"), Some(&1));
        assert_eq!(m.lookup("example.com"), None);
        assert_eq!(m.lookup("x.b.example.com"), None);
    }
}
