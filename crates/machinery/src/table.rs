//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for, with
//! upstream's columns and cell formatting per kind. Like upstream's server, every column
//! is emitted (priority 1 ones too); kubectl hides those unless `-o wide`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::object::parse_time;
use crate::registry::ResourceInfo;
use crate::selector::{format_label_selector, format_labels};

mod certificates;
mod networking;

/// A `TableColumnDefinition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
}

fn column(name: &str, type_: &str, description: impl Into<String>, priority: i32) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: description.into(),
        priority,
    }
}

/// The description upstream takes from a type's swagger docs, read from k8s-openapi's schema.
fn doc<T: schemars::JsonSchema>(field: &str) -> String {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .pointer(&format!("/properties/{field}/description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn name_col() -> Column {
    Column {
        format: "name".into(),
        ..column("Name", "string", doc::<ObjectMeta>("name"), 0)
    }
}

fn age_col() -> Column {
    column("Age", "string", doc::<ObjectMeta>("creationTimestamp"), 0)
}

fn created_at_col() -> Column {
    column(
        "Created At",
        "date",
        doc::<ObjectMeta>("creationTimestamp"),
        0,
    )
}

fn s(name: &str, description: impl Into<String>) -> Column {
    column(name, "string", description, 0)
}

fn i(name: &str, description: impl Into<String>) -> Column {
    column(name, "integer", description, 0)
}

fn wide(name: &str, description: impl Into<String>) -> Column {
    column(name, "string", description, 1)
}

const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

fn build_columns(group: &str, kind: &str) -> Vec<Column> {
    if group == "networking.k8s.io" {
        if let Some(cols) = networking::columns(kind) {
            return cols;
        }
    }
    if group == "certificates.k8s.io" {
        if let Some(cols) = certificates::columns(kind) {
            return cols;
        }
    }
    let mut cols = vec![name_col()];
    match (group, kind) {
        ("", "Pod") => cols.extend([
            s("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            s("Status", "The aggregate status of the containers in this pod."),
            s("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age_col(),
            wide("IP", doc::<core::PodStatus>("podIP")),
            wide("Node", doc::<core::PodSpec>("nodeName")),
            wide("Nominated Node", doc::<core::PodStatus>("nominatedNodeName")),
            wide("Readiness Gates", doc::<core::PodSpec>("readinessGates")),
        ]),
        ("", "PodTemplate") => cols.extend([
            s("Containers", CONTAINERS_DOC),
            s("Images", IMAGES_DOC),
            s("Pod Labels", "The labels for the pod template."),
        ]),
        ("", "ReplicationController") => cols.extend([
            i("Desired", doc::<core::ReplicationControllerSpec>("replicas")),
            i("Current", doc::<core::ReplicationControllerStatus>("replicas")),
            i("Ready", doc::<core::ReplicationControllerStatus>("readyReplicas")),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<core::ReplicationControllerSpec>("selector")),
        ]),
        ("apps", "ReplicaSet") => cols.extend([
            i("Desired", doc::<apps::ReplicaSetSpec>("replicas")),
            i("Current", doc::<apps::ReplicaSetStatus>("replicas")),
            i("Ready", doc::<apps::ReplicaSetStatus>("readyReplicas")),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<apps::ReplicaSetSpec>("selector")),
        ]),
        ("apps", "Deployment") => cols.extend([
            s("Ready", "Number of the pod with ready state"),
            s("Up-to-date", doc::<apps::DeploymentStatus>("updatedReplicas")),
            s("Available", doc::<apps::DeploymentStatus>("availableReplicas")),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<apps::DeploymentSpec>("selector")),
        ]),
        ("apps", "StatefulSet") => cols.extend([
            s("Ready", "Number of the pod with ready state"),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
        ]),
        ("apps", "DaemonSet") => cols.extend([
            i("Desired", doc::<apps::DaemonSetStatus>("desiredNumberScheduled")),
            i("Current", doc::<apps::DaemonSetStatus>("currentNumberScheduled")),
            i("Ready", doc::<apps::DaemonSetStatus>("numberReady")),
            i("Up-to-date", doc::<apps::DaemonSetStatus>("updatedNumberScheduled")),
            i("Available", doc::<apps::DaemonSetStatus>("numberAvailable")),
            s("Node Selector", doc::<core::PodSpec>("nodeSelector")),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<apps::DaemonSetSpec>("selector")),
        ]),
        ("apps", "ControllerRevision") => cols.extend([
            s("Controller", "Controller of the object"),
            s("Revision", doc::<apps::ControllerRevision>("revision")),
            age_col(),
        ]),
        ("batch", "Job") => cols.extend([
            s("Status", "Status of the job."),
            s("Completions", doc::<batch::JobStatus>("succeeded")),
            s("Duration", "Time required to complete the job."),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<batch::JobSpec>("selector")),
        ]),
        ("batch", "CronJob") => cols.extend([
            s("Schedule", doc::<batch::CronJobSpec>("schedule")),
            s("Timezone", doc::<batch::CronJobSpec>("timeZone")),
            column("Suspend", "boolean", doc::<batch::CronJobSpec>("suspend"), 0),
            i("Active", doc::<batch::CronJobStatus>("active")),
            s("Last Schedule", doc::<batch::CronJobStatus>("lastScheduleTime")),
            age_col(),
            wide("Containers", CONTAINERS_DOC),
            wide("Images", IMAGES_DOC),
            wide("Selector", doc::<batch::JobSpec>("selector")),
        ]),
        ("", "Service") => cols.extend([
            s("Type", doc::<core::ServiceSpec>("type")),
            s("Cluster-IP", doc::<core::ServiceSpec>("clusterIP")),
            s("External-IP", doc::<core::ServiceSpec>("externalIPs")),
            s("Port(s)", doc::<core::ServiceSpec>("ports")),
            age_col(),
            wide("Selector", doc::<core::ServiceSpec>("selector")),
        ]),
        ("", "Endpoints") => cols.extend([s("Endpoints", doc::<core::Endpoints>("subsets")), age_col()]),
        ("discovery.k8s.io", "EndpointSlice") => cols.extend([
            s("AddressType", doc::<discovery::EndpointSlice>("addressType")),
            s("Ports", doc::<discovery::EndpointSlice>("ports")),
            s("Endpoints", doc::<discovery::EndpointSlice>("endpoints")),
            age_col(),
        ]),
        ("", "Node") => cols.extend([
            s("Status", "The status of the node"),
            s("Roles", "The roles of the node"),
            age_col(),
            s("Version", doc::<core::NodeSystemInfo>("kubeletVersion")),
            wide("Internal-IP", doc::<core::NodeStatus>("addresses")),
            wide("External-IP", doc::<core::NodeStatus>("addresses")),
            wide("OS-Image", doc::<core::NodeSystemInfo>("osImage")),
            wide("Kernel-Version", doc::<core::NodeSystemInfo>("kernelVersion")),
            wide("Container-Runtime", doc::<core::NodeSystemInfo>("containerRuntimeVersion")),
        ]),
        ("", "Event") | ("events.k8s.io", "Event") => {
            return vec![
                s("Last Seen", doc::<core::Event>("lastTimestamp")),
                s("Type", doc::<core::Event>("type")),
                s("Reason", doc::<core::Event>("reason")),
                s("Object", doc::<core::Event>("involvedObject")),
                wide("Subobject", doc::<core::ObjectReference>("fieldPath")),
                wide("Source", doc::<core::Event>("source")),
                s("Message", doc::<core::Event>("message")),
                wide("First Seen", doc::<core::Event>("firstTimestamp")),
                wide("Count", doc::<core::Event>("count")),
                Column { format: "name".into(), ..wide("Name", doc::<ObjectMeta>("name")) },
            ]
        }
        ("", "Namespace") => cols.extend([s("Status", "The status of the namespace"), age_col()]),
        ("", "Secret") => cols.extend([s("Type", doc::<core::Secret>("type")), i("Data", doc::<core::Secret>("data")), age_col()]),
        ("", "ServiceAccount") => cols.extend([i("Secrets", doc::<core::ServiceAccount>("secrets")), age_col()]),
        ("", "ConfigMap") => cols.extend([i("Data", doc::<core::ConfigMap>("data")), age_col()]),
        ("", "PersistentVolume") => cols.extend([
            s("Capacity", doc::<core::PersistentVolumeSpec>("capacity")),
            s("Access Modes", doc::<core::PersistentVolumeSpec>("accessModes")),
            s("Reclaim Policy", doc::<core::PersistentVolumeSpec>("persistentVolumeReclaimPolicy")),
            s("Status", doc::<core::PersistentVolumeStatus>("phase")),
            s("Claim", doc::<core::PersistentVolumeSpec>("claimRef")),
            s("StorageClass", "StorageClass of the pv"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
            s("Reason", doc::<core::PersistentVolumeStatus>("reason")),
            age_col(),
            wide("VolumeMode", doc::<core::PersistentVolumeSpec>("volumeMode")),
        ]),
        ("", "PersistentVolumeClaim") => cols.extend([
            s("Status", doc::<core::PersistentVolumeClaimStatus>("phase")),
            s("Volume", doc::<core::PersistentVolumeClaimSpec>("volumeName")),
            s("Capacity", doc::<core::PersistentVolumeClaimStatus>("capacity")),
            s("Access Modes", doc::<core::PersistentVolumeClaimStatus>("accessModes")),
            s("StorageClass", "StorageClass of the pvc"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
            age_col(),
            wide("VolumeMode", doc::<core::PersistentVolumeClaimSpec>("volumeMode")),
        ]),
        ("", "ResourceQuota") => cols.extend([
            age_col(),
            s("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
            s("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ]),
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => cols.push(created_at_col()),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let what = if kind == "RoleBinding" { "roleBinding" } else { "clusterRoleBinding" };
            cols.extend([
                s("Role", doc::<rbac::RoleBinding>("roleRef")),
                age_col(),
                wide("Users", format!("Users in the {what}")),
                wide("Groups", format!("Groups in the {what}")),
                wide("ServiceAccounts", format!("ServiceAccounts in the {what}")),
            ])
        }
        ("autoscaling", "HorizontalPodAutoscaler") => cols.extend([
            s("Reference", doc::<autoscaling::HorizontalPodAutoscalerSpec>("scaleTargetRef")),
            s("Targets", doc::<autoscaling::HorizontalPodAutoscalerSpec>("metrics")),
            s("MinPods", doc::<autoscaling::HorizontalPodAutoscalerSpec>("minReplicas")),
            s("MaxPods", doc::<autoscaling::HorizontalPodAutoscalerSpec>("maxReplicas")),
            s("Replicas", doc::<autoscaling::HorizontalPodAutoscalerStatus>("currentReplicas")),
            age_col(),
        ]),
        ("coordination.k8s.io", "Lease") => cols.extend([s("Holder", doc::<coordination::LeaseSpec>("holderIdentity")), age_col()]),
        ("storage.k8s.io", "StorageClass") => cols.extend([
            s("Provisioner", doc::<storage::StorageClass>("provisioner")),
            s("ReclaimPolicy", doc::<storage::StorageClass>("reclaimPolicy")),
            s("VolumeBindingMode", doc::<storage::StorageClass>("volumeBindingMode")),
            s("AllowVolumeExpansion", doc::<storage::StorageClass>("allowVolumeExpansion")),
            age_col(),
        ]),
        ("policy", "PodDisruptionBudget") => cols.extend([
            s("Min Available", doc::<policy::PodDisruptionBudgetSpec>("minAvailable")),
            s("Max Unavailable", doc::<policy::PodDisruptionBudgetSpec>("maxUnavailable")),
            i("Allowed Disruptions", doc::<policy::PodDisruptionBudgetStatus>("disruptionsAllowed")),
            age_col(),
        ]),
        ("scheduling.k8s.io", "PriorityClass") => cols.extend([
            i("Value", doc::<scheduling::PriorityClass>("value")),
            column("Global-Default", "boolean", doc::<scheduling::PriorityClass>("globalDefault"), 0),
            age_col(),
            s("PreemptionPolicy", doc::<scheduling::PriorityClass>("preemptionPolicy")),
        ]),
        _ => cols.push(Column { type_: "date".into(), ..age_col() }),
    }
    cols
}

/// The column definitions for a kind (computed once per kind).
pub fn columns(info: &ResourceInfo) -> Vec<Column> {
    type Cache = Mutex<HashMap<(String, String), Vec<Column>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (info.group.to_string(), info.kind.to_string());
    if let Some(cols) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return cols;
    }
    let cols = build_columns(info.group, info.kind);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, cols.clone());
    }
    cols
}

/// Upstream's `duration.HumanDuration`: about two significant figures.
pub fn human_duration(d: time::Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` when absent.
pub fn age(ts: Option<&Value>, now: OffsetDateTime) -> String {
    match ts.and_then(Value::as_str).and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    crate::object::path(v, path).unwrap_or(&NULL)
}

fn text(v: &Value, path: &str) -> String {
    at(v, path).as_str().unwrap_or_default().to_string()
}

fn num(v: &Value, path: &str) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn or(s: String, default: &str) -> String {
    if s.is_empty() {
        default.to_string()
    } else {
        s
    }
}

fn created(obj: &Value, now: OffsetDateTime) -> Value {
    json!(age(obj.pointer("/metadata/creationTimestamp"), now))
}

fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<String> = containers.iter().map(|c| text(c, "name")).collect();
    let images: Vec<String> = containers.iter().map(|c| text(c, "image")).collect();
    (names.join(","), images.join(","))
}

fn container_cells(containers: &[Value]) -> [Value; 2] {
    let (n, i) = layout_containers(containers);
    [json!(n), json!(i)]
}

/// Quantity strings as printed; an absent quantity prints as its zero value.
fn quantity(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "0".into(),
        other => other.to_string(),
    }
}

fn rfc3339_utc(v: &Value) -> String {
    v.as_str()
        .and_then(parse_time)
        .map(crate::object::format_time)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// The cells of one row, in the order of [`columns`].
pub fn row(info: &ResourceInfo, obj: &Value, now: OffsetDateTime) -> Vec<Value> {
    if info.group == "networking.k8s.io" {
        if let Some(cells) = networking::row(info.kind, obj, now) {
            return cells;
        }
    }
    if info.group == "certificates.k8s.io" {
        if let Some(cells) = certificates::row(info.kind, obj, now) {
            return cells;
        }
    }
    let name = json!(text(obj, "metadata.name"));
    match (info.group, info.kind) {
        ("", "Pod") => pod_row(obj, now),
        ("", "PodTemplate") => {
            let [n, i] = container_cells(list(obj, "template.spec.containers"));
            vec![
                name,
                n,
                i,
                json!(format_labels(at(obj, "template.metadata.labels"))),
            ]
        }
        ("", "ReplicationController") => {
            let [n, im] = container_cells(list(obj, "spec.template.spec.containers"));
            vec![
                name,
                json!(num(obj, "spec.replicas")),
                json!(num(obj, "status.replicas")),
                json!(num(obj, "status.readyReplicas")),
                created(obj, now),
                n,
                im,
                json!(format_labels(at(obj, "spec.selector"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let [n, im] = container_cells(list(obj, "spec.template.spec.containers"));
            vec![
                name,
                json!(num(obj, "spec.replicas")),
                json!(num(obj, "status.replicas")),
                json!(num(obj, "status.readyReplicas")),
                created(obj, now),
                n,
                im,
                json!(format_label_selector(at(obj, "spec.selector"))),
            ]
        }
        ("apps", "Deployment") => {
            let [n, im] = container_cells(list(obj, "spec.template.spec.containers"));
            let selector =
                match crate::selector::Selector::from_label_selector(at(obj, "spec.selector")) {
                    Ok(s) => s.to_string(),
                    Err(_) => "<invalid>".into(),
                };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    num(obj, "status.readyReplicas"),
                    num(obj, "spec.replicas")
                )),
                json!(num(obj, "status.updatedReplicas")),
                json!(num(obj, "status.availableReplicas")),
                created(obj, now),
                n,
                im,
                json!(selector),
            ]
        }
        ("apps", "StatefulSet") => {
            let [n, im] = container_cells(list(obj, "spec.template.spec.containers"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    num(obj, "status.readyReplicas"),
                    num(obj, "spec.replicas")
                )),
                created(obj, now),
                n,
                im,
            ]
        }
        ("apps", "DaemonSet") => {
            let [n, im] = container_cells(list(obj, "spec.template.spec.containers"));
            vec![
                name,
                json!(num(obj, "status.desiredNumberScheduled")),
                json!(num(obj, "status.currentNumberScheduled")),
                json!(num(obj, "status.numberReady")),
                json!(num(obj, "status.updatedNumberScheduled")),
                json!(num(obj, "status.numberAvailable")),
                json!(format_labels(at(obj, "spec.template.spec.nodeSelector"))),
                created(obj, now),
                n,
                im,
                json!(format_label_selector(at(obj, "spec.selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = list(obj, "metadata.ownerReferences")
                .iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
            let controller = match owner {
                None => "<none>".to_string(),
                Some(r) => {
                    let group = text(r, "apiVersion")
                        .rsplit_once('/')
                        .map(|(g, _)| g.to_string())
                        .unwrap_or_default();
                    let kind = text(r, "kind");
                    let gk = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    if gk.is_empty() {
                        text(r, "name")
                    } else {
                        format!("{}/{}", gk.to_lowercase(), text(r, "name"))
                    }
                }
            };
            vec![
                name,
                json!(controller),
                json!(num(obj, "revision")),
                created(obj, now),
            ]
        }
        ("batch", "Job") => job_row(obj, now),
        ("batch", "CronJob") => {
            let last = match at(obj, "status.lastScheduleTime") {
                Value::Null => "<none>".to_string(),
                t => age(Some(t), now),
            };
            let suspend = match at(obj, "spec.suspend").as_bool() {
                None => "<unset>",
                Some(true) => "True",
                Some(false) => "False",
            };
            let [n, im] =
                container_cells(list(obj, "spec.jobTemplate.spec.template.spec.containers"));
            vec![
                name,
                json!(text(obj, "spec.schedule")),
                json!(or(text(obj, "spec.timeZone"), "<none>")),
                json!(suspend),
                json!(list(obj, "status.active").len()),
                json!(last),
                created(obj, now),
                n,
                im,
                json!(format_label_selector(at(
                    obj,
                    "spec.jobTemplate.spec.selector"
                ))),
            ]
        }
        ("", "Service") => service_row(obj, now),
        ("", "Endpoints") => vec![name, json!(format_endpoints(obj)), created(obj, now)],
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = list(obj, "ports")
                .iter()
                .map(|p| {
                    match (
                        p.get("port").and_then(Value::as_i64),
                        p.get("name").and_then(Value::as_str),
                    ) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(n)) => n.to_string(),
                        _ => "*".into(),
                    }
                })
                .collect();
            let addrs: Vec<String> = list(obj, "endpoints")
                .iter()
                .flat_map(|e| {
                    list(e, "addresses")
                        .iter()
                        .map(|a| a.as_str().unwrap_or_default().to_string())
                })
                .collect();
            vec![
                name,
                json!(text(obj, "addressType")),
                json!(list_with_more(&ports, 3)),
                json!(list_with_more(&addrs, 3)),
                created(obj, now),
            ]
        }
        ("", "Node") => node_row(obj, now),
        ("", "Event") | ("events.k8s.io", "Event") => event_row(info, obj, now),
        ("", "Namespace") => vec![name, json!(text(obj, "status.phase")), created(obj, now)],
        ("", "Secret") => vec![
            name,
            json!(text(obj, "type")),
            json!(map_len(at(obj, "data"))),
            created(obj, now),
        ],
        ("", "ServiceAccount") => vec![name, json!(list(obj, "secrets").len()), created(obj, now)],
        ("", "ConfigMap") => vec![
            name,
            json!(map_len(at(obj, "data")) + map_len(at(obj, "binaryData"))),
            created(obj, now),
        ],
        ("", "PersistentVolume") => pv_row(obj, now),
        ("", "PersistentVolumeClaim") => pvc_row(obj, now),
        ("", "ResourceQuota") => {
            let hard = at(obj, "status.hard").as_object();
            let mut names: Vec<&String> = hard.into_iter().flat_map(|m| m.keys()).collect();
            names.sort();
            let (mut req, mut lim) = (Vec::new(), Vec::new());
            for r in names {
                let entry = format!(
                    "{r}: {}/{}",
                    quantity(
                        at(obj, "status.used")
                            .get(r.as_str())
                            .unwrap_or(&Value::Null)
                    ),
                    quantity(hard.and_then(|h| h.get(r.as_str())).unwrap_or(&Value::Null))
                );
                if r.split('.').next() == Some("limits") && r.contains('.') {
                    lim.push(entry);
                } else {
                    req.push(entry);
                }
            }
            vec![
                name,
                created(obj, now),
                json!(req.join(", ")),
                json!(lim.join(", ")),
            ]
        }
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![
                name,
                json!(rfc3339_utc(at(obj, "metadata.creationTimestamp"))),
            ]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
            for s in list(obj, "subjects") {
                let n = text(s, "name");
                match text(s, "kind").as_str() {
                    "User" => users.push(n),
                    "Group" => groups.push(n),
                    "ServiceAccount" => {
                        let ns = text(s, "namespace");
                        sas.push(if ns.is_empty() {
                            n
                        } else {
                            format!("{ns}:{n}")
                        });
                    }
                    _ => {}
                }
            }
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    text(obj, "roleRef.kind"),
                    text(obj, "roleRef.name")
                )),
                created(obj, now),
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let min = match at(obj, "spec.minReplicas").as_i64() {
                Some(m) => m.to_string(),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    text(obj, "spec.scaleTargetRef.kind"),
                    text(obj, "spec.scaleTargetRef.name")
                )),
                json!(hpa_metrics(
                    list(obj, "spec.metrics"),
                    list(obj, "status.currentMetrics")
                )),
                json!(min),
                json!(num(obj, "spec.maxReplicas")),
                json!(num(obj, "status.currentReplicas")),
                created(obj, now),
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![
            name,
            json!(text(obj, "spec.holderIdentity")),
            created(obj, now),
        ],
        ("storage.k8s.io", "StorageClass") => {
            let ann = at(obj, "metadata.annotations");
            let default = [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| ann.get(*k).and_then(Value::as_str) == Some("true"));
            let shown = if default {
                format!("{} (default)", text(obj, "metadata.name"))
            } else {
                text(obj, "metadata.name")
            };
            vec![
                json!(shown),
                json!(text(obj, "provisioner")),
                json!(or(text(obj, "reclaimPolicy"), "Delete")),
                json!(or(text(obj, "volumeBindingMode"), "Immediate")),
                json!(at(obj, "allowVolumeExpansion").as_bool().unwrap_or(false)),
                created(obj, now),
            ]
        }
        ("policy", "PodDisruptionBudget") => {
            let shown = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                name,
                json!(shown(at(obj, "spec.minAvailable"))),
                json!(shown(at(obj, "spec.maxUnavailable"))),
                json!(num(obj, "status.disruptionsAllowed")),
                created(obj, now),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(num(obj, "value")),
            json!(at(obj, "globalDefault").as_bool().unwrap_or(false)),
            created(obj, now),
            json!(text(obj, "preemptionPolicy")),
        ],
        _ => vec![name, created(obj, now)],
    }
}

fn map_len(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn list_with_more(items: &[String], max: usize) -> String {
    if items.len() > max {
        return format!("{} + {} more...", items[..max].join(","), items.len() - max);
    }
    let joined = items.join(",");
    if joined.is_empty() {
        "<unset>".into()
    } else {
        joined
    }
}

fn is_restartable_init(spec: &Value, name: &str) -> bool {
    list(spec, "initContainers")
        .iter()
        .any(|c| text(c, "name") == name && text(c, "restartPolicy") == "Always")
}

fn has_condition(status: &Value, kind: &str) -> bool {
    list(status, "conditions")
        .iter()
        .any(|c| text(c, "type") == kind && text(c, "status") == "True")
}

/// Upstream's `printPod`: the STATUS column condenses init progress, container waiting and
/// terminated reasons, and deletion.
fn pod_row(pod: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = at(pod, "spec");
    let status = at(pod, "status");
    let mut total = list(spec, "containers").len();
    total += list(spec, "initContainers")
        .iter()
        .filter(|c| text(c, "restartPolicy") == "Always")
        .count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<OffsetDateTime> = None;
    let mut last_sidecar_restart: Option<OffsetDateTime> = None;
    let phase = text(status, "phase");
    let mut reason = or(text(status, "reason"), &phase);
    if list(status, "conditions")
        .iter()
        .any(|c| text(c, "type") == "PodScheduled" && text(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let finished = |c: &Value| {
        at(c, "lastState.terminated.finishedAt")
            .as_str()
            .and_then(parse_time)
    };
    let later = |a: Option<OffsetDateTime>, b: Option<OffsetDateTime>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let init_count = list(spec, "initContainers").len();
    let mut initializing = false;
    for (i, c) in list(status, "initContainerStatuses").iter().enumerate() {
        restarts += num(c, "restartCount");
        last_restart = later(last_restart, finished(c));
        let restartable = is_restartable_init(spec, &text(c, "name"));
        if restartable {
            sidecar_restarts += num(c, "restartCount");
            last_sidecar_restart = later(last_sidecar_restart, finished(c));
        }
        let terminated = at(c, "state.terminated");
        let waiting_reason = text(c, "state.waiting.reason");
        if terminated.is_object() && num(terminated, "exitCode") == 0 {
            continue;
        }
        if restartable && at(c, "started").as_bool() == Some(true) {
            if at(c, "ready").as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        if terminated.is_object() {
            let r = text(terminated, "reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if num(terminated, "signal") != 0 {
                format!("Init:Signal:{}", num(terminated, "signal"))
            } else {
                format!("Init:ExitCode:{}", num(terminated, "exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }
    if !initializing || has_condition(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in list(status, "containerStatuses").iter().rev() {
            restarts += num(c, "restartCount");
            last_restart = later(last_restart, finished(c));
            let waiting = text(c, "state.waiting.reason");
            let terminated = at(c, "state.terminated");
            if !waiting.is_empty() {
                reason = waiting;
            } else if terminated.is_object() && !text(terminated, "reason").is_empty() {
                reason = text(terminated, "reason");
            } else if terminated.is_object() {
                reason = if num(terminated, "signal") != 0 {
                    format!("Signal:{}", num(terminated, "signal"))
                } else {
                    format!("ExitCode:{}", num(terminated, "exitCode"))
                };
            } else if at(c, "ready").as_bool() == Some(true) && at(c, "state.running").is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = at(pod, "metadata.deletionTimestamp").is_string();
    if deleting && text(status, "reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let ip = list(status, "podIPs")
        .first()
        .map(|p| text(p, "ip"))
        .unwrap_or_else(|| text(status, "podIP"));
    let gates = list(spec, "readinessGates");
    let gates_str = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let ok = gates
            .iter()
            .filter(|g| {
                list(status, "conditions")
                    .iter()
                    .find(|c| text(c, "type") == text(g, "conditionType"))
                    .is_some_and(|c| text(c, "status") == "True")
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        json!(text(pod, "metadata.name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        created(pod, now),
        json!(or(ip, "<none>")),
        json!(or(text(spec, "nodeName"), "<none>")),
        json!(or(text(status, "nominatedNodeName"), "<none>")),
        json!(gates_str),
    ]
}

fn job_row(job: &Value, now: OffsetDateTime) -> Vec<Value> {
    let succeeded = num(job, "status.succeeded");
    let completions = match at(job, "spec.completions").as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = num(job, "spec.parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = at(job, "status.startTime").as_str().and_then(parse_time);
    let end = at(job, "status.completionTime")
        .as_str()
        .and_then(parse_time);
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now - s),
        (Some(s), Some(e)) => human_duration(e - s),
    };
    let status = at(job, "status");
    let state = if has_condition(status, "Complete") {
        "Complete"
    } else if has_condition(status, "Failed") {
        "Failed"
    } else if at(job, "metadata.deletionTimestamp").is_string() {
        "Terminating"
    } else if has_condition(status, "Suspended") {
        "Suspended"
    } else if has_condition(status, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(status, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let [n, im] = container_cells(list(job, "spec.template.spec.containers"));
    vec![
        json!(text(job, "metadata.name")),
        json!(state),
        json!(completions),
        json!(duration),
        created(job, now),
        n,
        im,
        json!(format_label_selector(at(job, "spec.selector"))),
    ]
}

fn service_row(svc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = at(svc, "spec");
    let svc_type = text(spec, "type");
    let cluster_ip = list(spec, "clusterIPs")
        .first()
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| text(spec, "clusterIP"));
    let external: Vec<String> = list(spec, "externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external_ip = match svc_type.as_str() {
        "ClusterIP" | "NodePort" => or(external.join(","), "<none>"),
        "LoadBalancer" => {
            let lb: BTreeSet<String> = list(svc, "status.loadBalancer.ingress")
                .iter()
                .filter_map(|i| {
                    let ip = text(i, "ip");
                    if !ip.is_empty() {
                        Some(ip)
                    } else {
                        Some(text(i, "hostname")).filter(|h| !h.is_empty())
                    }
                })
                .collect();
            let mut all: Vec<String> = lb.into_iter().collect();
            all.extend(external);
            or(all.join(","), "<pending>")
        }
        "ExternalName" => text(spec, "externalName"),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = list(spec, "ports")
        .iter()
        .map(|p| {
            let np = num(p, "nodePort");
            if np > 0 {
                format!("{}:{np}/{}", num(p, "port"), text(p, "protocol"))
            } else {
                format!("{}/{}", num(p, "port"), text(p, "protocol"))
            }
        })
        .collect();
    vec![
        json!(text(svc, "metadata.name")),
        json!(svc_type),
        json!(or(cluster_ip, "<none>")),
        json!(external_ip),
        json!(or(ports.join(","), "<none>")),
        created(svc, now),
        json!(format_labels(at(spec, "selector"))),
    ]
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `formatEndpoints`: up to three `ip:port` entries, then a count of the rest.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut out = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs = list(ss, "addresses");
        let ports = list(ss, "ports");
        if ports.is_empty() {
            for a in addrs {
                if out.len() < 3 {
                    out.push(text(a, "ip"));
                }
                count += 1;
            }
        } else {
            for p in ports {
                for a in addrs {
                    if out.len() < 3 {
                        out.push(join_host_port(&text(a, "ip"), num(p, "port")));
                    }
                    count += 1;
                }
            }
        }
    }
    if count > 3 {
        format!("{} + {} more...", out.join(","), count - 3)
    } else {
        out.join(",")
    }
}

fn node_row(node: &Value, now: OffsetDateTime) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = list(node, "status.conditions")
        .iter()
        .rev()
        .find(|c| text(c, "type") == "Ready")
    {
        status.push(if text(c, "status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if at(node, "spec.unschedulable").as_bool() == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: BTreeSet<String> = BTreeSet::new();
    for (k, v) in at(node, "metadata.labels")
        .as_object()
        .into_iter()
        .flatten()
    {
        if let Some(role) = k
            .strip_prefix("node-role.kubernetes.io/")
            .filter(|r| !r.is_empty())
        {
            roles.insert(role.to_string());
        } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
            roles.insert(v.as_str().unwrap_or_default().to_string());
        }
    }
    let address = |t: &str| {
        list(node, "status.addresses")
            .iter()
            .find(|a| text(a, "type") == t)
            .map(|a| text(a, "address"))
            .unwrap_or_else(|| "<none>".into())
    };
    let info = at(node, "status.nodeInfo");
    vec![
        json!(text(node, "metadata.name")),
        json!(status.join(",")),
        json!(or(
            roles.into_iter().collect::<Vec<_>>().join(","),
            "<none>"
        )),
        created(node, now),
        json!(text(info, "kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or(text(info, "osImage"), "<unknown>")),
        json!(or(text(info, "kernelVersion"), "<unknown>")),
        json!(or(text(info, "containerRuntimeVersion"), "<unknown>")),
    ]
}

fn event_row(info: &ResourceInfo, ev: &Value, now: OffsetDateTime) -> Vec<Value> {
    let v1 = info.group == "events.k8s.io";
    let pick = |core: &str, new: &str| at(ev, if v1 { new } else { core });
    let first_ts = pick("firstTimestamp", "deprecatedFirstTimestamp");
    let first = if first_ts.is_string() {
        age(Some(first_ts), now)
    } else {
        age(ev.get("eventTime"), now)
    };
    let last_ts = pick("lastTimestamp", "deprecatedLastTimestamp");
    let mut last = if last_ts.is_string() {
        age(Some(last_ts), now)
    } else {
        first.clone()
    };
    let mut count = pick("count", "deprecatedCount").as_i64().unwrap_or(0);
    let series = at(ev, "series");
    if series.is_object() {
        last = age(series.get("lastObservedTime"), now);
        count = num(series, "count");
    } else if count == 0 {
        count = 1;
    }
    let involved = pick("involvedObject", "regarding");
    let kind = text(involved, "kind").to_lowercase();
    let target = match text(involved, "name") {
        n if n.is_empty() => kind,
        n => format!("{kind}/{n}"),
    };
    let source = pick("source", "deprecatedSource");
    let component = or(
        text(source, "component"),
        &text(
            ev,
            if v1 {
                "reportingController"
            } else {
                "reportingComponent"
            },
        ),
    );
    let host = or(text(source, "host"), &text(ev, "reportingInstance"));
    let source_str = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(text(ev, "type")),
        json!(text(ev, "reason")),
        json!(target),
        json!(text(involved, "fieldPath")),
        json!(source_str),
        json!(pick("message", "note").as_str().unwrap_or_default().trim()),
        json!(first),
        json!(count),
        json!(text(ev, "metadata.name")),
    ]
}

fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|x| x.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, s)| *s)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class_of(obj: &Value) -> String {
    match at(obj, "metadata.annotations")
        .get("volume.beta.kubernetes.io/storage-class")
        .and_then(Value::as_str)
    {
        Some(c) => c.to_string(),
        None => text(obj, "spec.storageClassName"),
    }
}

fn pv_row(pv: &Value, now: OffsetDateTime) -> Vec<Value> {
    let claim = match at(pv, "spec.claimRef") {
        Value::Null => String::new(),
        r => format!("{}/{}", text(r, "namespace"), text(r, "name")),
    };
    let phase = if at(pv, "metadata.deletionTimestamp").is_string() {
        "Terminating".into()
    } else {
        text(pv, "status.phase")
    };
    vec![
        json!(text(pv, "metadata.name")),
        json!(quantity(at(pv, "spec.capacity.storage"))),
        json!(access_modes(list(pv, "spec.accessModes"))),
        json!(text(pv, "spec.persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class_of(pv)),
        json!(or(text(pv, "spec.volumeAttributesClassName"), "<unset>")),
        json!(text(pv, "status.reason")),
        created(pv, now),
        json!(or(text(pv, "spec.volumeMode"), "<unset>")),
    ]
}

fn pvc_row(pvc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let phase = if at(pvc, "metadata.deletionTimestamp").is_string() {
        "Terminating".into()
    } else {
        text(pvc, "status.phase")
    };
    let volume = text(pvc, "spec.volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, "status.capacity.storage")),
            access_modes(list(pvc, "status.accessModes")),
        )
    };
    vec![
        json!(text(pvc, "metadata.name")),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class_of(pvc)),
        json!(or(text(pvc, "spec.volumeAttributesClassName"), "<unset>")),
        created(pvc, now),
        json!(or(text(pvc, "spec.volumeMode"), "<unset>")),
    ]
}

/// `formatHPAMetrics`: `cpu: 40%/80%` style targets, two at most.
fn hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let status_of = |i: usize, key: &str| {
        statuses
            .get(i)
            .map(|s| at(s, key))
            .filter(|v| v.is_object())
    };
    let mut out = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let entry = match text(m, "type").as_str() {
            t @ ("External" | "Object") => {
                let key = if t == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(m, &format!("{key}.target"));
                if target.get("averageValue").is_some_and(|v| !v.is_null()) {
                    let current = status_of(i, key)
                        .and_then(|s| s.pointer("/current/averageValue"))
                        .map(quantity)
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{current}/{} (avg)", quantity(at(target, "averageValue")))
                } else {
                    let current = status_of(i, key)
                        .map(|s| quantity(at(s, "current.value")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{current}/{}", quantity(at(target, "value")))
                }
            }
            "Pods" => {
                let current = status_of(i, "pods")
                    .map(|s| quantity(at(s, "current.averageValue")))
                    .unwrap_or_else(|| "<unknown>".into());
                format!("{current}/{}", quantity(at(m, "pods.target.averageValue")))
            }
            t @ ("Resource" | "ContainerResource") => {
                let key = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = at(m, key);
                let target = at(src, "target");
                let rname = text(src, "name");
                if target.get("averageValue").is_some_and(|v| !v.is_null()) {
                    let current = status_of(i, key)
                        .map(|s| quantity(at(s, "current.averageValue")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!(
                        "{rname}: {current}/{}",
                        quantity(at(target, "averageValue"))
                    )
                } else {
                    let current = status_of(i, key)
                        .and_then(|s| s.pointer("/current/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<unknown>".into());
                    let target = target
                        .get("averageUtilization")
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{rname}: {current}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        out.push(entry);
    }
    if out.len() > 2 {
        let more = out.len() - 2;
        out.truncate(2);
        return format!("{} + {more} more...", out.join(", "));
    }
    out.join(", ")
}

/// Row conditions upstream attaches to pods that have finished.
fn row_conditions(info: &ResourceInfo, obj: &Value) -> Option<Value> {
    if info.group.is_empty() && info.kind == "Pod" {
        match text(obj, "status.phase").as_str() {
            "Succeeded" => {
                return Some(
                    json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
                )
            }
            "Failed" => {
                return Some(
                    json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
                )
            }
            _ => {}
        }
    }
    None
}

/// The row's `object`: `None` omits it, `Object` embeds the object, anything else (the
/// default, `Metadata`) a PartialObjectMetadata.
fn row_object(obj: &Value, include_object: &str) -> Option<Value> {
    match include_object {
        "None" => None,
        "Object" => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// The `meta.k8s.io/v1` Table for a list (or single object) response.
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    include_object: &str,
    now: OffsetDateTime,
    resource_version: Option<&str>,
    continue_token: Option<&str>,
) -> Value {
    let printer = info.ops.printer();
    let rows: Vec<Value> = objs
        .iter()
        .map(|obj| {
            let cells = match printer {
                Some(p) => p.cells(obj, now),
                None => row(info, obj, now),
            };
            let mut r = json!({ "cells": cells });
            if let Some(c) = row_conditions(info, obj) {
                r["conditions"] = c;
            }
            if let Some(o) = row_object(obj, include_object) {
                r["object"] = o;
            }
            r
        })
        .collect();
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = resource_version.filter(|s| !s.is_empty()) {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if let Some(c) = continue_token.filter(|s| !s.is_empty()) {
        metadata.insert("continue".into(), json!(c));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": match printer {
            Some(p) => Value::Array(p.columns()),
            None => serde_json::to_value(columns(info)).unwrap_or_else(|_| json!([])),
        },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-01-10 12:00:00 UTC);

    fn info(api_version: &str, kind: &str) -> ResourceInfo {
        Registry::builtin()
            .by_kind(api_version, kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind}"))
    }

    fn names(info: &ResourceInfo) -> Vec<String> {
        columns(info).iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn human_durations() {
        let d = |s: i64| human_duration(time::Duration::seconds(s));
        assert_eq!(d(-5), "<invalid>");
        assert_eq!(d(-1), "0s");
        assert_eq!(d(5), "5s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(182), "3m2s");
        assert_eq!(d(180), "3m");
        assert_eq!(d(45 * 60), "45m");
        assert_eq!(d(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(d(10 * 3600), "10h");
        assert_eq!(d(2 * 86400 + 3 * 3600), "2d3h");
        assert_eq!(d(30 * 86400), "30d");
        assert_eq!(d(3 * 365 * 86400 + 10 * 86400), "3y10d");
        assert_eq!(d(10 * 365 * 86400), "10y");
        assert_eq!(age(None, NOW), "<unknown>");
        assert_eq!(age(Some(&json!("2024-01-10T11:59:55Z")), NOW), "5s");
    }

    #[test]
    fn pod_columns_and_status() {
        let pods = info("v1", "Pod");
        assert_eq!(
            names(&pods),
            vec![
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let cols = columns(&pods);
        assert_eq!(cols[0].format, "name");
        assert!(cols[0]
            .description
            .starts_with("Name must be unique within a namespace."));
        assert_eq!(cols[5].priority, 1);
        let running = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-10T11:57:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}], "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2024-01-10T11:59:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            row(&pods, &running, NOW),
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (60s ago)"),
                json!("3m"),
                json!("10.42.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}}]}});
        assert_eq!(row(&pods, &init, NOW)[2], "Init:1/2");
        let init_fail = json!({"spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]},
            "status": {"initContainerStatuses": [{"name": "i1", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(row(&pods, &init_fail, NOW)[2], "Init:ImagePullBackOff");
        let done = json!({"spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(row(&pods, &done, NOW)[2], "Completed");
        let t = table(&pods, &[done], "Metadata", NOW, Some("5"), None);
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-10T11:00:00Z"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}});
        assert_eq!(row(&pods, &deleting, NOW)[2], "Terminating");
        let pending = json!({"metadata": {}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        assert_eq!(
            row(&pods, &pending, NOW)[..5],
            [
                json!(""),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>")
            ]
        );
        let sidecar = json!({"spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "s", "started": true, "ready": true, "state": {"running": {}}}],
                "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {}}}]}});
        assert_eq!(
            row(&pods, &sidecar, NOW)[1..3],
            [json!("2/2"), json!("Running")]
        );
    }

    #[test]
    fn workloads() {
        let d = info("apps/v1", "Deployment");
        assert_eq!(
            names(&d),
            vec![
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let dep = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-08T09:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            row(&d, &dep, NOW),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2d3h"),
                json!("a,b"),
                json!("nginx,busybox"),
                json!("app=web")
            ]
        );
        let rs = info("apps/v1", "ReplicaSet");
        assert_eq!(
            names(&rs),
            vec![
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let sts = info("apps/v1", "StatefulSet");
        assert_eq!(
            names(&sts),
            vec!["Name", "Ready", "Age", "Containers", "Images"]
        );
        let ds = info("apps/v1", "DaemonSet");
        assert_eq!(
            names(&ds)[1..8],
            [
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age"
            ]
        );
        assert_eq!(
            row(
                &ds,
                &json!({"spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}}}),
                NOW
            )[6],
            "os=linux"
        );

        let jobs = info("batch/v1", "Job");
        assert_eq!(
            names(&jobs),
            vec![
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let job = json!({"metadata": {"name": "pi"}, "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
            "status": {"succeeded": 1, "startTime": "2024-01-10T11:00:00Z", "completionTime": "2024-01-10T11:00:42Z", "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            row(&jobs, &job, NOW)[..4],
            [json!("pi"), json!("Complete"), json!("1/1"), json!("42s")]
        );
        let running =
            json!({"spec": {"parallelism": 3}, "status": {"startTime": "2024-01-10T11:59:00Z"}});
        assert_eq!(
            row(&jobs, &running, NOW)[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("60s")]
        );
        let cj = info("batch/v1", "CronJob");
        assert_eq!(
            names(&cj)[..7],
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age"
            ]
        );
        let c = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/1 * * * *", "suspend": false}, "status": {"active": [{}], "lastScheduleTime": "2024-01-10T11:59:30Z"}});
        assert_eq!(
            row(&cj, &c, NOW)[1..6],
            [
                json!("*/1 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("30s")
            ]
        );
    }

    #[test]
    fn services_nodes_and_more() {
        let svc = info("v1", "Service");
        assert_eq!(
            names(&svc),
            vec![
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let s = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        assert_eq!(
            row(&svc, &s, NOW)[1..5],
            [
                json!("NodePort"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        let lb =
            json!({"spec": {"type": "LoadBalancer", "ports": []}, "status": {"loadBalancer": {}}});
        assert_eq!(
            row(&svc, &lb, NOW)[2..5],
            [json!("<none>"), json!("<pending>"), json!("<none>")]
        );

        let nodes = info("v1", "Node");
        assert_eq!(
            names(&nodes)[..5],
            ["Name", "Status", "Roles", "Age", "Version"]
        );
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}, "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}});
        let r = row(&nodes, &n, NOW);
        assert_eq!(
            r[1..3],
            [
                json!("NotReady,SchedulingDisabled"),
                json!("control-plane,master")
            ]
        );
        assert_eq!(
            r[4..8],
            [
                json!("v1.33.0"),
                json!("127.0.0.1"),
                json!("<none>"),
                json!("<unknown>")
            ]
        );
        assert_eq!(row(&nodes, &json!({}), NOW)[1], "Unknown");

        let ep = info("v1", "Endpoints");
        let e = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::1"}, {"ip": "10.0.0.4"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            row(&ep, &e, NOW)[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::1]:80 + 1 more..."
        );
        assert_eq!(row(&ep, &json!({}), NOW)[1], "<none>");

        let cm = info("v1", "ConfigMap");
        assert_eq!(
            row(
                &cm,
                &json!({"data": {"a": "1"}, "binaryData": {"b": ""}}),
                NOW
            )[1],
            2
        );
        let sec = info("v1", "Secret");
        assert_eq!(names(&sec), vec!["Name", "Type", "Data", "Age"]);
        let ns = info("v1", "Namespace");
        assert_eq!(
            row(
                &ns,
                &json!({"metadata": {"name": "d"}, "status": {"phase": "Active"}}),
                NOW
            ),
            vec![json!("d"), json!("Active"), json!("<unknown>")]
        );

        let ev = info("v1", "Event");
        assert_eq!(
            names(&ev),
            vec![
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let e = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Pulled", "message": " done ", "count": 3,
            "involvedObject": {"kind": "Pod", "name": "web"}, "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-01-10T11:50:00Z", "lastTimestamp": "2024-01-10T11:59:00Z"});
        assert_eq!(
            row(&ev, &e, NOW),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!(""),
                json!("kubelet, n1"),
                json!("done"),
                json!("10m"),
                json!(3),
                json!("e")
            ]
        );

        let pvc = info("v1", "PersistentVolumeClaim");
        let c = json!({"metadata": {"name": "c"}, "spec": {"volumeName": "pv1", "storageClassName": "local", "volumeMode": "Filesystem"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
        assert_eq!(
            row(&pvc, &c, NOW)[1..7],
            [
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("local"),
                json!("<unset>")
            ]
        );

        let hpa = info("autoscaling/v2", "HorizontalPodAutoscaler");
        let h = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}});
        assert_eq!(
            row(&hpa, &h, NOW)[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 40%/80%"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );

        let role = info("rbac.authorization.k8s.io/v1", "ClusterRole");
        assert_eq!(names(&role), vec!["Name", "Created At"]);
        assert_eq!(
            row(
                &role,
                &json!({"metadata": {"name": "r", "creationTimestamp": "2024-01-01T00:00:00Z"}}),
                NOW
            )[1],
            "2024-01-01T00:00:00Z"
        );
        let rb = info("rbac.authorization.k8s.io/v1", "RoleBinding");
        let b = json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "a"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "d"}]});
        assert_eq!(
            row(&rb, &b, NOW)[1..6],
            [
                json!("Role/r"),
                json!("<unknown>"),
                json!("a"),
                json!(""),
                json!("d:sa")
            ]
        );
        let sc = info("storage.k8s.io/v1", "StorageClass");
        let c = json!({"metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "x"});
        assert_eq!(
            row(&sc, &c, NOW)[..5],
            [
                json!("local (default)"),
                json!("x"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
        let lease = info("coordination.k8s.io/v1", "Lease");
        assert_eq!(names(&lease), vec!["Name", "Holder", "Age"]);
        let slice = info("discovery.k8s.io/v1", "EndpointSlice");
        let s = json!({"addressType": "IPv4", "ports": [{"port": 80}, {"name": "x"}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert_eq!(
            row(&slice, &s, NOW)[1..4],
            [json!("IPv4"), json!("80,x"), json!("10.0.0.1")]
        );
        let pc = info("scheduling.k8s.io/v1", "PriorityClass");
        assert_eq!(
            names(&pc),
            vec!["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
        );
    }

    #[test]
    fn table_object() {
        let cms = info("v1", "ConfigMap");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "d"}, "data": {"k": "v"}});
        let t = table(
            &cms,
            std::slice::from_ref(&cm),
            "Metadata",
            NOW,
            Some("42"),
            Some("tok"),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(
            t["columnDefinitions"][1],
            json!({"name": "Data", "type": "integer", "format": "", "description": t["columnDefinitions"][1]["description"], "priority": 0})
        );
        assert_eq!(t["rows"][0]["cells"], json!(["a", 1, "<unknown>"]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "a", "namespace": "d"}})
        );
        let t = table(&cms, std::slice::from_ref(&cm), "Object", NOW, None, None);
        assert_eq!(t["rows"][0]["object"], cm);
        assert_eq!(t["metadata"], json!({}));
        let t = table(&cms, &[cm], "None", NOW, None, None);
        assert!(t["rows"][0].get("object").is_none());
        let other = info("apps/v1", "ControllerRevision");
        assert_eq!(names(&other), vec!["Name", "Controller", "Revision", "Age"]);
        let rev = json!({"metadata": {"name": "r", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": true}]}, "revision": 2});
        assert_eq!(
            row(&other, &rev, NOW)[1..3],
            [json!("daemonset.apps/ds"), json!(2)]
        );
    }
}
