//! OpenAPI v3 documents, built from the [`Registry`] alone.
//!
//! - [`OpenApi::index`]: `GET /openapi/v3`, `{"paths": {"api/v1": {"serverRelativeURL":
//!   "/openapi/v3/api/v1?hash=<HASH>"}, "apis/apps/v1": ...}}`.
//! - [`OpenApi::group_version`]: `GET /openapi/v3/api/v1` or `/openapi/v3/apis/{g}/{v}`: an
//!   OpenAPI 3.0 JSON document ([`Document`]: body bytes and content hash, for `ETag` and the
//!   `?hash=` check) with `components.schemas` holding every definition reachable from the
//!   group-version's kinds (k8s-openapi's schemas, refs as `#/components/schemas/<name>`), the
//!   synthesized `<Kind>List` schemas, `x-kubernetes-group-version-kind` on each top-level
//!   schema, the merge extensions (`x-kubernetes-patch-strategy`, `-patch-merge-key`,
//!   `-list-type`, `-list-map-keys`, `-map-type`) taken from the facts table the server's patch
//!   code uses ([`add_merge_extensions`]), and `paths` for every resource and subresource with
//!   `operationId`, `x-kubernetes-action`, `x-kubernetes-group-version-kind` and upstream's query
//!   parameters. kubectl's checks that rely on it: `explain` (finds the GVK on an operation of
//!   the resource's path, then the schema carrying that GVK), field validation (a `patch`
//!   operation with the object's GVK that lists a `fieldValidation` parameter means the server
//!   validates, so `--validate=strict` sends `fieldValidation=Strict` instead of validating
//!   client-side) and client-side `apply` (its three-way strategic merge patch takes merge keys
//!   and strategies from these documents; without them every list would be sent whole).
//! - [`group_version_document`]: the same document as a `Value`, as a pure function.
//!
//! Serving: answer `application/json`. When the request's `hash` query parameter equals
//! [`Document::hash`], upstream adds `Cache-Control: public, immutable` and a far `Expires`;
//! when it differs, it redirects (301) to the current `serverRelativeURL`.
//!
//! Cost (release build, built-in registry): the index needs every document's hash, so its
//! first call writes every document once into a hasher (about 20 ms) and keeps only the
//! hashes. Documents are built per request and not kept: `api/v1` (720 KB, 237 schemas) takes
//! about 8 ms, all ten together 1.9 MB; with the caching headers above, kubectl keeps them on
//! disk and asks again only when a hash changes.
//! Paths are written one resource at a time, so the peak is the schemas of one group-version;
//! after the first use, glibc keeps about 7 MB of that peak resident. Caching every body would
//! add about 2 MB for the life of the process, for requests that are rare.
//!
//! `/openapi/v2` is not generated: [`openapi_v2_protobuf`] (for protobuf `Accept`s, sent as
//! [`CONTENT_TYPE_V2_PROTOBUF`]) and [`openapi_v2_json`] are an empty swagger 2.0 document, which
//! is what kubectl 1.27 and 1.28 need before they use v3.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use k8s_openapi::api::{
    authentication::v1 as authentication, autoscaling::v1 as autoscaling, core::v1 as core,
    policy::v1 as policy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use krust_machinery::patch::facts::{self, FieldFacts, Granularity, ListType};
use krust_machinery::registry::{Registry, ResourceInfo, SharedRegistry};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use crate::discovery::{subresources, Subresource};

/// `Content-Type` of the documents.
pub const CONTENT_TYPE: &str = "application/json";

const SCHEMA_PREFIX: &str = "#/components/schemas/";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// One served OpenAPI v3 document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Compact JSON.
    pub body: Bytes,
    /// Content hash: the `hash` in the index's `serverRelativeURL`, and the `ETag` (quoted).
    pub hash: String,
}

impl Document {
    /// The `ETag` header value.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }
}

/// The OpenAPI v3 endpoints for one registry. Cheap to create; see the module docs for what
/// is computed when and what is kept.
pub struct OpenApi {
    registry: Arc<SharedRegistry>,
    /// Per document path: the fingerprint of the resources it was rendered from and its
    /// hash. A group-version is hashed again only when its resources change (a custom
    /// resource's schema), so a new CRD costs one document, not all of them.
    hashes: Mutex<HashMap<String, (String, String)>>,
}

/// What a group-version's document depends on: its resources and their schemas.
fn fingerprint(registry: &Registry, group: &str, version: &str) -> String {
    registry
        .in_group_version(group, version)
        .map(|r| format!("{}={}", r.plural, r.ops.schema_key()))
        .collect::<Vec<_>>()
        .join(",")
}

impl OpenApi {
    pub fn new(registry: Arc<SharedRegistry>) -> Self {
        OpenApi {
            registry,
            hashes: Mutex::default(),
        }
    }

    /// The document paths served: `api/v1`, `apis/apps/v1`, ...
    pub fn paths(&self) -> Vec<String> {
        self.registry
            .load()
            .group_versions()
            .into_iter()
            .map(|(g, v)| doc_path(g, v))
            .collect()
    }

    fn hashes(&self) -> Vec<(String, String)> {
        let registry = self.registry.load();
        let mut cache = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (g, v) in registry.group_versions() {
            let path = doc_path(g, v);
            let print = fingerprint(&registry, g, v);
            if let Some((p, hash)) = cache.get(&path) {
                if *p == print {
                    out.push((path, hash.clone()));
                    continue;
                }
            }
            // Hash while writing: no buffer for the document.
            let mut h = Fnv128::new();
            if let Ok(true) = write_document(&registry, g, v, &mut h) {
                cache.insert(path.clone(), (print, h.hex()));
                out.push((path, h.hex()));
            }
        }
        out
    }

