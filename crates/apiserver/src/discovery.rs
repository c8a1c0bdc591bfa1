//! Discovery documents, built from the [`Registry`] alone.
//!
//! - [`api_versions`]: `GET /api` (`APIVersions`).
//! - [`api_group_list`] / [`api_group`]: `GET /apis` (`APIGroupList`) and `GET /apis/{group}`.
//! - [`resource_list`]: `GET /api/v1` and `GET /apis/{group}/{version}` (`APIResourceList`, with
//!   subresources such as `pods/status` or `deployments/scale` as their own entries).
//! - [`aggregated`]: the aggregated documents (`APIGroupDiscoveryList`, `apidiscovery.k8s.io`
//!   v2 or v2beta1) that kubectl 1.30+ asks for first on `/api` and `/apis`. [`negotiate`] picks
//!   the format from an `Accept` header and says which `Content-Type` to answer with.
//!
//! Every function is pure and deterministic; each document is small (a few KB) and cheap enough
//! to build per request. [`subresource`] is shared with the OpenAPI builder: it says which kind
//! and verbs a subresource has.

use krust_machinery::registry::{group_version, Registry, ResourceInfo};
use serde_json::{json, Map, Value};

/// `Content-Type` of the aggregated v2 answer.
pub const CONTENT_TYPE_AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// `Content-Type` of the aggregated v2beta1 answer.
pub const CONTENT_TYPE_AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// `Content-Type` of the unaggregated (legacy) answers.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The discovery formats a client may ask for on `/api` and `/apis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `APIGroupDiscoveryList` in `apidiscovery.k8s.io/v2`.
    AggregatedV2,
    /// `APIGroupDiscoveryList` in `apidiscovery.k8s.io/v2beta1` (kubectl 1.26 to 1.29).
    AggregatedV2Beta1,
    /// `APIVersions` on `/api`, `APIGroupList` on `/apis`.
    Legacy,
}

impl Format {
    /// The `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::AggregatedV2 => CONTENT_TYPE_AGGREGATED_V2,
            Format::AggregatedV2Beta1 => CONTENT_TYPE_AGGREGATED_V2BETA1,
            Format::Legacy => CONTENT_TYPE_JSON,
        }
    }
}

/// Picks the discovery format for an `Accept` header: the acceptable media range with the
/// highest `q`, earliest first among equals. A missing or empty header means [`Format::Legacy`].
/// `None` means nothing acceptable is offered (protobuf only, or an unknown `as=`): answer 406.
pub fn negotiate(accept: &str) -> Option<Format> {
    if accept.trim().is_empty() {
        return Some(Format::Legacy);
    }
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut g, mut v, mut r#as, mut q, mut other) = (None, None, None, 1.0f32, false);
        for p in parts {
            let Some((k, val)) = p.split_once('=') else {
                continue;
            };
            let val = val.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "g" => g = Some(val.to_string()),
                "v" => v = Some(val.to_string()),
                "as" => r#as = Some(val.to_string()),
                "q" => q = val.parse().unwrap_or(0.0),
                "charset" | "profile" => {}
                _ => other = true,
            }
        }
        if q <= 0.0
            || other
            || !matches!(media.as_str(), "application/json" | "application/*" | "*/*")
        {
            continue;
        }
        let format = match (g.as_deref(), v.as_deref(), r#as.as_deref()) {
            (None, None, None) => Format::Legacy,
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                Format::AggregatedV2
            }
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => {
                Format::AggregatedV2Beta1
            }
            _ => continue,
        };
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f)
}

/// `GET /api`: the core group's only version. `server_address` is the `host:port` clients
/// should use (shown for `clientCIDR` 0.0.0.0/0, as upstream does).
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The kind and verbs of one subresource of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    /// `status`, `scale`, ...
    pub name: &'static str,
    /// Group of the kind sent and received; may differ from the parent's (`autoscaling` for
    /// `scale`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: String,
    pub verbs: &'static [&'static str],
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CREATE: &[&str] = &["create"];
const CREATE_GET: &[&str] = &["create", "get"];

