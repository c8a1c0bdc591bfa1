//! PV protection (upstream's `pv-protection`): a PersistentVolume that is Bound to a claim is
//! not removed, so that deleting a volume cannot pull it from under its claim.
//!
//! Admission gives every new volume the `kubernetes.io/pv-protection` finalizer; this
//! controller adds it to volumes that lack it and, once a volume is being deleted, lifts it
//! when the volume's phase is no longer Bound (its claim was deleted and the binder released
//! it, or it never was bound).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use krust_machinery::storage::PV_PROTECTION_FINALIZER;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::util::{patch_finalizers, Backoff, FinalizerChange, Result};
use crate::{Shared, Shutdown};

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
}

/// Runs the controller until `shutdown`.
pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
    });
    let volumes: Api<PersistentVolume> = Api::all(shared.client.clone());
    Controller::new(volumes, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |v, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&v.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// What the volume's protection needs now.
pub fn plan(v: &PersistentVolume) -> Option<FinalizerChange> {
    let has = v.finalizers().iter().any(|f| f == PV_PROTECTION_FINALIZER);
    let deleting = v.metadata.deletion_timestamp.is_some();
    let bound = v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    match (deleting, has) {
        (false, false) => Some(FinalizerChange::Add),
        (true, true) if !bound => Some(FinalizerChange::Remove),
        _ => None,
    }
}

async fn reconcile(v: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action> {
    if let Some(change) = plan(&v) {
        let api: Api<PersistentVolume> = Api::all(ctx.shared.client.clone());
        patch_finalizers(&api, &v.metadata, PV_PROTECTION_FINALIZER, change).await?;
    }
    ctx.backoff.forget(&v.name_any());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn volume(phase: &str, finalized: bool, deleting: bool) -> PersistentVolume {
        let mut v = PersistentVolume::default();
        v.metadata.name = Some("pv".to_string());
        if finalized {
            v.metadata.finalizers = Some(vec![PV_PROTECTION_FINALIZER.to_string()]);
        }
        if deleting {
            v.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        v.status = Some(PersistentVolumeStatus {
            phase: Some(phase.to_string()),
            ..Default::default()
        });
        v
    }

    #[test]
    fn bound_volumes_stay_until_released() {
        assert_eq!(
            plan(&volume("Available", false, false)),
            Some(FinalizerChange::Add)
        );
        assert_eq!(plan(&volume("Bound", true, false)), None);
        assert_eq!(plan(&volume("Bound", true, true)), None, "still bound");
        for phase in ["Released", "Available", "Failed", "Pending"] {
            assert_eq!(
                plan(&volume(phase, true, true)),
                Some(FinalizerChange::Remove),
                "{phase}"
            );
        }
        assert_eq!(
            plan(&volume("Released", false, true)),
            None,
            "already lifted"
        );
    }
}