    /// The current hash of the document at `path`; `None` if not served.
    pub fn hash(&self, path: &str) -> Option<String> {
        self.hashes()
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h)
    }

    /// `GET /openapi/v3`.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .hashes()
            .into_iter()
            .map(|(path, hash)| {
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/<path>` with `path` like `api/v1` or `apis/apps/v1` (no leading slash,
    /// no query); `None` if not served.
    pub fn group_version(&self, path: &str) -> Option<Document> {
        let registry = self.registry.load();
        let (g, v) = registry
            .group_versions()
            .into_iter()
            .find(|(g, v)| doc_path(g, v) == path)?;
        render(&registry, g, v)
    }
}

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn render(reg: &Registry, group: &str, version: &str) -> Option<Document> {
    let mut body = Vec::new();
    if !write_document(reg, group, version, &mut body).ok()? {
        return None;
    }
    let mut h = Fnv128::new();
    h.update(&body);
    Some(Document {
        body: Bytes::from(body),
        hash: h.hex(),
    })
}

/// FNV-1a, 128 bits: a content hash that is the same for any split of the input, on any
/// build. Only used to tell documents apart (cache keys), not against adversaries.
struct Fnv128(u128);

impl Fnv128 {
    fn new() -> Self {
        Fnv128(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self
                .0
                .wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
    }

    /// 32 upper-case hex digits.
    fn hex(&self) -> String {
        format!("{:032X}", self.0)
    }
}

impl std::io::Write for Fnv128 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Content-Type` of [`openapi_v2_protobuf`]. Clients ask with
/// `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, but `@` is not a MIME
/// token character and Go's `mime.ParseMediaType` (kubectl) rejects it in a response, so
/// upstream answers with this dotted form.
pub const CONTENT_TYPE_V2_PROTOBUF: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A minimal OpenAPI v2 document (gnostic `openapi_v2.Document` protobuf): `swagger: "2.0"` and
/// an `info`, no paths or definitions. kubectl 1.27 and 1.28 fetch `/openapi/v2` before
/// creating or explaining anything and fail on a 404; with this they go on to use v3.
pub fn openapi_v2_protobuf() -> &'static [u8] {
    // Document: field 1 (swagger) "2.0"; field 2 (info) = Info { field 1 (title) "krust",
    // field 2 (version) "v1" }.
    &[
        0x0a, 0x03, b'2', b'.', b'0', 0x12, 0x0b, 0x0a, 0x05, b'k', b'r', b'u', b's', b't', 0x12,
        0x02, b'v', b'1',
    ]
}

/// A minimal OpenAPI v2 document as JSON, for `Accept: application/json`.
pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "krust", "version": "v1"}, "paths": {}, "definitions": {}})
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{SCHEMA_PREFIX}{name}")})
}

/// Registers the schema of a subresource kind that is not a served resource (Scale, Eviction,
/// ...) and returns its definition name.
fn subresource_schema(gen: &mut SchemaGenerator, s: &Subresource) -> Option<String> {
    use schemars::JsonSchema;
    fn add<T: JsonSchema>(gen: &mut SchemaGenerator) -> Option<String> {
        gen.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    match (s.group, s.version, s.kind.as_str()) {
        ("autoscaling", "v1", "Scale") => add::<autoscaling::Scale>(gen),
        ("policy", "v1", "Eviction") => add::<policy::Eviction>(gen),
        ("", "v1", "Binding") => add::<core::Binding>(gen),
        ("authentication.k8s.io", "v1", "TokenRequest") => add::<authentication::TokenRequest>(gen),
        _ => None,
    }
}

/// The OpenAPI v3 document of one group-version as a `Value`; `None` if nothing is served
/// there. The served bytes ([`OpenApi::group_version`]) are this document, written without
/// building it whole.
pub fn group_version_document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut body = Vec::new();
    if !write_document(reg, group, version, &mut body).ok()? {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// Writes the document of one group-version as compact JSON; `Ok(false)` (nothing written) if
/// nothing is served there. Paths are built and written one resource at a time to keep the
/// peak memory down: the schemas, which schemars produces all at once, dominate it.
fn write_document(
    reg: &Registry,
    group: &str,
    version: &str,
    w: &mut dyn std::io::Write,
) -> std::io::Result<bool> {
    let mut resources: Vec<&ResourceInfo> = reg.in_group_version(group, version).collect();
    resources.sort_by(|a, b| a.plural.cmp(b.plural));
    if resources.is_empty() {
        return Ok(false);
    }

    let mut gen = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut gvks: Vec<(String, Value)> = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    for r in &resources {
        r.ops.schema(&mut gen);
        let name = r.ops.schema_name();
        gvks.push((name.clone(), gvk(r.group, r.version, r.kind)));
        gvks.push((
            format!("{name}List"),
            gvk(r.group, r.version, &r.list_kind()),
        ));
        let subs = subresources(r)
            .into_iter()
            .map(|s| {
                let schema =
                    if (s.group, s.version, s.kind.as_str()) == (r.group, r.version, r.kind) {
                        Some(name.clone())
                    } else {
                        subresource_schema(&mut gen, &s)
                    };
                if let Some(schema) = &schema {
                    gvks.push((schema.clone(), gvk(s.group, s.version, &s.kind)));
                }
                (s, schema)
            })
            .collect();
        kinds.push(Kind {
            info: r,
            schema: name,
            subresources: subs,
        });
    }
    gen.subschema_for::<meta::ListMeta>();
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Status>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::WatchEvent<Value>>();
    gen.subschema_for::<meta::APIResourceList>();
    for (g, v) in [("", "v1"), (group, version)] {
        gvks.push((DELETE_OPTIONS.into(), gvk(g, v, "DeleteOptions")));
        gvks.push((WATCH_EVENT.into(), gvk(g, v, "WatchEvent")));
    }
    gvks.push((STATUS.into(), gvk("", "v1", "Status")));
    gvks.push((API_RESOURCE_LIST.into(), gvk("", "v1", "APIResourceList")));

    let mut schemas: BTreeMap<String, Value> = gen.take_definitions(true).into_iter().collect();
    for k in &kinds {
        let list = list_schema(&k.schema, k.info.kind, schemas.get(&k.schema));
        schemas.insert(format!("{}List", k.schema), list);
    }
    for (name, schema) in schemas.iter_mut() {
        drop_required_metadata(schema);
        add_merge_extensions(name, schema);
    }
    for (name, gvk) in gvks {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            let list = s
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| json!([]));
            if let Value::Array(list) = list {
                if !list.contains(&gvk) {
                    list.push(gvk);
                }
            }
        }
    }

    // {"openapi":..,"info":..,"paths":{..},"components":{"schemas":{..},"securitySchemes":{..}}}
    // Paths come resource by resource (sorted by plural), each resource's sorted by path.
    let ctx = Ctx::new(group, version);
    w.write_all(
        br#"{"openapi":"3.0.0","info":{"title":"Kubernetes","version":"unversioned"},"paths":{"#,
    )?;
    let mut first = true;
    let mut emit =
        |w: &mut dyn std::io::Write, paths: BTreeMap<String, Value>| -> std::io::Result<()> {
            for (path, item) in paths {
                if !std::mem::take(&mut first) {
                    w.write_all(b",")?;
                }
                serde_json::to_writer(&mut *w, &path)?;
                w.write_all(b":")?;
                serde_json::to_writer(&mut *w, &item)?;
            }
            Ok(())
        };
    let resource_list = json!({"get": {
        "description": "list the resources served in this group-version",
        "operationId": format!("get{}APIResources", ctx.op_gv),
        "tags": [ctx.tag],
        "responses": responses(&[("200", "OK")], &[CONTENT_TYPE], &schema_ref(API_RESOURCE_LIST)),
    }});
    emit(
        w,
        BTreeMap::from([(format!("{}/", ctx.prefix), resource_list)]),
    )?;
    for k in &kinds {
        let mut paths = BTreeMap::new();
        ctx.resource_paths(k, &mut paths);
        emit(w, paths)?;
    }
    w.write_all(br#"},"components":{"schemas":{"#)?;
    for (i, (name, schema)) in schemas.into_iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, &name)?;
        w.write_all(b":")?;
        serde_json::to_writer(&mut *w, &schema)?;
    }
    w.write_all(b"},\"securitySchemes\":")?;
    let security = json!({"BearerToken": {
        "type": "apiKey",
        "in": "header",
        "name": "authorization",
        "description": "Bearer token: \"Authorization: Bearer <token>\"",
    }});
    serde_json::to_writer(&mut *w, &security)?;
    w.write_all(b"}}")?;
    Ok(true)
}

