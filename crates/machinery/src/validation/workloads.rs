//! Controllers of pods: Deployment, ReplicaSet, StatefulSet, DaemonSet, ReplicationController,
//! ControllerRevision, Job and CronJob.

use serde_json::{Map, Value};

use super::field::{self, Path};
use super::meta;
use super::names;
use super::pod::validate_pod_template;
use super::{arr, has, int, obj, opt_str, semantic_eq, str_of, sub};
use crate::selector::Selector;
use crate::status::Cause;

const NEGATIVE: &str = "must be greater than or equal to 0";

fn non_negative(v: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(n) = int(v, key).filter(|n| *n < 0) {
        errs.push(field::invalid_int(&path.child(key), n, NEGATIVE));
    }
}

fn template_labels(spec: &Value) -> &Value {
    sub(sub(sub(spec, "template"), "metadata"), "labels")
}

/// The selector checks shared by Deployment, ReplicaSet and StatefulSet: required, valid,
/// non-empty, and matching the template's labels.
fn validate_selector(spec: &Value, sp: &Path, kind: &str, errs: &mut Vec<Cause>) {
    let sel = spec.get("selector").filter(|v| !v.is_null());
    match sel {
        None => errs.push(field::required(&sp.child("selector"), "")),
        Some(sel) => {
            errs.extend(meta::validate_label_selector(sel, &sp.child("selector")));
            if meta::selector_is_empty(sel) {
                errs.push(field::invalid(
                    &sp.child("selector"),
                    sel,
                    &format!("empty selector is invalid for {kind}"),
                ));
            }
        }
    }
    match Selector::from_label_selector(sel.unwrap_or(&Value::Null)) {
        Err(_) => errs.push(field::invalid(
            &sp.child("selector"),
            sel.unwrap_or(&Value::Null),
            "invalid label selector",
        )),
        Ok(s) => {
            if sel.is_some() && !s.is_everything() && !s.matches(template_labels(spec)) {
                errs.push(selector_mismatch(spec, sp));
            }
        }
    }
}

fn selector_mismatch(spec: &Value, sp: &Path) -> Cause {
    field::invalid(
        &sp.at(&["template", "metadata", "labels"]),
        template_labels(spec),
        "`selector` does not match template `labels`",
    )
}

