//! The API server: the request chain (authentication -> authorization -> admission ->
//! REST storage) and its start-up. Every request is authorized on one `auth::Attributes`
//! record (non-resource paths too); a node identity's writes then pass NodeRestriction's
//! request checks, and the requester travels in `WriteCtx` to storage (CSRs record it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use krust_machinery::codec::{self, FieldValidation};
use krust_machinery::object::{self, set_meta};
use krust_machinery::registry::SharedRegistry;
use krust_machinery::{ApiError, Registry, ResourceInfo};
use krust_store::Store;
use serde_json::{json, Value};

use crate::alloc::Allocators;
use crate::auth::{self, Authorizer, Identity};
use crate::body::{self, Body};
use crate::cache::Cache;
use crate::discovery;
use crate::glue;
use crate::openapi::{self, OpenApi};
use crate::options::ListOptions;
use crate::request::{parse_path, request_timeout, Query, ResourcePath, Target};
use crate::rest::{decode_stored, Reply, Rest, WriteCtx, MAX_BODY};
use crate::strategy::certificates::APPROVAL;

/// The Kubernetes version krust reports; kubectl's dispatcher picks its client by it.
pub const KUBE_VERSION: &str = "v1.33.0";

pub struct ApiServer {
    pub rest: Arc<Rest>,
    pub registry: Arc<SharedRegistry>,
    pub(crate) authorizer: Box<dyn Authorizer>,
    openapi: OpenApi,
    /// `host:port` clients reach this server at, for discovery documents.
    server_address: String,
    /// Client of node agents, for pods' log, exec, attach and portforward.
    kubelet: Option<crate::kubelet::KubeletClient>,
    /// Service account token signing and checking (`serviceaccount`).
    pub(crate) tokens: Option<Arc<crate::token::Tokens>>,
}

fn status_response(
    code: u16,
    body: Bytes,
    content_type: &str,
    warnings: &[String],
) -> Response<Body> {
    // Upstream's JSON encoder (Go's `json.Encoder`) ends every document with a newline.
    let body = if content_type == "application/json" && !body.is_empty() && !body.ends_with(b"\n") {
        let mut v = Vec::with_capacity(body.len() + 1);
        v.extend_from_slice(&body);
        v.push(b'\n');
        Bytes::from(v)
    } else {
        body
    };
    let mut b = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private");
    for w in warnings {
        b = b.header(
            "warning",
            format!("299 - {}", serde_json::Value::String(w.clone())),
        );
    }
    b.body(body::full(body))
        .unwrap_or_else(|_| Response::new(body::empty()))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    status_response(e.code(), Bytes::from(body), "application/json", &[])
}

fn reply(r: Reply) -> Response<Body> {
    status_response(r.code, r.body, "application/json", &r.warnings)
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The field manager of a write: `fieldManager`, else the User-Agent's program name.
fn manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager") {
        return m.to_string();
    }
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::RequestEntityTooLarge {
                message: format!("limit is {MAX_BODY}"),
            })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Decodes a request body by its content type into JSON plus duplicate-field paths.
pub fn decode_body(content_type: &str, bytes: &[u8]) -> Result<codec::Parsed, ApiError> {
    if krust_machinery::proto::is_protobuf(content_type) {
        let value = krust_machinery::proto::decode(bytes)
            .map_err(|e| ApiError::bad_request(format!("decoding protobuf body: {e}")))?;
        return Ok(codec::Parsed {
            value,
            duplicates: Vec::new(),
        });
    }
    match content_type {
        "" | "application/json" => codec::parse_json(bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => codec::parse_yaml(bytes)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}"))),
        other => Err(ApiError::UnsupportedMediaType {
            content_type: other.to_string(),
        }),
    }
}

impl ApiServer {
    pub fn new(rest: Rest, authorizer: Box<dyn Authorizer>, server_address: String) -> Self {
        let openapi = OpenApi::new(rest.registry.clone());
        ApiServer {
            registry: rest.registry.clone(),
            rest: Arc::new(rest),
            authorizer,
            openapi,
            server_address,
            kubelet: None,
            tokens: None,
        }
    }

    /// Lets the server reach node agents (pods' log, exec, attach, portforward).
    pub fn with_kubelet_client(mut self, client: crate::kubelet::KubeletClient) -> Self {
        self.kubelet = Some(client);
        self
    }

