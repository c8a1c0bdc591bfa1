//! Defaulting, as upstream's `SetDefaults_*` functions do it when an object is decoded (the
//! API server runs it on create and update bodies before validation). Also the few field
//! fixes upstream performs during decoding (Secret `stringData`) and the generated Job
//! selector helper, which the API server needs on Job create.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::registry::ResourceInfo;

mod networking;

/// Applies upstream's defaults for the kind in place. Idempotent.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (info.group, info.kind) {
        ("", "Pod") => pod(obj),
        ("", "PodTemplate") => pod_template(field(obj, "template")),
        ("", "ReplicationController") => replication_controller(obj),
        ("", "Service") => service(obj),
        ("", "Endpoints") => endpoints(obj),
        ("", "Secret") => secret(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Node") => node(obj),
        ("", "PersistentVolume") => persistent_volume(obj),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(obj),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => replica_set(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(obj),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj),
        ("storage.k8s.io", "StorageClass") => storage_class(obj),
        ("scheduling.k8s.io", "PriorityClass") => {
            set(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => role_binding(obj),
        ("networking.k8s.io", "NetworkPolicy") => networking::network_policy(obj),
        ("networking.k8s.io", "IngressClass") => networking::ingress_class(obj),
        _ => {}
    }
}

/// Fills a Job's generated selector and pod labels from its uid, as upstream's Job strategy
/// does on create unless `spec.manualSelector` is true. Call after the uid is assigned.
pub fn set_job_selector(job: &mut Value) {
    let meta = job.get("metadata").cloned().unwrap_or(Value::Null);
    let uid = meta
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = field(job, "spec");
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let labels = field(field(field(spec, "template"), "metadata"), "labels");
    if let Some(m) = labels.as_object_mut() {
        m.insert("controller-uid".into(), json!(uid));
        m.insert("job-name".into(), json!(name));
        m.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        m.insert("batch.kubernetes.io/job-name".into(), json!(name));
    }
    if spec.get("selector").is_none_or(Value::is_null) {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
}

/// What upstream's REST layer does to an update body before validating it: system fields
/// the client may omit are carried over from the stored object (uid when empty,
/// creationTimestamp, deletionTimestamp, deletionGracePeriodSeconds when unset).
pub fn prepare_for_update(new: &mut Value, old: &Value) {
    let Some(old_meta) = old.get("metadata").and_then(Value::as_object) else {
        return;
    };
    let meta = field(new, "metadata");
    let Some(m) = meta.as_object_mut() else {
        return;
    };
    let present = |v: Option<&Value>| v.is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    if !present(m.get("uid")) {
        if let Some(uid) = old_meta.get("uid") {
            m.insert("uid".into(), uid.clone());
        }
    }
    for key in ["creationTimestamp", "deletionTimestamp"] {
        if let Some(v) = old_meta.get(key).filter(|v| present(Some(v))) {
            m.insert(key.into(), v.clone());
        }
    }
    if !present(m.get("deletionGracePeriodSeconds")) {
        if let Some(v) = old_meta
            .get("deletionGracePeriodSeconds")
            .filter(|v| !v.is_null())
        {
            m.insert("deletionGracePeriodSeconds".into(), v.clone());
        }
    }
}

/// The child object at `key`, created as `{}` when missing or not an object.
fn field<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let child = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child
}

/// Sets `key` when it is absent or null.
fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Sets `key` when it is absent, null or "" (Go's zero value for plain strings).
fn set_str(v: &mut Value, key: &str, value: &str) {
    if v.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
        if let Some(m) = v.as_object_mut() {
            m.insert(key.to_string(), json!(value));
        }
    }
}

fn items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn has_obj(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(Value::is_object)
}

/// The image tag as upstream's image parser sees it: "latest" when neither tag nor digest.
fn image_tag(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag.to_string(),
        None if digest.is_some() => String::new(),
        None => "latest".into(),
    }
}

fn probe(p: &mut Value) {
    set(p, "timeoutSeconds", json!(1));
    set(p, "periodSeconds", json!(10));
    set(p, "successThreshold", json!(1));
    set(p, "failureThreshold", json!(3));
    handler(p);
}

fn handler(h: &mut Value) {
    if let Some(http) = h.get_mut("httpGet").filter(|v| v.is_object()) {
        set_str(http, "path", "/");
        set_str(http, "scheme", "HTTP");
    }
}

fn container(c: &mut Value) {
    if c.get("imagePullPolicy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let policy = if image_tag(image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        set_str(c, "imagePullPolicy", policy);
    }
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    for port in items(c, "ports") {
        set_str(port, "protocol", "TCP");
    }
    for ev in items(c, "env") {
        if let Some(fr) = ev
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .filter(|v| v.is_object())
        {
            set_str(fr, "apiVersion", "v1");
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key).filter(|v| v.is_object()) {
            probe(p);
        }
    }
    if let Some(l) = c.get_mut("lifecycle").filter(|v| v.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(hook).filter(|v| v.is_object()) {
                handler(h);
            }
        }
    }
}

