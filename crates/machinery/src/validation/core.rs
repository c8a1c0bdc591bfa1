//! Core kinds that are not pods or services: ConfigMap, Secret, ServiceAccount, Namespace,
//! Node, PersistentVolume(Claim), Event, ResourceQuota, LimitRange.

use base64::Engine;
use serde_json::{json, Value};

use super::container::validate_quantity;
use super::field::{self, Path};
use super::meta;
use super::names;
use super::quantity::Quantity;
use super::{arr, diff, has, int, obj, opt_str, semantic_eq, str_of, sub};
use crate::status::Cause;

/// Upstream's cap on ConfigMap and Secret payloads.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_or(s.len(), |b| b.len())
}

fn check_keys(map: Option<&serde_json::Map<String, Value>>, path: &Path, errs: &mut Vec<Cause>) {
    for key in map.into_iter().flat_map(|m| m.keys()) {
        errs.extend(
            names::is_config_map_key(key)
                .iter()
                .map(|m| field::invalid_str(&path.key(key), key, m)),
        );
    }
}

/// The `immutable: true` rules shared by ConfigMap and Secret updates.
fn immutable_data(new: &Value, old: &Value, keys: &[&str], errs: &mut Vec<Cause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(field::forbidden(&Path::new("immutable"), IMMUTABLE_SET));
    }
    for key in keys {
        if !semantic_eq(new.get(*key), old.get(*key)) {
            errs.push(field::forbidden(&Path::new(key), IMMUTABLE_SET));
        }
    }
}

