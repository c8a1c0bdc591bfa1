//! Cluster-level and auxiliary kinds: Lease, PriorityClass, HorizontalPodAutoscaler,
//! StorageClass and RBAC.

use serde_json::{json, Value};

use super::container::validate_quantity;
use super::field::{self, Path};
use super::meta;
use super::names;
use super::{arr, has, int, obj, opt_str, semantic_eq, str_of, sub};
use crate::status::Cause;

pub fn validate_lease(lease: &Value) -> Vec<Cause> {
    let spec = sub(lease, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    if let Some(d) = int(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        errs.push(field::invalid_int(
            &sp.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = int(spec, "leaseTransitions").filter(|t| *t < 0) {
        errs.push(field::invalid_int(
            &sp.child("leaseTransitions"),
            t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(s) = opt_str(spec, "strategy") {
        if s != "OldestEmulationVersion" {
            errs.push(field::not_supported_str(
                &sp.child("strategy"),
                s,
                &["OldestEmulationVersion"],
            ));
        }
    }
    if opt_str(spec, "preferredHolder").is_some_and(|p| !p.is_empty())
        && opt_str(spec, "strategy").is_none_or(str::is_empty)
    {
        errs.push(field::forbidden(
            &sp.child("preferredHolder"),
            "may only be specified if `strategy` is defined",
        ));
    }
    errs
}

const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

pub fn validate_priority_class(pc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = str_of(sub(pc, "metadata"), "name");
    let value = int(pc, "value").unwrap_or(0);
    if old.is_none() {
        if name.starts_with("system-") {
            let detail = match SYSTEM_CLASSES.iter().find(|(n, _)| *n == name) {
                None => Some(format!("name {name} is not a known system priority class")),
                Some((_, v)) if *v != value => {
                    Some(format!("value of {name} PriorityClass must be {v}"))
                }
                _ => None,
            };
            if let Some(d) = detail {
                errs.push(field::forbidden(
                    &Path::new("metadata").child("name"),
                    &format!("priority class names with 'system-' prefix are reserved for system use only. error: {d}"),
                ));
            }
        } else if value > HIGHEST_USER_PRIORITY {
            errs.push(field::forbidden(
                &Path::new("value"),
                "maximum allowed value of a user defined priority is 1000000000",
            ));
        }
    }
    if let Some(p) = opt_str(pc, "preemptionPolicy") {
        if p != "PreemptLowerPriority" && p != "Never" {
            errs.push(field::not_supported_str(
                &Path::new("preemptionPolicy"),
                p,
                &["PreemptLowerPriority", "Never"],
            ));
        }
    }
    if let Some(old) = old {
        if int(old, "value").unwrap_or(0) != value {
            errs.push(field::forbidden(
                &Path::new("value"),
                "may not be changed in an update.",
            ));
        }
        if !semantic_eq(pc.get("preemptionPolicy"), old.get("preemptionPolicy")) {
            errs.push(field::immutable(
                &Path::new("preemptionPolicy"),
                sub(pc, "preemptionPolicy"),
            ));
        }
    }
    errs
}

/// `kind` and `name` of a reference: required, and each a valid path segment.
pub(super) fn validate_cross_version_ref(r: &Value, path: &Path, errs: &mut Vec<Cause>) {
    for key in ["kind", "name"] {
        let v = str_of(r, key);
        if v.is_empty() {
            errs.push(field::required(&path.child(key), ""));
        } else {
            errs.extend(
                names::is_path_segment_name(v)
                    .iter()
                    .map(|m| field::invalid_str(&path.child(key), v, m)),
            );
        }
    }
}

fn validate_metric_target(t: &Value, path: &Path, errs: &mut Vec<Cause>) {
    match str_of(t, "type") {
        "" => errs.push(field::required(
            &path.child("type"),
            "must specify a metric target type",
        )),
        "Utilization" | "Value" | "AverageValue" => {}
        other => errs.push(field::invalid_str(
            &path.child("type"),
            other,
            "must be either Utilization, Value, or AverageValue",
        )),
    }
    if let Some(u) = int(t, "averageUtilization").filter(|u| *u <= 0) {
        errs.push(field::invalid_int(
            &path.child("averageUtilization"),
            u,
            "must be greater than 0",
        ));
    }
    for key in ["value", "averageValue"] {
        if let Some(q) = t.get(key).filter(|v| !v.is_null()) {
            errs.extend(validate_quantity("kubernetes.io/x", q, &path.child(key)));
        }
    }
    if !has(t, "value") && !has(t, "averageValue") && !has(t, "averageUtilization") {
        errs.push(field::required(
            path,
            "must set either a target raw value, a target average value, or a target percentage",
        ));
    }
}

pub fn validate_hpa(hpa: &Value) -> Vec<Cause> {
    let spec = sub(hpa, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    let min = int(spec, "minReplicas");
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < 1) {
        errs.push(field::invalid_int(
            &sp.child("minReplicas"),
            m,
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        errs.push(field::invalid_int(
            &sp.child("maxReplicas"),
            max,
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(field::invalid_int(
            &sp.child("maxReplicas"),
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    validate_cross_version_ref(
        sub(spec, "scaleTargetRef"),
        &sp.child("scaleTargetRef"),
        &mut errs,
    );
    for (i, m) in arr(spec, "metrics").iter().enumerate() {
        let p = sp.child("metrics").index(i);
        let kinds = [
            ("Object", "object"),
            ("Pods", "pods"),
            ("Resource", "resource"),
            ("ContainerResource", "containerResource"),
            ("External", "external"),
        ];
        let t = str_of(m, "type");
        let Some((_, key)) = kinds.iter().find(|(k, _)| *k == t) else {
            if t.is_empty() {
                errs.push(field::required(
                    &p.child("type"),
                    "must specify a metric source type",
                ));
            } else {
                errs.push(field::invalid_str(
                    &p.child("type"),
                    t,
                    "must be either External, Object, Pods, Resource or ContainerResource",
                ));
            }
            continue;
        };
        let populated: Vec<&str> = kinds
            .iter()
            .map(|(_, k)| *k)
            .filter(|k| has(m, k))
            .collect();
        if !populated.contains(key) {
            errs.push(field::required(
                &p.child(key),
                "must populate information for the given metric source",
            ));
            continue;
        }
        if populated.len() > 1 {
            errs.push(field::forbidden(
                &p,
                "must populate information for the given metric source (only populate one)",
            ));
        }
        let src = sub(m, key);
        let kp = p.child(key);
        match *key {
            "resource" | "containerResource" => {
                if str_of(src, "name").is_empty() {
                    errs.push(field::required(
                        &kp.child("name"),
                        "must specify a resource name",
                    ));
                }
                if *key == "containerResource" && str_of(src, "container").is_empty() {
                    errs.push(field::required(
                        &kp.child("container"),
                        "must specify a container",
                    ));
                }
                validate_metric_target(sub(src, "target"), &kp.child("target"), &mut errs);
            }
            "object" => {
                validate_cross_version_ref(
                    sub(src, "describedObject"),
                    &kp.child("describedObject"),
                    &mut errs,
                );
                if str_of(sub(src, "metric"), "name").is_empty() {
                    errs.push(field::required(
                        &kp.at(&["metric", "name"]),
                        "must specify a metric name",
                    ));
                }
                validate_metric_target(sub(src, "target"), &kp.child("target"), &mut errs);
            }
            _ => {
                if str_of(sub(src, "metric"), "name").is_empty() {
                    errs.push(field::required(
                        &kp.at(&["metric", "name"]),
                        "must specify a metric name",
                    ));
                }
                validate_metric_target(sub(src, "target"), &kp.child("target"), &mut errs);
            }
        }
    }
    for dir in ["scaleUp", "scaleDown"] {
        let rules = sub(sub(spec, "behavior"), dir);
        if !rules.is_object() {
            continue;
        }
        let p = sp.at(&["behavior", dir]);
        if let Some(w) =
            int(rules, "stabilizationWindowSeconds").filter(|w| !(0..=3600).contains(w))
        {
            errs.push(field::invalid_int(
                &p.child("stabilizationWindowSeconds"),
                w,
                "must be less than or equal to 3600",
            ));
        }
        if let Some(sel) = opt_str(rules, "selectPolicy") {
            if !["Max", "Min", "Disabled"].contains(&sel) {
                errs.push(field::not_supported_str(
                    &p.child("selectPolicy"),
                    sel,
                    &["Disabled", "Max", "Min"],
                ));
            }
        }
        let policies = arr(rules, "policies");
        if policies.is_empty() && has(rules, "policies") {
            errs.push(field::required(
                &p.child("policies"),
                "must specify at least one Policy",
            ));
        }
        for (i, pol) in policies.iter().enumerate() {
            let pp = p.child("policies").index(i);
            let t = str_of(pol, "type");
            if t != "Pods" && t != "Percent" {
                errs.push(field::not_supported_str(
                    &pp.child("type"),
                    t,
                    &["Percent", "Pods"],
                ));
            }
            if int(pol, "value").unwrap_or(0) <= 0 {
                errs.push(field::invalid_int(
                    &pp.child("value"),
                    int(pol, "value").unwrap_or(0),
                    "must be greater than zero",
                ));
            }
            let period = int(pol, "periodSeconds").unwrap_or(0);
            if period <= 0 {
                errs.push(field::invalid_int(
                    &pp.child("periodSeconds"),
                    period,
                    "must be greater than zero",
                ));
            } else if period > 1800 {
                errs.push(field::invalid_int(
                    &pp.child("periodSeconds"),
                    period,
                    "must be less than or equal to 1800",
                ));
            }
        }
    }
    errs
}

const PARAMETERS_MAX_SIZE: usize = 256 * 1024;

pub fn validate_storage_class(sc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let prov = str_of(sc, "provisioner");
    if prov.is_empty() {
        errs.push(field::required(&Path::new("provisioner"), ""));
    } else {
        let lower = prov.to_lowercase();
        errs.extend(
            names::is_qualified_name(&lower)
                .iter()
                .map(|m| field::invalid_str(&Path::new("provisioner"), &lower, m)),
        );
    }
    let params = obj(sc, "parameters");
    let size: usize = params
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > PARAMETERS_MAX_SIZE {
        errs.push(field::too_long(
            &Path::new("parameters"),
            PARAMETERS_MAX_SIZE,
        ));
    }
    if let Some(p) = opt_str(sc, "reclaimPolicy") {
        if p != "Delete" && p != "Retain" {
            errs.push(field::not_supported_str(
                &Path::new("reclaimPolicy"),
                p,
                &["Delete", "Retain"],
            ));
        }
    }
    match opt_str(sc, "volumeBindingMode") {
        None => errs.push(field::required(&Path::new("volumeBindingMode"), "")),
        Some("Immediate" | "WaitForFirstConsumer") => {}
        Some(m) => errs.push(field::not_supported_str(
            &Path::new("volumeBindingMode"),
            m,
            &["Immediate", "WaitForFirstConsumer"],
        )),
    }
    if let Some(old) = old {
        if !semantic_eq(sc.get("parameters"), old.get("parameters")) {
            errs.push(field::forbidden(
                &Path::new("parameters"),
                "updates to parameters are forbidden.",
            ));
        }
        if prov != str_of(old, "provisioner") {
            errs.push(field::forbidden(
                &Path::new("provisioner"),
                "updates to provisioner are forbidden.",
            ));
        }
        if str_of(sc, "reclaimPolicy") != str_of(old, "reclaimPolicy") {
            errs.push(field::forbidden(
                &Path::new("reclaimPolicy"),
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        if !semantic_eq(sc.get("volumeBindingMode"), old.get("volumeBindingMode")) {
            errs.push(field::immutable(
                &Path::new("volumeBindingMode"),
                sub(sc, "volumeBindingMode"),
            ));
        }
    }
    errs
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Role and ClusterRole rules.
pub fn validate_role(role: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, rule) in arr(role, "rules").iter().enumerate() {
        let p = Path::new("rules").index(i);
        if arr(rule, "verbs").is_empty() {
            errs.push(field::required(
                &p.child("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = arr(rule, "nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                errs.push(field::invalid(
                    &p.child("nonResourceURLs"),
                    sub(rule, "nonResourceURLs"),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !arr(rule, "apiGroups").is_empty()
                || !arr(rule, "resources").is_empty()
                || !arr(rule, "resourceNames").is_empty()
            {
                errs.push(field::invalid(
                    &p.child("nonResourceURLs"),
                    sub(rule, "nonResourceURLs"),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(rule, "apiGroups").is_empty() {
            errs.push(field::required(
                &p.child("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr(rule, "resources").is_empty() {
            errs.push(field::required(
                &p.child("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    if !namespaced {
        if let Some(agg) = role.get("aggregationRule").filter(|v| v.is_object()) {
            let p = Path::new("aggregationRule").child("clusterRoleSelectors");
            let sels = arr(agg, "clusterRoleSelectors");
            if sels.is_empty() {
                errs.push(field::required(
                    &p,
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, s) in sels.iter().enumerate() {
                errs.extend(meta::validate_label_selector(s, &p.index(i)));
            }
        }
    }
    errs
}

/// The internal (untagged Go struct) rendering upstream prints for a roleRef.
fn role_ref_value(r: &Value) -> Value {
    json!({"APIGroup": str_of(r, "apiGroup"), "Kind": str_of(r, "kind"), "Name": str_of(r, "name")})
}

pub fn validate_role_binding(rb: &Value, old: Option<&Value>, namespaced: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    let rr = sub(rb, "roleRef");
    let rp = Path::new("roleRef");
    let group = str_of(rr, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(field::not_supported_str(
            &rp.child("apiGroup"),
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = str_of(rr, "kind");
    if namespaced {
        if kind != "Role" && kind != "ClusterRole" {
            errs.push(field::not_supported_str(
                &rp.child("kind"),
                kind,
                &["Role", "ClusterRole"],
            ));
        }
    } else if kind != "ClusterRole" {
        errs.push(field::not_supported_str(
            &rp.child("kind"),
            kind,
            &["ClusterRole"],
        ));
    }
    let name = str_of(rr, "name");
    if name.is_empty() {
        errs.push(field::required(&rp.child("name"), ""));
    } else {
        errs.extend(
            names::is_path_segment_name(name)
                .iter()
                .map(|m| field::invalid_str(&rp.child("name"), name, m)),
        );
    }
    for (i, s) in arr(rb, "subjects").iter().enumerate() {
        let p = Path::new("subjects").index(i);
        let sname = str_of(s, "name");
        if sname.is_empty() {
            errs.push(field::required(&p.child("name"), ""));
        }
        let group = str_of(s, "apiGroup");
        match str_of(s, "kind") {
            "ServiceAccount" => {
                if !sname.is_empty() {
                    errs.extend(
                        names::is_dns1123_subdomain(sname)
                            .iter()
                            .map(|m| field::invalid_str(&p.child("name"), sname, m)),
                    );
                }
                if !group.is_empty() {
                    errs.push(field::not_supported_str(&p.child("apiGroup"), group, &[""]));
                }
                if !namespaced && str_of(s, "namespace").is_empty() {
                    errs.push(field::required(&p.child("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(field::not_supported_str(
                        &p.child("apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(field::not_supported_str(
                &p.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    if let Some(old) = old {
        if role_ref_value(rr) != role_ref_value(sub(old, "roleRef")) {
            errs.push(field::invalid(
                &rp,
                &role_ref_value(rr),
                "cannot change roleRef",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{create, has, update};
    use serde_json::json;

    #[test]
    fn leases_and_priority_classes() {
        let e = create(
            "coordination.k8s.io/v1",
            "Lease",
            json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}}),
        );
        assert_eq!(
            e,
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
        let e = create(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"metadata": {"name": "high"}, "value": 2_000_000_000i64}),
        );
        assert_eq!(
            e,
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
        let old = json!({"metadata": {"name": "high", "resourceVersion": "1"}, "value": 10});
        let new = json!({"metadata": {"name": "high", "resourceVersion": "1"}, "value": 11});
        assert_eq!(
            update("scheduling.k8s.io/v1", "PriorityClass", new, old),
            vec!["value: Forbidden: may not be changed in an update."]
        );
    }

    #[test]
    fn hpas() {
        let hpa = json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 2}});
        let e = create("autoscaling/v2", "HorizontalPodAutoscaler", hpa);
        assert_eq!(e, vec!["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]);
        let hpa = json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {"scaleTargetRef": {}, "maxReplicas": 2}});
        let e = create("autoscaling/v2", "HorizontalPodAutoscaler", hpa);
        assert!(has(&e, "spec.scaleTargetRef.kind: Required value"), "{e:?}");
        assert!(has(&e, "spec.scaleTargetRef.name: Required value"));
    }

    #[test]
    fn rbac() {
        let role = json!({"metadata": {"name": "r", "namespace": "d"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/x"]}]});
        let e = create("rbac.authorization.k8s.io/v1", "Role", role);
        assert_eq!(e, vec!["rules[0].verbs: Required value: verbs must contain at least one value", "rules[1].nonResourceURLs: Invalid value: [\"/x\"]: namespaced rules cannot apply to non-resource URLs"]);
        let cr = json!({"metadata": {"name": "system:foo"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        assert!(create("rbac.authorization.k8s.io/v1", "ClusterRole", cr).is_empty());
        let rb = json!({"metadata": {"name": "b", "namespace": "d", "resourceVersion": "1"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "User", "name": "alice"}, {"kind": "Robot", "name": "x"}]});
        assert_eq!(create("rbac.authorization.k8s.io/v1", "RoleBinding", rb.clone()), vec!["subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""]);
        let mut changed = rb.clone();
        changed["roleRef"]["name"] = json!("other");
        let e = update("rbac.authorization.k8s.io/v1", "RoleBinding", changed, rb);
        assert!(has(&e, "roleRef: Invalid value: {\"APIGroup\":\"rbac.authorization.k8s.io\",\"Kind\":\"Role\",\"Name\":\"other\"}: cannot change roleRef"), "{e:?}");
        let crb = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]});
        let e = create("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", crb);
        assert_eq!(
            e,
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value"
            ]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = json!({"metadata": {"name": "fast", "resourceVersion": "1"}, "provisioner": "example.com/x"});
        assert!(create("storage.k8s.io/v1", "StorageClass", sc.clone()).is_empty());
        let mut changed = sc.clone();
        changed["provisioner"] = json!("other.io/y");
        assert_eq!(
            update("storage.k8s.io/v1", "StorageClass", changed, sc),
            vec!["provisioner: Forbidden: updates to provisioner are forbidden."]
        );
    }
}
