//! CertificateSigningRequests' strategy, as upstream's
//! `pkg/registry/certificates/certificates/strategy.go`:
//!
//! - create: `spec.username`, `uid`, `groups` and `extra` are the requester's, whatever
//!   the client sent, and the status starts empty (no pre-approved requests);
//! - update of the object: spec and status stay as stored (only metadata changes);
//! - `status`: spec and the Approved/Denied conditions stay; the certificate and the other
//!   conditions are the writer's;
//! - [`APPROVAL`]: only Approved/Denied conditions are the writer's; the rest stays.
//!
//! Conditions without `lastUpdateTime` get now; without `lastTransitionTime`, the stored
//! condition's of the same type and status, else now.

use krust_machinery::object;
use krust_machinery::ResourceInfo;
use serde_json::{json, Map, Value};

use crate::auth::Identity;

/// The subresource through which CSRs are approved or denied (`kubectl certificate
/// approve|deny` PUTs to `.../certificatesigningrequests/<name>/approval`).
pub const APPROVAL: &str = "approval";
pub const GROUP: &str = "certificates.k8s.io";
pub const KIND: &str = "CertificateSigningRequest";

fn is_approval(c: &Value) -> bool {
    matches!(
        c.get("type").and_then(Value::as_str),
        Some("Approved" | "Denied")
    )
}

pub fn is_csr(info: &ResourceInfo) -> bool {
    (info.group, info.kind) == (GROUP, KIND)
}

/// Sets the requester into a CSR being created and clears its status.
pub fn prepare_for_create(obj: &mut Value, who: Option<&Identity>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        for f in ["username", "uid", "groups", "extra"] {
            spec.remove(f);
        }
        if let Some(who) = who {
            spec.insert("username".into(), json!(who.user));
            if !who.uid.is_empty() {
                spec.insert("uid".into(), json!(who.uid));
            }
            spec.insert("groups".into(), json!(who.groups));
            if !who.extra.is_empty() {
                spec.insert("extra".into(), json!(who.extra));
            }
        }
    }
    map.insert("status".into(), json!({}));
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn status_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let status = map.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    status.as_object_mut()
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if let Some(status) = status_mut(obj) {
        if conds.is_empty() {
            status.remove("conditions");
        } else {
            status.insert("conditions".into(), Value::Array(conds));
        }
    }
}

/// What a write through `subresource` (`None`: the object itself) leaves of `obj`, given
/// the stored `old`. System metadata is the caller's.
pub fn prepare_for_update(subresource: Option<&str>, obj: &mut Value, old: &Value) {
    match subresource {
        Some("status") => {
            let new_conditions = conditions(obj);
            let certificate = obj.pointer("/status/certificate").cloned();
            let mut merged = old.clone();
            let mut kept: Vec<Value> = conditions(old).into_iter().filter(is_approval).collect();
            kept.extend(new_conditions.into_iter().filter(|c| !is_approval(c)));
            set_conditions(&mut merged, kept);
            if let Some(status) = status_mut(&mut merged) {
                match certificate {
                    Some(c) => status.insert("certificate".into(), c),
                    None => status.remove("certificate"),
                };
            }
            *obj = merged;
        }
        Some(APPROVAL) => {
            let new_conditions = conditions(obj);
            let mut merged = old.clone();
            let mut kept: Vec<Value> = conditions(old)
                .into_iter()
                .filter(|c| !is_approval(c))
                .collect();
            kept.extend(new_conditions.into_iter().filter(is_approval));
            set_conditions(&mut merged, kept);
            *obj = merged;
        }
        _ => {
            for f in ["spec", "status"] {
                match old.get(f) {
                    Some(v) => obj[f] = v.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
        }
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    populate_condition_timestamps(obj, old);
}

fn populate_condition_timestamps(obj: &mut Value, old: &Value) {
    let old_conditions = conditions(old);
    let now = object::now_rfc3339();
    let Some(conds) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let unset = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).is_none_or(str::is_empty);
    for c in conds.iter_mut() {
        if unset(c, "lastUpdateTime") {
            c["lastUpdateTime"] = json!(now);
        }
        if unset(c, "lastTransitionTime") {
            let same = old_conditions.iter().find(|o| {
                o.get("type") == c.get("type")
                    && o.get("status") == c.get("status")
                    && !unset(o, "lastTransitionTime")
            });
            c["lastTransitionTime"] = same
                .and_then(|o| o.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({"metadata": {"name": "c", "resourceVersion": "5"},
        "spec": {"request": "cmVx", "username": "alice", "signerName": "example.com/s"},
        "status": {"conditions": [
            {"type": "Approved", "status": "True", "lastUpdateTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            {"type": "Custom", "status": "True", "lastUpdateTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}
        ]}})
    }

    #[test]
    fn create_takes_the_requester() {
        let mut who = Identity::new(
            "system:bootstrap:abcdef",
            vec!["system:bootstrappers".into()],
        );
        who.extra.insert("k".into(), vec!["v".into()]);
        let mut csr = json!({"spec": {"username": "root", "groups": ["system:masters"], "uid": "x"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        prepare_for_create(&mut csr, Some(&who));
        assert_eq!(
            csr["spec"],
            json!({"username": "system:bootstrap:abcdef", "groups": ["system:bootstrappers", "system:authenticated"], "extra": {"k": ["v"]}})
        );
        assert_eq!(csr["status"], json!({}));
        prepare_for_create(&mut csr, None);
        assert_eq!(csr["spec"], json!({}));
    }

    #[test]
    fn the_object_keeps_spec_and_status() {
        let old = stored();
        let mut new = json!({"metadata": {"name": "c", "labels": {"a": "b"}}, "spec": {"username": "mallory"}});
        prepare_for_update(None, &mut new, &old);
        assert_eq!(
            (&new["spec"], &new["status"]),
            (&old["spec"], &old["status"])
        );
        assert_eq!(new["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn status_keeps_approvals_and_approval_keeps_the_rest() {
        let old = stored();
        let mut new = old.clone();
        new["status"] = json!({"certificate": "Y2VydA==", "conditions": [{"type": "Failed", "status": "True"}]});
        prepare_for_update(Some("status"), &mut new, &old);
        let types: Vec<&str> = new["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["Approved", "Failed"]);
        assert_eq!(new["status"]["certificate"], "Y2VydA==");
        assert!(new["status"]["conditions"][1]["lastUpdateTime"].is_string());

        let mut approval = old.clone();
        approval["status"] = json!({"certificate": "bm8=", "conditions": [
            {"type": "Approved", "status": "True", "lastUpdateTime": "2024-01-01T00:00:00Z"},
            {"type": "Other", "status": "True"}]});
        prepare_for_update(Some(APPROVAL), &mut approval, &old);
        let conds = &approval["status"]["conditions"];
        assert_eq!(
            (&conds[0]["type"], &conds[1]["type"]),
            (&json!("Custom"), &json!("Approved"))
        );
        assert!(conds.get(2).is_none());
        // The stored transition time carries over for the same type and status.
        assert_eq!(conds[1]["lastTransitionTime"], "2024-01-01T00:00:00Z");
        assert!(approval["status"].get("certificate").is_none());
        assert!(approval["metadata"].get("resourceVersion").is_none());
    }
}
