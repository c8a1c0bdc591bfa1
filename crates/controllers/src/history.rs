//! ControllerRevisions, as upstream's `pkg/controller/history`: the revision history that
//! StatefulSets and DaemonSets keep of their pod templates.
//!
//! A revision stores the patch `{"spec": {"template": ...}}` that brings the owner back to that
//! template (what `kubectl rollout undo` applies), is named `<owner>-<hash>` and numbered by
//! `revision`. [`sync`] finds or creates the revision of the owner's current template (giving an
//! older identical one the highest number again, as a rollback does) and [`truncate`] deletes
//! the oldest ones beyond `revisionHistoryLimit` that no pod still uses.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::util::{controller_of, controller_ref, is_conflict, is_not_found, Result};

/// The label a revision and the pods made from it carry.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The revision data of a template: the patch that restores it.
pub fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores, if its data holds one.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// FNV-1a 32 of the data (and the collision count), in a vowel-free alphabet, as upstream's
/// `HashControllerRevision` feeds a safe encoding.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if collision_count > 0 {
        bytes.extend_from_slice(&collision_count.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h;
    let mut out = String::new();
    loop {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
        if n == 0 {
            break;
        }
    }
    out
}

/// The revisions `owner` controls in `all`, oldest (lowest number) first.
pub fn owned<K: Resource>(owner: &K, all: &[Arc<ControllerRevision>]) -> Vec<ControllerRevision> {
    let uid = owner.meta().uid.as_deref().unwrap_or_default();
    let ns = owner.meta().namespace.as_deref();
    let mut revs: Vec<ControllerRevision> = all
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == ns)
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .map(|r| (**r).clone())
        .collect();
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    revs
}

fn same_data(a: &ControllerRevision, data: &Value) -> bool {
    a.data.as_ref().map(|d| &d.0) == Some(data)
}

/// Finds or creates the revision for `template`, numbered above every other one.
/// `labels` are the owner's selector labels, which revisions carry as upstream.
pub async fn sync<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    owner: &K,
    revisions: &[ControllerRevision],
    template: &PodTemplateSpec,
    labels: &std::collections::BTreeMap<String, String>,
    collision_count: i32,
) -> Result<ControllerRevision> {
    let data = patch_of(template);
    let max = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(found) = revisions.iter().rev().find(|r| same_data(r, &data)) {
        if found.revision == max {
            return Ok(found.clone());
        }
        let patch = json!({"revision": max + 1});
        let updated = api
            .patch(
                &found.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        return Ok(updated);
    }
    let mut collision = collision_count;
    for _ in 0..5 {
        let h = hash(&data, collision);
        let mut l = labels.clone();
        l.insert(HASH_LABEL.to_string(), h.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}-{h}",
                    owner.meta().name.as_deref().unwrap_or("")
                )),
                namespace: owner.meta().namespace.clone(),
                labels: Some(l),
                owner_references: Some(vec![controller_ref(owner)]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: max + 1,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => return Ok(r),
            Err(e) if is_conflict(&e) => {
                // A revision of that name exists: ours (a cache behind) or a true collision.
                let name = rev.metadata.name.clone().unwrap_or_default();
                match api.get(&name).await {
                    Ok(existing) if same_data(&existing, &data) => {
                        let uid = owner.meta().uid.as_deref().unwrap_or_default();
                        if controller_of(&existing.metadata).is_some_and(|o| o.uid == uid) {
                            return Ok(existing);
                        }
                        collision += 1;
                    }
                    Ok(_) => collision += 1,
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(crate::util::Error::Invalid(format!(
        "no free ControllerRevision name for {}",
        owner.meta().name.as_deref().unwrap_or("")
    )))
}

/// Deletes the oldest revisions beyond `limit` that are neither `keep` (current and update
/// revisions) nor used by a live pod (`in_use`: the hash or name labels of the pods).
pub async fn truncate(
    api: &Api<ControllerRevision>,
    revisions: &[ControllerRevision],
    keep: &[&str],
    in_use: &BTreeSet<String>,
    limit: i32,
) -> Result<()> {
    let idle: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| {
            let name = r.name_any();
            let h = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL))
                .cloned()
                .unwrap_or_default();
            !keep.contains(&name.as_str()) && !in_use.contains(&name) && !in_use.contains(&h)
        })
        .collect();
    let excess = idle.len().saturating_sub(limit.max(0) as usize);
    for r in idle.into_iter().take(excess) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: r.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&r.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn revision_data_round_trips_and_hashes_differ() {
        let t = template("nginx:1");
        let data = patch_of(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            data: Some(RawExtension(data.clone())),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
        let other = patch_of(&template("nginx:2"));
        assert_ne!(hash(&data, 0), hash(&other, 0));
        assert_ne!(hash(&data, 0), hash(&data, 1));
        assert!(hash(&data, 0).chars().all(|c| !"aeiou".contains(c)));
    }
}
