//! Parsing of API paths and query parameters into a typed request description.

use std::collections::HashMap;

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

/// Query parameters, last value wins.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}")))
            })
            .transpose()
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

#[cfg(test)]
mod tests {
    use super::*;

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
