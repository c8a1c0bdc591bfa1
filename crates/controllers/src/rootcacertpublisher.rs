//! Root CA certificate publisher, as upstream's `root-ca-cert-publisher`: every namespace
//! that is not being deleted has a `kube-root-ca.crt` ConfigMap whose `ca.crt` is the
//! cluster CA, so that pods (through their `kube-api-access-*` volume) can verify the API
//! server. A changed or deleted ConfigMap is put back.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::util::{lost_namespace_race, Backoff, Result};
use crate::{Shared, Shutdown};

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION_KEY: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    shared: Arc<Shared>,
    ca: String,
    backoff: Backoff,
}

/// Runs the publisher with `ca` (PEM) as the published bundle.
pub async fn run(shared: Arc<Shared>, ca: String, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        ca,
        backoff: Backoff::default(),
    });
    let cms: Api<ConfigMap> = Api::all(shared.client.clone());
    Controller::for_stream(shared.namespaces.subscribe(), shared.namespaces.store())
        .watches(
            cms,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |ns, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&ns.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The ConfigMap that should exist, or `None` when `current` is right already.
pub fn desired(current: Option<&ConfigMap>, ca: &str) -> Option<ConfigMap> {
    let data = BTreeMap::from([("ca.crt".to_string(), ca.to_string())]);
    let described = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_KEY))
            .is_some()
    };
    match current {
        Some(cm) if cm.data.as_ref() == Some(&data) && described(&cm.metadata) => None,
        Some(cm) => {
            let mut cm = cm.clone();
            cm.data = Some(data);
            cm.binary_data = None;
            cm.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(DESCRIPTION_KEY.to_string(), DESCRIPTION.to_string());
            Some(cm)
        }
        None => Some(ConfigMap {
            metadata: ObjectMeta {
                name: Some(NAME.to_string()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_KEY.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.shared.client.clone(), &name);
    let current = api.get_opt(NAME).await?;
    if let Some(cm) = desired(current.as_ref(), &ctx.ca) {
        let result = if current.is_some() {
            api.replace(NAME, &PostParams::default(), &cm).await
        } else {
            api.create(&PostParams::default(), &cm).await
        };
        match result {
            Ok(_) => {}
            Err(e) if lost_namespace_race(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.backoff.forget(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_and_repairs_the_bundle() {
        let made = desired(None, "PEM").expect("create");
        assert_eq!(made.metadata.name.as_deref(), Some(NAME));
        assert_eq!(
            made.data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(String::as_str),
            Some("PEM")
        );
        assert!(desired(Some(&made), "PEM").is_none(), "already right");
        let fixed = desired(Some(&made), "NEW").expect("changed CA");
        assert_eq!(
            fixed
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(String::as_str),
            Some("NEW")
        );
        let mut tampered = made.clone();
        tampered.data = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
        let back = desired(Some(&tampered), "PEM").expect("repaired");
        assert_eq!(back.data, made.data);
    }
}
