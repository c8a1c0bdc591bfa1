//! NamespaceController: a namespace being deleted (deletionTimestamp set, phase Terminating)
//! has every namespaced object in it deleted, found through discovery; once nothing is left,
//! the `kubernetes` finalizer is removed through the `finalize` subresource and the API server
//! lets the namespace go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use tokio::sync::Mutex;

use crate::util::{is_not_found, list_pages, Backoff, Result};
use crate::{Shared, Shutdown};

/// The finalizer the API server puts on every namespace.
pub const FINALIZER: &str = "kubernetes";
const DISCOVERY_TTL: Duration = Duration::from_secs(30);

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    discovery: Mutex<Option<(Instant, Vec<ApiResource>)>>,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        discovery: Mutex::new(None),
    });
    Controller::for_stream(shared.namespaces.subscribe(), shared.namespaces.store())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |ns, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&ns.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The namespaced resources that can be listed and deleted.
pub fn deletable(resources: Vec<(ApiResource, ApiCapabilities)>) -> Vec<ApiResource> {
    resources
        .into_iter()
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE)
        })
        .map(|(ar, _)| ar)
        .collect()
}

impl Ctx {
    async fn resources(&self) -> Result<Vec<ApiResource>> {
        let mut cache = self.discovery.lock().await;
        if let Some((at, res)) = cache.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(res.clone());
            }
        }
        let discovery = Discovery::new(self.shared.client.clone()).run().await?;
        let mut res = Vec::new();
        for group in discovery.groups() {
            res.extend(deletable(group.recommended_resources()));
        }
        *cache = Some((Instant::now(), res.clone()));
        Ok(res)
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = ns.name_any();
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        ctx.backoff.forget(&name);
        return Ok(Action::await_change());
    }
    let client = ctx.shared.client.clone();
    let mut remaining = 0usize;
    for ar in ctx.resources().await? {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &ar);
        tracing::trace!(namespace = %name, resource = %ar.plural, "emptying");
        let all = list_pages(&ListParams::default(), |lp| {
            let api = api.clone();
            async move { api.list_metadata(&lp).await }
        })
        .await;
        let items = match all {
            Ok(items) => items,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let n = obj.metadata.name.clone().unwrap_or_default();
            match api.delete(&n, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "namespace still has content");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut done = (*ns).clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    done.metadata.managed_fields = None;
    let api: Api<Namespace> = Api::all(client);
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &done)
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    ctx.backoff.forget(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::discovery::ApiCapabilities;

    fn res(plural: &str, scope: Scope, ops: &[&str]) -> (ApiResource, ApiCapabilities) {
        (
            ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: plural.into(),
                plural: plural.into(),
            },
            ApiCapabilities {
                scope,
                subresources: vec![],
                operations: ops.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    #[test]
    fn only_namespaced_deletable_resources_are_emptied() {
        let got = deletable(vec![
            res("pods", Scope::Namespaced, &["list", "delete", "get"]),
            res("nodes", Scope::Cluster, &["list", "delete"]),
            res("bindings", Scope::Namespaced, &["create"]),
            res("events", Scope::Namespaced, &["list", "delete"]),
        ]);
        let names: Vec<_> = got.iter().map(|a| a.plural.as_str()).collect();
        assert_eq!(names, vec!["pods", "events"]);
    }
}