    /// `/openapi/v2` (a stub kubectl needs before it moves on) and `/openapi/v3[/<gv>]`.
    fn openapi(&self, rest: &str, q: &Query, accept: &str) -> Result<Response<Body>, ApiError> {
        if rest == "v2" {
            if accept.contains("protobuf") {
                return Ok(status_response(
                    200,
                    Bytes::from_static(openapi::openapi_v2_protobuf()),
                    openapi::CONTENT_TYPE_V2_PROTOBUF,
                    &[],
                ));
            }
            return Ok(status_response(
                200,
                Bytes::from(openapi::openapi_v2_json().to_string()),
                "application/json",
                &[],
            ));
        }
        if rest == "v3" || rest == "v3/" {
            return Ok(status_response(
                200,
                Bytes::from(self.openapi.index().to_string()),
                openapi::CONTENT_TYPE,
                &[],
            ));
        }
        let gv = rest.strip_prefix("v3/").ok_or(ApiError::NoRoute)?;
        let doc = self.openapi.group_version(gv).ok_or(ApiError::NoRoute)?;
        let mut resp = Response::builder()
            .status(200)
            .header("content-type", openapi::CONTENT_TYPE)
            .header("etag", doc.etag());
        // A request naming the current hash may be cached forever, as upstream allows.
        resp = if q.get("hash") == Some(doc.hash.as_str()) {
            resp.header("cache-control", "public, immutable")
                .header("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
        } else {
            resp.header("cache-control", "no-cache, private")
        };
        resp.body(body::full(doc.body)).map_err(ApiError::internal)
    }

    pub async fn handle(
        self: Arc<Self>,
        who: Option<Identity>,
        req: hyper::Request<Incoming>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        if auth::is_public(&path) {
            return self.public(&path);
        }
        let (parts, incoming) = req.into_parts();
        // The body is read before answering, even to refuse: HTTP/2 clients treat a reply
        // to a request whose body was never read as a reset stream.
        let body = if matches!(parts.method, Method::GET | Method::HEAD) {
            Ok(Bytes::new())
        } else {
            read_body(incoming).await
        };
        let who = match who {
            Some(w) => Some(w),
            None => self.bearer_identity(&parts.headers).await,
        };
        let Some(who) = who else {
            return error_response(&ApiError::Unauthorized);
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        let q = Query::parse(parts.uri.query());
        let timeout = match request_timeout(&q) {
            Ok(t) => t,
            Err(e) => return error_response(&e),
        };
        let Some(timeout) = timeout else {
            return match self.dispatch(&who, q, parts, body).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
        };
        // As upstream's timeout filter: the client gets a 504 at its deadline, and the
        // handler runs to its end (a write is never cut in the middle). Watches and streams
        // answer at once and are not bounded by it.
        let this = self.clone();
        let task = tokio::spawn(async move { this.dispatch(&who, q, parts, body).await });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => error_response(&e),
            Ok(Err(e)) => error_response(&ApiError::internal(e)),
            Err(_) => error_response(&ApiError::Timeout {
                message:
                    "request did not complete within requested timeout - context deadline exceeded"
                        .into(),
            }),
        }
    }

    fn public(&self, path: &str) -> Response<Body> {
        if path == "/version" {
            let v = json!({"major": "1", "minor": "33", "gitVersion": KUBE_VERSION, "gitCommit": "krust", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64"});
            return status_response(200, Bytes::from(v.to_string()), "application/json", &[]);
        }
        status_response(
            200,
            Bytes::from_static(b"ok"),
            "text/plain; charset=utf-8",
            &[],
        )
    }

    async fn dispatch(
        &self,
        who: &Identity,
        q: Query,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let path = parts.uri.path().to_string();
        let json_ok =
            |v: Value| status_response(200, Bytes::from(v.to_string()), "application/json", &[]);
        let accept = parts
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let method = parts.method.as_str().to_ascii_lowercase();
        let non_resource = auth::Attributes {
            verb: &method,
            resource: None,
            path: &path,
        };
        if let Some(rest) = path.strip_prefix("/openapi/") {
            auth::check(self.authorizer.as_ref(), who, &non_resource)?;
            return self.openapi(rest, &q, &accept);
        }
        let ct = content_type(&parts.headers);
        if let Some(r) = self
            .identity_route(who, &parts.method, &path, &ct, &body)
            .await
        {
            return r.map(reply);
        }
        // One snapshot of the served kinds for the whole request.
        let registry = self.registry.load();
        let target = parse_path(&registry, &path)?;
        if !matches!(target, Target::Resource(_)) {
            auth::check(self.authorizer.as_ref(), who, &non_resource)?;
        }
        let rp = match target {
            Target::RootCore | Target::RootGroups => {
                let core = matches!(target, Target::RootCore);
                if discovery::negotiate(&accept).is_none() {
                    return Err(ApiError::NotAcceptable);
                }
                if let Some((doc, ct)) = discovery::aggregated(&registry, core, &accept) {
                    return Ok(status_response(200, Bytes::from(doc.to_string()), ct, &[]));
                }
                let doc = if core {
                    discovery::api_versions(&self.server_address)
                } else {
                    discovery::api_group_list(&registry)
                };
                return Ok(json_ok(doc));
            }
            Target::Group(g) => {
                return discovery::api_group(&registry, &g)
                    .map(json_ok)
                    .ok_or(ApiError::NoRoute)
            }
            Target::GroupVersion(g, v) => {
                return discovery::resource_list(&registry, &g, &v)
                    .map(json_ok)
                    .ok_or(ApiError::NoRoute)
            }
            Target::Resource(rp) => rp,
        };
        let verb = match (&parts.method, rp.name.is_some()) {
            (&Method::GET, _) if rp.legacy_watch || q.flag("watch") => "watch",
            (&Method::GET, true) => "get",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => return Err(ApiError::MethodNotAllowed),
        };
        let attrs = auth::Attributes {
            verb,
            resource: Some(rp.attributes()),
            path: &path,
        };
        auth::check(self.authorizer.as_ref(), who, &attrs)?;
        crate::admission::noderestriction::check_request(who, &attrs, || async {
            let name = rp.name.clone().unwrap_or_default();
            let main = ResourcePath {
                info: rp.info,
                namespace: rp.namespace.clone(),
                name: rp.name.clone(),
                subresource: None,
                legacy_watch: false,
            };
            self.rest.get(&main, &name).await.map(|(v, _)| v)
        })
        .await?;
        let table = wants_table(&parts.headers);
        let validation =
            FieldValidation::parse(q.get("fieldValidation")).map_err(ApiError::bad_request)?;
        let ctx = WriteCtx {
            query: &q,
            manager: manager(&q, &parts.headers),
            dry_run: q.dry_run()?,
            validation,
            applied: false,
            who: Some(who),
        };
        let info = rp.info;
        let sub = rp.subresource.clone();
        match (verb, rp.name.clone(), sub.as_deref()) {
            ("watch", _, _) => {
                let opts = ListOptions::from_query(&q, true)?;
                self.watch(&rp, &opts, q.get("includeObject"), table).await
            }
            ("list", _, _) => {
                let opts = ListOptions::from_query(&q, false)?;
                self.list(&rp, &opts, q.get("includeObject"), table).await
            }
            ("get", Some(name), None | Some("status") | Some(APPROVAL)) => {
                let (obj, bytes) = self.rest.get(&rp, &name).await?;
                if table {
                    let rv = object::resource_version(&obj).unwrap_or("").to_string();
                    return Ok(json_ok(glue::table(
                        info,
                        &[obj],
                        q.get("includeObject"),
                        &rv,
                        None,
                    )));
                }
                Ok(status_response(200, bytes, "application/json", &[]))
            }
            ("get", Some(name), Some("scale")) => {
                let (obj, _) = self.rest.get(&rp, &name).await?;
                Ok(json_ok(scale_of(info, &obj)))
            }
            ("create", None, None) => {
                let (obj, warnings) = self.decode_object(info, &ct, &body, validation)?;
                let mut r = self.rest.create(&rp, obj, &ctx).await?;
                r.warnings.extend(warnings);
                Ok(reply(r))
            }
            ("get", Some(name), Some(sub @ "log"))
            | ("get" | "create", Some(name), Some(sub @ ("exec" | "attach" | "portforward"))) => {
                crate::kubelet::pod_subresource(
                    &self.rest,
                    self.kubelet.as_ref(),
                    &rp,
                    &name,
                    sub,
                    parts,
                )
                .await
            }
            ("create", Some(name), Some("binding")) => {
                self.bind(&rp, &name, &ct, &body).await.map(reply)
            }
            ("create", Some(name), Some("token")) => {
                self.token_request(&rp, &name, &ct, &body).await.map(reply)
            }
            ("create", Some(name), Some("eviction")) => {
                self.evict(&rp, &name, &ct, &body, ctx.dry_run).await
            }
            ("update", Some(name), None | Some("status" | "finalize" | APPROVAL)) => {
                let (obj, warnings) = self.decode_object(info, &ct, &body, validation)?;
                let mut r = self.rest.update(&rp, &name, obj, &ctx).await?;
                r.warnings.extend(warnings);
                Ok(reply(r))
            }
            ("update", Some(name), Some("scale")) => {
                let parsed = decode_body(&ct, &body)?;
                self.scale(&rp, &name, &ctx, |_| Ok(parsed.value.clone()))
                    .await
                    .map(reply)
            }
            ("patch", Some(name), Some("scale")) => {
                let patch_ct = ct.clone();
                self.scale(&rp, &name, &ctx, |current| {
                    glue::patch(info, &name, &patch_ct, current, &body)
                })
                .await
                .map(reply)
            }
            ("patch", Some(name), None | Some("status" | APPROVAL)) => {
                self.patch(&rp, &name, &ct, &body, &ctx).await.map(reply)
            }
            ("delete", Some(name), None) => {
                let opts = delete_options(&q, &body)?;
                Ok(reply(
                    self.rest
                        .delete(&rp, &name, &opts, ctx.dry_run || is_dry_run(&opts), ctx.who)
                        .await?,
                ))
            }
            ("deletecollection", None, None) => {
                let list_opts = ListOptions::from_query(&q, false)?;
                let opts = delete_options(&q, &body)?;
                Ok(reply(
                    self.rest
                        .delete_collection(
                            &rp,
                            &list_opts,
                            &opts,
                            ctx.dry_run || is_dry_run(&opts),
                            ctx.who,
                        )
                        .await?,
                ))
            }
            _ => Err(ApiError::MethodNotAllowed),
        }
    }

    /// Body -> normalised object of the addressed kind, with fieldValidation warnings.
    fn decode_object(
        &self,
        info: &ResourceInfo,
        ct: &str,
        body: &[u8],
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let parsed = decode_body(ct, body)?;
        let mut obj = parsed.value;
        self.rest.check_type(info, &mut obj, info.kind)?;
        self.rest.normalise(info, obj, &parsed.duplicates, fv)
    }

    async fn list(
        &self,
        rp: &ResourcePath<'_>,
        opts: &ListOptions,
        include_object: Option<&str>,
        table: bool,
    ) -> Result<Response<Body>, ApiError> {
        let page = self.rest.list(rp, opts).await?;
        if table {
            let objs: Vec<Value> = page
                .items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect();
            let t = glue::table(
                rp.info,
                &objs,
                include_object,
                &page.revision.to_string(),
                page.continue_token.as_deref(),
            );
            return Ok(status_response(
                200,
                Bytes::from(t.to_string()),
                "application/json",
                &[],
            ));
        }
        // The list is assembled from stored encodings without re-serialising them; its
        // metadata as upstream's ListMeta: resourceVersion, continue, remainingItemCount.
        let mut meta = json!({"resourceVersion": page.revision.to_string()});
        if let Some(c) = &page.continue_token {
            meta["continue"] = json!(c);
        }
        if let Some(n) = page.remaining {
            meta["remainingItemCount"] = json!(n);
        }
        let items = &page.items;
        let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 128);
        out.extend_from_slice(
            format!(
                "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
                rp.info.list_kind(),
                rp.info.api_version()
            )
            .as_bytes(),
        );
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}\n");
        Ok(status_response(
            200,
            Bytes::from(out),
            "application/json",
            &[],
        ))
    }

    async fn watch(
        &self,
        rp: &ResourcePath<'_>,
        opts: &ListOptions,
        include_object: Option<&str>,
        table: bool,
    ) -> Result<Response<Body>, ApiError> {
        if opts.resource_version.is_none() {
            self.rest.sync_cache(None).await?;
        }
        let info = rp.info.clone();
        let rx = crate::watch::start(self.rest.cache.clone(), rp, opts)?;
        let rx = if table {
            table_events(info, include_object.map(str::to_string), rx)
        } else {
            rx
        };
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "no-cache, private")
            .body(body::channel(rx))
            .map_err(ApiError::internal)
    }

