//! Containers (regular, init, ephemeral): names, images, ports, env, mounts, resources,
//! probes and security contexts.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::field::{self, Path};
use super::names;
use super::quantity::{Quantity, QUANTITY_FORMAT_ERROR};
use super::{arr, flag, has, int, obj, opt_str, str_of, sub};
use crate::status::Cause;

/// Valid volumes of the pod, by name, with the key of their source (`persistentVolumeClaim`,
/// `image`, ...), which decides what mounts and devices may do with them.
pub type Volumes = HashMap<String, String>;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `validateContainers`: the regular containers of a pod spec.
pub fn validate_containers(
    containers: &[Value],
    vols: &Volumes,
    grace: Option<i64>,
    path: &Path,
    restart_policy: &str,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    if containers.is_empty() {
        errs.push(field::required(path, ""));
        return errs;
    }
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_common(c, vols, &p, restart_policy));
        let name = str_of(c, "name");
        if !names.insert(name) {
            errs.push(field::duplicate_str(&p.child("name"), name));
        }
        if let Some(l) = c.get("lifecycle").filter(|v| !v.is_null()) {
            errs.extend(validate_lifecycle(l, grace, &p.child("lifecycle")));
        }
        errs.extend(validate_probes(c, grace, &p));
        if has(c, "restartPolicy") {
            errs.push(field::forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers, path));
    errs
}