/// What a subresource of `r` accepts and returns, as upstream serves it.
pub fn subresource(r: &ResourceInfo, name: &'static str) -> Subresource {
    let same = |kind: String, verbs| Subresource {
        name,
        group: r.group,
        version: r.version,
        kind,
        verbs,
    };
    let other = |group, version, kind: &str, verbs| Subresource {
        name,
        group,
        version,
        kind: kind.to_string(),
        verbs,
    };
    match name {
        "scale" => other("autoscaling", "v1", "Scale", GET_PATCH_UPDATE),
        "eviction" => other("policy", "v1", "Eviction", CREATE),
        "binding" => other("", "v1", "Binding", CREATE),
        "token" => other("authentication.k8s.io", "v1", "TokenRequest", CREATE),
        "log" => same(r.kind.to_string(), &["get"]),
        "finalize" => same(r.kind.to_string(), &["update"]),
        "exec" | "attach" | "portforward" => same(
            format!("{}{}Options", r.kind, option_kind_suffix(name)),
            CREATE_GET,
        ),
        "proxy" => same(
            format!("{}ProxyOptions", r.kind),
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => same(r.kind.to_string(), GET_PATCH_UPDATE),
    }
}

fn option_kind_suffix(name: &str) -> &'static str {
    match name {
        "exec" => "Exec",
        "attach" => "Attach",
        _ => "PortForward",
    }
}

/// The subresources of `r`, sorted by name.
pub fn subresources(r: &ResourceInfo) -> Vec<Subresource> {
    let mut subs: Vec<Subresource> = r.subresources.iter().map(|s| subresource(r, s)).collect();
    subs.sort_by(|a, b| a.name.cmp(b.name));
    subs
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; `None` if nothing is served there.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<&ResourceInfo> = reg.in_group_version(group, version).collect();
    if resources.is_empty() {
        return None;
    }
    resources.sort_by(|a, b| a.plural.cmp(b.plural));
    let mut entries = Vec::new();
    for r in resources {
        let mut e = Map::new();
        if !r.categories.is_empty() {
            e.insert("categories".into(), json!(r.categories));
        }
        e.insert("kind".into(), json!(r.kind));
        e.insert("name".into(), json!(r.plural));
        e.insert("namespaced".into(), json!(r.namespaced));
        if !r.short_names.is_empty() {
            e.insert("shortNames".into(), json!(r.short_names));
        }
        e.insert("singularName".into(), json!(r.singular));
        e.insert("verbs".into(), json!(r.verbs()));
        entries.push(Value::Object(e));
        for s in subresources(r) {
            let mut e = Map::new();
            if (s.group, s.version) != (r.group, r.version) {
                e.insert("group".into(), json!(s.group));
                e.insert("version".into(), json!(s.version));
            }
            e.insert("kind".into(), json!(s.kind));
            e.insert("name".into(), json!(format!("{}/{}", r.plural, s.name)));
            e.insert("namespaced".into(), json!(r.namespaced));
            e.insert("singularName".into(), json!(""));
            e.insert("verbs".into(), json!(s.verbs));
            entries.push(Value::Object(e));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": entries,
    }))
}