    async fn patch(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ct: &str,
        body: &[u8],
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        let patch_type = krust_machinery::patch::PatchType::from_content_type(ct)
            .map_err(|e| e.to_api_error(info, name))?;
        if patch_type == krust_machinery::patch::PatchType::Apply {
            return self.apply(rp, name, body, ctx).await;
        }
        for _ in 0..8 {
            let current = self.rest.get_kv(rp, name).await?;
            let old = decode_stored(&current.value, current.mod_revision)?;
            let mut new = glue::patch(info, name, ct, &old, body)?;
            self.rest.check_type(info, &mut new, info.kind)?;
            let (new, warnings) = self.rest.normalise(info, new, &[], ctx.validation)?;
            if let Some(rv) = object::resource_version(&new) {
                if rv != current.mod_revision.to_string() {
                    return Err(crate::rest::modified(info, name));
                }
            }
            if object::name(&new) != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            match self
                .rest
                .write_update(rp, name, &current, &old, new, ctx)
                .await
            {
                Err(ApiError::Conflict { .. }) if !patch_has_rv(body) => continue,
                Ok(mut r) => {
                    r.warnings.extend(warnings);
                    return Ok(r);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(
            info.group,
            info.plural,
            name,
            "too many concurrent changes; try again",
        ))
    }

    /// Server-side apply: merges the applied configuration into the live object (or
    /// creates it), with field ownership and conflicts per manager.
    async fn apply(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        body: &[u8],
        ctx: &WriteCtx<'_>,
    ) -> Result<Reply, ApiError> {
        use krust_machinery::patch;
        let info = rp.info;
        if ctx.query.get("fieldManager").is_none() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requests must have the fieldManager parameter set"));
        }
        let force = ctx.query.flag("force");
        let mut applied = patch::decode_apply_body(body).map_err(|e| e.to_api_error(info, name))?;
        self.rest.check_type(info, &mut applied, info.kind)?;
        let (applied, warnings) = self.rest.normalise(info, applied, &[], ctx.validation)?;
        if object::name(&applied).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let actx = WriteCtx {
            query: ctx.query,
            manager: ctx.manager.clone(),
            dry_run: ctx.dry_run,
            validation: ctx.validation,
            applied: true,
            who: ctx.who,
        };
        let now = object::now_rfc3339();
        for _ in 0..8 {
            let current = match self.rest.get_kv(rp, name).await {
                Ok(kv) => Some(kv),
                Err(ApiError::NotFound { .. }) if rp.subresource.is_none() => None,
                Err(e) => return Err(e),
            };
            let result = match &current {
                None => {
                    let mut obj = patch::apply(info, None, &applied, &ctx.manager, force, &now)
                        .map_err(|e| e.to_api_error(info, name))?;
                    set_meta(&mut obj, "name", name.to_string());
                    let main = ResourcePath {
                        info,
                        namespace: rp.namespace.clone(),
                        name: None,
                        subresource: None,
                        legacy_watch: false,
                    };
                    self.rest.create(&main, obj, &actx).await
                }
                Some(kv) => {
                    let old = decode_stored(&kv.value, kv.mod_revision)?;
                    let new = match rp.subresource.as_deref() {
                        Some(sub) => patch::apply_subresource(
                            info,
                            sub,
                            Some(&old),
                            &applied,
                            &ctx.manager,
                            force,
                            &now,
                        ),
                        None => patch::apply(info, Some(&old), &applied, &ctx.manager, force, &now),
                    }
                    .map_err(|e| e.to_api_error(info, name))?;
                    self.rest.write_update(rp, name, kv, &old, new, &actx).await
                }
            };
            match result {
                Err(ApiError::Conflict { .. }) | Err(ApiError::AlreadyExists { .. }) => continue,
                Ok(mut r) => {
                    r.warnings.extend(warnings);
                    return Ok(r);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(
            info.group,
            info.plural,
            name,
            "too many concurrent changes; try again",
        ))
    }

    /// Reads, changes and writes the `scale` of a workload.
    async fn scale(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ctx: &WriteCtx<'_>,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Reply, ApiError> {
        let info = rp.info;
        let main = ResourcePath {
            info,
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            subresource: None,
            legacy_watch: false,
        };
        for _ in 0..8 {
            let current = self.rest.get_kv(&main, name).await?;
            let old = decode_stored(&current.value, current.mod_revision)?;
            let scale = change(&scale_of(info, &old))?;
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![krust_machinery::Cause::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            if let Some(rv) = object::resource_version(&scale) {
                if rv != current.mod_revision.to_string() {
                    return Err(crate::rest::modified(info, name));
                }
            }
            let mut new = old.clone();
            set_path(&mut new, &scale_paths(info).spec_replicas, json!(replicas));
            match self
                .rest
                .write_update(&main, name, &current, &old, new, ctx)
                .await
            {
                Ok(r) => {
                    let obj: Value = serde_json::from_slice(&r.body).map_err(ApiError::internal)?;
                    return Ok(Reply::value(200, &scale_of(info, &obj)));
                }
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(
            info.group,
            info.plural,
            name,
            "too many concurrent changes; try again",
        ))
    }

    /// `pods/<name>/eviction`: deletes the pod with the Eviction's deleteOptions, answering 201 with
    /// a Success Status as upstream, once its PodDisruptionBudget allows it.
    async fn evict(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ct: &str,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Response<Body>, ApiError> {
        let eviction = decode_body(ct, body)?.value;
        if let Some(n) = eviction.pointer("/metadata/name").and_then(Value::as_str) {
            if !n.is_empty() && n != name {
                return Err(ApiError::bad_request(format!(
                    "name in URL does not match name in Eviction object: {name} != {n}"
                )));
            }
        }
        let mut opts = eviction
            .get("deleteOptions")
            .filter(|o| o.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(m) = opts.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        let dry_run = dry_run || is_dry_run(&opts);
        let main = ResourcePath {
            info: rp.info,
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            subresource: None,
            legacy_watch: false,
        };
        let (pod, _) = self.rest.get(&main, name).await?;
        let ns = rp.namespace.as_deref().unwrap_or("default");
        if let Some(why) = self
            .check_disruption_budget(ns, name, &pod, dry_run)
            .await?
        {
            return Ok(reply(Reply::value(
                429,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "TooManyRequests", "code": 429,
                    "message": why,
                    "details": {"causes": [{"reason": "DisruptionBudget", "message": why}]},
                }),
            )));
        }
        self.rest.delete(&main, name, &opts, dry_run, None).await?;
        Ok(reply(Reply::value(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )))
    }

    /// Upstream's eviction rules for PodDisruptionBudgets (whose status the disruption
    /// controller keeps): pending, finished and terminating pods go freely; a pod covered by
    /// more than one budget is refused; an unready pod goes while its budget is met; otherwise
    /// the budget must allow a disruption, and its status records it (`disruptionsAllowed` - 1,
    /// the pod in `disruptedPods`) before the pod goes. Returns why the eviction must wait
    /// (answered with 429 TooManyRequests), if it must.
    async fn check_disruption_budget(
        &self,
        ns: &str,
        name: &str,
        pod: &Value,
        dry_run: bool,
    ) -> Result<Option<String>, ApiError> {
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Pending" | "Succeeded" | "Failed"))
            || object::deletion_timestamp(pod).is_some()
        {
            return Ok(None);
        }
        let Some(info) = self.registry.lookup("policy", "v1", "poddisruptionbudgets") else {
            return Ok(None);
        };
        let prp = ResourcePath {
            info: &info,
            namespace: Some(ns.to_string()),
            name: None,
            subresource: None,
            legacy_watch: false,
        };
        let labels = pod
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let refuse = |why: &str| {
            Some(format!(
                "Cannot evict pod as it would violate the pod's disruption budget.{why}"
            ))
        };
        for _attempt in 0..5 {
            let items = self.rest.list(&prp, &ListOptions::default()).await?.items;
            let matching: Vec<Value> = items
                .iter()
                .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
                .filter(|pdb| {
                    let sel = pdb
                        .pointer("/spec/selector")
                        .cloned()
                        .unwrap_or(Value::Null);
                    krust_machinery::selector::Selector::from_label_selector(&sel)
                        .is_ok_and(|s| s.matches(&labels))
                })
                .collect();
            let mut pdb = match matching.as_slice() {
                [] => return Ok(None),
                [one] => one.clone(),
                _ => {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ))
                }
            };
            let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            if int("/status/observedGeneration") < int("/metadata/generation") {
                return Ok(refuse(
                    " The disruption budget is still being processed by the server.",
                ));
            }
            let ready = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if !ready
                && (int("/status/currentHealthy") >= int("/status/desiredHealthy")
                    || pdb
                        .pointer("/spec/unhealthyPodEvictionPolicy")
                        .and_then(Value::as_str)
                        == Some("AlwaysAllow"))
            {
                return Ok(None);
            }
            let allowed = int("/status/disruptionsAllowed");
            if allowed <= 0 {
                let pdb_name = object::name(&pdb).unwrap_or_default().to_string();
                return Ok(refuse(&format!(
                    " The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    int("/status/desiredHealthy"),
                    int("/status/currentHealthy")
                )));
            }
            if dry_run {
                return Ok(None);
            }
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !pdb["status"]["disruptedPods"].is_object() {
                pdb["status"]["disruptedPods"] = json!({});
            }
            pdb["status"]["disruptedPods"][name] = json!(object::now_rfc3339());
            let srp = ResourcePath {
                info: &info,
                namespace: Some(ns.to_string()),
                name: object::name(&pdb).map(String::from),
                subresource: Some("status".into()),
                legacy_watch: false,
            };
            let q = Query::parse(None);
            let ctx = WriteCtx {
                query: &q,
                manager: "kube-apiserver".into(),
                dry_run: false,
                validation: FieldValidation::Ignore,
                applied: false,
                who: None,
            };
            let pdb_name = object::name(&pdb).unwrap_or_default().to_string();
            match self.rest.update(&srp, &pdb_name, pdb, &ctx).await {
                Ok(_) => return Ok(None),
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(refuse(" The disruption budget kept changing; try again."))
    }

    /// `pods/<name>/binding`: assigns the pod to a node, once.
    async fn bind(
        &self,
        rp: &ResourcePath<'_>,
        name: &str,
        ct: &str,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let binding = decode_body(ct, body)?.value;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "",
                    "Binding",
                    name,
                    vec![krust_machinery::Cause::required("target.name")],
                )
            })?;
        let main = ResourcePath {
            info: rp.info,
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            subresource: None,
            legacy_watch: false,
        };
        for _ in 0..8 {
            let current = self.rest.get_kv(&main, name).await?;
            let mut pod = decode_stored(&current.value, current.mod_revision)?;
            if let Some(existing) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            if object::deletion_timestamp(&pod).is_some() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()});
            let conds = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(cond);
            pod["status"]["conditions"] = json!(conds);
            krust_machinery::object::metadata_mut(&mut pod).remove("resourceVersion");
            let key = rp.info.key(rp.namespace.as_deref(), name);
            match self
                .rest
                .store
                .update(&key, Bytes::from(codec::encode(&pod)), current.mod_revision)
                .await
            {
                Ok(_) => {
                    return Ok(Reply::value(
                        201,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    ))
                }
                Err(krust_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(crate::rest::store_err(rp.info, name, e)),
            }
        }
        Err(ApiError::conflict(
            "",
            "pods",
            name,
            "too many concurrent changes; try again",
        ))
    }
}

fn patch_has_rv(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.pointer("/metadata/resourceVersion").is_some())
}

