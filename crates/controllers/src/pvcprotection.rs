//! PVC protection (upstream's `pvc-protection`): a PersistentVolumeClaim that a scheduled pod
//! still names is not removed, so that deleting a claim cannot pull storage from under a pod.
//!
//! Admission gives every new claim the `kubernetes.io/pvc-protection` finalizer; this
//! controller adds it to claims that lack it and, once a claim is being deleted, lifts it when
//! no pod of the claim's namespace uses the claim any more. As upstream, a pod uses a claim
//! once it is scheduled (the node agent refuses to start a pod whose claim is being deleted)
//! and until the Pod object is gone, whatever its phase; a generic ephemeral volume's claim
//! only until its pod has shut down. The cache of pods decides quickly; before the finalizer
//! goes, a live list of the namespace's pods confirms it, as the cache may lag.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use krust_machinery::storage::PVC_PROTECTION_FINALIZER;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::util::{key_of, list_pages, patch_finalizers, Backoff, FinalizerChange, Result};
use crate::{Shared, Shutdown};

/// How soon a claim the live list still found in use is looked at again (its pod's deletion
/// requeues it anyway).
const IN_USE_RETRY: Duration = Duration::from_secs(10);

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
    let claims: Api<PersistentVolumeClaim> = Api::all(shared.client.clone());
    Controller::new(claims, watcher::Config::default().any_semantic())
        .watches_stream(shared.pods.subscribe(), claims_of_pod)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |c, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(c.as_ref())),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The claims a pod names (by `persistentVolumeClaim` or generic ephemeral volumes): each is
/// looked at again when the pod changes or goes.
fn claims_of_pod(pod: Pod) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    let Some(ns) = pod.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(ObjectRef::new(&c.claim_name).within(ns))
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| ObjectRef::new(&format!("{name}-{}", v.name)).within(ns))
            }
        })
        .collect()
}

/// Whether the kubelet is done with the pod, or it was force-deleted: upstream's
/// `podIsShutDown`, which only ephemeral volumes' claims consult.
fn pod_is_shut_down(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return true;
    }
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

/// Whether `pod` uses `claim`, as upstream's pvc-protection controller decides it.
pub fn pod_uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if spec.node_name.as_deref().unwrap_or("").is_empty()
        || pod.metadata.namespace != claim.metadata.namespace
    {
        return false;
    }
    let claim_name = claim.metadata.name.as_deref().unwrap_or("");
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    spec.volumes.iter().flatten().any(|v| {
        if let Some(c) = &v.persistent_volume_claim {
            return c.claim_name == claim_name;
        }
        v.ephemeral.is_some()
            && !pod_is_shut_down(pod)
            && format!("{pod_name}-{}", v.name) == claim_name
            && owned_by(claim, pod)
    })
}

/// Whether the pod is the claim's controller (an ephemeral volume's claim is the pod's own).
fn owned_by(claim: &PersistentVolumeClaim, pod: &Pod) -> bool {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == pod.metadata.uid.as_ref())
}

fn has_finalizer(claim: &PersistentVolumeClaim) -> bool {
    claim
        .finalizers()
        .iter()
        .any(|f| f == PVC_PROTECTION_FINALIZER)
}

async fn reconcile(claim: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    let action = protect(&claim, &ctx.shared).await?;
    ctx.backoff.forget(&key_of(claim.as_ref()));
    Ok(action)
}

/// Adds the finalizer to a claim without it, or lifts it from a claim being deleted that no
/// pod uses.
async fn protect(claim: &PersistentVolumeClaim, shared: &Shared) -> Result<Action> {
    let Some(ns) = claim.namespace() else {
        return Ok(Action::await_change());
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &ns);
    let change = match (
        claim.metadata.deletion_timestamp.is_some(),
        has_finalizer(claim),
    ) {
        (false, false) => FinalizerChange::Add,
        (true, true) => {
            if shared.pods_in(&ns).iter().any(|p| pod_uses_claim(p, claim)) {
                return Ok(Action::await_change());
            }
            let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
            let live = list_pages(&ListParams::default(), |lp| {
                let pods = pods.clone();
                async move { pods.list(&lp).await }
            })
            .await?;
            if live.iter().any(|p| pod_uses_claim(p, claim)) {
                return Ok(Action::requeue(IN_USE_RETRY));
            }
            tracing::debug!(claim = %key_of(claim), "no pod uses the claim: lifting its protection");
            FinalizerChange::Remove
        }
        _ => return Ok(Action::await_change()),
    };
    patch_finalizers(&api, &claim.metadata, PVC_PROTECTION_FINALIZER, change).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::api::ObjectMeta;

    fn claim(name: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("ns".to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(node: &str, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".to_string()),
                namespace: Some("ns".to_string()),
                uid: Some("pod-uid".to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_string()).filter(|n| !n.is_empty()),
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn claim_volume(claim: &str) -> Volume {
        Volume {
            name: "data".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_scheduled_pod_uses_its_claims_whatever_its_phase() {
        let c = claim("data");
        let mut p = pod("node-a", vec![claim_volume("data")]);
        assert!(pod_uses_claim(&p, &c));
        p.status = Some(PodStatus {
            phase: Some("Succeeded".to_string()),
            ..Default::default()
        });
        assert!(pod_uses_claim(&p, &c), "finished pods still hold the claim");
        assert!(!pod_uses_claim(&p, &claim("other")));
        let unscheduled = pod("", vec![claim_volume("data")]);
        assert!(!pod_uses_claim(&unscheduled, &c), "not scheduled yet");
        let mut elsewhere = pod("node-a", vec![claim_volume("data")]);
        elsewhere.metadata.namespace = Some("other".to_string());
        assert!(!pod_uses_claim(&elsewhere, &c), "claims are namespaced");
    }

    #[test]
    fn an_ephemeral_claim_is_used_until_its_pod_shuts_down() {
        let mut c = claim("web-scratch");
        let eph = Volume {
            name: "scratch".to_string(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        };
        let mut p = pod("node-a", vec![eph]);
        assert!(!pod_uses_claim(&p, &c), "not the pod's own claim");
        c.metadata.owner_references = Some(vec![OwnerReference {
            controller: Some(true),
            uid: "pod-uid".to_string(),
            ..Default::default()
        }]);
        assert!(pod_uses_claim(&p, &c));
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert!(!pod_uses_claim(&p, &c), "force-deleted");
    }

    #[test]
    fn pod_events_requeue_the_claims_they_name() {
        let eph = Volume {
            name: "scratch".to_string(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        };
        let refs = claims_of_pod(pod("node-a", vec![claim_volume("data"), eph]));
        let names: Vec<(String, Option<String>)> =
            refs.into_iter().map(|r| (r.name, r.namespace)).collect();
        assert_eq!(
            names,
            vec![
                ("data".to_string(), Some("ns".to_string())),
                ("web-scratch".to_string(), Some("ns".to_string())),
            ]
        );
    }
}
