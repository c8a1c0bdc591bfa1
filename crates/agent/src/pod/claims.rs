//! `persistentVolumeClaim` volumes: the claim must be Bound and its PersistentVolume bound
//! back to it; a `hostPath` volume (created first when its `type` asks) or a `local` volume
//! then becomes a bind mount like an inline hostPath. Until then the pod's sandbox is not
//! started: the worker records `FailedMount` and retries, as the kubelet's volume manager
//! waits for a pod's volumes before it starts the pod. A claim being deleted is never
//! mounted for a pod that has not started, as upstream, which is what lets `pvc-protection`
//! count only scheduled pods.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;

use super::volumes::Prepared;

/// Why a claim's volume cannot be mounted yet (upstream's wording where it has one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("persistentvolumeclaim \"{0}\" not found")]
    NoClaim(String),
    /// The claim is being deleted (its protection keeps it while pods that run use it): a
    /// pod that has not started does not start on it.
    #[error("PVC is being deleted")]
    BeingDeleted,
    #[error("PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})")]
    Unbound {
        namespace: String,
        name: String,
        phase: String,
        volume: String,
    },
    #[error("failed to fetch PV {0} from API server: not found")]
    NoVolume(String),
    #[error("found PV object {0} but its claimRef does not point to this claim")]
    Misbound(String),
    #[error("PV {0} has a volume source the krust agent does not mount (hostPath and local only)")]
    Unsupported(String),
    #[error("reading claim or volume: {0}")]
    Api(String),
}

/// The pod's `persistentVolumeClaim` volumes: (volume name, claim name, read-only).
pub fn claim_volumes(pod: &Pod) -> Vec<(&str, &str, bool)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let c = v.persistent_volume_claim.as_ref()?;
            Some((
                v.name.as_str(),
                c.claim_name.as_str(),
                c.read_only.unwrap_or(false),
            ))
        })
        .collect()
}

/// What the volume of a bound claim is on the host, or why there is none yet.
pub fn host_volume(
    ns: &str,
    name: &str,
    claim: Option<&PersistentVolumeClaim>,
    volume: Option<&PersistentVolume>,
) -> Result<Prepared, ClaimError> {
    let c = claim.ok_or_else(|| ClaimError::NoClaim(name.to_string()))?;
    if c.metadata.deletion_timestamp.is_some() {
        return Err(ClaimError::BeingDeleted);
    }
    let phase = c
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let pv_name = c
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || pv_name.is_empty() {
        return Err(ClaimError::Unbound {
            namespace: ns.to_string(),
            name: name.to_string(),
            phase,
            volume: pv_name,
        });
    }
    let v = volume.ok_or_else(|| ClaimError::NoVolume(pv_name.clone()))?;
    let bound_back = v
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name.as_deref() == Some(name)
                && r.namespace.as_deref() == Some(ns)
                && r.uid.is_some()
                && r.uid == c.metadata.uid
        });
    if !bound_back {
        return Err(ClaimError::Misbound(pv_name));
    }
    let spec = v.spec.as_ref();
    if let Some(h) = spec.and_then(|s| s.host_path.as_ref()) {
        return Ok(super::volumes::host_path(h));
    }
    if let Some(l) = spec.and_then(|s| s.local.as_ref()) {
        return Ok(Prepared::Host {
            path: PathBuf::from(&l.path),
            create: None,
        });
    }
    Err(ClaimError::Unsupported(pv_name))
}

/// A claim volume that cannot be mounted: which volume and claim, and why.
#[derive(Clone, Debug, thiserror::Error)]
#[error("Unable to attach or mount volumes: unmounted volumes=[{volume}]: error processing PVC {namespace}/{claim}: {error}")]
pub struct Unmountable {
    pub volume: String,
    pub namespace: String,
    pub claim: String,
    #[source]
    pub error: ClaimError,
}

