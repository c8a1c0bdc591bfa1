//! The registry of served kinds. Serving a new built-in kind is one `entry::<T>(...)` line
//! in [`Registry::builtin`] plus its validation and defaulting. Kinds defined while the
//! server runs (CustomResourceDefinitions) come as [`ResourceInfo`]s whose [`KindOps`]
//! carry their schema, and a [`SharedRegistry`] swaps in a new [`Registry`] when they change.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// What the typed (k8s-openapi) form of a kind can do for the generic JSON paths.
pub trait KindOps: Send + Sync {
    /// Decodes into the upstream type and encodes again: unknown fields disappear and
    /// wrong types are refused. The error is serde's message, with its path.
    fn roundtrip(&self, value: Value) -> Result<Value, String>;
    /// The kind's OpenAPI schema, with `$ref`s into `generator`'s definitions.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.Pod`.
    fn schema_name(&self) -> String;
    /// What caches of schema-derived data (server-side apply's type trees) are keyed by:
    /// it changes whenever the schema does, as a custom resource's may.
    fn schema_key(&self) -> String {
        self.schema_name()
    }
    /// Defaulting beyond the built-in tables: a custom resource's schema defaults.
    fn apply_defaults(&self, _obj: &mut Value) {}
    /// Validation beyond the built-in rules: a custom resource's schema and CEL rules.
    /// `old` is the stored object on updates.
    fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<crate::Cause> {
        Vec::new()
    }
    /// Where the scale subresource reads and writes; `None` for the built-in kinds' paths.
    fn scale_paths(&self) -> Option<ScalePaths> {
        None
    }
    /// Table columns and cells of a kind printed by its own definition (a custom
    /// resource's additionalPrinterColumns); `None` for the built-in printers.
    fn printer(&self) -> Option<&dyn Printer> {
        None
    }
    /// The `apiVersion` objects of this kind are stored in, when it is not the served one
    /// (a custom resource served in several versions).
    fn storage_api_version(&self) -> Option<&str> {
        None
    }
    /// A kind defined while the server runs rather than built in.
    fn is_custom(&self) -> bool {
        false
    }
}

/// Server-side printing of a kind that describes its own columns.
pub trait Printer: Send + Sync {
    /// Column definitions, as a Table's `columnDefinitions`.
    fn columns(&self) -> Vec<Value>;
    /// One row's cells, in the order of [`Printer::columns`].
    fn cells(&self, obj: &Value, now: time::OffsetDateTime) -> Vec<Value>;
}

/// JSON paths (`.spec.replicas`) of a scale subresource's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
static INTERNED_LISTS: LazyLock<Mutex<HashSet<&'static [&'static str]>>> =
    LazyLock::new(Default::default);

/// The one `'static` copy of a name. Kinds' names are `&'static str` so that the many
/// `match (group, kind)` arms over built-in kinds stay plain; names of kinds defined at
/// run time are interned here, once per distinct string, so rebuilding the registry after
/// every CustomResourceDefinition change copies nothing and memory is bounded by the
/// distinct names ever defined (a few per CRD).
pub fn intern(s: &str) -> &'static str {
    let mut set = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = set.get(s) {
        return v;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// [`intern`] for a list of names (short names, categories, subresources).
pub fn intern_list<S: AsRef<str>>(items: &[S]) -> &'static [&'static str] {
    let names: Vec<&'static str> = items.iter().map(|s| intern(s.as_ref())).collect();
    let mut set = INTERNED_LISTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = set.get(names.as_slice()) {
        return v;
    }
    let leaked: &'static [&'static str] = Box::leak(names.into_boxed_slice());
    set.insert(leaked);
    leaked
}

struct Typed<T>(PhantomData<fn() -> T>);

impl<T> KindOps for Typed<T>
where
    T: Serialize + DeserializeOwned + schemars::JsonSchema,
{
    fn roundtrip(&self, value: Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }

    fn schema_name(&self) -> String {
        T::schema_name().into_owned()
    }
}

/// One served resource: everything discovery, routing and storage need to know.
#[derive(Clone)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: String,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Served subresources, e.g. `status`, `scale`, `binding`.
    pub subresources: &'static [&'static str],
    pub ops: Arc<dyn KindOps>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ResourceInfo({}/{} {})",
            self.group, self.version, self.plural
        )
    }
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Store key prefix for all objects of this resource: `/registry/<group>/<plural>/`.
    /// Every version of a kind shares it (only one is served per kind today).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/core/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// Store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// Key prefix of all objects of this resource in `namespace` (or all namespaces).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// All served resources, with lookups by path segment and by kind.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
    by_path: HashMap<(String, String, String), usize>,
    by_kind: HashMap<(String, String), usize>,
    /// Counts the registries a [`SharedRegistry`] has held, so that documents derived
    /// from one (discovery, OpenAPI) know when to be rebuilt.
    generation: u64,
}

