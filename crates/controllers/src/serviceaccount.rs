//! ServiceAccountController: every namespace that is not being deleted has a `default`
//! ServiceAccount; deleting it gets it recreated.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::util::{lost_namespace_race, Backoff, Result};
use crate::{Shared, Shutdown};

pub const DEFAULT: &str = "default";

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
    });
    Controller::for_stream(shared.namespaces.subscribe(), shared.namespaces.store())
        .watches_stream(shared.serviceaccounts.subscribe(), |sa: ServiceAccount| {
            (sa.name_any() == DEFAULT)
                .then(|| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
                .flatten()
        })
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |ns, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&ns.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// True when `ns` should have a default ServiceAccount it lacks.
pub fn needs_default(ns: &Namespace, have: bool) -> bool {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    !terminating && !have
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = ns.name_any();
    let have = ctx
        .shared
        .serviceaccounts
        .store()
        .get(&ObjectRef::<ServiceAccount>::new(DEFAULT).within(&name))
        .is_some();
    if needs_default(&ns, have) {
        let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.client.clone(), &name);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
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
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn default_account_only_for_live_namespaces_without_one() {
        let mut ns = Namespace::default();
        assert!(needs_default(&ns, false));
        assert!(!needs_default(&ns, true));
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(!needs_default(&ns, false));
    }
}