/// Reads each claim of the pod and its volume; the host volume of each claim volume, by
/// volume name.
pub async fn resolve(
    client: &kube::Client,
    pod: &Pod,
) -> Result<HashMap<String, Prepared>, Unmountable> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut out = HashMap::new();
    for (volume, claim, _) in claim_volumes(pod) {
        let fail = |error: ClaimError| Unmountable {
            volume: volume.to_string(),
            namespace: ns.to_string(),
            claim: claim.to_string(),
            error,
        };
        let api_err = |e: kube::Error| fail(ClaimError::Api(e.to_string()));
        let c = claims.get_opt(claim).await.map_err(api_err)?;
        let pv_name = c
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty());
        let v = match pv_name {
            Some(n) => volumes.get_opt(n).await.map_err(api_err)?,
            None => None,
        };
        let prepared = host_volume(ns, claim, c.as_ref(), v.as_ref()).map_err(fail)?;
        out.insert(volume.to_string(), prepared);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(phase: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"volumeName": volume},
            "status": {"phase": phase},
        }))
        .expect("claim")
    }

    fn volume(source: serde_json::Value, uid: &str) -> PersistentVolume {
        let mut spec = json!({"claimRef": {"name": "data", "namespace": "ns", "uid": uid}});
        if let (Some(s), Some(src)) = (spec.as_object_mut(), source.as_object()) {
            s.extend(src.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": spec})).expect("pv")
    }

    #[test]
    fn bound_host_path_and_local_claims_become_host_mounts() {
        let c = claim("Bound", Some("pv1"));
        let hp = volume(
            json!({"hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}}),
            "u1",
        );
        assert_eq!(
            host_volume("ns", "data", Some(&c), Some(&hp)),
            Ok(Prepared::Host {
                path: PathBuf::from("/srv/data"),
                create: Some("dir")
            })
        );
        let local = volume(json!({"local": {"path": "/mnt/disk"}}), "u1");
        assert_eq!(
            host_volume("ns", "data", Some(&c), Some(&local)),
            Ok(Prepared::Host {
                path: PathBuf::from("/mnt/disk"),
                create: None
            })
        );
        let nfs = volume(json!({"nfs": {"server": "x", "path": "/"}}), "u1");
        assert_eq!(
            host_volume("ns", "data", Some(&c), Some(&nfs)),
            Err(ClaimError::Unsupported("pv1".into()))
        );
    }

    #[test]
    fn unbound_missing_and_misbound_claims_wait() {
        assert_eq!(
            host_volume("ns", "data", None, None),
            Err(ClaimError::NoClaim("data".into()))
        );
        let pending = claim("Pending", None);
        let e = host_volume("ns", "data", Some(&pending), None).expect_err("pending");
        assert_eq!(
            e.to_string(),
            "PVC ns/data has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
        );
        let c = claim("Bound", Some("pv1"));
        assert_eq!(
            host_volume("ns", "data", Some(&c), None),
            Err(ClaimError::NoVolume("pv1".into()))
        );
        let other = volume(json!({"local": {"path": "/mnt"}}), "u9");
        assert_eq!(
            host_volume("ns", "data", Some(&c), Some(&other)),
            Err(ClaimError::Misbound("pv1".into()))
        );
        let mut deleting = claim("Bound", Some("pv1"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let hp = volume(json!({"hostPath": {"path": "/srv"}}), "u1");
        assert_eq!(
            host_volume("ns", "data", Some(&deleting), Some(&hp)),
            Err(ClaimError::BeingDeleted)
        );
    }

    #[test]
    fn claim_volumes_carry_read_only() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "volumes": [
            {"name": "a", "persistentVolumeClaim": {"claimName": "ca", "readOnly": true}},
            {"name": "b", "emptyDir": {}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "cc"}},
        ]}}))
        .expect("pod");
        assert_eq!(
            claim_volumes(&pod),
            vec![("a", "ca", true), ("c", "cc", false)]
        );
    }
}