fn is_dry_run(opts: &Value) -> bool {
    opts.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
}

/// DeleteOptions from the body, with query parameters taking precedence.
fn delete_options(q: &Query, body: &[u8]) -> Result<Value, ApiError> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if !opts.is_object() {
        return Err(ApiError::bad_request(
            "invalid DeleteOptions: not an object",
        ));
    }
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    if let Some(o) = q.opt_flag("orphanDependents") {
        opts["orphanDependents"] = json!(o);
    }
    Ok(opts)
}

/// Where a kind's scale subresource reads and writes: its own paths (a custom resource's)
/// or the built-in workloads'.
fn scale_paths(info: &ResourceInfo) -> krust_machinery::registry::ScalePaths {
    info.ops
        .scale_paths()
        .unwrap_or_else(|| krust_machinery::registry::ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: None,
        })
}

/// `.spec.replicas` as a JSON pointer.
fn pointer(path: &str) -> String {
    path.replace('.', "/")
}

/// Sets the value at a `.a.b` path, creating the objects on the way.
fn set_path(obj: &mut Value, path: &str, value: Value) {
    let mut at = obj;
    let mut parts = path.trim_start_matches('.').split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        at = map.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

/// The `autoscaling/v1` Scale view of a workload.
fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let paths = scale_paths(info);
    let selector = match &paths.label_selector {
        // A custom resource keeps its selector serialised already.
        Some(p) => obj
            .pointer(&pointer(p))
            .and_then(Value::as_str)
            .map(str::to_string),
        None => builtin_selector(obj),
    };
    let meta = object::metadata(obj).cloned().unwrap_or_default();
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let meta: serde_json::Map<String, Value> = meta
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    let replicas = |p: &str| obj.pointer(&pointer(p)).cloned().unwrap_or(json!(0));
    let mut scale = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
        "spec": {"replicas": replicas(&paths.spec_replicas)},
        "status": {"replicas": replicas(&paths.status_replicas)}});
    if let Some(sel) = selector.filter(|s| !s.is_empty()) {
        scale["status"]["selector"] = json!(sel);
    }
    scale
}

