//! What the PersistentVolume binder and the scheduler's VolumeBinding plugin share, as
//! upstream's `component-helpers/storage/volume`: the annotations they exchange, which class
//! a claim or volume has, whether a volume can serve a claim, the smallest volume that can,
//! and whether a volume's node affinity admits a node. Both must agree on these, or the
//! scheduler would place a pod where the binder never binds its claim. Also the protection
//! finalizers that admission puts on claims and volumes and the protection controllers lift.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::selector::Selector;
use crate::validation::quantity::Quantity;

/// On every claim, from its creation (upstream's StorageObjectInUseProtection admission):
/// the claim is not removed while a scheduled pod names it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// On every volume, from its creation: the volume is not removed while it is Bound.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// On a claim: the binder finished binding it (it is then only checked, never rebound).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder, not the user, chose the other side of the binding.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a claim: the node the scheduler chose for its first consumer.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The class before `storageClassName` existed; still read first, as upstream does.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner of classes whose volumes are made by hand (local volumes).
pub const NOT_SUPPORTED_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// The binding mode that waits for the scheduler to choose a node.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

fn annotation<'a>(a: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    a?.get(key).map(String::as_str)
}

/// The claim's class: the beta annotation, else `storageClassName`, else "" (no class).
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    annotation(c.metadata.annotations.as_ref(), ANN_BETA_STORAGE_CLASS)
        .or_else(|| c.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's class, read like [`claim_class`].
pub fn volume_class(v: &PersistentVolume) -> &str {
    annotation(v.metadata.annotations.as_ref(), ANN_BETA_STORAGE_CLASS)
        .or_else(|| v.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// Whether a claim of `class` waits for its first consumer before binding.
pub fn delays_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some(WAIT_FOR_FIRST_CONSUMER)
}

/// The storage the claim asks for, in nano-units (zero when it names none).
pub fn claim_request(c: &PersistentVolumeClaim) -> i128 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::parse(&q.0))
        .map_or(0, |q| q.nanos())
}

/// The volume's capacity in nano-units (`None` when it has none or it does not parse).
pub fn volume_capacity(v: &PersistentVolume) -> Option<i128> {
    v.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(|q| Quantity::parse(&q.0))
        .map(|q| q.nanos())
}

fn volume_mode(m: Option<&String>) -> &str {
    m.map(String::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("Filesystem")
}

/// Whether the volume is reserved for this claim: its `claimRef` names the claim and, once
/// it carries a uid, the same claim object (not an earlier one of the same name).
pub fn is_bound_to(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == c.metadata.name
        && r.namespace == c.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref())
}

/// Why a volume cannot serve a claim (upstream's messages, shown in VolumeMismatch events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("requested PV is too small")]
    TooSmall,
    #[error("storageClassName does not match")]
    Class,
    #[error("incompatible volumeMode")]
    VolumeMode,
    #[error("incompatible accessMode")]
    AccessMode,
}

/// Whether the volume's access modes include every mode the claim asks for.
pub fn access_modes_fit(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let have = v
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
        .iter()
        .all(|m| have.contains(m))
}

fn volume_mode_fits(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    volume_mode(v.spec.as_ref().and_then(|s| s.volume_mode.as_ref()))
        == volume_mode(c.spec.as_ref().and_then(|s| s.volume_mode.as_ref()))
}

/// Whether `v` can serve `c` (upstream's checkVolumeSatisfyClaim, used for volumes a user
/// pre-bound, where the label selector is not consulted).
pub fn check_volume_satisfies_claim(
    v: &PersistentVolume,
    c: &PersistentVolumeClaim,
) -> Result<(), Mismatch> {
    if volume_capacity(v).is_none_or(|cap| cap < claim_request(c)) {
        return Err(Mismatch::TooSmall);
    }
    if volume_class(v) != claim_class(c) {
        return Err(Mismatch::Class);
    }
    if !volume_mode_fits(v, c) {
        return Err(Mismatch::VolumeMode);
    }
    if !access_modes_fit(v, c) {
        return Err(Mismatch::AccessMode);
    }
    Ok(())
}

/// The node a match is looked for on: its name and labels.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