struct Kind<'a> {
    info: &'a ResourceInfo,
    /// Definition name of the kind.
    schema: String,
    /// Subresources with the definition name of their kind, where it has one.
    subresources: Vec<(Subresource, Option<String>)>,
}

/// `<Kind>List`: k8s-openapi has no schema for its generic `List<T>`, so it is written here in
/// upstream's shape, reusing the kind's own `apiVersion` and `kind` property schemas.
fn list_schema(item: &str, kind: &str, item_schema: Option<&Value>) -> Value {
    let prop = |name: &str| {
        item_schema
            .and_then(|s| s.pointer(&format!("/properties/{name}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {"description": format!("The {kind} objects."), "type": "array", "items": schema_ref(item)},
            "kind": prop("kind"),
            "metadata": {"description": "Standard list metadata.", "allOf": [schema_ref(LIST_META)]},
        },
        "required": ["items"],
    })
}

/// k8s-openapi marks `metadata` required on every resource (it is not optional in Rust);
/// upstream does not, and `kubectl explain` would show `-required-`.
fn drop_required_metadata(schema: &mut Value) {
    let meta_ref = format!("{SCHEMA_PREFIX}{OBJECT_META}");
    let is_object_meta = |v: &Value| {
        v.get("$ref").and_then(Value::as_str) == Some(meta_ref.as_str())
            || v.get("allOf").and_then(Value::as_array).is_some_and(|a| {
                a.iter()
                    .any(|s| s.get("$ref").and_then(Value::as_str) == Some(meta_ref.as_str()))
            })
    };
    let Value::Object(obj) = schema else { return };
    if !obj
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .is_some_and(is_object_meta)
    {
        return;
    }
    if let Some(Value::Array(req)) = obj.get_mut("required") {
        req.retain(|r| r != "metadata");
        if req.is_empty() {
            obj.remove("required");
        }
    }
}

/// Adds upstream's merge extensions to definition `def`, from the facts table the server's own
/// patch code merges by ([`facts`]), so that clients computing patches (`kubectl apply`'s
/// three-way strategic merge, server-side apply tooling) agree with the server:
///
/// - on each listed property: `x-kubernetes-patch-strategy` (`merge`, `retainKeys`,
///   `replace`, comma-joined) and `x-kubernetes-patch-merge-key`; on a list,
///   `x-kubernetes-list-type` (`atomic`, `set`, `map`) and `x-kubernetes-list-map-keys`; on a
///   map or struct, `x-kubernetes-map-type` (`atomic`, `granular`);
/// - on a definition that is an atomic struct: `x-kubernetes-map-type: atomic`.
fn add_merge_extensions(def: &str, schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    if facts::atomic_struct(def) {
        obj.insert("x-kubernetes-map-type".into(), json!("atomic"));
    }
    let Some(Value::Object(props)) = obj.get_mut("properties") else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if let (Some(f), Value::Object(prop)) = (facts::field(def, name), prop) {
            property_merge_extensions(f, prop);
        }
    }
}