/// The registry of a running server: read as a snapshot per request, replaced whole when
/// the served kinds change (a CustomResourceDefinition established or removed).
#[derive(Debug)]
pub struct SharedRegistry {
    current: RwLock<Arc<Registry>>,
}

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        SharedRegistry {
            current: RwLock::new(Arc::new(registry)),
        }
    }

    /// The registry as it is now; it does not change under the caller.
    pub fn load(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The resource served at `/apis/<group>/<version>/<plural>` now.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.load().lookup(group, version, plural).cloned()
    }

    /// Serves `registry` from now on, with the next generation number.
    pub fn replace(&self, mut registry: Registry) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        registry.generation = current.generation + 1;
        *current = Arc::new(registry);
    }
}

struct Entry {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

fn entry<T>(e: Entry) -> ResourceInfo
where
    T: k8s_openapi::Resource + Serialize + DeserializeOwned + schemars::JsonSchema + 'static,
    T::Scope: Scope,
{
    ResourceInfo {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        singular: T::KIND.to_ascii_lowercase(),
        short_names: e.short_names,
        categories: e.categories,
        namespaced: <T::Scope as Scope>::NAMESPACED,
        subresources: e.subresources,
        ops: Arc::new(Typed::<T>(PhantomData)),
    }
}

/// A kind served from its k8s-openapi type outside [`Registry::builtin`] (JSON only: the
/// protobuf decoder's table covers the built-in kinds), for [`Registry::extended`].
pub fn typed_resource<T>(
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> ResourceInfo
where
    T: k8s_openapi::Resource + Serialize + DeserializeOwned + schemars::JsonSchema + 'static,
    T::Scope: Scope,
{
    entry::<T>(Entry {
        short_names,
        categories,
        subresources,
    })
}

/// Maps k8s-openapi's scope marker types to a flag.
pub trait Scope {
    const NAMESPACED: bool;
}
impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

macro_rules! e {
    ($short:expr, $cat:expr, $sub:expr) => {
        Entry {
            short_names: $short,
            categories: $cat,
            subresources: $sub,
        }
    };
}

impl Registry {
    /// The built-in kinds krust serves.
    pub fn builtin() -> Self {
        let resources = vec![
            entry::<core::Namespace>(e!(&["ns"], NONE, &["status", "finalize"])),
            entry::<core::Pod>(e!(
                &["po"],
                ALL,
                &[
                    "status",
                    "binding",
                    "eviction",
                    "log",
                    "exec",
                    "attach",
                    "portforward",
                    "proxy",
                    "ephemeralcontainers",
                    "resize"
                ]
            )),
            entry::<core::Service>(e!(&["svc"], ALL, &["status", "proxy"])),
            entry::<core::Endpoints>(e!(&["ep"], NONE, NONE)),
            entry::<core::ConfigMap>(e!(&["cm"], NONE, NONE)),
            entry::<core::Secret>(e!(NONE, NONE, NONE)),
            entry::<core::ServiceAccount>(e!(&["sa"], NONE, &["token"])),
            entry::<core::Node>(e!(&["no"], NONE, &["status", "proxy"])),
            entry::<core::Event>(e!(&["ev"], NONE, NONE)),
            entry::<core::PersistentVolume>(e!(&["pv"], NONE, STATUS)),
            entry::<core::PersistentVolumeClaim>(e!(&["pvc"], NONE, STATUS)),
            entry::<core::ReplicationController>(e!(&["rc"], ALL, STATUS_SCALE)),
            entry::<core::ResourceQuota>(e!(&["quota"], NONE, STATUS)),
            entry::<core::LimitRange>(e!(&["limits"], NONE, NONE)),
            entry::<core::PodTemplate>(e!(NONE, NONE, NONE)),
            entry::<apps::Deployment>(e!(&["deploy"], ALL, STATUS_SCALE)),
            entry::<apps::ReplicaSet>(e!(&["rs"], ALL, STATUS_SCALE)),
            entry::<apps::StatefulSet>(e!(&["sts"], ALL, STATUS_SCALE)),
            entry::<apps::DaemonSet>(e!(&["ds"], ALL, STATUS)),
            entry::<apps::ControllerRevision>(e!(NONE, NONE, NONE)),
            entry::<batch::Job>(e!(NONE, ALL, STATUS)),
            entry::<batch::CronJob>(e!(&["cj"], ALL, STATUS)),
            entry::<autoscaling::HorizontalPodAutoscaler>(e!(&["hpa"], ALL, STATUS)),
            entry::<coordination::Lease>(e!(NONE, NONE, NONE)),
            entry::<discovery::EndpointSlice>(e!(NONE, NONE, NONE)),
            entry::<events::Event>(e!(&["ev"], NONE, NONE)),
            entry::<networking::Ingress>(e!(&["ing"], NONE, STATUS)),
            entry::<networking::IngressClass>(e!(NONE, NONE, NONE)),
            entry::<networking::NetworkPolicy>(e!(&["netpol"], NONE, NONE)),
            entry::<certificates::CertificateSigningRequest>(e!(
                &["csr"],
                NONE,
                &["status", "approval"]
            )),
            entry::<storage::StorageClass>(e!(&["sc"], NONE, NONE)),
            entry::<scheduling::PriorityClass>(e!(&["pc"], NONE, NONE)),
            entry::<policy::PodDisruptionBudget>(e!(&["pdb"], NONE, STATUS)),
            entry::<rbac::Role>(e!(NONE, NONE, NONE)),
            entry::<rbac::RoleBinding>(e!(NONE, NONE, NONE)),
            entry::<rbac::ClusterRole>(e!(NONE, NONE, NONE)),
            entry::<rbac::ClusterRoleBinding>(e!(NONE, NONE, NONE)),
        ];
        Self::new(resources)
    }

    pub fn new(resources: Vec<ResourceInfo>) -> Self {
        let mut by_path = HashMap::new();
        let mut by_kind = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            by_path.insert(
                (
                    r.group.to_string(),
                    r.version.to_string(),
                    r.plural.to_string(),
                ),
                i,
            );
            by_kind.insert((r.api_version(), r.kind.to_string()), i);
        }
        Registry {
            resources,
            by_path,
            by_kind,
            generation: 0,
        }
    }

    /// These resources and `extra` (which lose to them on a clash of path or kind).
    pub fn extended(&self, extra: impl IntoIterator<Item = ResourceInfo>) -> Self {
        let mut resources = self.resources.clone();
        for r in extra {
            let clash = resources.iter().any(|o| {
                (o.group, o.version, o.plural) == (r.group, r.version, r.plural)
                    || (o.group, o.version, o.kind) == (r.group, r.version, r.kind)
            });
            if !clash {
                resources.push(r);
            }
        }
        Self::new(resources)
    }

    /// See [`SharedRegistry::replace`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource served at `/apis/<group>/<version>/<plural>`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|&i| &self.resources[i])
    }