/// A built-in workload's selector as a string: Deployments carry a LabelSelector,
/// ReplicationControllers a plain map.
fn builtin_selector(obj: &Value) -> Option<String> {
    obj.pointer("/spec/selector").map(|s| {
        // Deployments carry a LabelSelector; ReplicationControllers a plain map.
        let labels = s.get("matchLabels").unwrap_or(s);
        labels
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    })
}

/// Rewrites a watch's events so that each object is a one-row Table (`kubectl get -w`).
fn table_events(
    info: ResourceInfo,
    include: Option<String>,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, out) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let Ok(mut ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if matches!(ev["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
                let obj = ev["object"].take();
                let rv = object::resource_version(&obj).unwrap_or("").to_string();
                ev["object"] = glue::table(&info, &[obj], include.as_deref(), &rv, None);
            }
            let mut s = ev.to_string();
            s.push('\n');
            if tx.send(Bytes::from(s)).await.is_err() {
                return;
            }
        }
    });
    out
}

/// How to run an API server.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where to write the admin kubeconfig.
    pub kubeconfig_out: PathBuf,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    pub service_cidr: String,
    /// The address pods reach this server at: the `kubernetes` Service's endpoint
    /// (upstream's `--advertise-address`). None: the listen address, or 127.0.0.1 when that
    /// is unspecified.
    pub advertise_address: Option<std::net::IpAddr>,
    /// How often the store's history is compacted (None: never); see `compactor`.
    pub compaction_interval: Option<std::time::Duration>,
}

