//! The generic REST storage: create, get, list, update, patch and delete for every served
//! kind, on JSON objects. Kind-specific behaviour (status handling, pods' graceful
//! deletion, Service address allocation) hooks in at named points.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use krust_machinery::codec::{self, FieldValidation};
use krust_machinery::object::{self, metadata_mut, set_meta};
use krust_machinery::registry::SharedRegistry;
use krust_machinery::{ApiError, Cause, ResourceInfo};
use krust_store::{KeyValue, Revision, Store, StoreError};
use krust_webhook::Operation;
use serde_json::{json, Value};

use crate::admission::webhooks::AdmissionRequest;
use crate::alloc::Allocators;
use crate::cache::{Cache, CacheError};
use crate::continuetoken::continue_err;
pub use crate::continuetoken::{decode_continue, encode_continue};
use crate::glue::{self, ObjectFilter};
use crate::options::ListOptions;
use crate::request::{Query, ResourcePath};

/// Bodies larger than this are refused, as upstream's 3 MiB request limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The largest object the store keeps: etcd's default `--max-request-bytes`, which upstream
/// objects are bounded by, so that every object fits every backend.
pub const MAX_OBJECT: usize = 1024 * 1024 * 3 / 2;

/// 413 for an object too large to store, before anything is written.
fn check_stored_size(len: usize) -> Result<(), ApiError> {
    if len > MAX_OBJECT {
        return Err(ApiError::RequestEntityTooLarge {
            message: format!("limit is {MAX_OBJECT}"),
        });
    }
    Ok(())
}

/// What a handler answers: a JSON body with a code, and any `Warning` headers.
pub struct Reply {
    pub code: u16,
    pub body: Bytes,
    pub warnings: Vec<String>,
}

impl Reply {
    pub fn json(code: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            code,
            body: body.into(),
            warnings: Vec::new(),
        }
    }

    pub fn value(code: u16, v: &Value) -> Reply {
        Reply::json(code, serde_json::to_vec(v).unwrap_or_default())
    }
}

/// The caller's view of one write.
pub struct WriteCtx<'a> {
    pub query: &'a Query,
    pub manager: String,
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// A server-side apply already wrote managedFields; plain writes record them here.
    pub applied: bool,
    /// The requester; `None` for the server's own writes. CSRs record it and
    /// NodeRestriction checks it.
    pub who: Option<&'a crate::auth::Identity>,
}

pub struct Rest {
    pub registry: Arc<SharedRegistry>,
    pub store: Arc<dyn Store>,
    pub cache: Arc<Cache>,
    pub alloc: Allocators,
    /// Admission webhooks.
    pub admission: Arc<crate::admission::webhooks::DynamicAdmission>,
}

/// 409 for a write based on an outdated resourceVersion, in upstream's words.
pub(crate) fn modified(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        info.group,
        info.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

pub(crate) fn store_err(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => modified(info, name),
        StoreError::Compacted { requested, oldest } => ApiError::Gone {
            message: format!("too old resource version: {requested} ({oldest})"),
        },
        StoreError::FutureRevision { requested, current } => ApiError::Timeout {
            message: format!("Too large resource version: {requested}, current: {current}"),
        },
        StoreError::Unavailable(m) => ApiError::ServiceUnavailable { message: m },
        StoreError::Backend(m) => ApiError::internal(m),
    }
}

/// A stored encoding as served: resourceVersion spliced in, in the addressed version.
fn served(info: &ResourceInfo, value: &[u8], rv: Revision) -> Vec<u8> {
    let out = codec::splice_resource_version(value, rv);
    if info.ops.storage_api_version().is_none() {
        return out;
    }
    crate::strategy::customresource::Conversion::of(info).apply(out)
}

/// Decodes a stored value into an object with its resourceVersion.
pub fn decode_stored(value: &[u8], rv: Revision) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(value).map_err(ApiError::internal)?;
    set_meta(&mut v, "resourceVersion", rv.to_string());
    Ok(v)
}

fn kind_has_spec(obj: &Value) -> bool {
    obj.get("spec").is_some()
}