    /// The resource for an object's `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
            .map(|&i| &self.resources[i])
    }

    /// Served group/versions in discovery order: core first, then groups by name; versions
    /// of one group in the order they were registered (preferred first).
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for r in &self.resources {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out.sort_by_key(|(g, _)| (!g.is_empty(), *g));
        out
    }

    /// Resources served in one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_served_kinds() {
        let r = Registry::builtin();
        let pods = r.lookup("", "v1", "pods").expect("pods served");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        let deploy = r
            .by_kind("apps/v1", "Deployment")
            .expect("deployments served");
        assert_eq!(deploy.plural, "deployments");
        assert!(deploy.has_subresource("scale"));
        let nodes = r.lookup("", "v1", "nodes").expect("nodes served");
        assert!(!nodes.namespaced);
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/core/nodes/n1");
        assert!(r.lookup("apps", "v1", "nothing").is_none());
        let ing = r
            .lookup("networking.k8s.io", "v1", "ingresses")
            .expect("ingresses served");
        assert_eq!(
            (ing.kind, ing.short_names, ing.namespaced),
            ("Ingress", &["ing"][..], true)
        );
        assert!(ing.has_subresource("status"));
        let class = r
            .by_kind("networking.k8s.io/v1", "IngressClass")
            .expect("ingressclasses served");
        assert_eq!((class.plural, class.namespaced), ("ingressclasses", false));
        assert_eq!(
            class.key(None, "nginx"),
            "/registry/networking.k8s.io/ingressclasses/nginx"
        );
        let netpol = r
            .lookup("networking.k8s.io", "v1", "networkpolicies")
            .expect("networkpolicies served");
        assert_eq!(netpol.short_names, &["netpol"]);
        assert!(!netpol.has_subresource("status"));
        let csr = r
            .lookup("certificates.k8s.io", "v1", "certificatesigningrequests")
            .expect("csrs served");
        assert_eq!(
            (csr.kind, csr.short_names, csr.namespaced),
            ("CertificateSigningRequest", &["csr"][..], false)
        );
        assert!(csr.has_subresource("status") && csr.has_subresource("approval"));
    }

    #[test]
    fn roundtrip_drops_unknown_fields() {
        let r = Registry::builtin();
        let cm = r.lookup("", "v1", "configmaps").expect("configmaps");
        let v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1});
        let out = cm.ops.roundtrip(v).expect("decodes");
        assert!(out.get("bogus").is_none());
        assert_eq!(out["data"]["k"], "v");
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": 5});
        assert!(cm.ops.roundtrip(bad).is_err());
    }
}