/// `validateInitContainers`: names must also be unique against the regular containers.
pub fn validate_init_containers(
    inits: &[Value],
    regular: &[Value],
    vols: &Volumes,
    grace: Option<i64>,
    path: &Path,
    restart_policy: &str,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = regular.iter().map(|c| str_of(c, "name")).collect();
    for (i, c) in inits.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_common(c, vols, &p, restart_policy));
        let restart_always = match opt_str(c, "restartPolicy") {
            None => false,
            Some("Always") => true,
            Some(other) => {
                errs.push(field::not_supported_str(
                    &p.child("restartPolicy"),
                    other,
                    &["Always"],
                ));
                false
            }
        };
        let name = str_of(c, "name");
        if names.contains(name) {
            errs.push(field::duplicate_str(&p.child("name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(host_port_conflicts(std::slice::from_ref(c), path));
        if restart_always {
            if let Some(l) = c.get("lifecycle").filter(|v| !v.is_null()) {
                errs.extend(validate_lifecycle(l, grace, &p.child("lifecycle")));
            }
            errs.extend(validate_probes(c, grace, &p));
        } else {
            for f in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if has(c, f) {
                    errs.push(field::forbidden(
                        &p.child(f),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

/// Ephemeral containers may only carry the fields upstream allows for them.
pub fn validate_ephemeral_containers(
    eph: &[Value],
    regular: &[Value],
    inits: &[Value],
    vols: &Volumes,
    path: &Path,
    restart_policy: &str,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let others: HashSet<&str> = regular
        .iter()
        .chain(inits)
        .map(|c| str_of(c, "name"))
        .collect();
    let mut all = others.clone();
    const NOT_ALLOWED: &[&str] = &[
        "ports",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "resizePolicy",
        "restartPolicy",
    ];
    for (i, c) in eph.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_common(c, vols, &p, restart_policy));
        errs.extend(validate_only_for_pod(c, &p));
        let name = str_of(c, "name");
        if !all.insert(name) {
            errs.push(field::duplicate_str(&p.child("name"), name));
        }
        let target = str_of(c, "targetContainerName");
        if !target.is_empty() && !others.contains(target) {
            errs.push(field::not_found(&p.child("targetContainerName"), target));
        }
        for f in NOT_ALLOWED {
            if c.get(*f).is_some_and(|v| !is_empty_value(v)) {
                errs.push(field::forbidden(
                    &p.child(f),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        for (j, m) in arr(c, "volumeMounts").iter().enumerate() {
            for f in ["subPath", "subPathExpr"] {
                if !str_of(m, f).is_empty() {
                    errs.push(field::forbidden(
                        &p.child("volumeMounts").index(j).child(f),
                        "cannot be set for an Ephemeral Container",
                    ));
                }
            }
        }
    }
    errs
}

fn is_empty_value(v: &Value) -> bool {
    match super::prune(v) {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Checks only applied to real pods, not templates (whitespace around images).
pub fn validate_only_for_pod(c: &Value, path: &Path) -> Vec<Cause> {
    let image = str_of(c, "image");
    if image.trim() != image {
        vec![field::invalid_str(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        )]
    } else {
        Vec::new()
    }
}

fn validate_common(c: &Value, vols: &Volumes, path: &Path, restart_policy: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(field::required(&path.child("name"), ""));
    } else {
        for msg in names::is_dns1123_label(name) {
            errs.push(field::invalid_str(&path.child("name"), name, &msg));
        }
    }
    if str_of(c, "image").is_empty() {
        errs.push(field::required(&path.child("image"), ""));
    }
    match str_of(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(field::required(&path.child("terminationMessagePolicy"), "")),
        other => errs.push(field::not_supported_str(
            &path.child("terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_ports(arr(c, "ports"), &path.child("ports")));
    errs.extend(validate_env(arr(c, "env"), &path.child("env")));
    errs.extend(validate_env_from(arr(c, "envFrom"), &path.child("envFrom")));
    errs.extend(validate_volume_mounts(c, vols, &path.child("volumeMounts")));
    errs.extend(validate_volume_devices(
        c,
        vols,
        &path.child("volumeDevices"),
    ));
    match str_of(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(field::required(&path.child("imagePullPolicy"), "")),
        other => errs.push(field::not_supported_str(
            &path.child("imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    errs.extend(validate_resources(
        sub(c, "resources"),
        &path.child("resources"),
    ));
    errs.extend(validate_resize_policy(
        arr(c, "resizePolicy"),
        &path.child("resizePolicy"),
        restart_policy,
    ));
    if let Some(sc) = c.get("securityContext").filter(|v| v.is_object()) {
        errs.extend(validate_security_context(
            sc,
            &path.child("securityContext"),
        ));
    }
    errs
}

fn validate_ports(ports: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.iter()
                        .map(|m| field::invalid_str(&p.child("name"), name, m)),
                );
            } else if !names.insert(name) {
                errs.push(field::duplicate_str(&p.child("name"), name));
            }
        }
        match int(port, "containerPort").unwrap_or(0) {
            0 => errs.push(field::required(&p.child("containerPort"), "")),
            n => errs.extend(
                names::is_valid_port_num(n)
                    .iter()
                    .map(|m| field::invalid_int(&p.child("containerPort"), n, m)),
            ),
        }
        let host = int(port, "hostPort").unwrap_or(0);
        if host != 0 {
            errs.extend(
                names::is_valid_port_num(host)
                    .iter()
                    .map(|m| field::invalid_int(&p.child("hostPort"), host, m)),
            );
        }
        match str_of(port, "protocol") {
            "" => errs.push(field::required(&p.child("protocol"), "")),
            proto if !PROTOCOLS.contains(&proto) => errs.push(field::not_supported_str(
                &p.child("protocol"),
                proto,
                PROTOCOLS,
            )),
            _ => {}
        }
    }
    errs
}

/// Host ports must not collide (per protocol and host IP) across the given containers.
fn host_port_conflicts(containers: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let hp = int(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{hp}",
                str_of(port, "protocol"),
                str_of(port, "hostIP")
            );
            if !seen.insert(key.clone()) {
                errs.push(field::duplicate_str(
                    &path.index(ci).child("ports").index(pi).child("hostPort"),
                    &key,
                ));
            }
        }
    }
    errs
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

pub fn validate_env(vars: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, ev) in vars.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(ev, "name");
        if name.is_empty() {
            errs.push(field::required(&p.child("name"), ""));
        } else {
            errs.extend(
                names::is_env_var_name(name)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("name"), name, m)),
            );
        }
        let Some(from) = ev.get("valueFrom").filter(|v| v.is_object()) else {
            continue;
        };
        let vp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = from.get("fieldRef").filter(|v| v.is_object()) {
            sources += 1;
            errs.extend(validate_object_field_selector(
                f,
                ENV_FIELD_PATHS,
                &vp.child("fieldRef"),
            ));
        }
        if let Some(r) = from.get("resourceFieldRef").filter(|v| v.is_object()) {
            sources += 1;
            errs.extend(validate_resource_field_selector(
                r,
                false,
                &vp.child("resourceFieldRef"),
            ));
        }
        for (key, fp) in [
            ("configMapKeyRef", "configMapKeyRef"),
            ("secretKeyRef", "secretKeyRef"),
        ] {
            if let Some(r) = from.get(key).filter(|v| v.is_object()) {
                sources += 1;
                errs.extend(validate_key_selector(r, &vp.child(fp)));
            }
        }
        if sources == 0 {
            errs.push(field::invalid_str(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !str_of(ev, "value").is_empty() {
            errs.push(field::invalid_str(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(field::invalid_str(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

pub fn validate_object_field_selector(fs: &Value, allowed: &[&str], path: &Path) -> Vec<Cause> {
    if str_of(fs, "apiVersion").is_empty() {
        return vec![field::required(&path.child("apiVersion"), "")];
    }
    let fp = str_of(fs, "fieldPath");
    if fp.is_empty() {
        return vec![field::required(&path.child("fieldPath"), "")];
    }
    if let Some((base, rest)) = fp.split_once('[') {
        let key = rest.strip_suffix(']').unwrap_or(rest).trim_matches('\'');
        return match base {
            "metadata.annotations" => names::is_qualified_name(&key.to_lowercase())
                .iter()
                .map(|m| field::invalid_str(path, &key.to_lowercase(), m))
                .collect(),
            "metadata.labels" => names::is_qualified_name(key)
                .iter()
                .map(|m| field::invalid_str(path, key, m))
                .collect(),
            _ => vec![field::invalid_str(path, base, "does not support subscript")],
        };
    }
    if allowed.contains(&fp) {
        Vec::new()
    } else {
        vec![field::not_supported_str(
            &path.child("fieldPath"),
            fp,
            allowed,
        )]
    }
}

pub fn validate_resource_field_selector(r: &Value, volume: bool, path: &Path) -> Vec<Cause> {
    let resource = str_of(r, "resource");
    if volume && str_of(r, "containerName").is_empty() {
        return vec![field::required(&path.child("containerName"), "")];
    }
    if resource.is_empty() {
        return vec![field::required(&path.child("resource"), "")];
    }
    let hugepages =
        resource.starts_with("requests.hugepages-") || resource.starts_with("limits.hugepages-");
    if !RESOURCE_FIELD_PATHS.contains(&resource) && !hugepages {
        return vec![field::not_supported_str(
            &path.child("resource"),
            resource,
            RESOURCE_FIELD_PATHS,
        )];
    }
    Vec::new()
}

fn validate_key_selector(r: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = str_of(r, "name");
    for msg in names::is_dns1123_subdomain(name) {
        errs.push(field::invalid_str(&path.child("name"), name, &msg));
    }
    let key = str_of(r, "key");
    if key.is_empty() {
        errs.push(field::required(&path.child("key"), ""));
    } else {
        errs.extend(
            names::is_config_map_key(key)
                .iter()
                .map(|m| field::invalid_str(&path.child("key"), key, m)),
        );
    }
    errs
}

fn validate_env_from(list: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, ev) in list.iter().enumerate() {
        let p = path.index(i);
        let prefix = str_of(ev, "prefix");
        if !prefix.is_empty() {
            errs.extend(
                names::is_env_var_name(prefix)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("prefix"), prefix, m)),
            );
        }
        let mut sources = 0;
        for key in ["configMapRef", "secretRef"] {
            if let Some(r) = ev.get(key).filter(|v| v.is_object()) {
                sources += 1;
                let name = str_of(r, "name");
                if name.is_empty() {
                    errs.push(field::required(&p.child(key).child("name"), ""));
                } else {
                    for msg in names::check_name(names::NameRule::Subdomain, name, true) {
                        errs.push(field::invalid_str(&p.child(key).child("name"), name, &msg));
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(field::invalid_str(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(field::invalid_str(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

/// Rejects absolute paths and `..` segments (subPath, item paths).
pub fn validate_local_descending_path(p: &str, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    if p.starts_with('/') {
        errs.push(field::invalid_str(path, p, "must be a relative path"));
    }
    errs.extend(validate_no_backsteps(p, path));
    errs
}

pub fn validate_no_backsteps(p: &str, path: &Path) -> Vec<Cause> {
    if p.split(['/', '\\']).any(|seg| seg == "..") {
        vec![field::invalid_str(path, p, "must not contain '..'")]
    } else {
        Vec::new()
    }
}

fn validate_volume_mounts(c: &Value, vols: &Volumes, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let devices = arr(c, "volumeDevices");
    let mut mount_points = HashSet::new();
    let privileged = flag(sub(c, "securityContext"), "privileged");
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let p = path.index(i);
        let name = str_of(m, "name");
        let mount_path = str_of(m, "mountPath");
        if name.is_empty() {
            errs.push(field::required(&p.child("name"), ""));
        }
        if !vols.contains_key(name) {
            errs.push(field::not_found(&p.child("name"), name));
        }
        if mount_path.is_empty() {
            errs.push(field::required(&p.child("mountPath"), ""));
        }
        if !mount_points.insert(mount_path) {
            errs.push(field::invalid_str(
                &p.child("mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        if devices.iter().any(|d| str_of(d, "name") == name) {
            errs.push(field::invalid_str(
                &p.child("name"),
                name,
                "must not already exist in volumeDevices",
            ));
        }
        if devices
            .iter()
            .any(|d| str_of(d, "devicePath") == mount_path)
        {
            errs.push(field::invalid_str(
                &p.child("mountPath"),
                mount_path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = str_of(m, "subPath");
        let sub_expr = str_of(m, "subPathExpr");
        if vols.get(name).is_some_and(|k| k == "image") {
            if !sub_path.is_empty() {
                errs.push(field::invalid_str(
                    &p.child("subPath"),
                    sub_path,
                    "not allowed in image volume sources",
                ));
            }
            if !sub_expr.is_empty() {
                errs.push(field::invalid_str(
                    &p.child("subPathExpr"),
                    sub_expr,
                    "not allowed in image volume sources",
                ));
            }
        }
        if !sub_path.is_empty() {
            errs.extend(validate_local_descending_path(
                sub_path,
                &path.child("subPath"),
            ));
        }
        if !sub_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(field::invalid_str(
                    &p.child("subPathExpr"),
                    sub_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(validate_local_descending_path(
                sub_expr,
                &path.child("subPathExpr"),
            ));
        }
        if let Some(mp) = opt_str(m, "mountPropagation") {
            let pp = path.child("mountPropagation");
            match mp {
                "None" | "HostToContainer" => {}
                "Bidirectional" if !privileged => errs.push(field::forbidden(
                    &pp,
                    "Bidirectional mount propagation is available only to privileged containers",
                )),
                "Bidirectional" => {}
                other => errs.push(field::not_supported_str(
                    &pp,
                    other,
                    &["Bidirectional", "HostToContainer", "None"],
                )),
            }
        }
        if let Some(rro) = opt_str(m, "recursiveReadOnly") {
            let rp = path.child("recursiveReadOnly");
            match rro {
                "Disabled" => {}
                "IfPossible" | "Enabled" => {
                    if !flag(m, "readOnly") {
                        errs.push(field::forbidden(
                            &rp,
                            "may only be specified when readOnly is true",
                        ));
                    }
                    if opt_str(m, "mountPropagation").is_some_and(|p| p != "None") {
                        errs.push(field::forbidden(
                            &rp,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => errs.push(field::not_supported_str(
                    &rp,
                    other,
                    &["Disabled", "Enabled", "IfPossible"],
                )),
            }
        }
    }
    errs
}

fn validate_volume_devices(c: &Value, vols: &Volumes, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mounts = arr(c, "volumeMounts");
    let mut paths = HashSet::new();
    let mut names = HashSet::new();
    for (i, d) in arr(c, "volumeDevices").iter().enumerate() {
        let p = path.index(i);
        let name = str_of(d, "name");
        let dev_path = str_of(d, "devicePath");
        if name.is_empty() {
            errs.push(field::required(&p.child("name"), ""));
        }
        if names.contains(name) {
            errs.push(field::invalid_str(&p.child("name"), name, "must be unique"));
        }
        match vols.get(name).map(String::as_str) {
            Some("persistentVolumeClaim" | "ephemeral") => {}
            Some(_) => errs.push(field::invalid_str(
                &p.child("name"),
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            None => errs.push(field::not_found(&p.child("name"), name)),
        }
        if dev_path.is_empty() {
            errs.push(field::required(&p.child("devicePath"), ""));
        }
        if paths.contains(dev_path) {
            errs.push(field::invalid_str(
                &p.child("devicePath"),
                dev_path,
                "must be unique",
            ));
        }
        if !dev_path.is_empty() && !validate_no_backsteps(dev_path, &p).is_empty() {
            errs.push(field::invalid_str(
                &p.child("devicePath"),
                dev_path,
                "can not contain backsteps ('..')",
            ));
        } else {
            paths.insert(dev_path);
        }
        if mounts.iter().any(|m| str_of(m, "name") == name) {
            errs.push(field::invalid_str(
                &p.child("name"),
                name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.iter().any(|m| str_of(m, "mountPath") == dev_path) {
            errs.push(field::invalid_str(
                &p.child("devicePath"),
                dev_path,
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !name.is_empty() {
            names.insert(name);
        }
    }
    errs
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `ValidateContainerResourceRequirements`: names, non-negative quantities, requests no
/// larger than limits (equal for resources that cannot be overcommitted).
pub fn validate_resources(res: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let limits = obj(res, "limits");
    let (mut lim_cpu_mem, mut req_cpu_mem, mut hugepages) = (false, false, false);
    for (name, q) in limits.into_iter().flatten() {
        let p = lim_path.key(name);
        errs.extend(validate_resource_name(name, &p));
        errs.extend(validate_quantity(name, q, &p));
        hugepages |= is_hugepages(name);
        lim_cpu_mem |= name == "cpu" || name == "memory";
    }
    for (name, q) in obj(res, "requests").into_iter().flatten() {
        let p = req_path.key(name);
        errs.extend(validate_resource_name(name, &p));
        errs.extend(validate_quantity(name, q, &p));
        let qs = q.as_str().unwrap_or_default();
        let overcommit = is_native(name) && !is_hugepages(name);
        match limits.and_then(|l| l.get(name)).and_then(Value::as_str) {
            Some(lim) => {
                let (Some(a), Some(b)) = (Quantity::parse(qs), Quantity::parse(lim)) else {
                    continue;
                };
                if a != b && !overcommit {
                    errs.push(field::invalid_str(
                        &req_path,
                        qs,
                        &format!("must be equal to {name} limit of {lim}"),
                    ));
                } else if a > b {
                    errs.push(field::invalid_str(
                        &req_path,
                        qs,
                        &format!("must be less than or equal to {name} limit of {lim}"),
                    ));
                }
            }
            None if !overcommit => {
                errs.push(field::required(
                    &lim_path,
                    "Limit must be set for non overcommitable resources",
                ));
            }
            None => {}
        }
        hugepages |= is_hugepages(name);
        req_cpu_mem |= name == "cpu" || name == "memory";
    }
    if hugepages && !lim_cpu_mem && !req_cpu_mem {
        errs.push(field::forbidden(path, "HugePages require cpu or memory"));
    }
    errs
}

fn validate_resource_name(name: &str, path: &Path) -> Vec<Cause> {
    let mut errs: Vec<Cause> = names::is_qualified_name(name)
        .iter()
        .map(|m| field::invalid_str(path, name, m))
        .collect();
    if !errs.is_empty() {
        return errs;
    }
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(field::invalid_str(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && name.starts_with("requests.") {
        errs.push(field::invalid_str(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

/// A resource quantity: well-formed, non-negative, whole for extended resources.
pub fn validate_quantity(name: &str, q: &Value, path: &Path) -> Vec<Cause> {
    let s = q
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| q.to_string());
    let Some(parsed) = Quantity::parse(&s) else {
        return vec![field::invalid_str(path, &s, QUANTITY_FORMAT_ERROR)];
    };
    let mut errs = Vec::new();
    if parsed.is_negative() {
        errs.push(field::invalid_str(
            path,
            &s,
            "must be greater than or equal to 0",
        ));
    }
    if !is_native(name) && !parsed.is_integer() {
        errs.push(field::invalid_str(path, &s, "must be an integer"));
    }
    errs
}

fn validate_resize_policy(list: &[Value], path: &Path, restart_policy: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let name = str_of(p, "resourceName");
        if !seen.insert(name) {
            errs.push(field::duplicate_str(&path.index(i), name));
        }
        match name {
            "cpu" | "memory" => {}
            "" => errs.push(field::required(path, "")),
            other => errs.push(field::not_supported_str(path, other, &["cpu", "memory"])),
        }
        let policy = str_of(p, "restartPolicy");
        match policy {
            "NotRequired" | "RestartContainer" => {}
            "" => errs.push(field::required(path, "")),
            other => errs.push(field::not_supported_str(
                path,
                other,
                &["NotRequired", "RestartContainer"],
            )),
        }
        if restart_policy == "Never" && policy != "NotRequired" {
            errs.push(field::invalid_str(
                path,
                policy,
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            ));
        }
    }
    errs
}

fn validate_probes(c: &Value, grace: Option<i64>, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = c.get(kind).filter(|v| v.is_object()) else {
            continue;
        };
        let p = path.child(kind);
        errs.extend(validate_handler(probe, false, grace, &p));
        for f in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            if let Some(n) = int(probe, f).filter(|n| *n < 0) {
                errs.push(field::invalid_int(
                    &p.child(f),
                    n,
                    "must be greater than or equal to 0",
                ));
            }
        }
        if let Some(t) = int(probe, "terminationGracePeriodSeconds").filter(|t| *t <= 0) {
            errs.push(field::invalid_int(
                &p.child("terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
        match kind {
            "readinessProbe" => {
                if let Some(t) = probe
                    .get("terminationGracePeriodSeconds")
                    .filter(|v| !v.is_null())
                {
                    errs.push(field::invalid(
                        &p.child("terminationGracePeriodSeconds"),
                        t,
                        "must not be set for readinessProbes",
                    ));
                }
            }
            _ => {
                if let Some(st) = int(probe, "successThreshold").filter(|s| *s != 1) {
                    errs.push(field::invalid_int(
                        &p.child("successThreshold"),
                        st,
                        "must be 1",
                    ));
                }
            }
        }
    }
    errs
}

fn validate_lifecycle(l: &Value, grace: Option<i64>, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for hook in ["postStart", "preStop"] {
        if let Some(h) = l.get(hook).filter(|v| v.is_object()) {
            errs.extend(validate_handler(h, true, grace, &path.child(hook)));
        }
    }
    errs
}

/// Probe and lifecycle handlers: exactly one action.
fn validate_handler(h: &Value, lifecycle: bool, grace: Option<i64>, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut count = 0;
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    for kind in kinds {
        let Some(a) = h.get(*kind).filter(|v| v.is_object()) else {
            continue;
        };
        let p = path.child(kind);
        if count > 0 {
            errs.push(field::forbidden(
                &p,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match *kind {
            "exec" => {
                if arr(a, "command").is_empty() {
                    errs.push(field::required(&p.child("command"), ""));
                }
            }
            "httpGet" => {
                if str_of(a, "path").is_empty() {
                    errs.push(field::required(&p.child("path"), ""));
                }
                errs.extend(validate_port_num_or_name(sub(a, "port"), &p.child("port")));
                let scheme = str_of(a, "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    errs.push(field::not_supported_str(
                        &p.child("scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
                for header in arr(a, "httpHeaders") {
                    let name = str_of(header, "name");
                    errs.extend(
                        names::is_http_header_name(name)
                            .iter()
                            .map(|m| field::invalid_str(&p.child("httpHeaders"), name, m)),
                    );
                }
            }
            "tcpSocket" => errs.extend(validate_port_num_or_name(sub(a, "port"), &p.child("port"))),
            "grpc" => {
                let port = int(a, "port").unwrap_or(0);
                errs.extend(
                    names::is_valid_port_num(port)
                        .iter()
                        .map(|m| field::invalid_int(&p.child("port"), port, m)),
                );
            }
            _ => {
                let secs = int(a, "seconds").unwrap_or(0);
                if let Some(g) = grace {
                    if secs < 0 || secs > g {
                        errs.push(field::invalid_int(
                            &p,
                            secs,
                            &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
                        ));
                    }
                }
            }
        }
    }
    if count == 0 {
        errs.push(field::required(path, "must specify a handler type"));
    }
    errs
}

/// An IntOrString port: a number in range or an IANA service name.
pub fn validate_port_num_or_name(port: &Value, path: &Path) -> Vec<Cause> {
    match port {
        Value::String(s) => names::is_valid_port_name(s)
            .iter()
            .map(|m| field::invalid_str(path, s, m))
            .collect(),
        other => {
            let n = other.as_i64().unwrap_or(0);
            names::is_valid_port_num(n)
                .iter()
                .map(|m| field::invalid_int(path, n, m))
                .collect()
        }
    }
}

const MAX_ID: i64 = i32::MAX as i64;

/// Container `securityContext`.
pub fn validate_security_context(sc: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for f in ["runAsUser", "runAsGroup"] {
        if let Some(id) = int(sc, f).filter(|id| !(0..=MAX_ID).contains(id)) {
            errs.push(field::invalid_int(
                &path.child(f),
                id,
                &names::inclusive_range_error(0, MAX_ID),
            ));
        }
    }
    if let Some(pm) = opt_str(sc, "procMount") {
        if pm != "Default" && pm != "Unmasked" {
            errs.push(field::not_supported_str(
                &path.child("procMount"),
                pm,
                &["Default", "Unmasked"],
            ));
        }
    }
    if sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false) {
        if flag(sc, "privileged") {
            errs.push(field::invalid(
                path,
                sc,
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        if arr(sub(sc, "capabilities"), "add")
            .iter()
            .any(|c| c.as_str() == Some("CAP_SYS_ADMIN"))
        {
            errs.push(field::invalid(path, sc, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"));
        }
    }
    errs.extend(validate_seccomp_profile(
        sub(sc, "seccompProfile"),
        &path.child("seccompProfile"),
    ));
    errs.extend(validate_app_armor_profile(
        sub(sc, "appArmorProfile"),
        &path.child("appArmorProfile"),
    ));
    errs
}

pub fn validate_seccomp_profile(sp: &Value, path: &Path) -> Vec<Cause> {
    if !sp.is_object() {
        return Vec::new();
    }
    let mut errs = Vec::new();
    let kind = str_of(sp, "type");
    match kind {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => errs.push(field::required(
            &path.child("type"),
            "type is required when seccompProfile is set",
        )),
        other => errs.push(field::not_supported_str(
            &path.child("type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    match (kind, opt_str(sp, "localhostProfile")) {
        ("Localhost", None) => errs.push(field::required(
            &path.child("localhostProfile"),
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(p)) => errs.extend(validate_local_descending_path(
            p,
            &path.child("localhostProfile"),
        )),
        (_, Some(_)) => errs.push(field::invalid(
            &path.child("localhostProfile"),
            sp,
            "can only be set when seccomp type is Localhost",
        )),
        _ => {}
    }
    errs
}

pub fn validate_app_armor_profile(ap: &Value, path: &Path) -> Vec<Cause> {
    if !ap.is_object() {
        return Vec::new();
    }
    let mut errs = Vec::new();
    match str_of(ap, "type") {
        "Localhost" => match opt_str(ap, "localhostProfile") {
            None | Some("") => errs.push(field::required(
                &path.child("localhostProfile"),
                "must be set when AppArmor type is Localhost",
            )),
            Some(p) if p.trim() != p => errs.push(field::invalid_str(
                &path.child("localhostProfile"),
                p,
                "must not be padded with whitespace",
            )),
            _ => {}
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(p) = ap.get("localhostProfile").filter(|v| !v.is_null()) {
                errs.push(field::invalid(
                    &path.child("localhostProfile"),
                    p,
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        "" => errs.push(field::required(
            &path.child("type"),
            "type is required when appArmorProfile is set",
        )),
        other => errs.push(field::not_supported_str(
            &path.child("type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn describe(errs: Vec<Cause>) -> Vec<String> {
        errs.iter().map(Cause::describe).collect()
    }

    fn defaults(mut c: Value) -> Value {
        if let Some(m) = c.as_object_mut() {
            m.entry("terminationMessagePolicy").or_insert(json!("File"));
            m.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
        }
        c
    }

    #[test]
    fn containers_names_images_ports() {
        let p = Path::new("spec").child("containers");
        let cs = vec![
            defaults(
                json!({"name": "Web", "image": "", "ports": [{"containerPort": 70000, "protocol": "ICMP"}, {"containerPort": 0, "protocol": "TCP", "name": "http"}, {"containerPort": 80, "protocol": "TCP", "name": "http"}]}),
            ),
            defaults(json!({"name": "Web", "image": "x"})),
        ];
        let e = describe(validate_containers(
            &cs,
            &Volumes::new(),
            Some(30),
            &p,
            "Always",
        ));
        assert!(e.iter().any(|m| m.starts_with(
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
        )));
        assert!(e.contains(&"spec.containers[0].image: Required value".into()));
        assert!(e.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".into()));
        assert!(e.contains(&"spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".into()));
        assert!(e.contains(&"spec.containers[0].ports[1].containerPort: Required value".into()));
        assert!(e.contains(&"spec.containers[0].ports[2].name: Duplicate value: \"http\"".into()));
        assert!(e.contains(&"spec.containers[1].name: Duplicate value: \"Web\"".into()));
        assert_eq!(
            describe(validate_containers(
                &[],
                &Volumes::new(),
                None,
                &p,
                "Always"
            )),
            vec!["spec.containers: Required value"]
        );
    }

    #[test]
    fn resources_requests_must_not_exceed_limits() {
        let p = Path::new("r");
        let e = describe(validate_resources(
            &json!({"limits": {"cpu": "100m", "memory": "1Gi"}, "requests": {"cpu": "200m", "memory": "512Mi"}}),
            &p,
        ));
        assert_eq!(e, vec!["r.requests: Invalid value: \"200m\": must be less than or equal to cpu limit of 100m"]);
        let e = describe(validate_resources(
            &json!({"requests": {"cpu": "-1", "gpus": "1", "example.com/dev": "1.5"}}),
            &p,
        ));
        assert!(
            e.contains(
                &"r.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"
                    .into()
            ),
            "{e:?}"
        );
        assert!(e.contains(&"r.requests[gpus]: Invalid value: \"gpus\": must be a standard resource for containers".into()));
        assert!(e.contains(
            &"r.requests[example.com/dev]: Invalid value: \"1.5\": must be an integer".into()
        ));
        assert!(e.contains(
            &"r.limits: Required value: Limit must be set for non overcommitable resources".into()
        ));
        let e = describe(validate_resources(&json!({"limits": {"cpu": "lots"}}), &p));
        assert!(e[0].starts_with("r.limits[cpu]: Invalid value: \"lots\": quantities must match"));
    }

    #[test]
    fn env_and_mounts() {
        let p = Path::new("c");
        let c = defaults(json!({"name": "a", "image": "x",
            "env": [{"name": ""}, {"name": "A=B"}, {"name": "X", "valueFrom": {}}, {"name": "Y", "value": "v", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.bogus"}}}],
            "volumeMounts": [{"name": "missing", "mountPath": "/a"}, {"name": "data", "mountPath": "/a", "subPath": "../x"}]}));
        let mut vols = Volumes::new();
        vols.insert("data".into(), "emptyDir".into());
        let e = describe(validate_common(&c, &vols, &p, "Always"));
        assert!(e.contains(&"c.env[0].name: Required value".into()), "{e:?}");
        assert!(e
            .iter()
            .any(|m| m.starts_with("c.env[1].name: Invalid value: \"A=B\"")));
        assert!(e.contains(&"c.env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`".into()));
        assert!(e.iter().any(|m| m.starts_with(
            "c.env[3].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\""
        )));
        assert!(e.contains(&"c.env[3].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty".into()));
        assert!(e.contains(&"c.volumeMounts[0].name: Not found: \"missing\"".into()));
        assert!(e.contains(
            &"c.volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique".into()
        ));
        assert!(e.contains(
            &"c.volumeMounts.subPath: Invalid value: \"../x\": must not contain '..'".into()
        ));
    }

    #[test]
    fn probes_and_init_containers() {
        let p = Path::new("spec").child("initContainers");
        let inits = vec![
            defaults(
                json!({"name": "init", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}),
            ),
            defaults(
                json!({"name": "side", "image": "x", "restartPolicy": "Always", "livenessProbe": {"successThreshold": 2, "periodSeconds": 1}}),
            ),
            defaults(json!({"name": "main", "image": "x"})),
        ];
        let regular = vec![json!({"name": "main"})];
        let e = describe(validate_init_containers(
            &inits,
            &regular,
            &Volumes::new(),
            Some(30),
            &p,
            "Always",
        ));
        assert!(e.contains(&"spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always".into()), "{e:?}");
        assert!(e.contains(
            &"spec.initContainers[1].livenessProbe: Required value: must specify a handler type"
                .into()
        ));
        assert!(e.contains(
            &"spec.initContainers[1].livenessProbe.successThreshold: Invalid value: 2: must be 1"
                .into()
        ));
        assert!(e.contains(&"spec.initContainers[2].name: Duplicate value: \"main\"".into()));
    }

    #[test]
    fn security_context() {
        let e = describe(validate_security_context(
            &json!({"runAsUser": -1, "privileged": true, "allowPrivilegeEscalation": false, "seccompProfile": {"type": "Localhost"}}),
            &Path::new("sc"),
        ));
        assert!(
            e.contains(
                &"sc.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"
                    .into()
            ),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m
            .ends_with("cannot set `allowPrivilegeEscalation` to false and `privileged` to true")));
        assert!(e.contains(&"sc.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost".into()));
    }
}