/// The random suffix upstream appends to `generateName`.
pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// How often [`Rest::guaranteed_update`] reads again after losing a race.
const GUARANTEED_UPDATE_TRIES: usize = 8;

/// Fields of metadata that only the server sets.
const SYSTEM_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

impl Rest {
    fn key(&self, rp: &ResourcePath, name: &str) -> String {
        rp.info.key(rp.namespace.as_deref(), name)
    }

    /// Checks and fills `apiVersion`/`kind` against the addressed resource.
    pub fn check_type(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
        expected_kind: &str,
    ) -> Result<(), ApiError> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        };
        let api_version = info.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), api_version.clone().into());
            }
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), expected_kind.into());
            }
            Some(k) if k == expected_kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({expected_kind})"
                )))
            }
        }
        Ok(())
    }

    /// Decodes through the typed form: normalises the object, and reports unknown and
    /// duplicate fields per `fieldValidation`. Returns the warnings to send.
    pub fn normalise(
        &self,
        info: &ResourceInfo,
        obj: Value,
        duplicates: &[String],
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let typed = info.ops.roundtrip(obj.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        let mut problems = Vec::new();
        if fv != FieldValidation::Ignore {
            let unknown = codec::unknown_fields(&obj, &typed);
            if fv == FieldValidation::Strict && (!unknown.is_empty() || !duplicates.is_empty()) {
                return Err(ApiError::bad_request(codec::strict_error(
                    &unknown, duplicates,
                )));
            }
            problems.extend(
                duplicates
                    .iter()
                    .map(|d| format!("duplicate field \"{d}\"")),
            );
            problems.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
        }
        Ok((typed, problems))
    }

    /// Refuses creates into a namespace that is missing or being terminated.
    async fn namespace_admits(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(ns) = namespace.filter(|_| info.namespaced) else {
            return Ok(());
        };
        let ns_info = self
            .registry
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces not served"))?;
        let kv = self
            .store
            .get(&ns_info.key(None, ns))
            .await
            .map_err(|e| store_err(&ns_info, ns, e))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        let nsobj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
        if object::deletion_timestamp(&nsobj).is_some()
            || object::path(&nsobj, "status.phase").and_then(Value::as_str) == Some("Terminating")
        {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                krust_machinery::status::qualified(info.group, info.plural),
                name,
            )));
        }
        Ok(())
    }

    /// Creates an object (POST to a collection).
    pub async fn create(
        &self,
        rp: &ResourcePath<'_>,
        mut obj: Value,
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        // Namespace in the body must agree with the path.
        if info.namespaced {
            let path_ns = rp.namespace.clone().ok_or(ApiError::NoRoute)?;
            match object::namespace(&obj) {
                Some(ns) if ns != path_ns => {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
                }
                _ => set_meta(&mut obj, "namespace", path_ns),
            }
        } else {
            metadata_mut(&mut obj).remove("namespace");
        }
        if object::name(&obj).is_none() {
            match object::meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
                Some(prefix) => {
                    // As upstream's name generator: at most 58 bytes of the prefix, so that
                    // prefix and suffix fit a 63-character name.
                    let mut end = prefix.len().min(58);
                    while !prefix.is_char_boundary(end) {
                        end -= 1;
                    }
                    let name = format!("{}{}", &prefix[..end], random_suffix());
                    set_meta(&mut obj, "name", name);
                }
                None => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired",
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ))
                }
            }
        }
        let name = object::name(&obj).unwrap_or_default().to_string();
        {
            let meta = metadata_mut(&mut obj);
            for f in SYSTEM_META {
                meta.remove(*f);
            }
            meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
            meta.insert("creationTimestamp".into(), object::now_rfc3339().into());
        }
        if kind_has_spec(&obj) {
            set_meta(&mut obj, "generation", 1);
        }
        crate::strategy::prepare_for_create(info, &mut obj);
        if crate::strategy::certificates::is_csr(info) {
            crate::strategy::certificates::prepare_for_create(&mut obj, ctx.who);
        }
        if (info.group, info.kind) == ("batch", "Job") {
            krust_machinery::defaults::set_job_selector(&mut obj);
        }
        glue::apply_defaults(info, &mut obj);
        if let Some(who) = ctx.who {
            crate::admission::noderestriction::admit_create(self, rp, who, &obj).await?;
        }
        let lookups = crate::admission::lookups(self, info, &obj).await;
        crate::admission::admit_create(info, &mut obj, &lookups);
        let areq = AdmissionRequest {
            operation: Operation::Create,
            rp,
            name: &name,
            who: ctx.who,
            dry_run: ctx.dry_run,
            options: AdmissionRequest::write_options("CreateOptions", ctx.dry_run, &ctx.manager),
        };
        let mut warnings = self.mutating_webhooks(&areq, &mut obj, None).await?;
        // What a webhook changed is defaulted again, as upstream decodes its patch.
        glue::apply_defaults(info, &mut obj);
        let causes = glue::validate_create(info, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, &name, causes));
        }
        self.namespace_admits(info, rp.namespace.as_deref(), &name)
            .await?;
        warnings.extend(self.validating_webhooks(&areq, Some(&obj), None).await?);
        let with_warnings = |mut r: Reply| {
            r.warnings.extend(warnings.iter().cloned());
            r
        };
        if !ctx.applied {
            crate::managed::record_update(info, None, None, &mut obj, &ctx.manager);
        }
        let key = self.key(rp, &name);
        if ctx.dry_run {
            if self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(info, &name, e))?
                .is_some()
            {
                return Err(ApiError::already_exists(info.group, info.plural, &name));
            }
            return Ok(with_warnings(Reply::json(201, codec::encode(&obj))));
        }
        let allocated = self.alloc.allocate(info, &mut obj).await?;
        crate::strategy::customresource::Conversion::to_storage(info, &mut obj);
        let encoded = codec::encode(&obj);
        if let Err(e) = check_stored_size(encoded.len()) {
            self.alloc.release_list(allocated).await;
            return Err(e);
        }
        match self.store.create(&key, Bytes::from(encoded)).await {
            Ok(kv) => Ok(with_warnings(Reply::json(
                201,
                served(rp.info, &kv.value, kv.mod_revision),
            ))),
            Err(e) => {
                self.alloc.release_list(allocated).await;
                Err(store_err(info, &name, e))
            }
        }
    }

    /// Reads one object from the store (consistent).
    pub async fn get_kv(&self, rp: &ResourcePath<'_>, name: &str) -> Result<KeyValue, ApiError> {
        self.store
            .get(&self.key(rp, name))
            .await
            .map_err(|e| store_err(rp.info, name, e))?
            .ok_or_else(|| ApiError::not_found(rp.info.group, rp.info.plural, name))
    }

    pub async fn get(&self, rp: &ResourcePath<'_>, name: &str) -> Result<(Value, Bytes), ApiError> {
        let kv = self.get_kv(rp, name).await?;
        let bytes = Bytes::from(served(rp.info, &kv.value, kv.mod_revision));
        Ok((decode_stored(&kv.value, kv.mod_revision)?, bytes))
    }

    /// Waits until the cache holds every acknowledged write, for consistent lists.
    pub async fn sync_cache(&self, min: Option<Revision>) -> Result<Revision, ApiError> {
        let target =
            match min {
                Some(r) => r,
                None => self.store.current_revision().await.map_err(|e| {
                    ApiError::ServiceUnavailable {
                        message: e.to_string(),
                    }
                })?,
            };
        self.cache
            .wait_for(target, Duration::from_secs(3))
            .await
            .map_err(|e| match e {
                CacheError::Timeout(_) => ApiError::Timeout {
                    message: format!(
                        "Too large resource version: {target}, current: {}",
                        self.cache.revision()
                    ),
                },
                CacheError::TooOld { requested, oldest } => ApiError::Gone {
                    message: format!("too old resource version: {requested} ({oldest})"),
                },
            })?;
        Ok(target)
    }

    /// Lists objects (the first page from the cache, later ones from the store at the
    /// first page's revision) with selectors and pagination: the items
    /// (resourceVersion spliced in), the list revision, the continue token and the count
    /// of items after this page.
    pub async fn list(
        &self,
        rp: &ResourcePath<'_>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let info = rp.info;
        let filter = ObjectFilter::new(
            info,
            opts.label_selector.as_deref(),
            opts.field_selector.as_deref(),
        )?;
        let limit = usize::try_from(opts.limit.max(0)).unwrap_or(usize::MAX);
        let prefix = info.namespace_prefix(rp.namespace.as_deref());
        if let Some(token) = opts.continue_token.as_deref() {
            if opts.resource_version.as_deref().is_some_and(|rv| rv != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (key, rv) = decode_continue(token)?;
            if !key.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "continue key is not valid for this request",
                ));
            }
            return self
                .list_continued(info, &prefix, &key, rv, limit, opts, &filter)
                .await;
        }
        match opts.resource_version.as_deref() {
            None => {
                self.sync_cache(None).await?;
            }
            Some("0") => {}
            Some(rv) => {
                let rv: Revision = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?;
                if opts.exact() && rv != self.cache.revision() {
                    return Err(ApiError::Gone {
                        message: format!(
                            "too old resource version: {rv} ({})",
                            self.cache.revision()
                        ),
                    });
                }
                self.sync_cache(Some(rv)).await?;
            }
        }
        // As upstream: the count of what follows is only known, and so only sent, without
        // selectors.
        let selected = opts.label_selector.is_some() || opts.field_selector.is_some();
        let snap = self.cache.list(&prefix, None, limit, !selected, |c| {
            filter.matches_encoded(&c.value)
        });
        let items = snap
            .items
            .iter()
            .map(|(_, c)| Bytes::from(served(rp.info, &c.value, c.mod_revision)))
            .collect();
        Ok(ListPage {
            items,
            revision: snap.revision,
            continue_token: snap.next.map(|k| encode_continue(&k, snap.revision)),
            remaining: snap.remaining,
        })
    }

    /// The pages after the first, read from the store at the first page's revision (as
    /// upstream: one consistent list while that revision is not compacted, then 410 with a
    /// token that continues at the latest revision; `rv` -1 is such a token).
    #[allow(clippy::too_many_arguments)]
    async fn list_continued(
        &self,
        info: &ResourceInfo,
        prefix: &str,
        start: &str,
        rv: Revision,
        limit: usize,
        opts: &ListOptions,
        filter: &ObjectFilter,
    ) -> Result<ListPage, ApiError> {
        let selected = opts.label_selector.is_some() || opts.field_selector.is_some();
        let mut at = rv.max(0);
        let mut items = Vec::new();
        let mut after = start.to_string();
        loop {
            // Under a selector the whole limit is asked for each time: few keys may match.
            let want = match selected {
                true => limit,
                false => limit.saturating_sub(items.len()),
            };
            let page = self
                .store
                .list_at(prefix, Some(&after), want, at)
                .await
                .map_err(|e| continue_err(e, start, at))?;
            at = page.revision;
            let mut taken = 0;
            for kv in &page.items {
                taken += 1;
                after.clone_from(&kv.key);
                if filter.matches_encoded(&kv.value) {
                    items.push(Bytes::from(served(info, &kv.value, kv.mod_revision)));
                    if limit > 0 && items.len() == limit {
                        break;
                    }
                }
            }
            let left = (page.items.len() - taken) as u64 + page.remaining;
            let full = limit > 0 && items.len() == limit;
            if full || left == 0 {
                let cut = left > 0;
                return Ok(ListPage {
                    items,
                    revision: at,
                    continue_token: cut.then(|| encode_continue(&after, at)),
                    remaining: (cut && !selected).then_some(left),
                });
            }
        }
    }

    /// Replaces an object (PUT), or its status (PUT to `/status`).
    pub async fn update(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        mut obj: Value,
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        if object::name(&obj).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&obj).unwrap_or_default()
            )));
        }
        set_meta(&mut obj, "name", name.to_string());
        let current = self.get_kv(rp, name).await?;
        if let Some(rv) = object::resource_version(&obj) {
            if rv != current.mod_revision.to_string() {
                return Err(modified(info, name));
            }
        }
        let old = decode_stored(&current.value, current.mod_revision)?;
        self.write_update(rp, name, &current, &old, obj, ctx).await
    }

    /// Reads the object, lets `change` derive its new form from the stored one and writes
    /// it, again from a fresh read whenever another write got in between (upstream's
    /// `GuaranteedUpdate`). `change` answering `None` leaves the object as it is.
    pub async fn guaranteed_update(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ctx: &WriteCtx<'_>,
        mut change: impl FnMut(&Value) -> Result<Option<Value>, ApiError>,
    ) -> Result<Option<Reply>, ApiError> {
        for _ in 0..GUARANTEED_UPDATE_TRIES {
            let current = self.get_kv(rp, name).await?;
            let old = decode_stored(&current.value, current.mod_revision)?;
            let Some(new) = change(&old)? else {
                return Ok(None);
            };
            match self.write_update(rp, name, &current, &old, new, ctx).await {
                Err(ApiError::Conflict { .. }) => continue,
                other => return other.map(Some),
            }
        }
        Err(ApiError::conflict(
            rp.info.group,
            rp.info.plural,
            name,
            "too many concurrent changes; try again",
        ))
    }

    /// The shared tail of update and patch: merge system fields, validate, CAS-write.
    pub async fn write_update(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        current: &KeyValue,
        old: &Value,
        mut obj: Value,
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        if info.namespaced {
            let ns = rp.namespace.clone().unwrap_or_default();
            if object::namespace(&obj).is_some_and(|n| n != ns) {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            set_meta(&mut obj, "namespace", ns);
        }
        // System fields come from the stored object.
        {
            let old_meta = object::metadata(old).cloned().unwrap_or_default();
            let meta = metadata_mut(&mut obj);
            for f in SYSTEM_META {
                match old_meta.get(*f) {
                    Some(v) => meta.insert(f.to_string(), v.clone()),
                    None => meta.remove(*f),
                };
            }
        }
        crate::strategy::prepare_for_update(info, &mut obj, old);
        match rp.subresource.as_deref() {
            sub if crate::strategy::certificates::is_csr(info) => {
                crate::strategy::certificates::prepare_for_update(sub, &mut obj, old);
            }
            Some("finalize") => {
                // Only spec.finalizers changes through a namespace's /finalize.
                let finalizers = object::path(&obj, "spec.finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
                let mut merged = old.clone();
                metadata_mut(&mut merged).remove("resourceVersion");
                merged["spec"]["finalizers"] = finalizers;
                obj = merged;
            }
            Some("status") => {
                // Only status changes through /status.
                let status = obj.get("status").cloned();
                let mut merged = old.clone();
                metadata_mut(&mut merged).remove("resourceVersion");
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                obj = merged;
            }
            _ if info.has_subresource("status") => {
                // The main resource never changes status.
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            _ => {}
        }
        glue::apply_defaults(info, &mut obj);
        if old.get("spec") != obj.get("spec") && kind_has_spec(&obj) {
            let g = object::metadata(old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut obj, "generation", g + 1);
        }
        let areq = AdmissionRequest {
            operation: Operation::Update,
            rp,
            name,
            who: ctx.who,
            dry_run: ctx.dry_run,
            options: AdmissionRequest::write_options("UpdateOptions", ctx.dry_run, &ctx.manager),
        };
        let mut warnings = self.mutating_webhooks(&areq, &mut obj, Some(old)).await?;
        glue::apply_defaults(info, &mut obj);
        // Validation sees the stored resourceVersion, as upstream's does; it is not stored.
        set_meta(
            &mut obj,
            "resourceVersion",
            current.mod_revision.to_string(),
        );
        if let Some(who) = ctx.who {
            let attrs = rp.attributes();
            crate::admission::noderestriction::check_update(who, &attrs, &obj, old)?;
        }
        let causes = glue::validate_update(info, rp.subresource.as_deref(), &obj, old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, name, causes));
        }
        warnings.extend(
            self.validating_webhooks(&areq, Some(&obj), Some(old))
                .await?,
        );
        let reply = self.store_update(rp, name, current, old, obj, ctx).await?;
        Ok(Reply { warnings, ..reply })
    }

    /// The end of [`Rest::write_update`], after admission: managed fields, then the write
    /// (or the delete of an object whose last finalizer went).
    async fn store_update(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        current: &KeyValue,
        old: &Value,
        mut obj: Value,
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        metadata_mut(&mut obj).remove("resourceVersion");
        if !ctx.applied {
            crate::managed::record_update(
                info,
                rp.subresource.as_deref(),
                Some(old),
                &mut obj,
                &ctx.manager,
            );
        }
        // An object being deleted goes once its last finalizer is gone.
        let finalized = object::deletion_timestamp(&obj).is_some()
            && object::finalizers(&obj).is_empty()
            && crate::strategy::namespace_finalizers(&obj).is_empty();
        if ctx.dry_run {
            let mut out = obj;
            set_meta(
                &mut out,
                "resourceVersion",
                current.mod_revision.to_string(),
            );
            return Ok(Reply::value(200, &out));
        }
        let key = self.key(rp, name);
        if finalized {
            let kv = self
                .store
                .delete(&key, Some(current.mod_revision))
                .await
                .map_err(|e| store_err(info, name, e))?;
            self.alloc.release(info, old).await;
            let mut out = obj;
            set_meta(&mut out, "resourceVersion", kv.mod_revision.to_string());
            return Ok(Reply::value(200, &out));
        }
        crate::strategy::customresource::Conversion::to_storage(info, &mut obj);
        let encoded = Bytes::from(codec::encode(&obj));
        check_stored_size(encoded.len())?;
        if encoded == current.value {
            // No change: upstream answers without writing.
            return Ok(Reply::json(
                200,
                served(rp.info, &current.value, current.mod_revision),
            ));
        }
        let kv = self
            .store
            .update(&key, encoded, current.mod_revision)
            .await
            .map_err(|e| store_err(info, name, e))?;
        Ok(Reply::json(
            200,
            served(rp.info, &kv.value, kv.mod_revision),
        ))
    }

    /// Deletes an object, honouring preconditions, finalizers, grace periods and the
    /// propagation policy (recorded as upstream does, with the orphan/foreground finalizers).
    pub async fn delete(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        opts: &Value,
        dry_run: bool,
        who: Option<&crate::auth::Identity>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        for attempt in 0..5 {
            let current = self.get_kv(rp, name).await?;
            let obj = decode_stored(&current.value, current.mod_revision)?;
            if attempt == 0 {
                let areq = AdmissionRequest {
                    operation: Operation::Delete,
                    rp,
                    name,
                    who,
                    dry_run,
                    options: opts.clone(),
                };
                // A delete's webhook warnings are not passed on (not implemented).
                self.validating_webhooks(&areq, None, Some(&obj)).await?;
            }
            if let Some(uid) = object::path(opts, "preconditions.uid").and_then(Value::as_str) {
                if object::uid(&obj) != Some(uid) {
                    return Err(ApiError::conflict(info.group, info.plural, name, format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", object::uid(&obj).unwrap_or(""))));
                }
            }
            if let Some(rv) =
                object::path(opts, "preconditions.resourceVersion").and_then(Value::as_str)
            {
                if rv != current.mod_revision.to_string() {
                    return Err(ApiError::conflict(info.group, info.plural, name, format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", current.mod_revision)));
                }
            }
            let policy = opts
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .or_else(
                    || match opts.get("orphanDependents").and_then(Value::as_bool) {
                        Some(true) => Some("Orphan"),
                        Some(false) => Some("Background"),
                        None => None,
                    },
                );
            let mut finalizers = object::finalizers(&obj);
            let spec_finalizers = if info.kind == "Namespace" && info.group.is_empty() {
                crate::strategy::namespace_finalizers(&obj)
            } else {
                Vec::new()
            };
            if !object::deletion_timestamp(&obj).is_some() {
                crate::strategy::deletion_finalizers(info, &mut finalizers);
            }
            match policy {
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                Some("Orphan") | Some("Foreground") | Some("Background") | None => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        info.group,
                        "DeleteOptions",
                        "",
                        vec![Cause::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    ))
                }
            }
            let grace = crate::strategy::grace_period(
                info,
                &obj,
                opts.get("gracePeriodSeconds").and_then(Value::as_i64),
            );
            let already_deleting = object::deletion_timestamp(&obj).is_some();
            if finalizers.is_empty() && spec_finalizers.is_empty() && grace == 0 {
                if dry_run {
                    return Ok(Reply::value(200, &obj));
                }
                match self
                    .store
                    .delete(&self.key(rp, name), Some(current.mod_revision))
                    .await
                {
                    Ok(kv) => {
                        self.alloc.release(info, &obj).await;
                        let mut out = obj;
                        set_meta(&mut out, "resourceVersion", kv.mod_revision.to_string());
                        return Ok(Reply::value(200, &out));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_err(info, name, e)),
                }
            }
            // Graceful or finalized deletion: mark the object and keep it.
            let mut marked = obj.clone();
            {
                let meta = metadata_mut(&mut marked);
                meta.remove("resourceVersion");
                if !already_deleting {
                    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
                    meta.insert("deletionTimestamp".into(), object::format_time(at).into());
                    meta.insert("deletionGracePeriodSeconds".into(), grace.into());
                } else if let Some(g) = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                {
                    // A shorter grace period may replace a longer one.
                    if grace < g {
                        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
                        meta.insert("deletionTimestamp".into(), object::format_time(at).into());
                        meta.insert("deletionGracePeriodSeconds".into(), grace.into());
                    }
                }
                if !finalizers.is_empty() {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
            }
            crate::strategy::prepare_for_delete(info, &mut marked);
            if dry_run {
                return Ok(Reply::value(200, &marked));
            }
            let encoded = Bytes::from(codec::encode(&marked));
            if encoded == current.value {
                return Ok(Reply::json(
                    200,
                    served(rp.info, &current.value, current.mod_revision),
                ));
            }
            match self
                .store
                .update(&self.key(rp, name), encoded, current.mod_revision)
                .await
            {
                Ok(kv) => {
                    return Ok(Reply::json(
                        200,
                        served(rp.info, &kv.value, kv.mod_revision),
                    ))
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(info, name, e)),
            }
        }
        Err(ApiError::conflict(
            info.group,
            info.plural,
            name,
            "the object kept changing during deletion; try again",
        ))
    }

    /// Deletes every object a list with the same selectors would return.
    pub async fn delete_collection(
        &self,
        rp: &ResourcePath<'_>,
        list_opts: &ListOptions,
        opts: &Value,
        dry_run: bool,
        who: Option<&crate::auth::Identity>,
    ) -> Result<Reply, ApiError> {
        let page = self.list(rp, list_opts).await?;
        let mut deleted = Vec::new();
        for raw in page.items {
            let obj: Value = serde_json::from_slice(&raw).map_err(ApiError::internal)?;
            let Some(name) = object::name(&obj).map(str::to_string) else {
                continue;
            };
            let sub = ResourcePath {
                info: rp.info,
                namespace: object::namespace(&obj).map(str::to_string),
                name: Some(name.clone()),
                subresource: None,
                legacy_watch: false,
            };
            match self.delete(&sub, &name, opts, dry_run, who).await {
                Ok(r) => {
                    deleted.push(serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
                }
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({"kind": rp.info.list_kind(), "apiVersion": rp.info.api_version(), "metadata": {"resourceVersion": page.revision.to_string()}, "items": deleted});
        Ok(Reply::value(200, &list))
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// Stored encodings, resourceVersion spliced in.
    pub items: Vec<Bytes>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount`: sent when the page was cut and no selector was given.
    pub remaining: Option<u64>,
}
