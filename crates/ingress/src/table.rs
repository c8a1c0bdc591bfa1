//! The routing table built from API objects, and the handle the data path reads it from.
//!
//! [`build`] is a pure function of one snapshot of the caches: it picks our Ingresses
//! ([`ClassFilter`]), resolves every backend once per (namespace, service, port), merges
//! the rules ([`Router::build`]) and picks certificates. The result is immutable; the
//! controller swaps in a new one through [`TableHandle`], so a request sees either the old
//! or the new table, never half of each.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use crate::backend::{self, Backend, Unavailable, SERVICE_NAME_LABEL};
use crate::class::ClassFilter;
use crate::routes::{IngressRoutes, Origin, PathKind, PathSpec, Router, RuleSpec};
use crate::tls::{self, CertTable};

/// One snapshot of the watched objects (what the reflector stores hand out).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// What the data path needs: routes and certificates.
#[derive(Debug, Default)]
pub struct Table {
    pub router: Router<Arc<Backend>>,
    pub certs: CertTable,
}

/// The outcome of one build: the table, and the Ingresses it serves (for status).
#[derive(Debug, Default)]
pub struct Built {
    pub table: Table,
    pub served: Vec<Arc<Ingress>>,
}

/// The current table, shared by the listeners and swapped by the controller.
#[derive(Clone, Debug, Default)]
pub struct TableHandle(Arc<RwLock<Arc<Table>>>);

impl TableHandle {
    pub fn new(table: Table) -> TableHandle {
        TableHandle(Arc::new(RwLock::new(Arc::new(table))))
    }

    /// The current table; cheap (a lock held only to clone an `Arc`).
    pub fn load(&self) -> Arc<Table> {
        // A poisoned lock still holds a whole table: writers only replace the Arc.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self, table: Table) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// The order of conflicting Ingresses.
fn origin(ing: &Ingress) -> Origin {
    Origin {
        created: ing
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        namespace: ing.metadata.namespace.clone().unwrap_or_default(),
        name: ing.metadata.name.clone().unwrap_or_default(),
    }
}

/// Backends resolved once per (namespace, service, port) and shared by every rule naming
/// them, so round-robin state is per backend rather than per rule.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    cache: HashMap<(String, String, String), Arc<Backend>>,
}

impl<'a> Resolver<'a> {
    fn new(objects: &'a Objects) -> Resolver<'a> {
        let key = |m: &'a kube::api::ObjectMeta| {
            (
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            )
        };
        let services = objects
            .services
            .iter()
            .map(|s| (key(&s.metadata), s.as_ref()))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for s in &objects.slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry((ns, svc.as_str()))
                    .or_default()
                    .push(s.as_ref());
            }
        }
        Resolver {
            services,
            slices,
            cache: HashMap::new(),
        }
    }

    fn resolve(&mut self, ns: &str, b: &IngressBackend) -> Arc<Backend> {
        let Some(svc) = &b.service else {
            let label = format!("{ns}/<resource backend>");
            return Arc::new(Backend::unavailable(label, Unavailable::Unsupported));
        };
        let port = svc
            .port
            .as_ref()
            .map(|p| format!("{:?}/{:?}", p.name, p.number))
            .unwrap_or_default();
        let key = (ns.to_string(), svc.name.clone(), port);
        if let Some(b) = self.cache.get(&key) {
            return b.clone();
        }
        let service = self.services.get(&(ns, svc.name.as_str())).copied();
        let slices = self
            .slices
            .get(&(ns, svc.name.as_str()))
            .map(|v| v.as_slice())
            .unwrap_or(&[]);
        let resolved = Arc::new(backend::resolve(ns, svc, service, slices.iter().copied()));
        self.cache.insert(key, resolved.clone());
        resolved
    }
}

