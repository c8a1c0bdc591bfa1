//! Pod volumes: unique DNS-label names and exactly one source each, with the common
//! sources' required fields checked.

use std::collections::HashSet;

use serde_json::Value;

use super::container::{self, Volumes};
use super::field::{self, Path};
use super::names;
use super::{arr, int, opt_str, str_of, sub};
use crate::status::Cause;

/// Every volume source in upstream's checking order (defaulting uses it too).
pub(crate) const SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "scaleIO",
    "projected",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const DOWNWARD_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// `ValidateVolumes`: returns the valid volumes (by name, with their source kind) for the
/// containers' mount checks, and the errors.
pub fn validate_volumes(vols: &[Value], path: &Path) -> (Volumes, Vec<Cause>) {
    let mut errs = Vec::new();
    let mut valid = Volumes::new();
    let mut names = HashSet::new();
    for (i, vol) in vols.iter().enumerate() {
        let p = path.index(i);
        let (kind, mut el) = validate_source(vol, &p);
        let name = str_of(vol, "name");
        if name.is_empty() {
            el.push(field::required(&p.child("name"), ""));
        } else {
            el.extend(
                names::is_dns1123_label(name)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("name"), name, m)),
            );
        }
        if names.contains(name) {
            el.push(field::duplicate_str(&p.child("name"), name));
        }
        if el.is_empty() {
            names.insert(name);
            valid.insert(name.to_string(), kind.unwrap_or_default().to_string());
        } else {
            errs.extend(el);
        }
    }
    (valid, errs)
}