/// The extensions of one property schema (see [`add_merge_extensions`]).
fn property_merge_extensions(f: &FieldFacts, prop: &mut Map<String, Value>) {
    let strategy: Vec<&str> = [
        (f.patch_merge, "merge"),
        (f.patch_replace, "replace"),
        (f.retain_keys, "retainKeys"),
    ]
    .into_iter()
    .filter_map(|(on, s)| on.then_some(s))
    .collect();
    if !strategy.is_empty() {
        prop.insert(
            "x-kubernetes-patch-strategy".into(),
            json!(strategy.join(",")),
        );
    }
    if let Some(key) = f.merge_key {
        prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
    }
    if prop.get("type").and_then(Value::as_str) == Some("array") {
        match f.list_type {
            Some(ListType::Atomic) => {
                prop.insert("x-kubernetes-list-type".into(), json!("atomic"));
            }
            Some(ListType::Set) => {
                prop.insert("x-kubernetes-list-type".into(), json!("set"));
            }
            Some(ListType::Map(keys)) => {
                prop.insert("x-kubernetes-list-type".into(), json!("map"));
                prop.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            }
            None => {}
        }
    } else {
        match f.granularity {
            Some(Granularity::Atomic) => {
                prop.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
            Some(Granularity::Granular) => {
                prop.insert("x-kubernetes-map-type".into(), json!("granular"));
            }
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and operations.

/// Query and path parameters: name, location, type, description.
type Param = (&'static str, &'static str, &'static str, &'static str);

const P_PRETTY: Param = (
    "pretty",
    "query",
    "string",
    "If 'true', the output is indented.",
);
const P_NAME: Param = ("name", "path", "string", "Name of the object.");
const P_NAMESPACE: Param = ("namespace", "path", "string", "Namespace of the object.");
const P_PATH: Param = ("path", "path", "string", "Path to proxy to.");
const P_DRY_RUN: Param = (
    "dryRun",
    "query",
    "string",
    "\"All\": run every stage of the request but persist nothing.",
);
const P_FIELD_MANAGER: Param = (
    "fieldManager",
    "query",
    "string",
    "Name of the actor making the change, recorded in managedFields. Required for apply patches.",
);
const P_FIELD_VALIDATION: Param = (
    "fieldValidation",
    "query",
    "string",
    "How to treat unknown or duplicate fields in the body: Ignore, Warn (succeed with warnings) or Strict (fail).",
);
const P_FORCE: Param = (
    "force",
    "query",
    "boolean",
    "Apply patches only: take ownership of fields managed by others.",
);
const P_GRACE: Param = (
    "gracePeriodSeconds",
    "query",
    "integer",
    "Seconds before the object is deleted; 0 means now.",
);
const P_ORPHAN: Param = (
    "orphanDependents",
    "query",
    "boolean",
    "Deprecated, use propagationPolicy: whether dependents are orphaned.",
);
const P_PROPAGATION: Param = (
    "propagationPolicy",
    "query",
    "string",
    "Garbage collection of dependents: Orphan, Background or Foreground.",
);
const P_LABEL_SELECTOR: Param = (
    "labelSelector",
    "query",
    "string",
    "Only objects whose labels match this selector.",
);
const P_FIELD_SELECTOR: Param = (
    "fieldSelector",
    "query",
    "string",
    "Only objects whose fields match this selector.",
);
const P_RV: Param = (
    "resourceVersion",
    "query",
    "string",
    "Resource version the result must be at least as new as.",
);
const P_RV_MATCH: Param = (
    "resourceVersionMatch",
    "query",
    "string",
    "How resourceVersion applies: Exact or NotOlderThan.",
);
const P_TIMEOUT: Param = (
    "timeoutSeconds",
    "query",
    "integer",
    "Time limit of the list or watch call.",
);
const P_LIMIT: Param = (
    "limit",
    "query",
    "integer",
    "Most objects to return; more are announced by metadata.continue.",
);
const P_CONTINUE: Param = (
    "continue",
    "query",
    "string",
    "Token from a previous list's metadata.continue.",
);
const P_WATCH: Param = (
    "watch",
    "query",
    "boolean",
    "Stream changes instead of listing.",
);
const P_BOOKMARKS: Param = (
    "allowWatchBookmarks",
    "query",
    "boolean",
    "Ask for BOOKMARK events on watches.",
);
const P_INITIAL_EVENTS: Param = (
    "sendInitialEvents",
    "query",
    "boolean",
    "Start a watch with synthetic ADDED events for the current state.",
);

const LIST_PARAMS: &[Param] = &[
    P_BOOKMARKS,
    P_CONTINUE,
    P_FIELD_SELECTOR,
    P_LABEL_SELECTOR,
    P_LIMIT,
    P_RV,
    P_RV_MATCH,
    P_INITIAL_EVENTS,
    P_TIMEOUT,
    P_WATCH,
];
const WRITE_PARAMS: &[Param] = &[P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION, P_FORCE];
const DELETE_PARAMS: &[Param] = &[P_DRY_RUN, P_GRACE, P_ORPHAN, P_PROPAGATION];
const DELETE_COLLECTION_PARAMS: &[Param] = &[
    P_CONTINUE,
    P_DRY_RUN,
    P_FIELD_SELECTOR,
    P_GRACE,
    P_LABEL_SELECTOR,
    P_LIMIT,
    P_ORPHAN,
    P_PROPAGATION,
    P_RV,
    P_RV_MATCH,
    P_INITIAL_EVENTS,
    P_TIMEOUT,
];
const LOG_PARAMS: &[Param] = &[
    (
        "container",
        "query",
        "string",
        "Container to read from; may be omitted when the pod has one.",
    ),
    ("follow", "query", "boolean", "Stream the log as it grows."),
    (
        "insecureSkipTLSVerifyBackend",
        "query",
        "boolean",
        "Do not verify the kubelet's serving certificate.",
    ),
    (
        "limitBytes",
        "query",
        "integer",
        "Stop after this many bytes.",
    ),
    (
        "previous",
        "query",
        "boolean",
        "Log of the previous, terminated instance of the container.",
    ),
    (
        "sinceSeconds",
        "query",
        "integer",
        "Only lines newer than this many seconds.",
    ),
    ("stream", "query", "string", "All, Stdout or Stderr."),
    (
        "tailLines",
        "query",
        "integer",
        "Only this many lines from the end.",
    ),
    (
        "timestamps",
        "query",
        "boolean",
        "Prefix each line with its RFC3339 timestamp.",
    ),
];
const EXEC_PARAMS: &[Param] = &[
    (
        "command",
        "query",
        "string",
        "Command to run; repeat the parameter for each argument.",
    ),
    ("container", "query", "string", "Container to run in."),
    ("stderr", "query", "boolean", "Stream standard error."),
    ("stdin", "query", "boolean", "Stream standard input."),
    ("stdout", "query", "boolean", "Stream standard output."),
    ("tty", "query", "boolean", "Allocate a terminal."),
];
const ATTACH_PARAMS: &[Param] = &[
    ("container", "query", "string", "Container to attach to."),
    ("stderr", "query", "boolean", "Stream standard error."),
    ("stdin", "query", "boolean", "Stream standard input."),
    ("stdout", "query", "boolean", "Stream standard output."),
    (
        "tty",
        "query",
        "boolean",
        "The container's terminal is used.",
    ),
];
const PORTFORWARD_PARAMS: &[Param] = &[("ports", "query", "integer", "Ports to forward.")];
const PROXY_PARAMS: &[Param] = &[("path", "query", "string", "Path to proxy to.")];

fn params(list: &[Param]) -> Value {
    Value::Array(
        list.iter()
            .map(|(name, place, ty, description)| {
                let mut p = json!({"name": name, "in": place, "description": description, "schema": {"type": ty}});
                if *place == "path" {
                    p["required"] = json!(true);
                }
                p
            })
            .collect(),
    )
}

fn content(types: &[&str], schema: &Value) -> Value {
    Value::Object(
        types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": schema})))
            .collect(),
    )
}

fn responses(codes: &[(&str, &str)], types: &[&str], schema: &Value) -> Value {
    let mut out: Map<String, Value> = codes
        .iter()
        .map(|(code, description)| {
            (
                code.to_string(),
                json!({"description": description, "content": content(types, schema)}),
            )
        })
        .collect();
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

const JSON: &[&str] = &["application/json"];
const LIST_TYPES: &[&str] = &["application/json", "application/json;stream=watch"];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

type Codes = &'static [(&'static str, &'static str)];
const OK: Codes = &[("200", "OK")];
const OK_CREATED: Codes = &[("200", "OK"), ("201", "Created")];
const OK_CREATED_ACCEPTED: Codes = &[("200", "OK"), ("201", "Created"), ("202", "Accepted")];
const OK_ACCEPTED: Codes = &[("200", "OK"), ("202", "Accepted")];

/// Where an operation of a resource lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Collection,
    Item,
    AllNamespaces,
    WatchCollection,
    WatchItem,
    WatchAllNamespaces,
}

/// What an operation sends or returns.
#[derive(Clone, Copy)]
enum Body {
    None,
    Object,
    List,
    Patch,
    DeleteOptions,
    Status,
    WatchEvent,
    Text,
}

/// One operation. Its id is `{verb}{GroupVersion}{infix}[Namespaced]{Kind}{suffix}`, and
/// `{kind}` in the description is replaced by the kind.
struct OpSpec {
    method: &'static str,
    action: &'static str,
    verb: &'static str,
    infix: &'static str,
    suffix: &'static str,
    description: &'static str,
    params: &'static [Param],
    body: Body,
    response: Body,
    types: &'static [&'static str],
    codes: Codes,
}

#[allow(clippy::too_many_arguments)]
const fn spec(
    method: &'static str,
    action: &'static str,
    (verb, infix, suffix): (&'static str, &'static str, &'static str),
    description: &'static str,
    params: &'static [Param],
    body: Body,
    (response, types, codes): (Body, &'static [&'static str], Codes),
) -> OpSpec {
    OpSpec {
        method,
        action,
        verb,
        infix,
        suffix,
        description,
        params,
        body,
        response,
        types,
        codes,
    }
}

/// The operations of every resource, upstream's set.
const RESOURCE_OPS: &[(At, OpSpec)] = &[
    (
        At::Collection,
        spec(
            "get",
            "list",
            ("list", "", ""),
            "list or watch objects of kind {kind}",
            LIST_PARAMS,
            Body::None,
            (Body::List, LIST_TYPES, OK),
        ),
    ),
    (
        At::Collection,
        spec(
            "post",
            "post",
            ("create", "", ""),
            "create a {kind}",
            WRITE_PARAMS,
            Body::Object,
            (Body::Object, JSON, OK_CREATED_ACCEPTED),
        ),
    ),
    (
        At::Collection,
        spec(
            "delete",
            "deletecollection",
            ("delete", "Collection", ""),
            "delete a collection of {kind} objects",
            DELETE_COLLECTION_PARAMS,
            Body::DeleteOptions,
            (Body::Status, JSON, OK),
        ),
    ),
    (
        At::Item,
        spec(
            "get",
            "get",
            ("read", "", ""),
            "read the named {kind}",
            &[],
            Body::None,
            (Body::Object, JSON, OK),
        ),
    ),
    (
        At::Item,
        spec(
            "put",
            "put",
            ("replace", "", ""),
            "replace the named {kind}",
            WRITE_PARAMS,
            Body::Object,
            (Body::Object, JSON, OK_CREATED),
        ),
    ),
    (
        At::Item,
        spec(
            "patch",
            "patch",
            ("patch", "", ""),
            "partially update the named {kind}",
            PATCH_PARAMS,
            Body::Patch,
            (Body::Object, JSON, OK_CREATED),
        ),
    ),
    (
        At::Item,
        spec(
            "delete",
            "delete",
            ("delete", "", ""),
            "delete the named {kind}",
            DELETE_PARAMS,
            Body::DeleteOptions,
            (Body::Status, JSON, OK_ACCEPTED),
        ),
    ),
    (
        At::AllNamespaces,
        spec(
            "get",
            "list",
            ("list", "", "ForAllNamespaces"),
            "list or watch objects of kind {kind} in all namespaces",
            LIST_PARAMS,
            Body::None,
            (Body::List, LIST_TYPES, OK),
        ),
    ),
    (
        At::WatchCollection,
        spec(
            "get",
            "watchlist",
            ("watch", "", "List"),
            "watch objects of kind {kind}; deprecated: use list with watch=true",
            LIST_PARAMS,
            Body::None,
            (Body::WatchEvent, LIST_TYPES, OK),
        ),
    ),
    (
        At::WatchItem,
        spec(
            "get",
            "watch",
            ("watch", "", ""),
            "watch the named {kind}; deprecated: use list with watch=true and a fieldSelector",
            LIST_PARAMS,
            Body::None,
            (Body::WatchEvent, LIST_TYPES, OK),
        ),
    ),
    (
        At::WatchAllNamespaces,
        spec(
            "get",
            "watchlist",
            ("watch", "", "ListForAllNamespaces"),
            "watch objects of kind {kind} in all namespaces; deprecated: use list with watch=true",
            LIST_PARAMS,
            Body::None,
            (Body::WatchEvent, LIST_TYPES, OK),
        ),
    ),
];

/// The operations of a subresource that sends and returns an object (status, scale, ...), by
/// the discovery verb that enables each.
const SUBRESOURCE_OPS: &[(&str, OpSpec)] = &[
    (
        "get",
        spec(
            "get",
            "get",
            ("read", "", ""),
            "read {sub} of the named {kind}",
            &[],
            Body::None,
            (Body::Object, JSON, OK),
        ),
    ),
    (
        "update",
        spec(
            "put",
            "put",
            ("replace", "", ""),
            "replace {sub} of the named {kind}",
            WRITE_PARAMS,
            Body::Object,
            (Body::Object, JSON, OK_CREATED),
        ),
    ),
    (
        "patch",
        spec(
            "patch",
            "patch",
            ("patch", "", ""),
            "partially update {sub} of the named {kind}",
            PATCH_PARAMS,
            Body::Patch,
            (Body::Object, JSON, OK_CREATED),
        ),
    ),
    (
        "create",
        spec(
            "post",
            "post",
            ("create", "", ""),
            "create {sub} of the named {kind}",
            WRITE_PARAMS,
            Body::Object,
            (Body::Object, JSON, OK_CREATED_ACCEPTED),
        ),
    ),
];

const LOG_OP: OpSpec = spec(
    "get",
    "get",
    ("read", "", ""),
    "read the log of the named {kind}",
    LOG_PARAMS,
    Body::None,
    (Body::Text, &["text/plain"], OK),
);

/// Streaming subresources (`connect`): their methods and query parameters.
fn connect_ops(sub: &str) -> Option<(&'static [&'static str], &'static [Param])> {
    match sub {
        "exec" => Some((&["get", "post"], EXEC_PARAMS)),
        "attach" => Some((&["get", "post"], ATTACH_PARAMS)),
        "portforward" => Some((&["get", "post"], PORTFORWARD_PARAMS)),
        "proxy" => Some((&["delete", "get", "patch", "post", "put"], PROXY_PARAMS)),
        _ => None,
    }
}

struct Ctx {
    group: String,
    version: String,
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: String,
    /// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group-version in operation ids.
    op_gv: String,
    /// `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
    tag: String,
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// The schemas an operation of one resource or subresource refers to.
struct Refs {
    object: Value,
    list: Value,
}

impl Refs {
    fn get(&self, body: Body) -> Value {
        match body {
            Body::None => Value::Null,
            Body::Object => self.object.clone(),
            Body::List => self.list.clone(),
            Body::Patch => schema_ref(PATCH),
            Body::DeleteOptions => schema_ref(DELETE_OPTIONS),
            Body::Status => schema_ref(STATUS),
            Body::WatchEvent => schema_ref(WATCH_EVENT),
            Body::Text => json!({"type": "string"}),
        }
    }
}

impl Ctx {
    fn new(group: &str, version: &str) -> Self {
        let (prefix, group_camel) = if group.is_empty() {
            (format!("/api/{version}"), "core".to_string())
        } else {
            let short = group.strip_suffix(".k8s.io").unwrap_or(group);
            let mut parts = short.split(['.', '-']);
            let mut camel = parts.next().unwrap_or_default().to_string();
            for p in parts {
                camel.push_str(&upper_first(p));
            }
            (format!("/apis/{group}/{version}"), camel)
        };
        Ctx {
            group: group.to_string(),
            version: version.to_string(),
            op_gv: format!("{}{}", upper_first(&group_camel), upper_first(version)),
            tag: format!("{group_camel}_{version}"),
            prefix,
        }
    }

    /// Adds one operation to the path item at `path`, creating it with `path_params` (and
    /// `pretty`) first.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        paths: &mut BTreeMap<String, Value>,
        path: String,
        path_params: &[Param],
        op: &OpSpec,
        id: String,
        description: String,
        refs: &Refs,
        gvk: &Value,
    ) {
        let item = paths.entry(path).or_insert_with(|| {
            let mut all = path_params.to_vec();
            all.push(P_PRETTY);
            json!({"parameters": params(&all)})
        });
        let mut o = json!({
            "description": description,
            "operationId": id,
            "tags": [self.tag],
            "responses": responses(op.codes, op.types, &refs.get(op.response)),
            "x-kubernetes-action": op.action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if !op.params.is_empty() {
            o["parameters"] = params(op.params);
        }
        let body_types = match op.body {
            Body::None => None,
            Body::Patch => Some(PATCH_TYPES),
            _ => Some(JSON),
        };
        if let Some(types) = body_types {
            o["requestBody"] =
                json!({"required": true, "content": content(types, &refs.get(op.body))});
        }
        item[op.method] = o;
    }

    fn resource_paths(&self, k: &Kind, paths: &mut BTreeMap<String, Value>) {
        let r = k.info;
        let gvk_v = gvk(&self.group, &self.version, r.kind);
        let refs = Refs {
            object: schema_ref(&k.schema),
            list: schema_ref(&format!("{}List", k.schema)),
        };
        let (ns, ns_params): (&str, &[Param]) = if r.namespaced {
            ("Namespaced", &[P_NAMESPACE])
        } else {
            ("", &[])
        };
        let scope = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let item_params: Vec<Param> = [P_NAME]
            .into_iter()
            .chain(ns_params.iter().copied())
            .collect();
        let (prefix, plural) = (&self.prefix, r.plural);
        for (at, op) in RESOURCE_OPS {
            let (path, path_params, ns) = match at {
                At::Collection => (format!("{prefix}{scope}/{plural}"), ns_params, ns),
                At::Item => (
                    format!("{prefix}{scope}/{plural}/{{name}}"),
                    &item_params[..],
                    ns,
                ),
                At::WatchCollection => (format!("{prefix}/watch{scope}/{plural}"), ns_params, ns),
                At::WatchItem => (
                    format!("{prefix}/watch{scope}/{plural}/{{name}}"),
                    &item_params[..],
                    ns,
                ),
                At::AllNamespaces if r.namespaced => (format!("{prefix}/{plural}"), &[][..], ""),
                At::WatchAllNamespaces if r.namespaced => {
                    (format!("{prefix}/watch/{plural}"), &[][..], "")
                }
                At::AllNamespaces | At::WatchAllNamespaces => continue,
            };
            let id = format!(
                "{}{}{}{ns}{}{}",
                op.verb, self.op_gv, op.infix, r.kind, op.suffix
            );
            let description = op.description.replace("{kind}", r.kind);
            self.add(paths, path, path_params, op, id, description, &refs, &gvk_v);
        }

        let item = format!("{prefix}{scope}/{plural}/{{name}}");
        for (s, schema) in &k.subresources {
            let path = format!("{item}/{}", s.name);
            let sub_gvk = gvk(s.group, s.version, &s.kind);
            let sub = upper_first(s.name);
            let id = |verb: &str| format!("{verb}{}{ns}{}{sub}", self.op_gv, r.kind);
            let describe = |op: &OpSpec| {
                op.description
                    .replace("{sub}", s.name)
                    .replace("{kind}", r.kind)
            };
            if s.name == "log" {
                let refs = Refs {
                    object: Value::Null,
                    list: Value::Null,
                };
                self.add(
                    paths,
                    path,
                    &item_params,
                    &LOG_OP,
                    id("read"),
                    describe(&LOG_OP),
                    &refs,
                    &sub_gvk,
                );
            } else if let Some((methods, query)) = connect_ops(s.name) {
                let refs = Refs {
                    object: Value::Null,
                    list: Value::Null,
                };
                let with_path: Vec<Param> = item_params.iter().copied().chain([P_PATH]).collect();
                for method in methods.iter().copied() {
                    let m = upper_first(method);
                    let description = format!(
                        "connect {} requests to {} of the named {}",
                        method.to_ascii_uppercase(),
                        s.name,
                        r.kind
                    );
                    let op = spec(
                        method,
                        "connect",
                        ("", "", ""),
                        "",
                        query,
                        Body::None,
                        (Body::Text, &["*/*"], OK),
                    );
                    self.add(
                        paths,
                        path.clone(),
                        &item_params,
                        &op,
                        id(&format!("connect{m}")),
                        description.clone(),
                        &refs,
                        &sub_gvk,
                    );
                    if s.name == "proxy" {
                        let op = OpSpec { params: &[], ..op };
                        let id = format!("{}WithPath", id(&format!("connect{m}")));
                        self.add(
                            paths,
                            format!("{path}/{{path}}"),
                            &with_path,
                            &op,
                            id,
                            description,
                            &refs,
                            &sub_gvk,
                        );
                    }
                }
            } else if let Some(schema) = schema {
                let refs = Refs {
                    object: schema_ref(schema),
                    list: Value::Null,
                };
                for (verb, op) in SUBRESOURCE_OPS {
                    if s.verbs.contains(verb) {
                        self.add(
                            paths,
                            path.clone(),
                            &item_params,
                            op,
                            id(op.verb),
                            describe(op),
                            &refs,
                            &sub_gvk,
                        );
                    }
                }
            }
            // Otherwise the subresource's kind has no schema here: nothing to describe.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn doc(reg: &Registry, path: &str) -> Value {
        let api = OpenApi::new(Arc::new(SharedRegistry::new(reg.clone())));
        let d = api
            .group_version(path)
            .unwrap_or_else(|| panic!("{path} served"));
        serde_json::from_slice(&d.body).expect("parses")
    }

    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    /// Follows a `$ref` (direct or as the single `allOf`) like kubectl explain does.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        let r = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("allOf")
                    .and_then(|a| a.get(0))
                    .and_then(|a| a.get("$ref"))
            })
            .and_then(Value::as_str);
        match r.and_then(|r| r.strip_prefix(SCHEMA_PREFIX)) {
            Some(name) => resolve(doc, &doc["components"]["schemas"][name]),
            None => schema,
        }
    }

    /// kubectl explain: GVK from an operation on the resource path, then the schema with it.
    fn explain<'a>(doc: &'a Value, resource_path: &str, fields: &[&str]) -> &'a Value {
        let gvk = &doc["paths"][resource_path]["get"]["x-kubernetes-group-version-kind"];
        assert!(gvk.is_object(), "no GVK on {resource_path}");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut s = schemas
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| l.contains(gvk))
            })
            .expect("schema with GVK");
        for f in fields {
            s = resolve(doc, s);
            if let Some(items) = s.get("items") {
                s = resolve(doc, items);
            }
            s = s["properties"]
                .get(*f)
                .unwrap_or_else(|| panic!("field {f}"));
        }
        let s = resolve(doc, s);
        s.get("items").map(|i| resolve(doc, i)).unwrap_or(s)
    }

    #[test]
    fn every_document_is_self_contained() {
        let reg = Registry::builtin();
        let api = OpenApi::new(Arc::new(SharedRegistry::new(reg.clone())));
        assert!(!api.paths().is_empty());
        for path in api.paths() {
            let d = doc(&reg, &path);
            assert_eq!(d["openapi"], "3.0.0");
            let schemas = d["components"]["schemas"].as_object().expect("schemas");
            let mut refs = Vec::new();
            collect_refs(&d, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r
                    .strip_prefix(SCHEMA_PREFIX)
                    .unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
                assert!(schemas.contains_key(name), "{path}: dangling ref {r}");
            }
            let mut ids = BTreeSet::new();
            for (p, item) in d["paths"].as_object().expect("paths") {
                for (method, op) in item.as_object().expect("path item") {
                    if method == "parameters" {
                        continue;
                    }
                    let id = op["operationId"].as_str().expect("operationId");
                    assert!(
                        ids.insert(id.to_string()),
                        "{path}: duplicate operationId {id} at {p}"
                    );
                    if p.ends_with('/') {
                        continue; // the group-version's resource list: no kind
                    }
                    assert!(op["x-kubernetes-action"].is_string());
                    assert!(op["x-kubernetes-group-version-kind"]["kind"].is_string());
                    // Every patch operation must list fieldValidation: kubectl checks whichever
                    // patch operation of the GVK it meets first.
                    if method == "patch" {
                        let names: Vec<&str> = op["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p["name"].as_str())
                            .collect();
                        let is_connect = op["x-kubernetes-action"] == "connect";
                        assert!(
                            is_connect || names.contains(&"fieldValidation"),
                            "{path}: {p} patch lacks fieldValidation"
                        );
                    }
                }
            }
        }
        assert!(api.group_version("api/v2").is_none());
        assert!(api.group_version("/api/v1").is_none());
        assert!(group_version_document(&reg, "nope", "v1").is_none());
    }

    #[test]
    fn core_v1_has_pods_with_gvk_and_field_validation() {
        let reg = Registry::builtin();
        let d = doc(&reg, "api/v1");
        let schemas = &d["components"]["schemas"];
        let pod_gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
        assert_eq!(
            schemas["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([pod_gvk])
        );
        assert!(schemas["io.k8s.api.core.v1.Pod"].get("required").is_none());
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "PodList"}])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        assert!(schemas[DELETE_OPTIONS]["x-kubernetes-group-version-kind"]
            .as_array()
            .is_some_and(
                |l| l.contains(&json!({"group": "", "version": "v1", "kind": "DeleteOptions"}))
            ));
        assert_eq!(
            schemas[STATUS]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Status"}])
        );
        assert!(
            schemas["io.k8s.api.policy.v1.Eviction"]["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|l| l
                    .contains(&json!({"group": "policy", "version": "v1", "kind": "Eviction"})))
        );

        let item = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        let patch = &item["patch"];
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(patch["x-kubernetes-group-version-kind"], pod_gvk);
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for p in ["fieldValidation", "dryRun", "fieldManager", "force"] {
            assert!(names.contains(&p), "patch lacks {p}");
        }
        let types: Vec<&String> = patch["requestBody"]["content"]
            .as_object()
            .expect("content")
            .keys()
            .collect();
        assert_eq!(types, PATCH_TYPES.to_vec());
        assert_eq!(item["get"]["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(item["put"]["x-kubernetes-action"], "put");
        assert_eq!(item["delete"]["x-kubernetes-action"], "delete");
        let coll = &d["paths"]["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(coll["get"]["x-kubernetes-action"], "list");
        assert_eq!(coll["post"]["operationId"], "createCoreV1NamespacedPod");
        assert_eq!(coll["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(
            d["paths"]["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            d["paths"]["/api/v1/watch/namespaces/{namespace}/pods/{name}"]["get"]
                ["x-kubernetes-action"],
            "watch"
        );
        assert_eq!(
            d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]
                ["x-kubernetes-group-version-kind"],
            pod_gvk
        );
        assert_eq!(
            d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]["operationId"],
            "readCoreV1NamespacedPodLog"
        );
        assert_eq!(
            d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["post"]
                ["x-kubernetes-action"],
            "connect"
        );
        assert_eq!(
            d["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
            "readCoreV1Node"
        );
        assert_eq!(
            d["paths"]["/api/v1/namespaces/{name}/finalize"]["put"]["operationId"],
            "replaceCoreV1NamespaceFinalize"
        );
    }

    #[test]
    fn explain_paths_resolve() {
        let reg = Registry::builtin();
        let core = doc(&reg, "api/v1");
        let spec = explain(&core, "/api/v1/namespaces/{namespace}/pods", &["spec"]);
        assert!(spec["properties"]["containers"].is_object());
        let containers = explain(
            &core,
            "/api/v1/namespaces/{namespace}/pods",
            &["spec", "containers"],
        );
        assert!(containers["properties"]["image"].is_object());
        assert!(containers["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("name"))));
        let nodes = explain(&core, "/api/v1/nodes", &["spec"]);
        assert!(nodes["properties"]["podCIDR"].is_object());
        let apps = doc(&reg, "apis/apps/v1");
        let strategy = explain(
            &apps,
            "/apis/apps/v1/namespaces/{namespace}/deployments",
            &["spec", "strategy"],
        );
        assert!(strategy["properties"]["rollingUpdate"].is_object());
        assert!(strategy["properties"]["type"].is_object());
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(
            scale["get"]["operationId"],
            "readAppsV1NamespacedDeploymentScale"
        );
        assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
        let net = doc(&reg, "apis/networking.k8s.io/v1");
        let paths = explain(
            &net,
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses",
            &["spec", "rules", "http", "paths"],
        );
        assert!(paths["properties"]["pathType"].is_object());
        let policy = explain(
            &net,
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
            &["spec"],
        );
        assert!(policy["properties"]["podSelector"].is_object());
        assert!(net["paths"]["/apis/networking.k8s.io/v1/ingressclasses"].is_object());
        let certs = doc(&reg, "apis/certificates.k8s.io/v1");
        let spec = explain(
            &certs,
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &["spec"],
        );
        assert!(spec["properties"]["signerName"].is_object());
        for sub in ["approval", "status"] {
            let p =
                format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{{name}}/{sub}");
            assert!(certs["paths"][&p]["put"].is_object(), "{p}");
        }
        let rbac = doc(&reg, "apis/rbac.authorization.k8s.io/v1");
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]["operationId"],
            "listRbacAuthorizationV1ClusterRole"
        );
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]["tags"],
            json!(["rbacAuthorization_v1"])
        );
    }

    #[test]
    fn index_hashes_match_documents() {
        let reg = Arc::new(SharedRegistry::new(Registry::builtin()));
        let api = OpenApi::new(reg.clone());
        let index = api.index();
        let paths = index["paths"].as_object().expect("paths");
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        for (path, entry) in paths {
            let d = api.group_version(path).expect("served");
            assert_eq!(
                entry["serverRelativeURL"],
                format!("/openapi/v3/{path}?hash={}", d.hash)
            );
            assert_eq!(api.hash(path).as_deref(), Some(d.hash.as_str()));
            assert_eq!(d.hash.len(), 32);
            assert_eq!(d.etag(), format!("\"{}\"", d.hash));
        }
        // Deterministic: a second instance gives the same bytes.
        let again = OpenApi::new(reg);
        assert_eq!(again.group_version("api/v1"), api.group_version("api/v1"));
        assert_ne!(api.hash("api/v1"), api.hash("apis/apps/v1"));
        assert_eq!(api.hash("apis/nope/v1"), None);
    }

    const MERGE_EXTENSIONS: &[&str] = &[
        "x-kubernetes-patch-strategy",
        "x-kubernetes-patch-merge-key",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    ];

    #[test]
    fn merge_extensions_match_the_patch_facts() {
        let reg = Registry::builtin();
        let core_doc = doc(&reg, "api/v1");
        let s = &core_doc["components"]["schemas"];
        let pod_spec = &s["io.k8s.api.core.v1.PodSpec"]["properties"];
        let containers = &pod_spec["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(containers["type"], "array");
        let ports = &s["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(ports["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(ports["x-kubernetes-list-type"], "map");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        let env = &s["io.k8s.api.core.v1.Container"]["properties"]["env"];
        assert_eq!(env["x-kubernetes-patch-merge-key"], "name");
        let svc_ports = &s["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
        assert_eq!(
            svc_ports["x-kubernetes-list-map-keys"],
            json!(["port", "protocol"])
        );
        assert_eq!(
            pod_spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        // Atomic list: no patch strategy (replaced whole), list type atomic.
        let tolerations = &pod_spec["tolerations"];
        assert_eq!(tolerations["x-kubernetes-list-type"], "atomic");
        assert!(tolerations.get("x-kubernetes-patch-strategy").is_none());
        assert!(tolerations.get("x-kubernetes-map-type").is_none());
        // Atomic map: a map type, no list type.
        assert_eq!(pod_spec["nodeSelector"]["x-kubernetes-map-type"], "atomic");
        assert!(pod_spec["nodeSelector"]
            .get("x-kubernetes-list-type")
            .is_none());
        // Unlisted properties carry nothing.
        assert!(pod_spec["nodeName"]
            .as_object()
            .expect("nodeName")
            .keys()
            .all(|k| !MERGE_EXTENSIONS.contains(&k.as_str())));
        let meta = &s[OBJECT_META]["properties"];
        assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(meta["finalizers"]["x-kubernetes-list-type"], "set");
        assert!(meta["finalizers"]
            .get("x-kubernetes-patch-merge-key")
            .is_none());
        assert_eq!(
            meta["ownerReferences"]["x-kubernetes-patch-merge-key"],
            "uid"
        );
        // Atomic structs carry it on the definition.
        assert_eq!(
            s["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
            "atomic"
        );
        assert!(s["io.k8s.api.core.v1.PodSpec"]
            .get("x-kubernetes-map-type")
            .is_none());
        let claim_ref = &s["io.k8s.api.core.v1.PersistentVolumeSpec"]["properties"]["claimRef"];
        assert_eq!(claim_ref["x-kubernetes-map-type"], "granular");
        let apps = doc(&reg, "apis/apps/v1");
        assert_eq!(
            apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
                ["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );

        // Every document, every property: exactly what the facts say, nothing else.
        let api = OpenApi::new(Arc::new(SharedRegistry::new(reg.clone())));
        let mut seen = BTreeSet::new();
        for path in api.paths() {
            let d = doc(&reg, &path);
            for (def, schema) in d["components"]["schemas"].as_object().expect("schemas") {
                let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                    continue;
                };
                for (name, prop) in props {
                    let prop = prop.as_object().expect("property schema");
                    let mut expected = prop.clone();
                    expected.retain(|k, _| !MERGE_EXTENSIONS.contains(&k.as_str()));
                    if let Some(f) = facts::field(def, name) {
                        property_merge_extensions(f, &mut expected);
                        seen.insert((def.clone(), name.clone()));
                    }
                    assert_eq!(prop, &expected, "{path}: {def}.{name}");
                }
            }
        }
        for (def, name, _) in facts::all_fields() {
            assert!(
                seen.contains(&(def.to_string(), name.to_string())),
                "{def}.{name} is in the facts but in no document"
            );
        }
    }

    /// Splits protobuf bytes into `(field, wire type, payload)`; only length-delimited fields.
    fn fields(mut b: &[u8]) -> Vec<(u8, u8, &[u8])> {
        let mut out = Vec::new();
        while let [tag, len, rest @ ..] = b {
            let len = usize::from(*len);
            assert!(len < 0x80 && rest.len() >= len, "truncated");
            out.push((tag >> 3, tag & 7, &rest[..len]));
            b = &rest[len..];
        }
        assert!(b.is_empty(), "trailing byte");
        out
    }

    #[test]
    fn v2_stub_is_a_swagger_document() {
        assert_eq!(openapi_v2_json()["swagger"], "2.0");
        let doc = fields(openapi_v2_protobuf());
        assert_eq!(doc.len(), 2);
        assert_eq!(doc[0], (1, 2, &b"2.0"[..]));
        assert_eq!((doc[1].0, doc[1].1), (2, 2));
        // Info: title = 1, version = 2 (gnostic openapiv2.proto).
        assert_eq!(
            fields(doc[1].2),
            vec![(1, 2, &b"krust"[..]), (2, 2, &b"v1"[..])]
        );
    }

    /// Sizes and build times; `cargo test --release -p krust-apiserver -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn sizes_and_timings() {
        let reg = Arc::new(SharedRegistry::new(Registry::builtin()));
        let api = OpenApi::new(reg.clone());
        let t = std::time::Instant::now();
        let index = api.index();
        println!("index (all hashes): {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let _ = api.index();
        println!("index again: {:?}", t.elapsed());
        let mut total = 0;
        for path in api.paths() {
            let t = std::time::Instant::now();
            let d = api.group_version(&path).expect("served");
            let el = t.elapsed();
            total += d.body.len();
            let v: Value = serde_json::from_slice(&d.body).expect("json");
            println!(
                "{path}: {} bytes, {} schemas, {} paths, {:?}",
                d.body.len(),
                v["components"]["schemas"]
                    .as_object()
                    .map_or(0, |m| m.len()),
                v["paths"].as_object().map_or(0, |m| m.len()),
                el
            );
            if let Ok(dir) = std::env::var("KRUST_OPENAPI_DUMP") {
                let file = format!("{dir}/{}.json", path.replace('/', "__"));
                std::fs::write(file, &d.body).expect("write");
            }
        }
        println!("total {total} bytes");
        if let Ok(dir) = std::env::var("KRUST_OPENAPI_DUMP") {
            std::fs::write(format!("{dir}/index.json"), index.to_string()).expect("write");
            std::fs::write(format!("{dir}/openapi_v2.pb"), openapi_v2_protobuf()).expect("write");
            let reg = reg.load();
            let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
            let write = |name: &str, v: Value| {
                std::fs::write(format!("{dir}/{name}.json"), v.to_string()).expect("write")
            };
            write("api", crate::discovery::api_versions("127.0.0.1:18080"));
            write("apis", crate::discovery::api_group_list(&reg));
            write(
                "agg_api",
                crate::discovery::aggregated(&reg, true, accept)
                    .expect("agg")
                    .0,
            );
            write(
                "agg_apis",
                crate::discovery::aggregated(&reg, false, accept)
                    .expect("agg")
                    .0,
            );
            for (g, v) in reg.group_versions() {
                let name = if g.is_empty() {
                    format!("rl__api__{v}")
                } else {
                    format!("rl__apis__{g}__{v}")
                };
                write(
                    &name,
                    crate::discovery::resource_list(&reg, g, v).expect("list"),
                );
            }
        }
    }
}