/// Orders versions as Kubernetes does: GA before beta before alpha, then higher numbers first;
/// names that do not look like `v<N>[alpha|beta<M>]` go last, alphabetically.
fn version_priority(v: &str) -> (u8, u32, u32, String) {
    let parsed = v.strip_prefix('v').and_then(|rest| {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u32 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0u8, major, 0u32));
        }
        for (rank, pre) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(pre) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    });
    match parsed {
        // Higher major/minor first: invert so that ascending sort puts them first.
        Some((rank, major, minor)) => (rank, u32::MAX - major, u32::MAX - minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// Served groups (core excluded) with their versions, preferred version first.
fn groups(reg: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (g, v) in reg.group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by_key(|v| version_priority(v));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The versions of the core group, preferred first.
fn core_versions(reg: &Registry) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty())
        .map(|(_, v)| v)
        .collect();
    v.sort_by_key(|v| version_priority(v));
    v
}

fn api_group_value(name: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": gvs, "preferredVersion": preferred})
}

/// `GET /apis`: every served group except the core one.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = groups(reg)
        .iter()
        .map(|(g, vs)| api_group_value(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`; `None` for an unserved group.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let (name, versions) = groups(reg).into_iter().find(|(g, _)| *g == group)?;
    let mut v = api_group_value(name, &versions);
    if let Value::Object(m) = &mut v {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(v)
}

fn discovery_version(reg: &Registry, group: &str, version: &str) -> Value {
    let mut resources: Vec<&ResourceInfo> = reg.in_group_version(group, version).collect();
    resources.sort_by(|a, b| a.plural.cmp(b.plural));
    let kind_ref = |g: &str, v: &str, kind: &str, parent: &ResourceInfo| {
        if (g, v) == (parent.group, parent.version) {
            json!({"group": "", "version": "", "kind": kind})
        } else {
            json!({"group": g, "version": v, "kind": kind})
        }
    };
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut e = Map::new();
            e.insert("resource".into(), json!(r.plural));
            e.insert(
                "responseKind".into(),
                kind_ref(r.group, r.version, r.kind, r),
            );
            e.insert(
                "scope".into(),
                json!(if r.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }),
            );
            e.insert("singularResource".into(), json!(r.singular));
            e.insert("verbs".into(), json!(r.verbs()));
            if !r.short_names.is_empty() {
                e.insert("shortNames".into(), json!(r.short_names));
            }
            if !r.categories.is_empty() {
                e.insert("categories".into(), json!(r.categories));
            }
            let subs: Vec<Value> = subresources(r)
                .iter()
                .map(|s| {
                    json!({
                        "subresource": s.name,
                        "responseKind": kind_ref(s.group, s.version, &s.kind, r),
                        "verbs": s.verbs,
                    })
                })
                .collect();
            if !subs.is_empty() {
                e.insert("subresources".into(), Value::Array(subs));
            }
            Value::Object(e)
        })
        .collect();
    json!({"version": version, "resources": entries, "freshness": "Current"})
}

/// The aggregated document for `/api` (`core`) or `/apis`, in the given aggregated format;
/// `None` for [`Format::Legacy`].
pub fn aggregated_document(reg: &Registry, core: bool, format: Format) -> Option<Value> {
    let api_version = match format {
        Format::AggregatedV2 => "apidiscovery.k8s.io/v2",
        Format::AggregatedV2Beta1 => "apidiscovery.k8s.io/v2beta1",
        Format::Legacy => return None,
    };
    let items: Vec<Value> = if core {
        let versions: Vec<Value> = core_versions(reg)
            .iter()
            .map(|v| discovery_version(reg, "", v))
            .collect();
        if versions.is_empty() {
            Vec::new()
        } else {
            vec![json!({"metadata": {"creationTimestamp": null}, "versions": versions})]
        }
    } else {
        groups(reg)
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> =
                    vs.iter().map(|v| discovery_version(reg, g, v)).collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    };
    Some(json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    }))
}

/// The aggregated answer for `/api` (`core`) or `/apis` if `accept` prefers one, with the
/// `Content-Type` to send. `None`: serve [`api_versions`] / [`api_group_list`] instead (or 406
/// if [`negotiate`] finds nothing acceptable).
pub fn aggregated(reg: &Registry, core: bool, accept: &str) -> Option<(Value, &'static str)> {
    let format = negotiate(accept)?;
    aggregated_document(reg, core, format).map(|doc| (doc, format.content_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(KUBECTL_ACCEPT), Some(Format::AggregatedV2));
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"),
            Some(Format::AggregatedV2Beta1)
        );
        assert_eq!(negotiate("application/json, */*"), Some(Format::Legacy));
        assert_eq!(negotiate(""), Some(Format::Legacy));
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer"),
            Some(Format::AggregatedV2)
        );
        assert_eq!(
            negotiate("application/json;q=0.5, application/json; g=apidiscovery.k8s.io; v=v2; as=APIGroupDiscoveryList"),
            Some(Format::AggregatedV2)
        );
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf"), None);
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"),
            None
        );
        assert_eq!(negotiate("application/json;q=0"), None);
        assert_eq!(negotiate(";;,=,;q=x"), None);
    }

    #[test]
    fn core_resource_list_has_pods_and_subresources() {
        let reg = Registry::builtin();
        let list = resource_list(&reg, "", "v1").expect("core served");
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], "v1");
        let pods = find(&list, "pods");
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(pods["verbs"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("watch"))));
        assert_eq!(
            find(&list, "pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(find(&list, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(find(&list, "pods/log")["kind"], "Pod");
        assert_eq!(find(&list, "pods/exec")["kind"], "PodExecOptions");
        let eviction = find(&list, "pods/eviction");
        assert_eq!(
            (&eviction["group"], &eviction["version"], &eviction["kind"]),
            (&json!("policy"), &json!("v1"), &json!("Eviction"))
        );
        assert_eq!(find(&list, "namespaces")["namespaced"], false);
        assert_eq!(
            find(&list, "serviceaccounts/token")["group"],
            "authentication.k8s.io"
        );
        // Sorted by name; subresources right after their resource.
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(resource_list(&reg, "", "v2").is_none());
        assert!(resource_list(&reg, "nope", "v1").is_none());
    }

    #[test]
    fn apps_has_deployment_scale() {
        let reg = Registry::builtin();
        let list = resource_list(&reg, "apps", "v1").expect("apps served");
        assert_eq!(list["groupVersion"], "apps/v1");
        let scale = find(&list, "deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(find(&list, "deployments")["shortNames"], json!(["deploy"]));
        assert!(find(&list, "deployments/status").get("group").is_none());
    }

    #[test]
    fn networking_serves_ingresses_classes_and_policies() {
        let reg = Registry::builtin();
        let list = resource_list(&reg, "networking.k8s.io", "v1").expect("networking served");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "ingressclasses",
                "ingresses",
                "ingresses/status",
                "networkpolicies"
            ]
        );
        let ing = find(&list, "ingresses");
        assert_eq!(
            (&ing["kind"], &ing["shortNames"], &ing["namespaced"]),
            (&json!("Ingress"), &json!(["ing"]), &json!(true))
        );
        assert!(ing.get("categories").is_none());
        assert_eq!(find(&list, "ingresses/status")["kind"], "Ingress");
        assert_eq!(find(&list, "ingressclasses")["namespaced"], false);
        assert_eq!(
            find(&list, "networkpolicies")["shortNames"],
            json!(["netpol"])
        );
        assert!(api_group(&reg, "networking.k8s.io").is_some());
    }

    #[test]
    fn certificates_serve_csrs_with_status_and_approval() {
        let reg = Registry::builtin();
        let list = resource_list(&reg, "certificates.k8s.io", "v1").expect("certificates served");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "certificatesigningrequests",
                "certificatesigningrequests/approval",
                "certificatesigningrequests/status"
            ]
        );
        let csr = find(&list, "certificatesigningrequests");
        assert_eq!(
            (&csr["kind"], &csr["shortNames"], &csr["namespaced"]),
            (
                &json!("CertificateSigningRequest"),
                &json!(["csr"]),
                &json!(false)
            )
        );
        assert_eq!(
            find(&list, "certificatesigningrequests/approval")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert!(api_group(&reg, "certificates.k8s.io").is_some());
    }

    #[test]
    fn group_list_and_versions() {
        let reg = Registry::builtin();
        let v = api_versions("127.0.0.1:6443");
        assert_eq!(v["versions"], json!(["v1"]));
        assert_eq!(
            v["serverAddressByClientCIDRs"][0]["serverAddress"],
            "127.0.0.1:6443"
        );
        let list = api_group_list(&reg);
        assert_eq!(list["kind"], "APIGroupList");
        let groups = list["groups"].as_array().expect("groups");
        assert!(groups.iter().all(|g| g["name"] != ""));
        let apps = groups.iter().find(|g| g["name"] == "apps").expect("apps");
        assert_eq!(
            apps["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
        assert_eq!(
            apps["versions"],
            json!([{"groupVersion": "apps/v1", "version": "v1"}])
        );
        let rbac = api_group(&reg, "rbac.authorization.k8s.io").expect("rbac");
        assert_eq!(rbac["kind"], "APIGroup");
        assert!(api_group(&reg, "").is_none());
        assert!(api_group(&reg, "nope").is_none());
    }

    #[test]
    fn version_order_matches_kubernetes() {
        let mut v = vec![
            "v1beta1", "v1alpha1", "v2", "v1", "foo", "v2beta2", "v2beta1", "v10",
        ];
        v.sort_by_key(|v| version_priority(v));
        assert_eq!(
            v,
            vec!["v10", "v2", "v1", "v2beta2", "v2beta1", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn aggregated_documents_have_upstream_shape() {
        let reg = Registry::builtin();
        let (core, ct) = aggregated(&reg, true, KUBECTL_ACCEPT).expect("aggregated");
        assert_eq!(ct, CONTENT_TYPE_AGGREGATED_V2);
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = core["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert!(items[0]["metadata"].get("name").is_none());
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pods = v1["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "pods"))
            .expect("pods");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "", "kind": "Pod"})
        );
        assert_eq!(pods["shortNames"], json!(["po"]));
        let subs = pods["subresources"].as_array().expect("subresources");
        let status = subs
            .iter()
            .find(|s| s["subresource"] == "status")
            .expect("status");
        assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
        let nodes = v1["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "nodes"))
            .expect("nodes");
        assert_eq!(nodes["scope"], "Cluster");

        let (apis, _) = aggregated(&reg, false, KUBECTL_ACCEPT).expect("aggregated");
        let apps = apis["items"]
            .as_array()
            .and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "apps"))
            .expect("apps");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "deployments"))
            .expect("deployments");
        let scale = deploy["subresources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["subresource"] == "scale"))
            .expect("scale");
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert!(apis["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(|g| g["metadata"]["name"] != "")));

        let (beta, ct) = aggregated(
            &reg,
            false,
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )
        .expect("v2beta1");
        assert_eq!(ct, CONTENT_TYPE_AGGREGATED_V2BETA1);
        assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert!(aggregated(&reg, true, "application/json").is_none());
        assert!(aggregated(&reg, true, "application/vnd.kubernetes.protobuf").is_none());
    }
}