/// A started server: where it listens and the admin kubeconfig it wrote.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts serving on `config.listen` over `store` until `shutdown` resolves.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut hosts = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ];
    // In-cluster clients dial the `kubernetes` Service's cluster IP and verify it.
    let service_ip = crate::alloc::first_service_ip(&config.service_cidr)
        .ok_or_else(|| anyhow::anyhow!("invalid service CIDR {}", config.service_cidr))?;
    hosts.push(service_ip.to_string());
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(config.tls_sans.iter().cloned());
    let pki = crate::pki::Pki::load_or_create(&config.data_dir.join("tls"), &hosts)?;
    let alloc = Allocators::new(store.clone(), &config.service_cidr).map_err(anyhow::Error::msg)?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if let Some(dir) = config.kubeconfig_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::pki::write_private(
        &config.kubeconfig_out,
        &pki.admin_kubeconfig(&format!("https://{host}:{}", addr.port())),
    )?;

    let cache = Cache::new();
    cache.fill(&store, "/registry/").await?;
    tokio::spawn(cache.clone().run(store.clone(), "/registry/".to_string()));
    if let Some(interval) = config.compaction_interval {
        tokio::spawn(crate::compactor::run(store.clone(), interval));
    }
    // The built-in kinds, CustomResourceDefinitions and the admission configurations; the
    // definitions stored now are served from the first request, later ones as the
    // apiextensions controller sees them.
    let builtin = Registry::builtin().extended(crate::strategy::extension_resources());
    let registry = Arc::new(SharedRegistry::new(builtin.clone()));
    let admission = Arc::new(crate::admission::webhooks::DynamicAdmission::new(
        registry.clone(),
        cache.clone(),
    ));
    let rest = Rest {
        registry: registry.clone(),
        store: store.clone(),
        cache,
        alloc,
        admission,
    };
    registry.replace(crate::apiextensions::initial_registry(&rest, &builtin).await?);
    let kubelet = crate::kubelet::KubeletClient::new(&pki.ca_cert_pem, &pki.ca_key_pem)?;
    let mut server = ApiServer::new(
        rest,
        auth::default_authorizer(),
        format!("{host}:{}", addr.port()),
    )
    .with_kubelet_client(kubelet);
    server.tokens = Some(Arc::new(crate::token::Tokens::load_or_create(
        &config.data_dir.join("tls"),
        crate::token::DEFAULT_ISSUER,
    )?));
    let server = Arc::new(server);
    tokio::spawn(crate::apiextensions::run(server.rest.clone(), builtin));
    server.bootstrap().await?;
    // Not fatal: the API works without it, and another server may be writing it too.
    if let Err(e) = server
        .bootstrap_kubernetes_service(
            service_ip,
            &config
                .advertise_address
                .map_or_else(|| host.clone(), |a| a.to_string()),
            addr.port(),
        )
        .await
    {
        tracing::warn!(error = %e, "the kubernetes Service could not be written");
    }
    let tls = crate::tls::server_config(&pki)?;
    let handler = move |who: Option<Identity>, req| server.clone().handle(who, req);
    let task = tokio::spawn(crate::tls::serve(listener, tls, handler, shutdown));
    Ok(Running {
        addr,
        kubeconfig: config.kubeconfig_out,
        task,
    })
}