/// Template rules for controllers whose pods always restart.
fn validate_always_restart_template(
    spec: &Value,
    sp: &Path,
    kind_label: &str,
    errs: &mut Vec<Cause>,
) {
    let tp = sp.child("template");
    errs.extend(validate_pod_template(sub(spec, "template"), &tp));
    let pod_spec = sub(sub(spec, "template"), "spec");
    let rp = str_of(pod_spec, "restartPolicy");
    if rp != "Always" {
        errs.push(field::not_supported_str(
            &tp.at(&["spec", "restartPolicy"]),
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = pod_spec
        .get("activeDeadlineSeconds")
        .filter(|v| !v.is_null())
    {
        let p = tp.at(&["spec", "activeDeadlineSeconds"]);
        if kind_label == "StatefulSet" {
            errs.push(field::forbidden(
                &p,
                "activeDeadlineSeconds in StatefulSet is not Supported",
            ));
        } else {
            errs.push(field::invalid(
                &p,
                ads,
                &format!("activeDeadlineSeconds in {kind_label} is not Supported"),
            ));
        }
    }
}

/// IntOrString counts such as maxSurge: a non-negative int or a percentage.
fn validate_int_or_percent(v: &Value, path: &Path, errs: &mut Vec<Cause>) {
    match v {
        Value::String(s) => errs.extend(
            names::is_valid_percent(s)
                .iter()
                .map(|m| field::invalid(path, v, m)),
        ),
        Value::Number(n) if n.as_i64().unwrap_or(0) < 0 => {
            errs.push(field::invalid(path, v, NEGATIVE))
        }
        _ => {}
    }
}

fn int_or_percent_value(v: &Value) -> i64 {
    match v {
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

fn not_more_than_100_percent(v: &Value, path: &Path, errs: &mut Vec<Cause>) {
    if v.is_string() && int_or_percent_value(v) > 100 {
        errs.push(field::invalid(path, v, "must not be greater than 100%"));
    }
}

/// policy/v1 PodDisruptionBudget: one of minAvailable or maxUnavailable, each a non-negative
/// count or a percentage up to 100%.
pub fn validate_pod_disruption_budget(obj: &Value) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if let (Some(m), Some(_)) = (min, max) {
        errs.push(field::invalid(
            &sp.child("minAvailable"),
            m,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (key, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        if let Some(v) = v {
            validate_int_or_percent(v, &sp.child(key), &mut errs);
            not_more_than_100_percent(v, &sp.child(key), &mut errs);
        }
    }
    if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
        errs.extend(meta::validate_label_selector(sel, &sp.child("selector")));
    }
    if let Some(p) = opt_str(spec, "unhealthyPodEvictionPolicy") {
        if p != "IfHealthyBudget" && p != "AlwaysAllow" {
            errs.push(field::not_supported_str(
                &sp.child("unhealthyPodEvictionPolicy"),
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
    errs
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let (n, o) = (
        sub(sub(new, "spec"), "selector"),
        sub(sub(old, "spec"), "selector"),
    );
    if !semantic_eq(Some(n), Some(o)) {
        errs.push(field::immutable(&Path::new("spec").child("selector"), n));
    }
}

pub fn validate_deployment(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    non_negative(spec, "replicas", &sp, &mut errs);
    validate_selector(spec, &sp, "deployment", &mut errs);
    validate_always_restart_template(spec, &sp, "ReplicaSet", &mut errs);
    let strategy = sub(spec, "strategy");
    let stp = sp.child("strategy");
    match str_of(strategy, "type") {
        "Recreate" => {
            if has(strategy, "rollingUpdate") {
                errs.push(field::forbidden(
                    &stp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|v| v.is_object()) {
            None => errs.push(field::required(
                &stp.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let rp = stp.child("rollingUpdate");
                let (mu, ms) = (sub(ru, "maxUnavailable"), sub(ru, "maxSurge"));
                validate_int_or_percent(mu, &rp.child("maxUnavailable"), &mut errs);
                validate_int_or_percent(ms, &rp.child("maxSurge"), &mut errs);
                if int_or_percent_value(mu) == 0 && int_or_percent_value(ms) == 0 {
                    errs.push(field::invalid(
                        &rp.child("maxUnavailable"),
                        mu,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_more_than_100_percent(mu, &rp.child("maxUnavailable"), &mut errs);
            }
        },
        _ => errs.push(field::not_supported(
            &stp,
            strategy,
            &["Recreate", "RollingUpdate"],
        )),
    }
    non_negative(spec, "minReadySeconds", &sp, &mut errs);
    non_negative(spec, "revisionHistoryLimit", &sp, &mut errs);
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        non_negative(spec, "progressDeadlineSeconds", &sp, &mut errs);
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(field::invalid_int(
                &sp.child("progressDeadlineSeconds"),
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        selector_immutable(obj, old, &mut errs);
    }
    errs
}

pub fn validate_replica_set(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    non_negative(spec, "replicas", &sp, &mut errs);
    non_negative(spec, "minReadySeconds", &sp, &mut errs);
    validate_selector(spec, &sp, "deployment", &mut errs);
    validate_always_restart_template(spec, &sp, "ReplicaSet", &mut errs);
    if let Some(old) = old {
        selector_immutable(obj, old, &mut errs);
    }
    errs
}

/// ReplicationController: a plain label map as selector, defaulted from the template.
pub fn validate_replication_controller(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    non_negative(spec, "replicas", &sp, &mut errs);
    non_negative(spec, "minReadySeconds", &sp, &mut errs);
    let selector = obj_map(spec, "selector");
    if selector.is_empty() {
        errs.push(field::required(&sp.child("selector"), ""));
    } else {
        errs.extend(meta::validate_labels(
            spec.get("selector"),
            &sp.child("selector"),
        ));
    }
    if !has(spec, "template") {
        errs.push(field::required(&sp.child("template"), ""));
        return errs;
    }
    if !selector.is_empty() && !Selector::from_map(selector).matches(template_labels(spec)) {
        errs.push(field::invalid(
            &sp.at(&["template", "metadata", "labels"]),
            template_labels(spec),
            "`selector` does not match template `labels`",
        ));
    }
    validate_always_restart_template(spec, &sp, "ReplicationController", &mut errs);
    errs
}

fn obj_map<'a>(v: &'a Value, key: &str) -> &'a Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj(v, key).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub fn validate_stateful_set(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    match str_of(spec, "podManagementPolicy") {
        "" => errs.push(field::required(&sp.child("podManagementPolicy"), "")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(field::invalid_str(
            &sp.child("podManagementPolicy"),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let us = sub(spec, "updateStrategy");
    let usp = sp.child("updateStrategy");
    match str_of(us, "type") {
        "" => errs.push(field::required(&usp, "")),
        "OnDelete" => {
            if let Some(ru) = us.get("rollingUpdate").filter(|v| !v.is_null()) {
                errs.push(field::invalid(
                    &usp.child("rollingUpdate"),
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = sub(us, "rollingUpdate");
            let rp = usp.child("rollingUpdate");
            non_negative(ru, "partition", &rp, &mut errs);
            if let Some(mu) = ru.get("maxUnavailable").filter(|v| !v.is_null()) {
                validate_int_or_percent(mu, &rp.child("maxUnavailable"), &mut errs);
                if int_or_percent_value(mu) == 0 {
                    errs.push(field::invalid(
                        &rp.child("maxUnavailable"),
                        mu,
                        "must be greater than 0",
                    ));
                }
                not_more_than_100_percent(mu, &rp.child("maxUnavailable"), &mut errs);
            }
        }
        _ => errs.push(field::invalid(
            &usp,
            us,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    let policy = sub(spec, "persistentVolumeClaimRetentionPolicy");
    for key in ["whenDeleted", "whenScaled"] {
        if let Some(v) = opt_str(policy, key) {
            if v != "Retain" && v != "Delete" {
                errs.push(field::not_supported_str(
                    &sp.at(&["persistentVolumeClaimRetentionPolicy", key]),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    non_negative(spec, "replicas", &sp, &mut errs);
    non_negative(spec, "minReadySeconds", &sp, &mut errs);
    if let Some(start) = int(sub(spec, "ordinals"), "start").filter(|s| *s < 0) {
        errs.push(field::invalid_int(
            &sp.child("ordinals.start"),
            start,
            NEGATIVE,
        ));
    }
    validate_selector(spec, &sp, "statefulset", &mut errs);
    validate_always_restart_template(spec, &sp, "StatefulSet", &mut errs);
    for (i, t) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
        let p = sp.child("volumeClaimTemplates").index(i);
        let name = str_of(sub(t, "metadata"), "name");
        if name.is_empty() {
            errs.push(field::required(
                &p.at(&["metadata", "name"]),
                "name or generateName is required",
            ));
        } else {
            errs.extend(
                names::is_dns1123_subdomain(name)
                    .iter()
                    .map(|m| field::invalid_str(&p.at(&["metadata", "name"]), name, m)),
            );
        }
        errs.extend(super::core::validate_pvc_spec(
            sub(t, "spec"),
            &p.child("spec"),
        ));
    }
    if let Some(old) = old {
        let mut clone = spec.clone();
        if let Some(m) = clone.as_object_mut() {
            for key in [
                "replicas",
                "template",
                "updateStrategy",
                "minReadySeconds",
                "ordinals",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
            ] {
                m.insert(key.into(), sub(sub(old, "spec"), key).clone());
            }
        }
        if !semantic_eq(Some(&clone), old.get("spec")) {
            errs.push(field::forbidden(&sp, "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
    errs
}

pub fn validate_daemon_set(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => errs.push(field::required(&sp.child("selector"), "")),
        Some(sel) => {
            errs.extend(meta::validate_label_selector(sel, &sp.child("selector")));
            if let Ok(s) = Selector::from_label_selector(sel) {
                if !s.matches(template_labels(spec)) {
                    errs.push(selector_mismatch(spec, &sp));
                }
            }
            if meta::selector_is_empty(sel) {
                errs.push(field::invalid(
                    &sp.child("selector"),
                    sel,
                    "empty selector is invalid for daemonset",
                ));
            }
        }
    }
    validate_always_restart_template(spec, &sp, "DaemonSet", &mut errs);
    non_negative(spec, "minReadySeconds", &sp, &mut errs);
    non_negative(spec, "templateGeneration", &sp, &mut errs);
    let us = sub(spec, "updateStrategy");
    let usp = sp.child("updateStrategy");
    match str_of(us, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match us.get("rollingUpdate").filter(|v| v.is_object()) {
            None => errs.push(field::required(&usp.child("rollingUpdate"), "")),
            Some(ru) => {
                let rp = usp.child("rollingUpdate");
                let (mu, ms) = (sub(ru, "maxUnavailable"), sub(ru, "maxSurge"));
                validate_int_or_percent(mu, &rp.child("maxUnavailable"), &mut errs);
                validate_int_or_percent(ms, &rp.child("maxSurge"), &mut errs);
                not_more_than_100_percent(mu, &rp.child("maxUnavailable"), &mut errs);
                not_more_than_100_percent(ms, &rp.child("maxSurge"), &mut errs);
                match (int_or_percent_value(mu) != 0, int_or_percent_value(ms) != 0) {
                    (true, true) => errs.push(field::invalid(
                        &rp.child("maxSurge"),
                        ms,
                        "may not be set when maxUnavailable is non-zero",
                    )),
                    (false, false) => errs.push(field::required(
                        &rp.child("maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    )),
                    _ => {}
                }
            }
        },
        _ => errs.push(field::not_supported(
            &usp,
            us,
            &["RollingUpdate", "OnDelete"],
        )),
    }
    non_negative(spec, "revisionHistoryLimit", &sp, &mut errs);
    if let Some(old) = old {
        selector_immutable(obj, old, &mut errs);
    }
    errs
}

pub fn validate_controller_revision(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    non_negative(obj, "revision", &Path::new(""), &mut errs);
    if let Some(old) = old {
        if !semantic_eq(obj.get("data"), old.get("data")) {
            errs.push(field::immutable(&Path::new("data"), sub(obj, "data")));
        }
    }
    errs
}

/// `validateJobSpec`: what a Job and a CronJob's jobTemplate share.
fn validate_job_spec(spec: &Value, sp: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(spec, key, sp, &mut errs);
    }
    if let Some(mode) = opt_str(spec, "completionMode") {
        match mode {
            "NonIndexed" => {
                if has(spec, "backoffLimitPerIndex") {
                    errs.push(field::invalid(
                        &sp.child("backoffLimitPerIndex"),
                        sub(spec, "backoffLimitPerIndex"),
                        "requires indexed completion mode",
                    ));
                }
            }
            "Indexed" => {
                if !has(spec, "completions") {
                    errs.push(field::required(
                        &sp.child("completions"),
                        "when completion mode is Indexed",
                    ));
                }
                if let Some(p) = int(spec, "parallelism").filter(|p| *p > 100_000) {
                    errs.push(field::invalid_int(
                        &sp.child("parallelism"),
                        p,
                        "must be less than or equal to 100000 when completion mode is Indexed",
                    ));
                }
            }
            other => errs.push(field::not_supported_str(
                &sp.child("completionMode"),
                other,
                &["NonIndexed", "Indexed"],
            )),
        }
    }
    if let Some(p) = opt_str(spec, "podReplacementPolicy") {
        if p != "TerminatingOrFailed" && p != "Failed" {
            errs.push(field::not_supported_str(
                &sp.child("podReplacementPolicy"),
                p,
                &["TerminatingOrFailed", "Failed"],
            ));
        }
    }
    let tp = sp.child("template");
    errs.extend(validate_pod_template(sub(spec, "template"), &tp));
    let rp = str_of(sub(sub(spec, "template"), "spec"), "restartPolicy");
    let rpp = tp.at(&["spec", "restartPolicy"]);
    match rp {
        "Always" | "" => errs.push(field::required(
            &rpp,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        "OnFailure" if has(spec, "podFailurePolicy") => errs.push(field::invalid_str(
            &rpp,
            rp,
            "only \"Never\" is supported when podFailurePolicy is specified",
        )),
        "OnFailure" | "Never" => {}
        other => errs.push(field::not_supported_str(
            &rpp,
            other,
            &["OnFailure", "Never"],
        )),
    }
    errs
}

const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

pub fn validate_job(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let m = sub(obj, "metadata");
    let mut errs = Vec::new();
    if old.is_none()
        && !spec
            .get("manualSelector")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        && template_labels(spec).is_object()
    {
        // the API server generated the selector and labels from the uid: check they are intact
        let uid = str_of(m, "uid");
        let name = str_of(m, "name");
        let lp = sp.at(&["template", "metadata"]).child("labels");
        for (key, want) in [
            ("controller-uid", uid),
            ("job-name", name),
            (JOB_UID_LABEL, uid),
            (JOB_NAME_LABEL, name),
        ] {
            match opt_str(template_labels(spec), key) {
                None => errs.push(field::required(&lp.key(key), &format!("must be '{want}'"))),
                Some(v) if v != want => errs.push(field::invalid(
                    &lp.key(key),
                    template_labels(spec),
                    &format!("must be '{want}'"),
                )),
                _ => {}
            }
        }
        if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
            let expected: Map<String, Value> =
                [(JOB_UID_LABEL.to_string(), Value::String(uid.to_string()))]
                    .into_iter()
                    .collect();
            if Selector::from_label_selector(sel).is_ok_and(|s| !s.matches(&expected)) {
                errs.push(field::invalid(
                    &sp.child("selector"),
                    sel,
                    "`selector` not auto-generated",
                ));
            }
        }
    }
    errs.extend(validate_job_spec(spec, &sp));
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => errs.push(field::required(&sp.child("selector"), "")),
        Some(sel) => {
            errs.extend(meta::validate_label_selector(sel, &sp.child("selector")));
            if let Ok(s) = Selector::from_label_selector(sel) {
                if !s.matches(template_labels(spec)) {
                    errs.push(selector_mismatch(spec, &sp));
                }
            }
        }
    }
    if old.is_none() && str_of(spec, "completionMode") == "Indexed" {
        if let Some(c) = int(spec, "completions").filter(|c| *c > 0) {
            let host = format!("{}-{}", str_of(m, "name"), c - 1);
            if !names::is_dns1123_label(&host).is_empty() {
                errs.push(field::invalid_str(
                    &Path::new("metadata").child("name"),
                    str_of(m, "name"),
                    &format!("will not able to create pod with invalid DNS label: {host}"),
                ));
            }
        }
    }
    if let Some(old) = old {
        let os = sub(old, "spec");
        let immutable = |key: &str, errs: &mut Vec<Cause>| {
            if !semantic_eq(spec.get(key), os.get(key)) {
                errs.push(field::immutable(&sp.child(key), sub(spec, key)));
            }
        };
        immutable("selector", &mut errs);
        immutable("completionMode", &mut errs);
        immutable("podFailurePolicy", &mut errs);
        immutable("backoffLimitPerIndex", &mut errs);
        // indexed jobs may scale completions together with parallelism
        let elastic = str_of(spec, "completionMode") == "Indexed"
            && int(spec, "completions") == int(spec, "parallelism");
        if !elastic {
            immutable("completions", &mut errs);
        }
        // a suspended job that never started may change its scheduling directives
        let never_started = spec.get("suspend").and_then(Value::as_bool) == Some(true)
            && os.get("suspend").and_then(Value::as_bool) == Some(true)
            && !has(sub(old, "status"), "startTime");
        let (mut nt, mut ot) = (sub(spec, "template").clone(), sub(os, "template").clone());
        if never_started {
            for t in [&mut nt, &mut ot] {
                if let Some(ps) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    for key in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                        ps.remove(key);
                    }
                }
                if let Some(md) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                    md.remove("labels");
                    md.remove("annotations");
                }
            }
        }
        if !semantic_eq(Some(&nt), Some(&ot)) {
            errs.push(field::immutable(
                &sp.child("template"),
                sub(spec, "template"),
            ));
        }
    }
    errs
}

pub fn validate_cron_job(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(obj, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        errs.push(field::required(&sp.child("schedule"), ""));
    } else {
        let allow_tz = old.is_some_and(|o| str_of(sub(o, "spec"), "schedule").contains("TZ"));
        if let Err(e) = super::cron::validate_schedule(schedule) {
            errs.push(field::invalid_str(&sp.child("schedule"), schedule, &e));
        }
        if schedule.contains("TZ") {
            if !allow_tz {
                errs.push(field::invalid_str(
                    &sp.child("schedule"),
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if has(spec, "timeZone") {
                errs.push(field::invalid_str(
                    &sp.child("schedule"),
                    schedule,
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    non_negative(spec, "startingDeadlineSeconds", &sp, &mut errs);
    let tz_changed = old.is_none_or(|o| sub(sub(o, "spec"), "timeZone") != sub(spec, "timeZone"));
    if tz_changed {
        if let Some(tz) = opt_str(spec, "timeZone") {
            errs.extend(
                super::cron::validate_time_zone(tz)
                    .map(|m| field::invalid_str(&sp.child("timeZone"), tz, &m)),
            );
        }
    }
    match str_of(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(field::required(&sp.child("concurrencyPolicy"), "")),
        other => errs.push(field::not_supported_str(
            &sp.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jt = sub(spec, "jobTemplate");
    let jtp = sp.child("jobTemplate");
    errs.extend(validate_job_spec(sub(jt, "spec"), &jtp.child("spec")));
    if let Some(sel) = sub(jt, "spec").get("selector").filter(|v| !v.is_null()) {
        errs.push(field::invalid(
            &jtp.at(&["spec", "selector"]),
            sel,
            "`selector` will be auto-generated",
        ));
    }
    if sub(jt, "spec")
        .get("manualSelector")
        .and_then(Value::as_bool)
        == Some(true)
    {
        errs.push(field::not_supported(
            &jtp.at(&["spec", "manualSelector"]),
            &Value::Bool(true),
            &["nil", "false"],
        ));
    }
    non_negative(spec, "successfulJobsHistoryLimit", &sp, &mut errs);
    non_negative(spec, "failedJobsHistoryLimit", &sp, &mut errs);
    if old.is_none() {
        let name = str_of(sub(obj, "metadata"), "name");
        if name.len() > 52 {
            errs.push(field::invalid_str(
                &Path::new("metadata").child("name"),
                name,
                "must be no more than 52 characters",
            ));
        }
    }
    errs
}

/// Status counters of the replica-managing kinds may not be negative.
pub fn validate_replica_status(kind: &str, obj: &Value) -> Vec<Cause> {
    let status = sub(obj, "status");
    let p = Path::new("status");
    let mut errs = Vec::new();
    let keys: &[&str] = match kind {
        "DaemonSet" => &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
            "observedGeneration",
            "collisionCount",
        ],
        _ => &[
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "fullyLabeledReplicas",
            "currentReplicas",
            "observedGeneration",
            "collisionCount",
            "terminatingReplicas",
        ],
    };
    for key in keys {
        non_negative(status, key, &p, &mut errs);
    }
    if kind != "DaemonSet" {
        let (ready, avail, replicas) = (
            int(status, "readyReplicas"),
            int(status, "availableReplicas"),
            int(status, "replicas"),
        );
        if let (Some(r), Some(n)) = (ready, replicas) {
            if r > n {
                errs.push(field::invalid_int(
                    &p.child("readyReplicas"),
                    r,
                    "cannot be greater than status.replicas",
                ));
            }
        }
        if let (Some(a), Some(r)) = (avail, ready) {
            if a > r && kind != "Deployment" {
                errs.push(field::invalid_int(
                    &p.child("availableReplicas"),
                    a,
                    "cannot be greater than readyReplicas",
                ));
            }
        }
    }
    errs
}

pub fn validate_job_status(obj: &Value) -> Vec<Cause> {
    let status = sub(obj, "status");
    let p = Path::new("status");
    let mut errs = Vec::new();
    for key in ["active", "succeeded", "failed", "ready", "terminating"] {
        non_negative(status, key, &p, &mut errs);
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{create, has, has_prefix, update};
    use serde_json::{json, Value};

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    #[test]
    fn deployment_rules() {
        assert!(create("apps/v1", "Deployment", deployment()).is_empty());
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let e = create("apps/v1", "Deployment", d);
        assert!(
            has(
                &e,
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
            ),
            "{e:?}"
        );
        assert!(has(&e, "spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`"));
        assert!(has(&e, "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""));
        assert!(has(
            &e,
            "spec.template.spec.containers[0].image: Required value"
        ));
        let mut d = deployment();
        d["spec"]["selector"] = json!(null);
        assert!(has(
            &create("apps/v1", "Deployment", d),
            "spec.selector: Required value"
        ));
        let mut d = deployment();
        d["spec"]["selector"] = json!({});
        assert!(has(
            &create("apps/v1", "Deployment", d),
            "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
        ));
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        assert!(has(&create("apps/v1", "Deployment", d), "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"));
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        assert!(has(&create("apps/v1", "Deployment", d), "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"));
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Blue"});
        assert!(has_prefix(
            &create("apps/v1", "Deployment", d),
            "spec.strategy: Unsupported value: {"
        ));
    }

    #[test]
    fn selector_immutable_on_update() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "x"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "tier": "x"});
        let e = update("apps/v1", "Deployment", new, old.clone());
        assert_eq!(e, vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"x\"}}: field is immutable"]);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert!(update("apps/v1", "Deployment", scaled, old).is_empty());
    }

    #[test]
    fn replica_sets_stateful_sets_daemon_sets() {
        let mut rs = deployment();
        rs["kind"] = json!("ReplicaSet");
        assert!(create("apps/v1", "ReplicaSet", rs.clone()).is_empty());
        rs["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]});
        assert!(has_prefix(&create("apps/v1", "ReplicaSet", rs), "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match"));

        let mut sts = deployment();
        sts["kind"] = json!("StatefulSet");
        sts["spec"]["serviceName"] = json!("web");
        assert!(
            create("apps/v1", "StatefulSet", sts.clone()).is_empty(),
            "{:?}",
            create("apps/v1", "StatefulSet", sts.clone())
        );
        let mut bad = sts.clone();
        bad["spec"]["podManagementPolicy"] = json!("Whatever");
        assert!(has(&create("apps/v1", "StatefulSet", bad), "spec.podManagementPolicy: Invalid value: \"Whatever\": must be 'OrderedReady' or 'Parallel'"));
        let mut changed = sts.clone();
        changed["spec"]["serviceName"] = json!("other");
        let e = update("apps/v1", "StatefulSet", changed, sts.clone());
        assert!(
            has_prefix(
                &e,
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"
            ),
            "{e:?}"
        );
        let mut scaled = sts.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(update("apps/v1", "StatefulSet", scaled, sts).is_empty());

        let mut ds = deployment();
        ds["kind"] = json!("DaemonSet");
        assert!(create("apps/v1", "DaemonSet", ds.clone()).is_empty());
        ds["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}});
        assert!(has(&create("apps/v1", "DaemonSet", ds), "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"));
    }

    fn job() -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default", "uid": "u1", "resourceVersion": "1"},
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1", "batch.kubernetes.io/job-name": "pi", "controller-uid": "u1", "job-name": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}})
    }

    #[test]
    fn job_rules() {
        assert!(
            create("batch/v1", "Job", job()).is_empty(),
            "{:?}",
            create("batch/v1", "Job", job())
        );
        let mut j = job();
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        j["spec"]["parallelism"] = json!(-1);
        let e = create("batch/v1", "Job", j);
        assert!(has(&e, "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""), "{e:?}");
        assert!(has(
            &e,
            "spec.parallelism: Invalid value: -1: must be greater than or equal to 0"
        ));
        let mut j = job();
        j["spec"]["template"]["spec"]
            .as_object_mut()
            .map(|m| m.remove("restartPolicy"));
        assert!(has(&create("batch/v1", "Job", j), "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""));
        let mut j = job();
        j["spec"]["selector"] = json!(null);
        assert!(has(
            &create("batch/v1", "Job", j),
            "spec.selector: Required value"
        ));

        let old = job();
        let mut new = job();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        let e = update("batch/v1", "Job", new, old.clone());
        assert!(has_prefix(&e, "spec.template: Invalid value: {"), "{e:?}");
        assert!(e.iter().any(|m| m.ends_with("field is immutable")));
        let mut new = job();
        new["spec"]["completions"] = json!(3);
        assert!(has(
            &update("batch/v1", "Job", new, old.clone()),
            "spec.completions: Invalid value: 3: field is immutable"
        ));
        let mut susp = job();
        susp["spec"]["suspend"] = json!(true);
        assert!(update("batch/v1", "Job", susp, old).is_empty());
    }

    #[test]
    fn cron_job_rules() {
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        assert!(
            create("batch/v1", "CronJob", cj.clone()).is_empty(),
            "{:?}",
            create("batch/v1", "CronJob", cj.clone())
        );
        let mut bad = cj.clone();
        bad["spec"]["schedule"] = json!("bad");
        bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
        bad["metadata"]["name"] = json!("a".repeat(53));
        let e = create("batch/v1", "CronJob", bad);
        assert!(
            has(
                &e,
                "spec.schedule: Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]"
            ),
            "{e:?}"
        );
        assert!(has(&e, "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""));
        assert!(has_prefix(&e, "metadata.name: Invalid value: \"aaaa"));
        let mut hourly = cj.clone();
        hourly["spec"]["schedule"] = json!("@hourly");
        assert!(create("batch/v1", "CronJob", hourly).is_empty());
        let mut tz = cj.clone();
        tz["spec"]["schedule"] = json!("CRON_TZ=UTC 0 * * * *");
        assert!(has(&create("batch/v1", "CronJob", tz), "spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
        let mut missing = cj;
        missing["spec"]["schedule"] = json!("");
        assert!(has(
            &create("batch/v1", "CronJob", missing),
            "spec.schedule: Required value"
        ));
    }

    #[test]
    fn replication_controller() {
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": "default"},
            "spec": {"selector": {"app": "x"}, "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(has(&create("v1", "ReplicationController", rc), "spec.template.metadata.labels: Invalid value: {\"app\":\"y\"}: `selector` does not match template `labels`"));
    }
}