fn term_matches(t: &NodeSelectorTerm, node: NodeRef<'_>) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    (!exprs.is_empty() || !fields.is_empty())
        && exprs.iter().all(|r| {
            crate::selector::node_requirement_holds(r, node.labels.get(&r.key).map(String::as_str))
        })
        && fields.iter().all(|r| {
            crate::selector::node_requirement_holds(
                r,
                (r.key == "metadata.name").then_some(node.name),
            )
        })
}

/// Whether a node selector admits the node: terms ORed, requirements within a term ANDed.
pub fn node_selector_matches(sel: &NodeSelector, node: NodeRef<'_>) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

/// Whether the volume can be used on the node: it has no required node affinity, or the
/// node satisfies it.
pub fn volume_fits_node(v: &PersistentVolume, node: NodeRef<'_>) -> bool {
    v.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|sel| node_selector_matches(sel, node))
}

fn claim_selector(c: &PersistentVolumeClaim) -> Option<Selector> {
    let sel = c.spec.as_ref()?.selector.as_ref()?;
    let v = serde_json::to_value(sel).ok()?;
    Some(Selector::from_label_selector(&v).unwrap_or_else(|_| Selector::nothing()))
}

/// The volume for a claim (upstream's FindMatchingVolume): one reserved for it by its
/// `claimRef` if any (and usable on `node`), else the smallest Available volume of the
/// claim's class whose capacity, access and volume modes, labels and node affinity fit.
/// `node` is the node chosen for the claim's first consumer (`None`: any node).
pub fn find_matching_volume<'v, V>(
    c: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'v V>,
    node: Option<NodeRef<'_>>,
    excluded: &dyn Fn(&str) -> bool,
) -> Option<&'v V>
where
    V: AsRef<PersistentVolume> + 'v,
{
    let request = claim_request(c);
    let class = claim_class(c);
    let selector = claim_selector(c);
    let mut best: Option<(&'v V, i128)> = None;
    for item in volumes {
        let v = item.as_ref();
        let name = v.metadata.name.as_deref().unwrap_or_default();
        if excluded(name) || v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let reserved = is_bound_to(v, c);
        if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some() && !reserved {
            continue;
        }
        let Some(cap) = volume_capacity(v).filter(|cap| *cap >= request) else {
            continue;
        };
        if !volume_mode_fits(v, c) {
            continue;
        }
        let fits_node = node.is_none_or(|n| volume_fits_node(v, n));
        if reserved {
            return fits_node.then_some(item);
        }
        let available = v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
        if !available
            || !fits_node
            || volume_class(v) != class
            || !access_modes_fit(v, c)
            || selector
                .as_ref()
                .is_some_and(|s| !s.matches(&v.metadata.labels.clone().unwrap_or_default()))
        {
            continue;
        }
        if best.as_ref().is_none_or(|(_, q)| cap < *q) {
            best = Some((item, cap));
        }
    }
    best.map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pv(name: &str, v: serde_json::Value) -> Arc<PersistentVolume> {
        let mut o = json!({"metadata": {"name": name}, "status": {"phase": "Available"}});
        if let (Some(o), Some(v)) = (o.as_object_mut(), v.as_object()) {
            for (k, x) in v {
                o.insert(k.clone(), x.clone());
            }
        }
        Arc::new(serde_json::from_value(o).expect("pv"))
    }

    fn pvc(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": spec,
        }))
        .expect("pvc")
    }

    fn spec(size: &str, modes: &[&str], class: Option<&str>) -> serde_json::Value {
        let mut s = json!({"capacity": {"storage": size}, "accessModes": modes});
        if let Some(c) = class {
            s["storageClassName"] = json!(c);
        }
        json!({ "spec": s })
    }

    fn claim(size: &str, modes: &[&str]) -> serde_json::Value {
        json!({"accessModes": modes, "resources": {"requests": {"storage": size}}})
    }

    fn pick<'a>(c: &PersistentVolumeClaim, vs: &'a [Arc<PersistentVolume>]) -> Option<&'a str> {
        find_matching_volume(c, vs, None, &|_| false).and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_class_wins() {
        let vs = vec![
            pv("big", spec("10Gi", &["ReadWriteOnce"], None)),
            pv("small", spec("1Gi", &["ReadWriteOnce"], None)),
            pv("tiny", spec("100Mi", &["ReadWriteOnce"], None)),
            pv("fast", spec("1Gi", &["ReadWriteOnce"], Some("fast"))),
            pv("ro", spec("1Gi", &["ReadOnlyMany"], None)),
        ];
        let c = pvc(claim("500Mi", &["ReadWriteOnce"]));
        assert_eq!(pick(&c, &vs), Some("small"));
        let mut fast = claim("500Mi", &["ReadWriteOnce"]);
        fast["storageClassName"] = json!("fast");
        assert_eq!(pick(&pvc(fast), &vs), Some("fast"));
        assert_eq!(pick(&pvc(claim("1Gi", &["ReadOnlyMany"])), &vs), Some("ro"));
        assert_eq!(pick(&pvc(claim("20Gi", &["ReadWriteOnce"])), &vs), None);
        let block = json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
            "resources": {"requests": {"storage": "1"}}});
        assert_eq!(pick(&pvc(block), &vs), None);
    }

    #[test]
    fn reserved_volumes_win_and_others_are_skipped() {
        let mut mine = spec("5Gi", &["ReadWriteOnce"], None);
        mine["spec"]["claimRef"] = json!({"name": "c", "namespace": "ns"});
        let mut theirs = spec("1Gi", &["ReadWriteOnce"], None);
        theirs["spec"]["claimRef"] = json!({"name": "other", "namespace": "ns"});
        let vs = vec![
            pv("theirs", theirs),
            pv("free", spec("1Gi", &["ReadWriteOnce"], None)),
            pv("mine", mine),
        ];
        let c = pvc(claim("1Gi", &["ReadWriteOnce"]));
        assert_eq!(pick(&c, &vs), Some("mine"));
        assert!(is_bound_to(&vs[2], &c));
        let mut stale = (*vs[2]).clone();
        if let Some(r) = stale.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            r.uid = Some("old".into());
        }
        assert!(
            !is_bound_to(&stale, &c),
            "an earlier claim of the same name"
        );
    }

    #[test]
    fn selector_phase_and_node_affinity_filter() {
        let mut labelled = spec("1Gi", &["ReadWriteOnce"], None);
        labelled["metadata"] = json!({"name": "labelled", "labels": {"tier": "gold"}});
        let mut pending = spec("1Gi", &["ReadWriteOnce"], None);
        pending["status"] = json!({"phase": "Pending"});
        let mut local = spec("2Gi", &["ReadWriteOnce"], None);
        local["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}});
        let vs = vec![
            pv("labelled", labelled),
            pv("pending", pending),
            pv("local", local),
        ];
        let mut gold = claim("1Gi", &["ReadWriteOnce"]);
        gold["selector"] = json!({"matchLabels": {"tier": "gold"}});
        assert_eq!(pick(&pvc(gold), &vs), Some("labelled"));
        let c = pvc(claim("2Gi", &["ReadWriteOnce"]));
        assert_eq!(pick(&c, &vs), Some("local"));
        let list = &vs;
        let n2 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n2".to_string())]);
        let on_n2 = Some(NodeRef {
            name: "n2",
            labels: &n2,
        });
        assert!(find_matching_volume(&c, list, on_n2, &|_| false).is_none());
        let n1 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]);
        let on_n1 = Some(NodeRef {
            name: "n1",
            labels: &n1,
        });
        assert!(find_matching_volume(&c, list, on_n1, &|_| false).is_some());
        assert!(find_matching_volume(&c, list, on_n1, &|n| n == "local").is_none());
    }

    #[test]
    fn mismatches_are_named() {
        let v = pv("v", spec("1Gi", &["ReadWriteOnce"], Some("a")));
        let mut c = claim("2Gi", &["ReadWriteOnce"]);
        assert_eq!(
            check_volume_satisfies_claim(&v, &pvc(c.clone())),
            Err(Mismatch::TooSmall)
        );
        c["resources"]["requests"]["storage"] = json!("1Gi");
        assert_eq!(
            check_volume_satisfies_claim(&v, &pvc(c.clone())),
            Err(Mismatch::Class)
        );
        c["storageClassName"] = json!("a");
        assert_eq!(check_volume_satisfies_claim(&v, &pvc(c.clone())), Ok(()));
        c["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(
            check_volume_satisfies_claim(&v, &pvc(c)),
            Err(Mismatch::AccessMode)
        );
    }
}