impl ApiServer {
    /// How the server writes its own objects at start.
    fn bootstrap_ctx(q: &Query) -> WriteCtx<'_> {
        WriteCtx {
            query: q,
            manager: "krust-apiserver".into(),
            dry_run: false,
            validation: FieldValidation::Strict,
            applied: false,
            who: None,
        }
    }

    /// Creates what every cluster has from the start: the system namespaces.
    async fn bootstrap(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let ns = self
            .registry
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| anyhow::anyhow!("namespaces not served"))?;
        let rp = ResourcePath {
            info: &ns,
            namespace: None,
            name: None,
            subresource: None,
            legacy_watch: false,
        };
        let q = Query::default();
        let ctx = Self::bootstrap_ctx(&q);
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}});
            set_meta(&mut obj, "name", name);
            match self.rest.create(&rp, obj, &ctx).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => anyhow::bail!("creating namespace {name}: {e}"),
            }
        }
        tracing::debug!("bootstrap took {:?}", started.elapsed());
        Ok(())
    }

    /// The `kubernetes` Service in `default` (the service CIDR's first address, port 443)
    /// and its Endpoints and EndpointSlice, which point at this server's address. The Service
    /// has no selector, so no controller touches its endpoints; this server rewrites them at
    /// every start, as upstream's endpoint reconciler does, since its address may change.
    async fn bootstrap_kubernetes_service(
        &self,
        service_ip: std::net::Ipv4Addr,
        host: &str,
        port: u16,
    ) -> anyhow::Result<()> {
        let q = Query::default();
        let ctx = Self::bootstrap_ctx(&q);
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": service_ip.to_string(),
                "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}
        });
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
                "endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": host}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        });
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
                "kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
        });
        for (group, version, plural, obj, rewrite) in [
            ("", "v1", "services", service, false),
            ("", "v1", "endpoints", endpoints, true),
            ("discovery.k8s.io", "v1", "endpointslices", slice, true),
        ] {
            let info = self
                .registry
                .lookup(group, version, plural)
                .ok_or_else(|| anyhow::anyhow!("{plural} not served"))?;
            let rp = ResourcePath {
                info: &info,
                namespace: Some("default".to_string()),
                name: None,
                subresource: None,
                legacy_watch: false,
            };
            // The Service is written once: creating it again would trip over its own
            // cluster IP, which is already allocated.
            if !rewrite && self.rest.get(&rp, "kubernetes").await.is_ok() {
                continue;
            }
            match self.rest.create(&rp, obj.clone(), &ctx).await {
                Ok(_) => {}
                Err(ApiError::AlreadyExists { .. }) if rewrite => {
                    self.rest
                        .update(&rp, "kubernetes", obj, &ctx)
                        .await
                        .map_err(|e| anyhow::anyhow!("updating {plural}/kubernetes: {e}"))?;
                }
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => anyhow::bail!("creating {plural}/kubernetes: {e}"),
            }
        }
        Ok(())
    }
}
