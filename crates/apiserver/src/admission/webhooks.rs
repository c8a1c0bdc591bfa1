//! Dynamic admission on the write path: the MutatingWebhookConfigurations run after the
//! built-in mutating plugins, the ValidatingWebhookConfigurations after validation, as in
//! upstream's admission chain. Configurations come from the watch cache, so a change takes
//! effect as soon as the cache has it (upstream's informers are as eventual).

use std::collections::BTreeMap;
use std::sync::Arc;

use krust_machinery::registry::SharedRegistry;
use krust_machinery::ApiError;
use krust_webhook::{Attributes, Dispatcher, Operation, UserInfo, WebhookError};
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::cache::Cache;
use crate::request::ResourcePath;
use crate::rest::Rest;
use crate::serviceresolver::EndpointResolver;

const GROUP: &str = "admissionregistration.k8s.io";

/// The webhook dispatcher of a server.
pub struct DynamicAdmission {
    dispatcher: Dispatcher,
}

impl DynamicAdmission {
    pub fn new(registry: Arc<SharedRegistry>, cache: Arc<Cache>) -> Self {
        let resolver = Arc::new(EndpointResolver::new(registry, cache));
        DynamicAdmission {
            dispatcher: Dispatcher::new(resolver),
        }
    }
}

/// One write as admission sees it.
pub struct AdmissionRequest<'a> {
    pub operation: Operation,
    pub rp: &'a ResourcePath<'a>,
    pub name: &'a str,
    pub who: Option<&'a Identity>,
    pub dry_run: bool,
    /// The CreateOptions, UpdateOptions or DeleteOptions of the request.
    pub options: Value,
}

impl AdmissionRequest<'_> {
    /// Create/UpdateOptions as the review carries them.
    pub fn write_options(kind: &str, dry_run: bool, manager: &str) -> Value {
        let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if dry_run {
            o["dryRun"] = json!(["All"]);
        }
        if !manager.is_empty() {
            o["fieldManager"] = json!(manager);
        }
        o
    }
}

/// The server's own writes are made as `system:apiserver`, as upstream's loopback client.
fn user_info(who: Option<&Identity>) -> UserInfo {
    match who {
        Some(id) => UserInfo {
            username: id.user.clone(),
            uid: id.uid.clone(),
            groups: id.groups.clone(),
            extra: id.extra.clone(),
        },
        None => UserInfo {
            username: "system:apiserver".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into(), "system:masters".into()],
            extra: BTreeMap::new(),
        },
    }
}

/// A webhook's answer as the client sees it: its denial with its code, or 500.
fn api_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Denied {
            code,
            reason,
            message,
        } => ApiError::Status {
            code,
            reason,
            message,
        },
        WebhookError::Failed { message } | WebhookError::BadResponse { message } => {
            ApiError::internal(message)
        }
    }
}

impl Rest {
    /// The objects of one admissionregistration resource, as JSON.
    fn configurations(&self, plural: &str) -> Vec<Value> {
        let Some(info) = self.registry.lookup(GROUP, "v1", plural) else {
            return Vec::new();
        };
        let snap = self
            .cache
            .list(&info.key_prefix(), None, 0, false, |_| true);
        snap.items
            .iter()
            .filter_map(|(_, c)| serde_json::from_slice(&c.value).ok())
            .collect()
    }

    fn namespace_labels(&self, namespace: Option<&str>) -> Option<BTreeMap<String, String>> {
        let ns = namespace?;
        let info = self.registry.lookup("", "v1", "namespaces")?;
        let cached = self.cache.get(&info.key(None, ns))?;
        let obj: Value = serde_json::from_slice(&cached.value).ok()?;
        let labels = obj.pointer("/metadata/labels")?.as_object()?;
        Some(
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
        )
    }

    fn attributes(
        &self,
        req: &AdmissionRequest<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Attributes {
        let info = req.rp.info;
        let namespace = req.rp.namespace.clone().filter(|_| info.namespaced);
        Attributes {
            operation: req.operation,
            group: info.group.to_string(),
            version: info.version.to_string(),
            kind: info.kind.to_string(),
            resource: info.plural.to_string(),
            subresource: req.rp.subresource.clone().unwrap_or_default(),
            name: req.name.to_string(),
            namespace_labels: self.namespace_labels(namespace.as_deref()),
            namespace,
            object: object.cloned(),
            old_object: old.cloned(),
            options: Some(req.options.clone()),
            dry_run: req.dry_run,
            user: user_info(req.who),
            cluster_scoped: !info.namespaced,
        }
    }

    /// Runs the mutating webhooks that match on `obj`; returns their warnings.
    pub(crate) async fn mutating_webhooks(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let configs = self.configurations("mutatingwebhookconfigurations");
        if configs.is_empty() {
            return Ok(Vec::new());
        }
        let mut attrs = self.attributes(req, Some(obj), old);
        let warnings = self
            .admission
            .dispatcher
            .mutate(&configs, &mut attrs)
            .await
            .map_err(api_error)?;
        if let Some(mutated) = attrs.object {
            *obj = mutated;
        }
        Ok(warnings)
    }

    /// Runs the validating webhooks that match; `obj` is `None` for a delete.
    pub(crate) async fn validating_webhooks(
        &self,
        req: &AdmissionRequest<'_>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let configs = self.configurations("validatingwebhookconfigurations");
        if configs.is_empty() {
            return Ok(Vec::new());
        }
        let attrs = self.attributes(req, obj, old);
        self.admission
            .dispatcher
            .validate(&configs, &attrs)
            .await
            .map_err(api_error)
    }
}