const DEFAULT_MODE: i64 = 0o644;

fn volume(v: &mut Value) {
    if !crate::validation::volumes::SOURCES
        .iter()
        .any(|s| has_obj(v, s))
    {
        set(v, "emptyDir", json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(key).filter(|s| s.is_object()) {
            set(s, "defaultMode", json!(DEFAULT_MODE));
        }
    }
    if let Some(hp) = v.get_mut("hostPath").filter(|s| s.is_object()) {
        set(hp, "type", json!(""));
    }
    if let Some(d) = v.get_mut("downwardAPI").filter(|s| s.is_object()) {
        downward_items(d);
    }
    if let Some(p) = v.get_mut("projected").filter(|s| s.is_object()) {
        for src in items(p, "sources") {
            if let Some(d) = src.get_mut("downwardAPI").filter(|s| s.is_object()) {
                downward_items(d);
            }
            if let Some(t) = src.get_mut("serviceAccountToken").filter(|s| s.is_object()) {
                set(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(i) = v.get_mut("iscsi").filter(|s| s.is_object()) {
        set_str(i, "iscsiInterface", "default");
    }
    if let Some(spec) = v
        .get_mut("ephemeral")
        .and_then(|e| e.get_mut("volumeClaimTemplate"))
        .and_then(|t| t.get_mut("spec"))
    {
        set_str(spec, "volumeMode", "Filesystem");
    }
}

fn downward_items(d: &mut Value) {
    for item in items(d, "items") {
        if let Some(fr) = item.get_mut("fieldRef").filter(|v| v.is_object()) {
            set_str(fr, "apiVersion", "v1");
        }
    }
}

/// `SetDefaults_PodSpec` plus the container, volume and probe defaults under it.
fn pod_spec(spec: &mut Value) {
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(spec, key) {
            container(c);
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        host_network_ports(spec);
    }
}

/// With host networking a container port is also the host port.
fn host_network_ports(spec: &mut Value) {
    for key in ["containers", "initContainers"] {
        for c in items(spec, key) {
            for port in items(c, "ports") {
                if port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                    if let Some(cp) = port.get("containerPort").cloned() {
                        port["hostPort"] = cp;
                    }
                }
            }
        }
    }
}

fn pod_template(t: &mut Value) {
    pod_spec(field(t, "spec"));
}

fn pod(obj: &mut Value) {
    let spec = field(obj, "spec");
    pod_spec(spec);
    // requests default to limits, for pods only (not templates)
    for key in ["containers", "initContainers"] {
        for c in items(spec, key) {
            let limits = c
                .get("resources")
                .and_then(|r| r.get("limits"))
                .and_then(Value::as_object)
                .cloned();
            let Some(limits) = limits.filter(|l| !l.is_empty()) else {
                continue;
            };
            let requests = field(field(c, "resources"), "requests");
            if let Some(r) = requests.as_object_mut() {
                for (k, v) in limits {
                    r.entry(k).or_insert(v);
                }
            }
        }
    }
    set(spec, "enableServiceLinks", json!(true));
    // what the Priority admission plugin sets when no priority class is named
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        set(spec, "priority", json!(0));
        set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

fn replication_controller(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "replicas", json!(1));
    set(spec, "minReadySeconds", json!(0));
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .cloned();
    if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            spec["selector"] = labels.clone();
        }
        let meta = field(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            meta["labels"] = labels;
        }
    }
    if let Some(t) = obj
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .filter(|t| t.is_object())
    {
        pod_template(t);
    }
}

fn service(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_str(spec, "sessionAffinity", "None");
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let cfg = field(field(spec, "sessionAffinityConfig"), "clientIP");
        set(cfg, "timeoutSeconds", json!(10800));
    }
    set_str(spec, "type", "ClusterIP");
    for p in items(spec, "ports") {
        set_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            _ => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p["targetPort"] = port;
            }
        }
    }
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        set_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if svc_type == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if svc_type != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        // what the REST layer does for a single-stack IPv4 cluster
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        if spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(ip) = ip {
            if spec
                .get("clusterIPs")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec["clusterIPs"] = json!([ip]);
            }
        }
    }
}

fn endpoints(obj: &mut Value) {
    for ss in items(obj, "subsets") {
        for p in items(ss, "ports") {
            set_str(p, "protocol", "TCP");
        }
    }
}

fn endpoint_slice(obj: &mut Value) {
    for p in items(obj, "ports") {
        set(p, "name", json!(""));
        set(p, "protocol", json!("TCP"));
    }
}