/// Translates one Ingress into router input.
fn ingress_routes(ing: &Ingress, resolver: &mut Resolver<'_>) -> IngressRoutes<Arc<Backend>> {
    let ns = ing.metadata.namespace.as_deref().unwrap_or("");
    let spec = ing.spec.as_ref();
    let default_backend = spec
        .and_then(|s| s.default_backend.as_ref())
        .map(|b| resolver.resolve(ns, b));
    let rules = spec
        .and_then(|s| s.rules.as_ref())
        .map(|rules| {
            rules
                .iter()
                .map(|rule| RuleSpec {
                    host: rule.host.clone().filter(|h| !h.is_empty()),
                    paths: rule
                        .http
                        .as_ref()
                        .map(|http| {
                            http.paths
                                .iter()
                                .map(|p| PathSpec {
                                    path: p.path.clone().unwrap_or_else(|| "/".into()),
                                    kind: PathKind::from_api(&p.path_type),
                                    backend: resolver.resolve(ns, &p.backend),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    IngressRoutes {
        origin: origin(ing),
        rules,
        default_backend,
    }
}

/// Certificates of the served Ingresses' `tls` entries, oldest Ingress first. A Secret
/// that is missing or unusable is logged and skipped: its hosts get the fallback
/// certificate, as in ingress-nginx.
fn certificates(served: &[Arc<Ingress>], secrets: &[Arc<Secret>]) -> CertTable {
    let index: HashMap<(&str, &str), &Secret> = secrets
        .iter()
        .map(|s| {
            let m = &s.metadata;
            let key = (
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            );
            (key, s.as_ref())
        })
        .collect();
    let mut parsed: HashMap<(&str, &str), Option<Arc<rustls::sign::CertifiedKey>>> = HashMap::new();
    let mut table = CertTable::default();
    for ing in served {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("");
        let entries = ing.spec.as_ref().and_then(|s| s.tls.as_ref());
        for entry in entries.into_iter().flatten() {
            let Some(name) = entry.secret_name.as_deref() else {
                continue;
            };
            let key = parsed
                .entry((ns, name))
                .or_insert_with(|| load_secret(index.get(&(ns, name)).copied(), ns, name))
                .clone();
            let Some(key) = key else { continue };
            match entry.hosts.as_deref() {
                Some(hosts) if !hosts.is_empty() => {
                    for host in hosts {
                        table.by_host.insert_if_absent(host, key.clone());
                    }
                }
                _ => {
                    table.default.get_or_insert(key);
                }
            }
        }
    }
    table
}

fn load_secret(
    secret: Option<&Secret>,
    ns: &str,
    name: &str,
) -> Option<Arc<rustls::sign::CertifiedKey>> {
    let Some(secret) = secret else {
        tracing::warn!(secret = %format!("{ns}/{name}"), "TLS secret not found");
        return None;
    };
    match tls::certified_key_from_secret(secret) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "TLS secret unusable");
            None
        }
    }
}

/// Builds the table for `class_name`/`controller` from one snapshot.
pub fn build(objects: &Objects, class_name: &str, controller: &str) -> Built {
    let filter = ClassFilter::new(
        class_name,
        controller,
        objects.classes.iter().map(|c| c.as_ref()),
    );
    let mut served: Vec<Arc<Ingress>> = objects
        .ingresses
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && filter.serves(i))
        .cloned()
        .collect();
    served.sort_by_key(|i| origin(i));
    let mut resolver = Resolver::new(objects);
    let routes = served
        .iter()
        .map(|i| ingress_routes(i, &mut resolver))
        .collect();
    let (router, conflicts) = Router::build(routes);
    for c in conflicts {
        tracing::info!(
            host = c.host.as_deref().unwrap_or("*"),
            path = %c.path,
            ingress = %format!("{}/{}", c.loser.namespace, c.loser.name),
            kept = %format!("{}/{}", c.winner.namespace, c.winner.name),
            "ingress rule shadowed by an older ingress"
        );
    }
    let certs = certificates(&served, &objects.secrets);
    Built {
        table: Table { router, certs },
        served,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::{by_name, by_number, service, slice, READY};
    use crate::class::wanted_class;
    use crate::tls::tests::{self_signed_pem, tls_secret};
    use k8s_openapi::api::networking::v1::{
        HTTPIngressPath, HTTPIngressRuleValue, IngressRule, IngressServiceBackend, IngressSpec,
        IngressTLS,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    const CTRL: &str = "krust.io/ingress";

    fn svc_backend(b: IngressServiceBackend) -> IngressBackend {
        IngressBackend {
            service: Some(b),
            resource: None,
        }
    }

    fn ingress(
        name: &str,
        created: i64,
        rules: Vec<(Option<&str>, &str, &str, IngressServiceBackend)>,
    ) -> Ingress {
        let rules = rules
            .into_iter()
            .map(|(host, path, ty, b)| IngressRule {
                host: host.map(String::from),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path.into()),
                        path_type: ty.into(),
                        backend: svc_backend(b),
                    }],
                }),
            })
            .collect();
        Ingress {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                creation_timestamp: k8s_openapi::jiff::Timestamp::from_second(created)
                    .ok()
                    .map(Time),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                rules: Some(rules),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn objects(ingresses: Vec<Ingress>) -> Objects {
        Objects {
            ingresses: ingresses.into_iter().map(Arc::new).collect(),
            classes: vec![Arc::new(wanted_class("krust", CTRL))],
            services: vec![
                Arc::new(service("ns", "web", &[(Some("http"), 80, "http-alt")])),
                Arc::new(service("ns", "api", &[(Some("grpc"), 9090, "9090")])),
                Arc::new(service("ns", "empty", &[(None, 80, "80")])),
            ],
            slices: vec![
                Arc::new(slice(
                    "ns",
                    "web",
                    &[(Some("http"), 8080)],
                    &[("10.0.0.1", READY)],
                )),
                Arc::new(slice(
                    "ns",
                    "api",
                    &[(Some("grpc"), 9090)],
                    &[("10.0.0.2", READY)],
                )),
            ],
            secrets: vec![],
        }
    }

    fn route<'t>(t: &'t Table, host: &str, path: &str) -> Option<&'t Backend> {
        t.router.route(host, path).map(|b| b.as_ref())
    }

    fn eps(b: Option<&Backend>) -> Vec<String> {
        b.map(|b| b.endpoints.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn routes_resolve_to_target_ports() {
        let ing = ingress(
            "a",
            1,
            vec![
                (Some("web.example.com"), "/", "Prefix", by_number("web", 80)),
                (
                    Some("web.example.com"),
                    "/api",
                    "Prefix",
                    by_name("api", "grpc"),
                ),
                (
                    Some("empty.example.com"),
                    "/",
                    "Exact",
                    by_number("empty", 80),
                ),
                (
                    Some("gone.example.com"),
                    "/",
                    "Prefix",
                    by_number("gone", 80),
                ),
            ],
        );
        let built = build(&objects(vec![ing]), "krust", CTRL);
        assert_eq!(built.served.len(), 1);
        let t = &built.table;
        assert_eq!(eps(route(t, "web.example.com", "/x")), ["10.0.0.1:8080"]);
        assert_eq!(
            eps(route(t, "web.example.com", "/api/v1")),
            ["10.0.0.2:9090"]
        );
        let empty = route(t, "empty.example.com", "/").map(|b| b.unavailable.clone());
        assert_eq!(empty, Some(Some(Unavailable::NoEndpoints)));
        let gone = route(t, "gone.example.com", "/").map(|b| b.unavailable.clone());
        assert_eq!(gone, Some(Some(Unavailable::ServiceMissing)));
        assert!(route(t, "other.example.com", "/").is_none());
    }

    #[test]
    fn backends_are_shared_between_rules() {
        let ing = ingress(
            "a",
            1,
            vec![
                (Some("a.com"), "/", "Prefix", by_number("web", 80)),
                (Some("b.com"), "/", "Prefix", by_name("web", "http")),
                (Some("c.com"), "/", "Prefix", by_number("web", 80)),
            ],
        );
        let built = build(&objects(vec![ing]), "krust", CTRL);
        let a = built.table.router.route("a.com", "/");
        let c = built.table.router.route("c.com", "/");
        assert!(matches!((a, c), (Some(a), Some(c)) if Arc::ptr_eq(a, c)));
    }

    #[test]
    fn only_our_ingresses_are_served() {
        let mut theirs = ingress(
            "theirs",
            1,
            vec![(Some("x.com"), "/", "Prefix", by_number("web", 80))],
        );
        if let Some(s) = theirs.spec.as_mut() {
            s.ingress_class_name = Some("nginx".into());
        }
        let ours = ingress(
            "ours",
            2,
            vec![(Some("y.com"), "/", "Prefix", by_number("web", 80))],
        );
        let mut deleting = ingress(
            "deleting",
            3,
            vec![(Some("z.com"), "/", "Prefix", by_number("web", 80))],
        );
        deleting.metadata.deletion_timestamp = ours.metadata.creation_timestamp.clone();
        let built = build(&objects(vec![theirs, ours, deleting]), "krust", CTRL);
        let names: Vec<_> = built
            .served
            .iter()
            .filter_map(|i| i.metadata.name.clone())
            .collect();
        assert_eq!(names, ["ours"]);
        assert!(built.table.router.route("x.com", "/").is_none());
        assert!(built.table.router.route("y.com", "/").is_some());
    }

    #[test]
    fn oldest_ingress_wins_by_creation_time() {
        let newer = ingress(
            "a-newer",
            20,
            vec![(Some("h.com"), "/", "Prefix", by_number("api", 9090))],
        );
        let older = ingress(
            "z-older",
            10,
            vec![(Some("h.com"), "/", "Prefix", by_number("web", 80))],
        );
        let built = build(&objects(vec![newer, older]), "krust", CTRL);
        assert_eq!(eps(route(&built.table, "h.com", "/")), ["10.0.0.1:8080"]);
    }

    #[test]
    fn default_and_resource_backends() {
        let mut ing = ingress(
            "a",
            1,
            vec![(Some("h.com"), "/api", "Exact", by_number("api", 9090))],
        );
        if let Some(s) = ing.spec.as_mut() {
            s.default_backend = Some(svc_backend(by_number("web", 80)));
        }
        let mut res = ingress("b", 2, vec![]);
        if let Some(s) = res.spec.as_mut() {
            s.rules = None;
            s.default_backend = Some(IngressBackend {
                service: None,
                resource: Some(Default::default()),
            });
        }
        let built = build(&objects(vec![ing, res]), "krust", CTRL);
        let t = &built.table;
        assert_eq!(eps(route(t, "h.com", "/other")), ["10.0.0.1:8080"]);
        assert_eq!(eps(route(t, "nobody.com", "/")), ["10.0.0.1:8080"]);
        // A resource backend only loses because "a" is older; alone it is a 503.
        let mut res_only = objects(vec![]);
        let mut r = ingress("r", 1, vec![]);
        if let Some(s) = r.spec.as_mut() {
            s.default_backend = Some(IngressBackend {
                service: None,
                resource: Some(Default::default()),
            });
        }
        res_only.ingresses = vec![Arc::new(r)];
        let built = build(&res_only, "krust", CTRL);
        let b = route(&built.table, "any", "/").map(|b| b.unavailable.clone());
        assert_eq!(b, Some(Some(Unavailable::Unsupported)));
    }

    fn with_tls(mut ing: Ingress, entries: Vec<(Option<Vec<&str>>, &str)>) -> Ingress {
        if let Some(s) = ing.spec.as_mut() {
            s.tls = Some(
                entries
                    .into_iter()
                    .map(|(hosts, secret)| IngressTLS {
                        hosts: hosts.map(|h| h.into_iter().map(String::from).collect()),
                        secret_name: Some(secret.into()),
                    })
                    .collect(),
            );
        }
        ing
    }

    #[test]
    fn tls_secrets_are_chosen_by_host() {
        let (a_crt, a_key) = self_signed_pem(&["a.example.com"]);
        let (w_crt, w_key) = self_signed_pem(&["*.example.com"]);
        let (d_crt, d_key) = self_signed_pem(&["default"]);
        let (n_crt, n_key) = self_signed_pem(&["newer"]);
        let older = with_tls(
            ingress("older", 1, vec![]),
            vec![
                (Some(vec!["a.example.com"]), "a"),
                (Some(vec!["*.example.com"]), "wild"),
                (None, "default"),
                (Some(vec!["broken.example.com"]), "opaque"),
                (Some(vec!["missing.example.com"]), "missing"),
            ],
        );
        let newer = with_tls(
            ingress("newer", 2, vec![]),
            vec![(Some(vec!["a.example.com"]), "newer")],
        );
        let mut objs = objects(vec![older, newer]);
        let mut opaque = tls_secret("ns", "opaque", &a_crt, &a_key);
        opaque.type_ = Some("Opaque".into());
        objs.secrets = [
            tls_secret("ns", "a", &a_crt, &a_key),
            tls_secret("ns", "wild", &w_crt, &w_key),
            tls_secret("ns", "default", &d_crt, &d_key),
            tls_secret("ns", "newer", &n_crt, &n_key),
            tls_secret("other", "a", &n_crt, &n_key),
            opaque,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let built = build(&objs, "krust", CTRL);
        let pem_of = |sni: Option<&str>| {
            built.table.certs.choose(sni).map(|k| {
                let der = k.cert[0].as_ref().to_vec();
                [&a_crt, &w_crt, &d_crt, &n_crt]
                    .into_iter()
                    .position(|pem| {
                        rustls_pemfile::certs(&mut pem.as_bytes())
                            .any(|c| c.is_ok_and(|c| c.as_ref() == der.as_slice()))
                    })
            })
        };
        assert_eq!(pem_of(Some("a.example.com")), Some(Some(0)));
        assert_eq!(pem_of(Some("b.example.com")), Some(Some(1)));
        // The unusable secrets' hosts are covered by the wildcard here.
        assert_eq!(pem_of(Some("broken.example.com")), Some(Some(1)));
        assert_eq!(pem_of(Some("other.org")), Some(Some(2)));
        assert_eq!(pem_of(None), Some(Some(2)));
    }

    #[test]
    fn table_handle_swaps() {
        let h = TableHandle::default();
        assert!(h.load().router.is_empty());
        let built = build(
            &objects(vec![ingress(
                "a",
                1,
                vec![(None, "/", "Prefix", by_number("web", 80))],
            )]),
            "krust",
            CTRL,
        );
        let old = h.load();
        h.store(built.table);
        assert!(!h.load().router.is_empty());
        assert!(old.router.is_empty());
    }
}
