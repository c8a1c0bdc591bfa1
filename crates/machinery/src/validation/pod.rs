//! Pods, pod specs and pod templates, including upstream's rules for which parts of a running
//! pod's spec may change.

use std::collections::HashSet;

use serde_json::Value;

use super::container::{self, Volumes};
use super::field::{self, Path};
use super::meta;
use super::names;
use super::volumes;
use super::{arr, diff, flag, has, int, obj, opt_str, prune, semantic_eq, str_of, sub};
use crate::status::Cause;

const MAX_INT32: i64 = i32::MAX as i64;

/// What upstream lists as changeable in a pod's spec.
const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// `ValidatePodSpec`. `is_pod` is upstream's `ResourceIsPod` (a real pod, not a template).
pub fn validate_pod_spec(spec: &Value, path: &Path, is_pod: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    if !has(spec, "terminationGracePeriodSeconds") {
        errs.push(field::required(
            &path.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    let grace = int(spec, "terminationGracePeriodSeconds");
    let restart_policy = str_of(spec, "restartPolicy");
    let (vols, verrs) = volumes::validate_volumes(arr(spec, "volumes"), &path.child("volumes"));
    errs.extend(verrs);
    let containers = arr(spec, "containers");
    let inits = arr(spec, "initContainers");
    errs.extend(container::validate_containers(
        containers,
        &vols,
        grace,
        &path.child("containers"),
        restart_policy,
    ));
    errs.extend(container::validate_init_containers(
        inits,
        containers,
        &vols,
        grace,
        &path.child("initContainers"),
        restart_policy,
    ));
    errs.extend(container::validate_ephemeral_containers(
        arr(spec, "ephemeralContainers"),
        containers,
        inits,
        &vols,
        &path.child("ephemeralContainers"),
        restart_policy,
    ));
    if flag(spec, "hostNetwork") {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in arr(c, "ports").iter().enumerate() {
                let (hp, cp) = (
                    int(port, "hostPort").unwrap_or(0),
                    int(port, "containerPort").unwrap_or(0),
                );
                if (is_pod || hp != 0) && hp != cp {
                    errs.push(field::invalid_int(
                        &path
                            .child("containers")
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    match restart_policy {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(field::required(&path.child("restartPolicy"), "")),
        other => errs.push(field::not_supported_str(
            &path.child("restartPolicy"),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns_policy = str_of(spec, "dnsPolicy");
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(field::required(&path.child("dnsPolicy"), "")),
        other => errs.push(field::not_supported_str(
            &path.child("dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(meta::validate_labels(
        spec.get("nodeSelector"),
        &path.child("nodeSelector"),
    ));
    errs.extend(validate_pod_security_context(spec, path));
    for (i, s) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s.as_object().is_some_and(|m| m.keys().any(|k| k != "name")) {
            errs.push(field::invalid(
                &path.child("imagePullSecrets").index(i),
                s,
                "only name may be set",
            ));
        }
    }
    errs.extend(validate_affinity(
        sub(spec, "affinity"),
        &path.child("affinity"),
    ));
    errs.extend(validate_dns_config(
        spec,
        dns_policy,
        &path.child("dnsConfig"),
    ));
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        let t = str_of(g, "conditionType");
        let p = path.child("readinessGates").index(i).child("conditionType");
        errs.extend(
            names::is_qualified_name(t)
                .iter()
                .map(|m| field::invalid_str(&p, t, m)),
        );
    }
    let mut gates = HashSet::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let n = str_of(g, "name");
        let p = path.child("schedulingGates").index(i);
        errs.extend(
            names::is_qualified_name(n)
                .iter()
                .map(|m| field::invalid_str(&p, n, m)),
        );
        if !gates.insert(n) {
            errs.push(field::duplicate_str(&p, n));
        }
    }
    errs.extend(validate_topology_spread(
        arr(spec, "topologySpreadConstraints"),
        &path.child("topologySpreadConstraints"),
    ));
    for (key, rule) in [
        ("serviceAccountName", names::NameRule::Subdomain),
        ("nodeName", names::NameRule::Subdomain),
    ] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            errs.extend(
                names::check_name(rule, v, false)
                    .iter()
                    .map(|m| field::invalid_str(&path.child(key), v, m)),
            );
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=MAX_INT32).contains(&ads) {
            errs.push(field::invalid_int(
                &path.child("activeDeadlineSeconds"),
                ads,
                &names::inclusive_range_error(1, MAX_INT32),
            ));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            errs.extend(
                names::is_dns1123_label(v)
                    .iter()
                    .map(|m| field::invalid_str(&path.child(key), v, m)),
            );
        }
    }
    errs.extend(validate_tolerations(
        arr(spec, "tolerations"),
        &path.child("tolerations"),
    ));
    for (i, alias) in arr(spec, "hostAliases").iter().enumerate() {
        let p = path.child("hostAliases").index(i);
        let ip = str_of(alias, "ip");
        if !names::is_valid_ip(ip) {
            errs.push(field::invalid_str(&p.child("ip"), ip, names::IP_ERROR));
        }
        for (j, h) in arr(alias, "hostnames").iter().enumerate() {
            let h = h.as_str().unwrap_or_default();
            errs.extend(
                names::is_dns1123_subdomain(h)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("hostnames").index(j), h, m)),
            );
        }
    }
    for key in ["priorityClassName", "runtimeClassName"] {
        if let Some(v) = opt_str(spec, key).filter(|v| !v.is_empty() || key == "runtimeClassName") {
            errs.extend(
                names::is_dns1123_subdomain(v)
                    .iter()
                    .map(|m| field::invalid_str(&path.child(key), v, m)),
            );
        }
    }
    if let Some(pp) = opt_str(spec, "preemptionPolicy") {
        match pp {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(field::required(&path.child("preemptionPolicy"), "")),
            other => errs.push(field::not_supported_str(
                &path.child("preemptionPolicy"),
                other,
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    for (name, q) in obj(spec, "overhead").into_iter().flatten() {
        errs.extend(container::validate_quantity(
            name,
            q,
            &path.child("overhead").key(name),
        ));
    }
    if let Some(os) = spec.get("os").filter(|v| v.is_object()) {
        let name = str_of(os, "name");
        if name.is_empty() {
            errs.push(field::required(&path.child("os").child("name"), ""));
        } else if name != "linux" && name != "windows" {
            errs.push(field::not_supported_str(
                &path.child("os").child("name"),
                name,
                &["linux", "windows"],
            ));
        }
    }
    errs
}

fn validate_pod_security_context(spec: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(sc) = spec.get("securityContext").filter(|v| v.is_object()) else {
        return errs;
    };
    let p = path.child("securityContext");
    for f in ["runAsUser", "runAsGroup", "fsGroup"] {
        if let Some(id) = int(sc, f).filter(|id| !(0..=MAX_INT32).contains(id)) {
            errs.push(field::invalid_int(
                &p.child(f),
                id,
                &names::inclusive_range_error(0, MAX_INT32),
            ));
        }
    }
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        let id = g.as_i64().unwrap_or(0);
        if !(0..=MAX_INT32).contains(&id) {
            errs.push(field::invalid_int(
                &p.child("supplementalGroups").index(i),
                id,
                &names::inclusive_range_error(0, MAX_INT32),
            ));
        }
    }
    if let Some(policy) = opt_str(sc, "fsGroupChangePolicy") {
        if policy != "OnRootMismatch" && policy != "Always" {
            errs.push(field::not_supported_str(
                &p.child("fsGroupChangePolicy"),
                policy,
                &["Always", "OnRootMismatch"],
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, s) in arr(sc, "sysctls").iter().enumerate() {
        let np = p.child("sysctls").index(i).child("name");
        let name = str_of(s, "name");
        if name.is_empty() {
            errs.push(field::required(&np, ""));
        } else if !is_valid_sysctl(name) {
            errs.push(field::invalid_str(
                &np,
                name,
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !seen.insert(name) {
            errs.push(field::duplicate_str(&np, name));
        }
    }
    errs.extend(container::validate_seccomp_profile(
        sub(sc, "seccompProfile"),
        &p.child("seccompProfile"),
    ));
    errs.extend(container::validate_app_armor_profile(
        sub(sc, "appArmorProfile"),
        &p.child("appArmorProfile"),
    ));
    if sc.get("hostUsers").and_then(Value::as_bool) == Some(false) {
        for (key, shown) in [
            ("hostNetwork", "hostNetwork"),
            ("hostPID", "HostPID"),
            ("hostIPC", "HostIPC"),
        ] {
            if flag(spec, key) {
                errs.push(field::forbidden(
                    &p.child(shown),
                    "when `pod.Spec.HostUsers` is false",
                ));
            }
        }
    }
    errs
}

fn is_valid_sysctl(name: &str) -> bool {
    let seg_ok = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
    };
    name.len() <= 253 && name.split(['.', '/']).all(seg_ok)
}

fn validate_dns_config(spec: &Value, dns_policy: &str, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let cfg = spec.get("dnsConfig").filter(|v| v.is_object());
    if dns_policy == "None" {
        match cfg {
            None => {
                return vec![field::required(
                    path,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                )]
            }
            Some(c) if arr(c, "nameservers").is_empty() => {
                return vec![field::required(
                    &path.child("nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                )]
            }
            _ => {}
        }
    }
    let Some(cfg) = cfg else { return errs };
    let ns = arr(cfg, "nameservers");
    if ns.len() > 3 {
        errs.push(field::invalid(
            &path.child("nameservers"),
            sub(cfg, "nameservers"),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, n) in ns.iter().enumerate() {
        let n = n.as_str().unwrap_or_default();
        if !names::is_valid_ip(n) {
            errs.push(field::invalid_str(
                &path.child("nameservers").index(i),
                n,
                names::IP_ERROR,
            ));
        }
    }
    let searches = arr(cfg, "searches");
    if searches.len() > 32 {
        errs.push(field::invalid(
            &path.child("searches"),
            sub(cfg, "searches"),
            "must not have more than 32 search paths",
        ));
    }
    let joined: Vec<&str> = searches.iter().filter_map(Value::as_str).collect();
    if joined.join(" ").len() > 2048 {
        errs.push(field::invalid(
            &path.child("searches"),
            sub(cfg, "searches"),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, s) in joined.iter().enumerate() {
        if *s == "." {
            continue;
        }
        let s = s.strip_suffix('.').unwrap_or(s);
        let ok = !s.is_empty()
            && s.split('.').all(|l| {
                let l = l.strip_prefix('_').unwrap_or(l);
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|&c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
                    })
            });
        if !ok || s.len() > 253 {
            errs.push(field::invalid_str(
                &path.child("searches").index(i),
                s,
                &names::regex_error(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character",
                    "_?[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\._?[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*",
                    &["example.com"],
                ),
            ));
        }
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if str_of(o, "name").is_empty() {
            errs.push(field::required(
                &path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

/// `ValidateTolerations`.
pub fn validate_tolerations(tolerations: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = str_of(t, "key");
        let op = str_of(t, "operator");
        let effect = str_of(t, "effect");
        let value = str_of(t, "value");
        if !key.is_empty() {
            errs.extend(
                names::is_qualified_name(key)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("key"), key, m)),
            );
        }
        if key.is_empty() && op != "Exists" {
            errs.push(field::invalid_str(
                &p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if has(t, "tolerationSeconds") && effect != "NoExecute" {
            errs.push(field::invalid_str(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = names::is_label_value(value);
                if !msgs.is_empty() {
                    errs.push(field::invalid_str(
                        &p.child("operator"),
                        value,
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(field::invalid_str(
                        &p.child("operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(field::not_supported_str(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            errs.push(field::not_supported_str(
                &p.child("effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

fn validate_node_selector_requirement(req: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let values = arr(req, "values");
    match str_of(req, "operator") {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(field::required(
                    &path.child("values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(field::forbidden(
                    &path.child("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                errs.push(field::required(
                    &path.child("values"),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            }
        }
        other => errs.push(field::invalid_str(
            &path.child("operator"),
            other,
            "not a valid selector operator",
        )),
    }
    let key = str_of(req, "key");
    errs.extend(
        names::is_qualified_name(key)
            .iter()
            .map(|m| field::invalid_str(&path.child("key"), key, m)),
    );
    errs
}

fn validate_node_selector_term(term: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (j, req) in arr(term, "matchExpressions").iter().enumerate() {
        errs.extend(validate_node_selector_requirement(
            req,
            &path.child("matchExpressions").index(j),
        ));
    }
    for (j, req) in arr(term, "matchFields").iter().enumerate() {
        let p = path.child("matchFields").index(j);
        let key = str_of(req, "key");
        if key != "metadata.name" {
            errs.push(field::invalid_str(
                &p.child("key"),
                key,
                "not a valid field selector key",
            ));
        } else if !matches!(str_of(req, "operator"), "In" | "NotIn")
            || arr(req, "values").len() != 1
        {
            errs.push(field::invalid(
                &p,
                req,
                "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
            ));
        }
    }
    errs
}

fn validate_pod_affinity_term(term: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Some(sel) = term.get("labelSelector").filter(|v| v.is_object()) {
        errs.extend(meta::validate_label_selector(
            sel,
            &path.child("labelSelector"),
        ));
    }
    if let Some(sel) = term.get("namespaceSelector").filter(|v| v.is_object()) {
        errs.extend(meta::validate_label_selector(
            sel,
            &path.child("namespaceSelector"),
        ));
    }
    for ns in arr(term, "namespaces").iter().filter_map(Value::as_str) {
        errs.extend(
            names::is_dns1123_label(ns)
                .iter()
                .map(|m| field::invalid_str(&path.child("namespace"), ns, m)),
        );
    }
    let key = str_of(term, "topologyKey");
    if key.is_empty() {
        errs.push(field::required(
            &path.child("topologyKey"),
            "can not be empty",
        ));
    }
    errs.extend(
        names::is_qualified_name(key)
            .iter()
            .map(|m| field::invalid_str(&path.child("topologyKey"), key, m)),
    );
    errs
}

fn validate_affinity(aff: &Value, path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    if !aff.is_object() {
        return errs;
    }
    let na = sub(aff, "nodeAffinity");
    if let Some(req) = na
        .get("requiredDuringSchedulingIgnoredDuringExecution")
        .filter(|v| v.is_object())
    {
        let p = path.at(&[
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        ]);
        let terms = arr(req, "nodeSelectorTerms");
        if terms.is_empty() {
            errs.push(field::required(
                &p.child("nodeSelectorTerms"),
                "must have at least one node selector term",
            ));
        }
        for (i, t) in terms.iter().enumerate() {
            errs.extend(validate_node_selector_term(
                t,
                &p.child("nodeSelectorTerms").index(i),
            ));
        }
    }
    for (i, pref) in arr(na, "preferredDuringSchedulingIgnoredDuringExecution")
        .iter()
        .enumerate()
    {
        let p = path
            .at(&[
                "nodeAffinity",
                "preferredDuringSchedulingIgnoredDuringExecution",
            ])
            .index(i);
        let w = int(pref, "weight").unwrap_or(0);
        if !(1..=100).contains(&w) {
            errs.push(field::invalid_int(
                &p.child("weight"),
                w,
                "must be in the range 1-100",
            ));
        }
        errs.extend(validate_node_selector_term(
            sub(pref, "preference"),
            &p.child("preference"),
        ));
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let pa = sub(aff, kind);
        for (i, t) in arr(pa, "requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            errs.extend(validate_pod_affinity_term(
                t,
                &path
                    .at(&[kind, "requiredDuringSchedulingIgnoredDuringExecution"])
                    .index(i),
            ));
        }
        for (i, w) in arr(pa, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let p = path
                .at(&[kind, "preferredDuringSchedulingIgnoredDuringExecution"])
                .index(i);
            let weight = int(w, "weight").unwrap_or(0);
            if !(1..=100).contains(&weight) {
                errs.push(field::invalid_int(
                    &p.child("weight"),
                    weight,
                    "must be in the range 1-100",
                ));
            }
            errs.extend(validate_pod_affinity_term(
                sub(w, "podAffinityTerm"),
                &p.child("podAffinityTerm"),
            ));
        }
    }
    errs
}

fn validate_topology_spread(constraints: &[Value], path: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in constraints.iter().enumerate() {
        let p = path.index(i);
        let skew = int(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(field::invalid_int(
                &p.child("maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        let key = str_of(c, "topologyKey");
        if key.is_empty() {
            errs.push(field::required(&p.child("topologyKey"), "can not be empty"));
        } else {
            errs.extend(
                names::is_qualified_name(key)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("topologyKey"), key, m)),
            );
        }
        let when = str_of(c, "whenUnsatisfiable");
        if when != "DoNotSchedule" && when != "ScheduleAnyway" {
            errs.push(field::not_supported_str(
                &p.child("whenUnsatisfiable"),
                when,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if let Some(min) = int(c, "minDomains") {
            if min <= 0 {
                errs.push(field::invalid_int(
                    &p.child("minDomains"),
                    min,
                    "must be greater than 0",
                ));
            } else if when != "DoNotSchedule" {
                errs.push(field::invalid_int(&p.child("minDomains"), min, "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway"));
            }
        }
        if !seen.insert((key, when)) {
            errs.push(field::duplicate(
                &p.child("{topologyKey, whenUnsatisfiable}"),
                &Value::String(format!("{{{key}, {when}}}")),
            ));
        }
        if let Some(sel) = c.get("labelSelector").filter(|v| v.is_object()) {
            errs.extend(meta::validate_label_selector(
                sel,
                &p.child("labelSelector"),
            ));
        }
    }
    errs
}

/// `ValidatePodTemplateSpec`, at `path` (e.g. `spec.template`). Upstream reports template
/// label errors at `<path>.labels`, not `<path>.metadata.labels`.
pub fn validate_pod_template(tmpl: &Value, path: &Path) -> Vec<Cause> {
    let m = sub(tmpl, "metadata");
    let mut errs = meta::validate_labels(m.get("labels"), &path.child("labels"));
    errs.extend(meta::validate_annotations(
        m.get("annotations"),
        &path.child("annotations"),
    ));
    let spec = sub(tmpl, "spec");
    errs.extend(validate_pod_spec(spec, &path.child("spec"), false));
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(field::forbidden(
            &path.at(&["spec", "ephemeralContainers"]),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// The PodTemplate kind.
pub fn validate_pod_template_object(obj: &Value) -> Vec<Cause> {
    validate_pod_template(sub(obj, "template"), &Path::new("template"))
}

/// Pod create (and the spec part of an update).
pub fn validate(pod: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(pod, "spec");
    let spec_path = Path::new("spec");
    let mut errs = Vec::new();
    let annotations = sub(sub(pod, "metadata"), "annotations");
    if let Some(mirror) = opt_str(annotations, "kubernetes.io/config.mirror") {
        if str_of(spec, "nodeName").is_empty() {
            errs.push(field::invalid_str(
                &Path::new("metadata")
                    .child("annotations")
                    .key("kubernetes.io/config.mirror"),
                mirror,
                "must set spec.nodeName if mirror pod annotation is set",
            ));
        }
    }
    errs.extend(validate_pod_spec(spec, &spec_path, true));
    if str_of(spec, "serviceAccountName").is_empty() {
        for (vi, v) in arr(spec, "volumes").iter().enumerate() {
            for (si, s) in arr(sub(v, "projected"), "sources").iter().enumerate() {
                if has(s, "serviceAccountToken") {
                    errs.push(field::forbidden(
                        &spec_path
                            .child("volumes")
                            .index(vi)
                            .at(&["projected", "sources"])
                            .index(si)
                            .child("serviceAccountToken"),
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    for key in ["containers", "initContainers"] {
        for (i, c) in arr(spec, key).iter().enumerate() {
            errs.extend(container::validate_only_for_pod(
                c,
                &spec_path.child(key).index(i),
            ));
        }
    }
    if old.is_none()
        && !str_of(spec, "nodeName").is_empty()
        && !arr(spec, "schedulingGates").is_empty()
    {
        errs.push(field::forbidden(
            &spec_path.child("nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    if let Some(old) = old {
        errs.extend(validate_update(pod, old));
    }
    errs
}

/// `ValidateContainerUpdates`: same containers, each still with an image. Returns true when
/// the rest of the update checks should be skipped.
fn container_updates(new: &[Value], old: &[Value], path: &Path, errs: &mut Vec<Cause>) -> bool {
    if new.len() != old.len() {
        errs.push(field::forbidden(
            path,
            "pod updates may not add or remove containers",
        ));
        return true;
    }
    for (i, c) in new.iter().enumerate() {
        let image = str_of(c, "image");
        if image.is_empty() {
            errs.push(field::required(&path.index(i).child("image"), ""));
        }
        if image.trim() != image {
            errs.push(field::invalid_str(
                &path.index(i).child("image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    false
}

/// The spec rules of `ValidatePodUpdate`.
fn validate_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (ns, os) = (sub(new, "spec"), sub(old, "spec"));
    let sp = Path::new("spec");
    for key in ["containers", "initContainers"] {
        if container_updates(arr(ns, key), arr(os, key), &sp.child(key), &mut errs) {
            return errs;
        }
    }
    let ads_path = sp.child("activeDeadlineSeconds");
    match (
        int(ns, "activeDeadlineSeconds"),
        int(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(field::invalid_int(
                &ads_path,
                n,
                &names::inclusive_range_error(0, MAX_INT32),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(field::invalid_int(
                &ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(field::invalid(
            &ads_path,
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    // existing tolerations may only change their tolerationSeconds
    let new_tols = arr(ns, "tolerations");
    for old_t in arr(os, "tolerations") {
        let strip = |t: &Value| {
            let mut t = prune(t);
            if let Some(m) = t.as_object_mut() {
                m.remove("tolerationSeconds");
            }
            t
        };
        if !new_tols.iter().any(|t| strip(t) == strip(old_t)) {
            errs.push(field::forbidden(
                &sp.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    let old_gates: Vec<&str> = arr(os, "schedulingGates")
        .iter()
        .map(|g| str_of(g, "name"))
        .collect();
    for (i, g) in arr(ns, "schedulingGates").iter().enumerate() {
        let n = str_of(g, "name");
        if !old_gates.contains(&n) {
            errs.push(field::forbidden(
                &sp.child("schedulingGates").index(i).child("name"),
                &format!("only deletion is allowed, but found new scheduling gate '{n}'"),
            ));
        }
    }
    if semantic_eq(Some(ns), Some(os)) {
        return errs;
    }
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for key in ["containers", "initContainers"] {
            if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                for (c, old_c) in list.iter_mut().zip(arr(os, key)) {
                    if let Some(c) = c.as_object_mut() {
                        c.insert("image".into(), sub(old_c, "image").clone());
                    }
                }
            }
        }
        for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            m.insert(key.into(), sub(os, key).clone());
        }
        if int(os, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
            && int(ns, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert(
                "terminationGracePeriodSeconds".into(),
                sub(os, "terminationGracePeriodSeconds").clone(),
            );
        }
        if !old_gates.is_empty() {
            // gated pods may gain node selectors and node affinity
            let old_sel = obj(os, "nodeSelector");
            for (k, v) in obj(ns, "nodeSelector").into_iter().flatten() {
                if old_sel.and_then(|o| o.get(k)).is_some_and(|ov| ov != v) {
                    errs.push(field::invalid(&sp.child("nodeSelector"), sub(ns, "nodeSelector"), "only additions to spec.nodeSelector are allowed (no mutations or deletions)"));
                }
            }
            m.insert("nodeSelector".into(), sub(os, "nodeSelector").clone());
            if let Some(aff) = m.get_mut("affinity").and_then(Value::as_object_mut) {
                aff.insert(
                    "nodeAffinity".into(),
                    sub(sub(os, "affinity"), "nodeAffinity").clone(),
                );
            }
        }
    }
    if !semantic_eq(Some(&munged), Some(os)) {
        errs.push(field::forbidden(
            &sp,
            &format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_POD_SPEC_FIELDS.join(","),
                diff(os, &munged)
            ),
        ));
    }
    errs
}

/// `ValidatePodStatusUpdate`.
pub fn validate_status(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (ns, os) = (sub(new, "status"), sub(old, "status"));
    for (i, c) in arr(ns, "conditions").iter().enumerate() {
        let t = str_of(c, "type");
        if ["PodScheduled", "Ready", "Initialized"].contains(&t) {
            continue;
        }
        let p = Path::new("metadata")
            .child("conditions")
            .index(i)
            .child("Type");
        errs.extend(
            names::is_qualified_name(t)
                .iter()
                .map(|m| field::invalid_str(&p, t, m)),
        );
    }
    let sp = Path::new("status");
    if str_of(sub(new, "spec"), "nodeName") != str_of(sub(old, "spec"), "nodeName") {
        errs.push(field::forbidden(
            &sp.child("nodeName"),
            "may not be changed directly",
        ));
    }
    let nominated = str_of(ns, "nominatedNodeName");
    if !nominated.is_empty() && nominated != str_of(os, "nominatedNodeName") {
        errs.extend(
            names::is_dns1123_subdomain(nominated)
                .iter()
                .map(|m| field::invalid_str(&sp.child("nominatedNodeName"), nominated, m)),
        );
    }
    if !semantic_eq(ns.get("qosClass"), os.get("qosClass")) {
        errs.push(field::immutable(
            &sp.child("qosClass"),
            &Value::String(str_of(ns, "qosClass").into()),
        ));
    }
    let restart = str_of(sub(old, "spec"), "restartPolicy");
    let restartable_inits: Vec<&str> = arr(sub(old, "spec"), "initContainers")
        .iter()
        .filter(|c| str_of(c, "restartPolicy") == "Always")
        .map(|c| str_of(c, "name"))
        .collect();
    for (key, policy) in [
        ("containerStatuses", restart),
        ("initContainerStatuses", restart),
        ("ephemeralContainerStatuses", "Never"),
    ] {
        if policy == "Always" {
            continue;
        }
        for (i, o) in arr(os, key).iter().enumerate() {
            let term = sub(sub(o, "state"), "terminated");
            if !term.is_object() {
                continue;
            }
            if int(term, "exitCode").unwrap_or(0) != 0 && policy == "OnFailure" {
                continue;
            }
            if key == "initContainerStatuses" && restartable_inits.contains(&str_of(o, "name")) {
                continue;
            }
            let regressed = arr(ns, key).iter().any(|n| {
                str_of(n, "name") == str_of(o, "name")
                    && !sub(sub(n, "state"), "terminated").is_object()
            });
            if regressed {
                errs.push(field::forbidden(
                    &sp.child(key).index(i).child("state"),
                    "may not be transitioned to non-terminated state",
                ));
            }
        }
    }
    let pod_ips = arr(ns, "podIPs");
    for (i, ip) in pod_ips.iter().enumerate() {
        let ip = str_of(ip, "ip");
        if !names::is_valid_ip(ip) {
            errs.push(field::invalid_str(
                &sp.child("podIPs").index(i),
                ip,
                names::IP_ERROR,
            ));
        }
    }
    if pod_ips.len() > 2 {
        errs.push(field::invalid(
            &sp.child("podIPs"),
            sub(ns, "podIPs"),
            "may specify no more than one IP for each IP family",
        ));
    }
    let host_ips = arr(ns, "hostIPs");
    if let Some(first) = host_ips.first() {
        if str_of(first, "ip") != str_of(ns, "hostIP") {
            errs.push(field::invalid_str(
                &sp.child("hostIPs").index(0).child("ip"),
                str_of(first, "ip"),
                "must be equal to `hostIP`",
            ));
        }
        for (i, ip) in host_ips.iter().enumerate() {
            let ip = str_of(ip, "ip");
            if !names::is_valid_ip(ip) {
                errs.push(field::invalid_str(
                    &sp.child("hostIPs").index(i),
                    ip,
                    names::IP_ERROR,
                ));
            }
        }
    }
    errs
}

/// The volume map of a pod spec, for callers that validate containers alone.
#[allow(dead_code)]
pub fn spec_volumes(spec: &Value) -> Volumes {
    volumes::validate_volumes(arr(spec, "volumes"), &Path::new("spec").child("volumes")).0
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{create, has, has_prefix, update};
    use serde_json::{json, Value};

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "resourceVersion": "1"}, "spec": spec})
    }

    #[test]
    fn valid_pod_passes() {
        let e = create(
            "v1",
            "Pod",
            pod(json!({
                "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "env": [{"name": "A", "value": "b"}],
                    "livenessProbe": {"httpGet": {"port": 80}}}],
                "initContainers": [{"name": "init", "image": "busybox"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]
            })),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn pod_spec_errors() {
        let e = create(
            "v1",
            "Pod",
            pod(json!({
                "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}],
                "initContainers": [{"name": "web", "image": "busybox"}],
                "restartPolicy": "Sometimes",
                "dnsPolicy": "Bogus",
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}],
                "activeDeadlineSeconds": 0
            })),
        );
        assert!(
            has(&e, "spec.initContainers[0].name: Duplicate value: \"web\""),
            "{e:?}"
        );
        assert!(has(&e, "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""));
        assert!(has(&e, "spec.dnsPolicy: Unsupported value: \"Bogus\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""));
        assert!(has(&e, "spec.volumes[1].name: Duplicate value: \"v\""));
        assert!(has(
            &e,
            "spec.containers[0].volumeMounts[0].name: Not found: \"nope\""
        ));
        assert!(has(&e, "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"));
        let e = create("v1", "Pod", pod(json!({"containers": []})));
        assert_eq!(e, vec!["spec.containers: Required value"]);
        let e = create(
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "a", "image": " x"}], "tolerations": [{"operator": "Equal", "value": "x"}], "dnsPolicy": "None"}),
            ),
        );
        assert!(has(&e, "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace"), "{e:?}");
        assert!(has(&e, "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
        assert!(has(
            &e,
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        ));
    }

    #[test]
    fn pod_update_allows_images_and_rejects_others() {
        let old = pod(
            json!({"containers": [{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}], "tolerations": [{"key": "a", "operator": "Exists"}]}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
        let e = update("v1", "Pod", new.clone(), old.clone());
        assert!(e.is_empty(), "{e:?}");

        let mut bad = old.clone();
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
        let e = update("v1", "Pod", bad, old.clone());
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"), "{}", e[0]);
        assert!(e[0].contains("containerPort: 80") && e[0].contains("containerPort: 8080"));

        let mut more = old.clone();
        more["spec"]["containers"] =
            json!([{"name": "web", "image": "x"}, {"name": "b", "image": "y"}]);
        assert_eq!(
            update("v1", "Pod", more, old.clone()),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );

        let mut tol = old.clone();
        tol["spec"]["tolerations"] = json!([]);
        assert!(has(&update("v1", "Pod", tol, old.clone()), "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"));

        let mut ads = new.clone();
        ads["spec"]["activeDeadlineSeconds"] = json!(60);
        assert!(has(&update("v1", "Pod", ads, new.clone()), "spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"));

        let mut noimg = old.clone();
        noimg["spec"]["containers"][0]["image"] = json!("");
        assert!(has(
            &update("v1", "Pod", noimg, old.clone()),
            "spec.containers[0].image: Required value"
        ));

        let mut label = old.clone();
        label["metadata"]["labels"] = json!({"a": "b"});
        assert!(update("v1", "Pod", label, old).is_empty());
    }

    #[test]
    fn pod_status_update_rules() {
        let info = super::super::testutil::info("v1", "Pod");
        let old = json!({"metadata": {"name": "p", "namespace": "d", "resourceVersion": "1"}, "spec": {"restartPolicy": "Never", "nodeName": "n1"},
            "status": {"containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0}}}]}});
        let new = json!({"metadata": {"name": "p", "namespace": "d", "resourceVersion": "1"}, "spec": {"restartPolicy": "Never", "nodeName": "n2"},
            "status": {"containerStatuses": [{"name": "a", "state": {"running": {}}}], "podIPs": [{"ip": "bad"}], "qosClass": "Burstable"}});
        let e: Vec<String> = super::super::validate_status_update(&info, &new, &old)
            .iter()
            .map(crate::status::Cause::describe)
            .collect();
        assert!(
            has(
                &e,
                "status.nodeName: Forbidden: may not be changed directly"
            ),
            "{e:?}"
        );
        assert!(has(&e, "status.containerStatuses[0].state: Forbidden: may not be transitioned to non-terminated state"));
        assert!(has_prefix(
            &e,
            "status.podIPs[0]: Invalid value: \"bad\": must be a valid IP address"
        ));
        assert!(has(
            &e,
            "status.qosClass: Invalid value: \"Burstable\": field is immutable"
        ));
    }
}