/// Upstream folds `stringData` into `data` when decoding; the type defaults to Opaque.
fn secret(obj: &mut Value) {
    set_str(obj, "type", "Opaque");
    let string_data = obj.as_object_mut().and_then(|m| m.remove("stringData"));
    if let Some(Value::Object(sd)) = string_data {
        let data = field(obj, "data");
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default();
                d.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        let labels = field(field(obj, "metadata"), "labels");
        labels["kubernetes.io/metadata.name"] = json!(name);
    }
    let spec = field(obj, "spec");
    if spec.get("finalizers").is_none_or(Value::is_null) {
        spec["finalizers"] = json!(["kubernetes"]);
    }
    set_str(field(obj, "status"), "phase", "Active");
}

fn node(obj: &mut Value) {
    let status = field(obj, "status");
    if status.get("allocatable").is_none_or(Value::is_null) {
        if let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            status["allocatable"] = cap;
        }
    }
}

fn persistent_volume(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_str(spec, "persistentVolumeReclaimPolicy", "Retain");
    set_str(spec, "volumeMode", "Filesystem");
    set_str(field(obj, "status"), "phase", "Pending");
}

fn pvc_defaults(pvc: &mut Value) {
    set_str(field(pvc, "spec"), "volumeMode", "Filesystem");
    set_str(field(pvc, "status"), "phase", "Pending");
}

fn persistent_volume_claim(obj: &mut Value) {
    pvc_defaults(obj);
}

fn deployment(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "replicas", json!(1));
    let strategy = field(spec, "strategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = field(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!("25%"));
        set(ru, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    pod_template(field(spec, "template"));
}

fn replica_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "replicas", json!(1));
    pod_template(field(spec, "template"));
}

fn stateful_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "replicas", json!(1));
    set_str(spec, "podManagementPolicy", "OrderedReady");
    let us = field(spec, "updateStrategy");
    set_str(us, "type", "RollingUpdate");
    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        set(field(us, "rollingUpdate"), "partition", json!(0));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    let policy = field(spec, "persistentVolumeClaimRetentionPolicy");
    set_str(policy, "whenDeleted", "Retain");
    set_str(policy, "whenScaled", "Retain");
    for t in items(spec, "volumeClaimTemplates") {
        pvc_defaults(t);
    }
    pod_template(field(spec, "template"));
}

fn daemon_set(obj: &mut Value) {
    let spec = field(obj, "spec");
    let us = field(spec, "updateStrategy");
    set_str(us, "type", "RollingUpdate");
    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = field(us, "rollingUpdate");
        set(ru, "maxUnavailable", json!(1));
        set(ru, "maxSurge", json!(0));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    pod_template(field(spec, "template"));
}

fn job_spec(spec: &mut Value) {
    pod_template(field(spec, "template"));
}

fn job(obj: &mut Value) {
    let spec = field(obj, "spec");
    let completions_unset = spec.get("completions").is_none_or(Value::is_null);
    let parallelism_unset = spec.get("parallelism").is_none_or(Value::is_null);
    if completions_unset && parallelism_unset {
        spec["completions"] = json!(1);
    }
    set(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set(
        spec,
        "backoffLimit",
        json!(if per_index { i64::from(i32::MAX) } else { 6 }),
    );
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let has_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(rules) = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for rule in rules {
            for pattern in items(rule, "onPodConditions") {
                set_str(pattern, "status", "True");
            }
        }
    }
    job_spec(spec);
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        let meta = field(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            meta["labels"] = labels;
        }
    }
}

fn cron_job(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_str(spec, "concurrencyPolicy", "Allow");
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    job_spec(field(field(spec, "jobTemplate"), "spec"));
}