fn validate_source(vol: &Value, path: &Path) -> (Option<&'static str>, Vec<Cause>) {
    let mut errs = Vec::new();
    let mut found: Option<&'static str> = None;
    for &kind in SOURCES {
        let Some(src) = vol.get(kind).filter(|v| v.is_object()) else {
            continue;
        };
        let p = path.child(kind);
        if found.is_some() {
            errs.push(field::forbidden(
                &p,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found = Some(kind);
        errs.extend(validate_one(kind, src, &p));
    }
    if found.is_none() {
        errs.push(field::required(path, "must specify a volume type"));
    }
    (found, errs)
}

fn require(src: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if str_of(src, key).is_empty() {
        errs.push(field::required(&path.child(key), ""));
    }
}

fn validate_mode(src: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(mode) = int(src, key) {
        if !(0..=0o777).contains(&mode) {
            errs.push(field::invalid_int(&path.child(key), mode, FILE_MODE_ERROR));
        }
    }
}

fn validate_items(src: &Value, path: &Path, errs: &mut Vec<Cause>) {
    for (i, item) in arr(src, "items").iter().enumerate() {
        let p = path.child("items").index(i);
        require(item, "key", &p, errs);
        let item_path = str_of(item, "path");
        if item_path.is_empty() {
            errs.push(field::required(&p.child("path"), ""));
        } else {
            errs.extend(validate_local_non_reserved_path(
                item_path,
                &p.child("path"),
            ));
        }
        validate_mode(item, "mode", &p, errs);
    }
}

fn validate_local_non_reserved_path(p: &str, path: &Path) -> Vec<Cause> {
    let mut errs = container::validate_local_descending_path(p, path);
    if p.starts_with("..") {
        errs.push(field::invalid_str(path, p, "must not start with '..'"));
    }
    errs
}

fn validate_one(kind: &str, src: &Value, p: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    match kind {
        "hostPath" => {
            let hp = str_of(src, "path");
            if hp.is_empty() {
                errs.push(field::required(&p.child("path"), ""));
            } else {
                errs.extend(container::validate_no_backsteps(hp, &p.child("path")));
            }
            if let Some(t) = opt_str(src, "type") {
                if !HOST_PATH_TYPES.contains(&t) {
                    errs.push(field::not_supported_str(
                        &p.child("type"),
                        t,
                        HOST_PATH_TYPES,
                    ));
                }
            }
        }
        "emptyDir" => {
            if let Some(limit) = src.get("sizeLimit").filter(|v| !v.is_null()) {
                let s = limit.as_str().unwrap_or_default();
                if super::quantity::Quantity::parse(s).is_none_or(|q| q.is_negative()) {
                    errs.push(field::forbidden(
                        &p.child("sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                }
            }
        }
        "secret" => {
            require(src, "secretName", p, &mut errs);
            validate_mode(src, "defaultMode", p, &mut errs);
            validate_items(src, p, &mut errs);
        }
        "configMap" => {
            let name = str_of(src, "name");
            if name.is_empty() {
                errs.push(field::required(&p.child("name"), ""));
            }
            validate_mode(src, "defaultMode", p, &mut errs);
            validate_items(src, p, &mut errs);
        }
        "persistentVolumeClaim" => require(src, "claimName", p, &mut errs),
        "nfs" => {
            require(src, "server", p, &mut errs);
            let np = str_of(src, "path");
            if np.is_empty() {
                errs.push(field::required(&p.child("path"), ""));
            } else if !np.starts_with('/') {
                errs.push(field::invalid_str(
                    &p.child("path"),
                    np,
                    "must be an absolute path",
                ));
            }
        }
        "downwardAPI" => {
            validate_mode(src, "defaultMode", p, &mut errs);
            errs.extend(validate_downward_items(src, p));
        }
        "projected" => errs.extend(validate_projected(src, p)),
        "csi" => require(src, "driver", p, &mut errs),
        "ephemeral" => match src.get("volumeClaimTemplate").filter(|v| v.is_object()) {
            None => errs.push(field::required(&p.child("volumeClaimTemplate"), "")),
            Some(t) => {
                errs.extend(super::core::validate_pvc_spec(
                    sub(t, "spec"),
                    &p.at(&["volumeClaimTemplate", "spec"]),
                ));
            }
        },
        "image" => {
            require(src, "reference", p, &mut errs);
            if let Some(pp) = opt_str(src, "pullPolicy") {
                if !["Always", "IfNotPresent", "Never"].contains(&pp) {
                    errs.push(field::not_supported_str(
                        &p.child("pullPolicy"),
                        pp,
                        &["Always", "IfNotPresent", "Never"],
                    ));
                }
            }
        }
        "gitRepo" => {
            require(src, "repository", p, &mut errs);
            let dir = str_of(src, "directory");
            if !dir.is_empty() {
                errs.extend(container::validate_local_descending_path(
                    dir,
                    &p.child("directory"),
                ));
            }
        }
        "iscsi" => {
            require(src, "targetPortal", p, &mut errs);
            require(src, "iqn", p, &mut errs);
        }
        "cephfs" if arr(src, "monitors").is_empty() => {
            errs.push(field::required(&p.child("monitors"), ""))
        }
        "rbd" => {
            if arr(src, "monitors").is_empty() {
                errs.push(field::required(&p.child("monitors"), ""));
            }
            require(src, "image", p, &mut errs);
        }
        "flexVolume" => require(src, "driver", p, &mut errs),
        _ => {}
    }
    errs
}

fn validate_downward_items(src: &Value, p: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, item) in arr(src, "items").iter().enumerate() {
        let ip = p.child("items").index(i);
        let item_path = str_of(item, "path");
        if item_path.is_empty() {
            errs.push(field::required(&ip.child("path"), ""));
        } else {
            errs.extend(validate_local_non_reserved_path(
                item_path,
                &ip.child("path"),
            ));
        }
        validate_mode(item, "mode", &ip, &mut errs);
        let field_ref = item.get("fieldRef").filter(|v| v.is_object());
        let resource_ref = item.get("resourceFieldRef").filter(|v| v.is_object());
        if let Some(f) = field_ref {
            errs.extend(container::validate_object_field_selector(
                f,
                DOWNWARD_FIELD_PATHS,
                &ip.child("fieldRef"),
            ));
        }
        if let Some(r) = resource_ref {
            errs.extend(container::validate_resource_field_selector(
                r,
                true,
                &ip.child("resourceFieldRef"),
            ));
        }
        if field_ref.is_some() && resource_ref.is_some() {
            errs.push(field::invalid_str(
                &ip,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    }
    errs
}

fn validate_projected(src: &Value, p: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    validate_mode(src, "defaultMode", p, &mut errs);
    let mut paths = HashSet::new();
    for (i, s) in arr(src, "sources").iter().enumerate() {
        let sp = p.child("sources").index(i);
        let mut count = 0;
        for kind in [
            "secret",
            "downwardAPI",
            "configMap",
            "serviceAccountToken",
            "clusterTrustBundle",
        ] {
            let Some(proj) = s.get(kind).filter(|v| v.is_object()) else {
                continue;
            };
            count += 1;
            if count > 1 {
                errs.push(field::forbidden(
                    &sp,
                    "may not specify more than 1 volume type per source",
                ));
                continue;
            }
            let kp = sp.child(kind);
            match kind {
                "secret" | "configMap" => {
                    require(proj, "name", &kp, &mut errs);
                    validate_items(proj, &kp, &mut errs);
                }
                "downwardAPI" => errs.extend(validate_downward_items(proj, &kp)),
                "serviceAccountToken" => {
                    if let Some(secs) = int(proj, "expirationSeconds") {
                        if secs < 600 {
                            errs.push(field::invalid_int(
                                &kp.child("expirationSeconds"),
                                secs,
                                "may not specify a duration less than 10 minutes",
                            ));
                        } else if secs > 1 << 32 {
                            errs.push(field::invalid_int(
                                &kp.child("expirationSeconds"),
                                secs,
                                "may not specify a duration larger than 2^32 seconds",
                            ));
                        }
                    }
                    let tp = str_of(proj, "path");
                    if tp.is_empty() {
                        errs.push(field::required(&kp.child("path"), ""));
                    }
                }
                _ => {
                    let cp = str_of(proj, "path");
                    if cp.is_empty() {
                        errs.push(field::required(&kp.child("path"), ""));
                    }
                }
            }
            // a path may only be written by one source
            let written: Vec<&str> = match kind {
                "serviceAccountToken" | "clusterTrustBundle" => vec![str_of(proj, "path")],
                _ => arr(proj, "items")
                    .iter()
                    .map(|it| str_of(it, "path"))
                    .collect(),
            };
            for w in written.into_iter().filter(|w| !w.is_empty()) {
                if !paths.insert(w) {
                    errs.push(field::invalid_str(&kp, w, "conflicting duplicate paths"));
                }
            }
        }
        if count == 0 {
            errs.push(field::required(&sp, "must specify exactly 1 of: `secret`, `configMap`, `downwardAPI`, `serviceAccountToken`, `clusterTrustBundle`"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Cause;
    use serde_json::json;

    fn describe(errs: Vec<Cause>) -> Vec<String> {
        errs.iter().map(Cause::describe).collect()
    }

    #[test]
    fn names_unique_and_one_source() {
        let vols = vec![
            json!({"name": "a", "emptyDir": {}}),
            json!({"name": "a", "emptyDir": {}}),
            json!({"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}}),
            json!({"name": "c"}),
            json!({"name": "Bad", "configMap": {"name": "cm", "defaultMode": 4096}}),
            json!({"name": "d", "secret": {}, "persistentVolumeClaim": {"claimName": ""}}),
        ];
        let (ok, errs) = validate_volumes(&vols, &Path::new("spec").child("volumes"));
        let e = describe(errs);
        assert_eq!(
            e,
            vec![
                "spec.volumes[1].name: Duplicate value: \"a\"",
                "spec.volumes[2].emptyDir: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[3]: Required value: must specify a volume type",
                "spec.volumes[4].configMap.defaultMode: Invalid value: 4096: must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[4].name: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.volumes[5].secret.secretName: Required value",
                "spec.volumes[5].persistentVolumeClaim: Forbidden: may not specify more than 1 volume type",
            ]
        );
        assert_eq!(ok.get("a").map(String::as_str), Some("emptyDir"));
        assert!(!ok.contains_key("b"));
    }

    #[test]
    fn projected_and_downward() {
        let vols = vec![json!({"name": "p", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 60}},
            {},
            {"downwardAPI": {"items": [{"path": "../x", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}}]}}
        ]}})];
        let e = describe(validate_volumes(&vols, &Path::new("v")).1);
        assert!(e.contains(&"v[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes".into()), "{e:?}");
        assert!(e.iter().any(|m| m
            .starts_with("v[0].projected.sources[1]: Required value: must specify exactly 1 of")));
        assert!(e.contains(&"v[0].projected.sources[2].downwardAPI.items[0].path: Invalid value: \"../x\": must not contain '..'".into()));
    }
}