pub fn validate_config_map(cm: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        immutable_data(cm, old, &["data", "binaryData"], &mut errs);
    }
    let data = obj(cm, "data");
    let binary = obj(cm, "binaryData");
    check_keys(data, &Path::new("data"), &mut errs);
    let mut total = 0;
    for (k, v) in data.into_iter().flatten() {
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(field::invalid_str(
                &Path::new("data").key(k),
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map_or(0, str::len);
    }
    check_keys(binary, &Path::new("binaryData"), &mut errs);
    total += binary
        .into_iter()
        .flatten()
        .map(|(_, v)| decoded_len(v))
        .sum::<usize>();
    if total > MAX_DATA_SIZE {
        // upstream reports the whole object, at the empty path it prints as `[]`
        errs.push(field::too_long(&Path::new("[]"), MAX_DATA_SIZE));
    }
    errs
}

pub fn validate_secret(secret: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        if str_of(secret, "type") != str_of(old, "type") {
            errs.push(field::immutable(
                &Path::new("type"),
                &Value::String(str_of(secret, "type").into()),
            ));
        }
        immutable_data(secret, old, &["data"], &mut errs);
    }
    let dp = Path::new("data");
    let data = obj(secret, "data");
    check_keys(data, &dp, &mut errs);
    let total: usize = data
        .into_iter()
        .flatten()
        .map(|(_, v)| decoded_len(v))
        .sum();
    if total > MAX_DATA_SIZE {
        errs.push(field::too_long(&dp, MAX_DATA_SIZE));
    }
    let has_key = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let decoded = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default()
    };
    match str_of(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let ann = sub(sub(secret, "metadata"), "annotations");
            if str_of(ann, "kubernetes.io/service-account.name").is_empty() {
                errs.push(field::required(
                    &Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has_key(key) {
                errs.push(field::required(&dp.key(key), ""));
            } else if let Err(e) =
                serde_json::from_slice::<serde_json::Map<String, Value>>(&decoded(key))
            {
                errs.push(field::invalid_str(
                    &dp.key(key),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
        "kubernetes.io/basic-auth" if !has_key("username") && !has_key("password") => {
            errs.push(field::required(&dp.key("username"), ""));
            errs.push(field::required(&dp.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey").is_empty() => {
            errs.push(field::required(&dp.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has_key(key) {
                    errs.push(field::required(&dp.key(key), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

pub fn validate_service_account(_sa: &Value) -> Vec<Cause> {
    Vec::new()
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

pub fn validate_namespace(ns: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    if old.is_some() {
        // spec changes go through the finalize subresource
        return errs;
    }
    errs.extend(validate_namespace_finalizers(ns));
    errs
}

/// `spec.finalizers` of a Namespace: on create, and for the `finalize` subresource (run it
/// there next to the ObjectMeta update rules of `validate_status_update`).
pub fn validate_namespace_finalizers(ns: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let p = Path::new("spec").child("finalizers");
    for f in arr(sub(ns, "spec"), "finalizers")
        .iter()
        .filter_map(Value::as_str)
    {
        errs.extend(
            names::is_qualified_name(f)
                .iter()
                .map(|m| field::invalid_str(&p, f, m)),
        );
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(field::invalid_str(
                &p,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

pub fn validate_namespace_status(ns: &Value) -> Vec<Cause> {
    let phase = str_of(sub(ns, "status"), "phase");
    let p = Path::new("status").child("Phase");
    let deleting = has(sub(ns, "metadata"), "deletionTimestamp");
    match (deleting, phase) {
        (false, "Active") | (true, "Terminating") => Vec::new(),
        (false, _) => vec![field::invalid_str(
            &p,
            phase,
            "may only be 'Active' if `deletionTimestamp` is empty",
        )],
        (true, _) => vec![field::invalid_str(
            &p,
            phase,
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        )],
    }
}

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub fn validate_node(node: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = sub(node, "spec");
    // upstream reports taint errors under metadata.taints
    let tp = Path::new("metadata").child("taints");
    let mut seen = std::collections::HashSet::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = tp.index(i);
        let key = str_of(t, "key");
        errs.extend(
            names::is_qualified_name(key)
                .iter()
                .map(|m| field::invalid_str(&p.child("key"), key, m)),
        );
        let value = str_of(t, "value");
        let msgs = names::is_label_value(value);
        if !msgs.is_empty() {
            errs.push(field::invalid_str(
                &p.child("value"),
                value,
                &msgs.join(";"),
            ));
        }
        let effect = str_of(t, "effect");
        if effect.is_empty() {
            errs.push(field::required(&p.child("effect"), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            errs.push(field::not_supported_str(
                &p.child("effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((effect, key)) {
            let mut c = field::duplicate(&p, t);
            c.message
                .push_str(": taints must be unique by key and effect pair");
            errs.push(c);
        }
    }
    let status = sub(node, "status");
    for key in ["capacity", "allocatable"] {
        for (name, q) in obj(status, key).into_iter().flatten() {
            errs.extend(validate_quantity(
                "kubernetes.io/x",
                q,
                &Path::new("status").child(key).key(name),
            ));
        }
    }
    let cidrs = arr(spec, "podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        let c = c.as_str().unwrap_or_default();
        if !names::is_valid_cidr(c) {
            errs.push(field::invalid_str(
                &Path::new("spec").child("podCIDRs").index(i),
                c,
                names::CIDR_ERROR,
            ));
        }
    }
    if cidrs.len() > 2 {
        errs.push(field::invalid(
            &Path::new("spec").child("podCIDRs"),
            sub(spec, "podCIDRs"),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    if let Some(old) = old {
        let os = sub(old, "spec");
        if !arr(os, "podCIDRs").is_empty() && !semantic_eq(spec.get("podCIDRs"), os.get("podCIDRs"))
        {
            errs.push(field::forbidden(
                &Path::new("spec").child("podCIDRs"),
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        if !str_of(os, "providerID").is_empty()
            && str_of(os, "providerID") != str_of(spec, "providerID")
        {
            errs.push(field::forbidden(
                &Path::new("spec").child("providerID"),
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, path: &Path, detail: &str, errs: &mut Vec<Cause>) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(field::required(&path.child("accessModes"), detail));
    }
    let (mut rwop, mut other) = (false, false);
    for m in modes.iter().map(|m| m.as_str().unwrap_or_default()) {
        if !ACCESS_MODES.contains(&m) {
            errs.push(field::not_supported_str(
                &path.child("accessModes"),
                m,
                ACCESS_MODES,
            ));
        } else if m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            other = true;
        }
    }
    if rwop && other {
        errs.push(field::forbidden(
            &path.child("accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn validate_volume_mode(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(m) = opt_str(spec, "volumeMode") {
        if m != "Block" && m != "Filesystem" {
            errs.push(field::not_supported_str(
                &path.child("volumeMode"),
                m,
                &["Block", "Filesystem"],
            ));
        }
    }
}

fn validate_class_name(spec: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(c) = opt_str(spec, key).filter(|c| !c.is_empty()) {
        errs.extend(
            names::is_dns1123_subdomain(c)
                .iter()
                .map(|m| field::invalid_str(&path.child(key), c, m)),
        );
    }
}

/// `ValidatePersistentVolumeClaimSpec`, also used for templates in StatefulSets and
/// ephemeral volumes.
pub fn validate_pvc_spec(spec: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    validate_access_modes(spec, path, "at least 1 access mode is required", &mut errs);
    if let Some(sel) = spec.get("selector").filter(|v| v.is_object()) {
        errs.extend(meta::validate_label_selector(sel, &path.child("selector")));
    }
    let sp = path.child("resources").key("storage");
    match sub(sub(spec, "resources"), "requests").get("storage") {
        None => errs.push(field::required(&sp, "")),
        Some(q) => {
            let s = q.as_str().unwrap_or_default();
            match Quantity::parse(s) {
                None => errs.extend(validate_quantity("storage", q, &sp)),
                Some(v) if v.nanos() <= 0 => {
                    errs.push(field::invalid_str(&sp, s, "must be greater than zero"))
                }
                _ => {}
            }
        }
    }
    validate_class_name(spec, "storageClassName", path, &mut errs);
    validate_volume_mode(spec, path, &mut errs);
    for key in ["dataSource", "dataSourceRef"] {
        let Some(ds) = spec.get(key).filter(|v| v.is_object()) else {
            continue;
        };
        let p = path.child(key);
        if str_of(ds, "name").is_empty() {
            errs.push(field::required(&p.child("name"), ""));
        }
        let kind = str_of(ds, "kind");
        if kind.is_empty() {
            errs.push(field::required(&p.child("kind"), ""));
        }
        let group = str_of(ds, "apiGroup");
        if group.is_empty() && kind != "PersistentVolumeClaim" {
            errs.push(field::invalid_str(
                &p,
                kind,
                "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
            ));
        }
        if !group.is_empty() {
            errs.extend(
                names::is_dns1123_subdomain(group)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("apiGroup"), group, m)),
            );
        }
    }
    errs
}

pub fn validate_pvc(pvc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(pvc, "spec");
    let sp = Path::new("spec");
    let mut errs = validate_pvc_spec(spec, &sp);
    let Some(old) = old else { return errs };
    let os = sub(old, "spec");
    let mut new_clone = spec.clone();
    let mut old_clone = os.clone();
    if str_of(os, "volumeName").is_empty() {
        if let Some(m) = old_clone.as_object_mut() {
            m.insert("volumeName".into(), sub(spec, "volumeName").clone());
        }
    }
    let annotation = "volume.beta.kubernetes.io/storage-class";
    let old_ann = opt_str(sub(sub(old, "metadata"), "annotations"), annotation);
    if !has(os, "storageClassName")
        && has(spec, "storageClassName")
        && old_ann.is_none_or(|a| Some(a) == opt_str(spec, "storageClassName"))
    {
        if let Some(m) = new_clone.as_object_mut() {
            m.remove("storageClassName");
        }
    }
    if str_of(sub(pvc, "status"), "phase") == "Bound" {
        if let Some(m) = new_clone.as_object_mut() {
            if let Some(req) = m
                .get_mut("resources")
                .and_then(|r| r.get_mut("requests"))
                .and_then(Value::as_object_mut)
            {
                req.insert(
                    "storage".into(),
                    sub(sub(sub(os, "resources"), "requests"), "storage").clone(),
                );
            }
            m.insert(
                "volumeAttributesClassName".into(),
                sub(os, "volumeAttributesClassName").clone(),
            );
        }
    }
    if !semantic_eq(Some(&new_clone), Some(&old_clone)) {
        errs.push(field::forbidden(
            &sp,
            &format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                diff(&old_clone, &new_clone)
            ),
        ));
    }
    let size =
        |spec: &Value| Quantity::parse(str_of(sub(sub(spec, "resources"), "requests"), "storage"));
    let status_size = Quantity::parse(str_of(sub(sub(old, "status"), "capacity"), "storage"));
    if let (Some(new_size), Some(old_size)) = (size(spec), size(os)) {
        if new_size < old_size && status_size.is_none_or(|s| new_size <= s) {
            errs.push(field::forbidden(
                &sp.at(&["resources", "requests", "storage"]),
                "field can not be less than status.capacity",
            ));
        }
    }
    if !semantic_eq(spec.get("volumeMode"), os.get("volumeMode")) {
        errs.push(field::immutable(
            &Path::new("volumeMode"),
            sub(spec, "volumeMode"),
        ));
    }
    errs
}

pub fn validate_pvc_status(pvc: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if arr(sub(pvc, "spec"), "accessModes").is_empty() {
        errs.push(field::required(&Path::new("Spec").child("accessModes"), ""));
    }
    for (name, q) in obj(sub(pvc, "status"), "capacity").into_iter().flatten() {
        errs.extend(validate_quantity(
            "storage",
            q,
            &Path::new("status").child("capacity").key(name),
        ));
    }
    errs
}

const PV_SOURCES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "nfs",
    "rbd",
    "quobyte",
    "cinder",
    "cephfs",
    "iscsi",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
    "flocker",
];

pub fn validate_pv(pv: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(pv, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    validate_access_modes(spec, &sp, "", &mut errs);
    let cap = obj(spec, "capacity");
    if cap.is_none_or(|c| c.is_empty()) {
        errs.push(field::required(&sp.child("capacity"), ""));
    }
    if cap.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        errs.push(field::not_supported(
            &sp.child("capacity"),
            sub(spec, "capacity"),
            &["storage"],
        ));
    }
    for (name, q) in cap.into_iter().flatten() {
        let p = sp.child("capacity").key(name);
        let s = q.as_str().unwrap_or_default();
        match Quantity::parse(s) {
            None => errs.extend(validate_quantity(name, q, &p)),
            Some(v) if v.nanos() <= 0 => {
                errs.push(field::invalid_str(&p, s, "must be greater than zero"))
            }
            _ => {}
        }
    }
    validate_class_name(spec, "storageClassName", &sp, &mut errs);
    validate_volume_mode(spec, &sp, &mut errs);
    if let Some(p) = opt_str(spec, "persistentVolumeReclaimPolicy") {
        if !["Delete", "Recycle", "Retain"].contains(&p) {
            errs.push(field::not_supported_str(
                &sp.child("persistentVolumeReclaimPolicy"),
                p,
                &["Delete", "Recycle", "Retain"],
            ));
        }
    }
    let mut found = false;
    for src in PV_SOURCES {
        let Some(s) = spec.get(*src).filter(|v| v.is_object()) else {
            continue;
        };
        let p = sp.child(src);
        if found {
            errs.push(field::forbidden(
                &p,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found = true;
        let required: &[&str] = match *src {
            "hostPath" | "local" => &["path"],
            "nfs" => &["server", "path"],
            "csi" => &["driver", "volumeHandle"],
            "iscsi" => &["targetPortal", "iqn"],
            _ => &[],
        };
        for key in required {
            if str_of(s, key).is_empty() {
                errs.push(field::required(&p.child(key), ""));
            }
        }
        if *src == "local" && !has(spec, "nodeAffinity") {
            errs.push(field::required(
                &sp.child("nodeAffinity"),
                "Local volume requires node affinity",
            ));
        }
    }
    if !found {
        errs.push(field::required(&sp, "must specify a volume type"));
    }
    if let Some(old) = old {
        let os = sub(old, "spec");
        let source = |s: &Value| {
            json!(PV_SOURCES
                .iter()
                .map(|k| (k.to_string(), sub(s, k).clone()))
                .collect::<serde_json::Map<_, _>>())
        };
        let (ns, oss) = (source(spec), source(os));
        if !semantic_eq(Some(&ns), Some(&oss)) {
            errs.push(field::forbidden(
                &sp.child("persistentvolumesource"),
                &format!(
                    "spec.persistentvolumesource is immutable after creation\n{}",
                    diff(&oss, &ns)
                ),
            ));
        }
        if !semantic_eq(spec.get("volumeMode"), os.get("volumeMode")) {
            errs.push(field::immutable(
                &Path::new("volumeMode"),
                sub(spec, "volumeMode"),
            ));
        }
        if has(os, "nodeAffinity") && !semantic_eq(spec.get("nodeAffinity"), os.get("nodeAffinity"))
        {
            errs.push(field::invalid(
                &Path::new("nodeAffinity"),
                sub(spec, "nodeAffinity"),
                "field is immutable",
            ));
        }
    }
    errs
}

/// ObjectMeta checks for core/v1 Events, which upstream validates only loosely.
pub fn event_meta(ev: &Value) -> Vec<Cause> {
    let m = sub(ev, "metadata");
    let mut errs = Vec::new();
    if str_of(m, "name").is_empty() && str_of(m, "generateName").is_empty() {
        errs.push(field::required(
            &Path::new("metadata").child("name"),
            "name or generateName is required",
        ));
    }
    let ns = str_of(m, "namespace");
    errs.extend(
        names::is_dns1123_subdomain(ns)
            .iter()
            .map(|msg| field::invalid_str(&Path::new("namespace"), ns, msg)),
    );
    errs
}

/// Reads an events.k8s.io/v1 field under its core/v1 name, which upstream's paths use.
fn event_field<'a>(ev: &'a Value, core_name: &str, core: bool) -> &'a Value {
    if core {
        return sub(ev, core_name);
    }
    let name = match core_name {
        "involvedObject" => "regarding",
        "message" => "note",
        "firstTimestamp" => "deprecatedFirstTimestamp",
        "lastTimestamp" => "deprecatedLastTimestamp",
        "count" => "deprecatedCount",
        "source" => "deprecatedSource",
        other => other,
    };
    sub(ev, name)
}

pub fn validate_event(ev: &Value, old: Option<&Value>, core: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ns = str_of(sub(ev, "metadata"), "namespace");
    let involved = event_field(ev, "involvedObject", core);
    let involved_ns = str_of(involved, "namespace");
    let inp = Path::new("involvedObject").child("namespace");
    if core && old.is_none() && involved.as_object().is_none_or(|m| m.is_empty()) {
        errs.push(field::required(&Path::new("involvedObject"), ""));
    }
    let s = |k: &str| event_field(ev, k, core).as_str().unwrap_or_default();
    if !has(ev, "eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(field::invalid_str(
                    &inp,
                    involved_ns,
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(field::invalid_str(
                &inp,
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(field::invalid_str(
                &inp,
                involved_ns,
                "does not match event.namespace",
            ));
        }
        let rc_name = if core {
            "reportingComponent"
        } else {
            "reportingController"
        };
        let rc = str_of(
            ev,
            if core {
                "reportingComponent"
            } else {
                "reportingController"
            },
        );
        if rc.is_empty() {
            errs.push(field::required(&Path::new(rc_name), ""));
        }
        errs.extend(
            names::is_qualified_name(rc)
                .iter()
                .map(|m| field::invalid_str(&Path::new(rc_name), rc, m)),
        );
        for (key, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = s(key);
            if v.is_empty() {
                errs.push(field::required(&Path::new(key), ""));
            }
            if v.len() > limit {
                errs.push(field::invalid_str(
                    &Path::new(key),
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if s("message").len() > 1024 {
            errs.push(field::invalid_str(
                &Path::new("message"),
                "",
                "can have at most 1024 characters",
            ));
        }
    }
    if core {
        return errs;
    }
    // events.k8s.io/v1: strict rules
    let series = sub(ev, "series");
    let series_changed = old.is_none_or(|o| !semantic_eq(o.get("series"), ev.get("series")));
    if series.is_object() && series_changed {
        if int(series, "count").unwrap_or(0) < 2 {
            errs.push(field::invalid_str(
                &Path::new("series.count"),
                "",
                "should be at least 2",
            ));
        }
        if !has(series, "lastObservedTime") {
            errs.push(field::required(&Path::new("series.lastObservedTime"), ""));
        }
    }
    match old {
        None => {
            if !has(ev, "eventTime") {
                errs.push(field::required(&Path::new("eventTime"), ""));
            }
            let t = str_of(ev, "type");
            if t != "Normal" && t != "Warning" {
                errs.push(field::invalid_str(
                    &Path::new("type"),
                    "",
                    &format!("has invalid value: {t}"),
                ));
            }
            for key in ["firstTimestamp", "lastTimestamp"] {
                if has(ev, &format!("deprecated{}", capitalize(key))) {
                    errs.push(field::invalid_str(&Path::new(key), "", "needs to be unset"));
                }
            }
            if int(ev, "deprecatedCount").unwrap_or(0) != 0 {
                errs.push(field::invalid_str(
                    &Path::new("count"),
                    "",
                    "needs to be unset",
                ));
            }
            let src = sub(ev, "deprecatedSource");
            if !str_of(src, "component").is_empty() || !str_of(src, "host").is_empty() {
                errs.push(field::invalid_str(
                    &Path::new("source"),
                    "",
                    "needs to be unset",
                ));
            }
        }
        Some(old) => {
            for key in [
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "action",
                "type",
                "eventTime",
                "reportingController",
                "reportingInstance",
            ] {
                let (n, o) = (event_field(ev, key, false), event_field(old, key, false));
                if !semantic_eq(Some(n), Some(o)) {
                    errs.push(field::immutable(&Path::new(key), n));
                }
            }
        }
    }
    errs
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

const QUOTA_SCOPES: &[&str] = &[
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
    "VolumeAttributesClass",
];

pub fn validate_resource_quota(rq: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = sub(rq, "spec");
    for (name, q) in obj(spec, "hard").into_iter().flatten() {
        let p = Path::new("spec").child("hard").key(name);
        errs.extend(
            names::is_qualified_name(name)
                .iter()
                .map(|m| field::invalid_str(&p, name, m)),
        );
        errs.extend(validate_quantity("kubernetes.io/x", q, &p));
    }
    for (i, s) in arr(spec, "scopes").iter().enumerate() {
        let s = s.as_str().unwrap_or_default();
        if !QUOTA_SCOPES.contains(&s) {
            errs.push(field::not_supported_str(
                &Path::new("spec").child("scopes").index(i),
                s,
                QUOTA_SCOPES,
            ));
        }
    }
    errs
}

pub fn validate_limit_range(lr: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, item) in arr(sub(lr, "spec"), "limits").iter().enumerate() {
        let p = Path::new("spec").child("limits").index(i);
        let t = str_of(item, "type");
        if t.is_empty() {
            errs.push(field::required(&p.child("type"), ""));
        } else if !["Pod", "Container", "PersistentVolumeClaim"].contains(&t) {
            errs.push(field::not_supported_str(
                &p.child("type"),
                t,
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        for key in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (name, q) in obj(item, key).into_iter().flatten() {
                errs.extend(validate_quantity(
                    "kubernetes.io/x",
                    q,
                    &p.child(key).key(name),
                ));
            }
        }
        let min = obj(item, "min");
        for (name, max_q) in obj(item, "max").into_iter().flatten() {
            let (Some(min_s), Some(max_s)) = (
                min.and_then(|m| m.get(name)).and_then(Value::as_str),
                max_q.as_str(),
            ) else {
                continue;
            };
            if super::quantity::compare(min_s, max_s) == Some(std::cmp::Ordering::Greater) {
                errs.push(field::invalid_str(
                    &p.child("min").key(name),
                    min_s,
                    &format!("min value {min_s} is greater than max value {max_s}"),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{create, has, has_prefix, update};
    use serde_json::json;

    #[test]
    fn config_maps() {
        let cm = json!({"metadata": {"name": "c", "namespace": "d", "resourceVersion": "1"}, "data": {"a.b": "x", "bad/key": "y", "dup": "z"}, "binaryData": {"dup": "eA=="}});
        let e = create("v1", "ConfigMap", cm);
        assert!(has(&e, "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"), "{e:?}");
        assert!(has(
            &e,
            "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData"
        ));
        let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "x".repeat(super::MAX_DATA_SIZE + 1)}});
        assert_eq!(
            create("v1", "ConfigMap", big),
            vec!["[]: Too long: may not be more than 1048576 bytes"]
        );
        let old = json!({"metadata": {"name": "c", "namespace": "d", "resourceVersion": "1"}, "data": {"a": "1"}, "immutable": true});
        let new = json!({"metadata": {"name": "c", "namespace": "d", "resourceVersion": "1"}, "data": {"a": "2"}});
        let e = update("v1", "ConfigMap", new, old);
        assert_eq!(
            e,
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set"
            ]
        );
    }

    #[test]
    fn secrets() {
        let s = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(
            create("v1", "Secret", s),
            vec!["data[tls.key]: Required value"]
        );
        let s = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm90IGpzb24="}});
        assert!(has_prefix(
            &create("v1", "Secret", s),
            "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": "
        ));
        let s = json!({"metadata": {"name": "s", "namespace": "d"}, "stringData": {"k": "v"}});
        assert!(create("v1", "Secret", s).is_empty());
        let old = json!({"metadata": {"name": "s", "namespace": "d", "resourceVersion": "1"}, "type": "Opaque"});
        let new = json!({"metadata": {"name": "s", "namespace": "d", "resourceVersion": "1"}, "type": "kubernetes.io/basic-auth", "data": {"username": "eA=="}});
        assert_eq!(
            update("v1", "Secret", new, old),
            vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }

    #[test]
    fn namespaces_and_nodes() {
        let e = create("v1", "Namespace", json!({"metadata": {"name": "my.ns"}}));
        assert_eq!(
            e,
            vec!["metadata.name: Invalid value: \"my.ns\": must not contain dots"]
        );
        let e = create(
            "v1",
            "Namespace",
            json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["custom"]}}),
        );
        assert_eq!(e, vec!["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"]);
        let e = create(
            "v1",
            "Node",
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a", "effect": "Bad"}, {"key": "b", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}}),
        );
        assert!(has(&e, "metadata.taints[0].effect: Unsupported value: \"Bad\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""), "{e:?}");
        assert!(has(&e, "metadata.taints[2]: Duplicate value: {\"effect\":\"NoSchedule\",\"key\":\"b\"}: taints must be unique by key and effect pair"));
        let old = json!({"metadata": {"name": "n1", "resourceVersion": "1"}, "spec": {"podCIDRs": ["10.42.0.0/24"]}});
        let new = json!({"metadata": {"name": "n1", "resourceVersion": "1"}, "spec": {"podCIDRs": ["10.42.1.0/24"]}});
        assert_eq!(update("v1", "Node", new, old), vec!["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]);
    }

    #[test]
    fn volumes_and_claims() {
        let pvc = json!({"metadata": {"name": "c", "namespace": "d", "resourceVersion": "1"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        assert!(create("v1", "PersistentVolumeClaim", pvc.clone()).is_empty());
        let e = create(
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"accessModes": ["Sometimes"]}}),
        );
        assert!(has(&e, "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""), "{e:?}");
        assert!(has(&e, "spec.resources[storage]: Required value"));
        let mut bound = pvc.clone();
        bound["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        let mut grown = bound.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(update("v1", "PersistentVolumeClaim", grown.clone(), bound.clone()).is_empty());
        let mut shrunk = bound.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("500Mi");
        assert!(has(&update("v1", "PersistentVolumeClaim", shrunk, bound.clone()), "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"));
        let mut modes = bound.clone();
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(has_prefix(&update("v1", "PersistentVolumeClaim", modes, bound), "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));

        let pv = json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}});
        assert!(create("v1", "PersistentVolume", pv).is_empty());
        let e = create(
            "v1",
            "PersistentVolume",
            json!({"metadata": {"name": "pv"}, "spec": {}}),
        );
        assert!(has(&e, "spec.accessModes: Required value"), "{e:?}");
        assert!(has(&e, "spec.capacity: Required value"));
        assert!(has(&e, "spec: Required value: must specify a volume type"));
    }

    #[test]
    fn events() {
        let ev = json!({"metadata": {"name": "e1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}, "reason": "X"});
        assert_eq!(create("v1", "Event", ev), vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]);
        let ev = json!({"metadata": {"name": "e1", "namespace": "default"}, "reason": "X"});
        assert_eq!(
            create("v1", "Event", ev),
            vec!["involvedObject: Required value"]
        );
        let ok = json!({"metadata": {"name": "e1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}});
        assert!(create("v1", "Event", ok).is_empty());
        let nev = json!({"metadata": {"name": "e1", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z", "type": "Normal",
            "reportingController": "kubelet", "reportingInstance": "n1", "action": "Pulling", "reason": "Pulling", "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
        assert!(
            create("events.k8s.io/v1", "Event", nev.clone()).is_empty(),
            "{:?}",
            create("events.k8s.io/v1", "Event", nev.clone())
        );
        let mut bad = nev;
        bad["type"] = json!("Odd");
        bad.as_object_mut().map(|m| m.remove("action"));
        let e = create("events.k8s.io/v1", "Event", bad);
        assert!(
            has(&e, "type: Invalid value: \"\": has invalid value: Odd"),
            "{e:?}"
        );
        assert!(has(&e, "action: Required value"));
    }

    #[test]
    fn quotas_and_limits() {
        let e = create(
            "v1",
            "LimitRange",
            json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}}),
        );
        assert_eq!(e, vec!["spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"]);
        let e = create(
            "v1",
            "ResourceQuota",
            json!({"metadata": {"name": "q", "namespace": "d"}, "spec": {"hard": {"pods": "-1"}}}),
        );
        assert_eq!(
            e,
            vec!["spec.hard[pods]: Invalid value: \"-1\": must be greater than or equal to 0"]
        );
    }
}