fn hpa(obj: &mut Value) {
    let spec = field(obj, "spec");
    set(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if let Some(behavior) = spec.get_mut("behavior").filter(|b| b.is_object()) {
        let up = field(behavior, "scaleUp");
        set(up, "stabilizationWindowSeconds", json!(0));
        set(up, "selectPolicy", json!("Max"));
        set(
            up,
            "policies",
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
        let down = field(behavior, "scaleDown");
        set(down, "stabilizationWindowSeconds", json!(300));
        set(down, "selectPolicy", json!("Max"));
        set(
            down,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn storage_class(obj: &mut Value) {
    set(obj, "reclaimPolicy", json!("Delete"));
    set(obj, "volumeBindingMode", json!("Immediate"));
}

fn role_binding(obj: &mut Value) {
    for s in items(obj, "subjects") {
        if s.get("apiGroup").is_none_or(Value::is_null) {
            let group = match s.get("kind").and_then(Value::as_str) {
                Some("ServiceAccount") => "",
                Some("User" | "Group") => "rbac.authorization.k8s.io",
                _ => continue,
            };
            s["apiGroup"] = json!(group);
        }
    }
    if let Some(rr) = obj.get_mut("roleRef").filter(|r| r.is_object()) {
        set_str(rr, "apiGroup", "rbac.authorization.k8s.io");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    pub(super) fn defaulted(api_version: &str, kind: &str, mut obj: Value) -> Value {
        let info = Registry::builtin()
            .by_kind(api_version, kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind}"));
        apply_defaults(&info, &mut obj);
        let again = obj.clone();
        apply_defaults(&info, &mut obj);
        assert_eq!(obj, again, "defaulting is idempotent");
        obj
    }

    #[test]
    fn pods() {
        let p = defaulted(
            "v1",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
             "livenessProbe": {"httpGet": {"port": 80}}, "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
            {"name": "b", "image": "nginx:1.25"},
            {"name": "c", "image": "registry:5000/x@sha256:abc"},
            {"name": "d", "image": "registry:5000/x:latest", "imagePullPolicy": "Never"}
        ], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}}),
        );
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"];
        assert_eq!(c[0]["imagePullPolicy"], "Always");
        assert_eq!(c[1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[3]["imagePullPolicy"], "Never");
        assert_eq!(c[0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c[0]["terminationMessagePolicy"], "File");
        assert_eq!(c[0]["ports"][0]["protocol"], "TCP");
        assert_eq!(c[0]["resources"]["requests"]["cpu"], "1");
        assert_eq!(c[0]["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c[0]["livenessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c[0]["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c[0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
        assert!(spec.get("tolerations").is_none());
    }

    #[test]
    fn workloads() {
        let d = defaulted(
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(d["spec"]["template"]["spec"]
            .get("enableServiceLinks")
            .is_none());
        let d = defaulted(
            "apps/v1",
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());

        let s = defaulted(
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}),
        );
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        let ds = defaulted("apps/v1", "DaemonSet", json!({}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        let rs = defaulted("apps/v1", "ReplicaSet", json!({}));
        assert_eq!(rs["spec"]["replicas"], 1);

        let j = defaulted(
            "batch/v1",
            "Job",
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
        );
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["suspend"], false);
        assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"a": "b"}));
        let j = defaulted("batch/v1", "Job", json!({"spec": {"parallelism": 3}}));
        assert!(j["spec"].get("completions").is_none());
        let cj = defaulted(
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "@hourly"}}),
        );
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );

        let rc = defaulted(
            "v1",
            "ReplicationController",
            json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
    }

    #[test]
    fn services_and_core() {
        let s = defaulted(
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}}),
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "http");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        let lb = defaulted("v1", "Service", json!({"spec": {"type": "LoadBalancer"}}));
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        let en = defaulted(
            "v1",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "x.com"}}),
        );
        assert!(en["spec"].get("ipFamilies").is_none());

        let sec = defaulted(
            "v1",
            "Secret",
            json!({"stringData": {"k": "v"}, "data": {"a": "Yg=="}}),
        );
        assert_eq!(sec["type"], "Opaque");
        assert_eq!(sec["data"], json!({"a": "Yg==", "k": "dg=="}));
        assert!(sec.get("stringData").is_none());
        let ns = defaulted("v1", "Namespace", json!({"metadata": {"name": "team"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        let pvc = defaulted("v1", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let pv = defaulted("v1", "PersistentVolume", json!({"spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        let node = defaulted("v1", "Node", json!({"status": {"capacity": {"cpu": "2"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));
        let hpa = defaulted(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"spec": {"behavior": {}}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
        let rb = defaulted(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            json!({"subjects": [{"kind": "User", "name": "a"}, {"kind": "ServiceAccount", "name": "b"}]}),
        );
        assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][1]["apiGroup"], "");
        let sc = defaulted("storage.k8s.io/v1", "StorageClass", json!({}));
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
    }

    #[test]
    fn job_selector_generation() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"metadata": {"labels": {"x": "y"}}}}});
        set_job_selector(&mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        let mut manual =
            json!({"spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        set_job_selector(&mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
    }

    #[test]
    fn update_carries_system_fields() {
        let old = json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}});
        let mut new =
            json!({"metadata": {"name": "a", "creationTimestamp": "2025-01-01T00:00:00Z"}});
        prepare_for_update(&mut new, &old);
        assert_eq!(new["metadata"], old["metadata"]);
        let info = Registry::builtin()
            .by_kind("v1", "ConfigMap")
            .cloned()
            .unwrap_or_else(|| panic!("cm"));
        let mut new = json!({"metadata": {"name": "a", "resourceVersion": "1"}});
        prepare_for_update(&mut new, &old);
        assert!(crate::validation::validate_update(&info, &new, &old).is_empty());
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:latest"), "latest");
        assert_eq!(image_tag("localhost:5000/nginx"), "latest");
        assert_eq!(image_tag("localhost:5000/nginx:1"), "1");
        assert_eq!(image_tag("nginx@sha256:abc"), "");
    }
}
