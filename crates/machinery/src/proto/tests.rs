use std::collections::{BTreeMap, BTreeSet};

use k8s_pb::api::{
    apps::v1 as apps, authorization::v1 as authz, batch::v1 as batch, coordination::v1 as coord,
    core::v1 as core,
};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{json, Value};

use super::table::Special;
use super::*;
use crate::Registry;

/// Request bodies captured from kubectl: `NAME.pb` sent by kubectl 1.33 (protobuf), `NAME.json`
/// by kubectl 1.31 (JSON) for the same command line (`testdata/capture.py` regenerates them).
macro_rules! golden {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("testdata/", $name, ".pb")).as_slice(), include_str!(concat!("testdata/", $name, ".json")))),*]
    };
}

const GOLDEN: &[(&str, &[u8], &str)] = golden!(
    "cani",
    "clusterrole",
    "clusterrole-agg",
    "clusterrolebinding",
    "configmap",
    "cronjob",
    "deployment",
    "deployment-zero",
    "drain-delete",
    "ingress",
    "job",
    "namespace",
    "pdb-int",
    "pdb-pct",
    "priorityclass",
    "quota",
    "role",
    "rolebinding",
    "secret",
    "secret-docker",
    "serviceaccount",
    "svc-clusterip",
    "svc-externalname",
    "svc-headless",
    "svc-lb",
    "svc-nodeport",
    "token",
    "whoami",
);

#[test]
fn proto_golden_kubectl_bodies_decode_to_kubectl_json() {
    let mut failures = Vec::new();
    for (name, pb, json) in GOLDEN {
        let want: Value = serde_json::from_str(json).expect("fixture json");
        match decode(pb) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}:\n  got  {got}\n  want {want}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn proto_golden_reencode_is_byte_identical() {
    let mut failures = Vec::new();
    for (name, pb, _) in GOLDEN {
        let Ok(decoded) = decode(pb) else { continue };
        match encode(&decoded) {
            Ok(bytes) if bytes.as_slice() == *pb => {}
            Ok(bytes) => failures.push(format!("{name}:\n  got  {bytes:?}\n  want {pb:?}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Wraps a message the way client-go does: magic, then `runtime.Unknown`.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// Decodes a prost-encoded (k8s-pb) object and checks that it re-encodes to the same JSON.
fn pb(api_version: &str, kind: &str, msg: &impl prost::Message) -> Value {
    let value = decode(&envelope(api_version, kind, msg.encode_to_vec())).expect("decodes");
    let again = decode(&encode(&value).expect("encodes")).expect("re-decodes");
    assert_eq!(again, value, "encode/decode round trip");
    if let Some(r) = Registry::builtin().by_kind(api_version, kind) {
        let typed = r
            .ops
            .roundtrip(value.clone())
            .expect("k8s-openapi accepts it");
        assert_eq!(
            without_empty(&typed),
            without_empty(&value),
            "k8s-openapi round trip"
        );
    }
    value
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

fn q(x: &str) -> Quantity {
    Quantity { string: s(x) }
}

fn strs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
}

fn time(seconds: i64, nanos: i32) -> meta::Time {
    meta::Time {
        seconds: Some(seconds),
        nanos: Some(nanos),
    }
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s("default"),
        ..Default::default()
    })
}

fn container(name: &str, image: &str) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        ..Default::default()
    }
}

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000;

#[test]
fn proto_deployment_with_metadata_quantities_and_intstr() {
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            namespace: s("default"),
            uid: s("8a2e4c2e-0000-4000-8000-000000000001"),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(time(T0, 999)),
            labels: strs(&[("app", "web")]),
            annotations: strs(&[("note", "x")]),
            owner_references: vec![meta::OwnerReference {
                api_version: s("v1"),
                kind: s("ConfigMap"),
                name: s("owner"),
                uid: s("u-1"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            finalizers: vec!["example.com/f".into()],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("apps/v1"),
                time: Some(time(T0, 0)),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:spec":{"f:replicas":{}}}"#.to_vec()),
                }),
                subresource: None,
            }],
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: strs(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: strs(&[("app", "web")]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        ports: vec![core::ContainerPort {
                            name: s("http"),
                            container_port: Some(80),
                            protocol: s("TCP"),
                            host_port: Some(0),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
                            requests: quantities(&[("cpu", "250m")]),
                            claims: vec![],
                        }),
                        env: vec![
                            core::EnvVar {
                                name: s("A"),
                                value: s("1"),
                                value_from: None,
                            },
                            core::EnvVar {
                                name: s("POD_IP"),
                                value: None,
                                value_from: Some(core::EnvVarSource {
                                    field_ref: Some(core::ObjectFieldSelector {
                                        api_version: None,
                                        field_path: s("status.podIP"),
                                    }),
                                    ..Default::default()
                                }),
                            },
                        ],
                        stdin: Some(false),
                        image_pull_policy: s(""),
                        ..container("web", "nginx")
                    }],
                    restart_policy: s(""),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: s("25%"),
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: None,
                    }),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            ..Default::default()
        }),
        status: None,
    };
    let want = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {
            "name": "web", "namespace": "default", "uid": "8a2e4c2e-0000-4000-8000-000000000001",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "web"}, "annotations": {"note": "x"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1", "controller": true, "blockOwnerDeletion": false}],
            "finalizers": ["example.com/f"],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "time": "2023-11-14T22:13:20Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web", "image": "nginx",
                        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}}
                    }],
                    "terminationGracePeriodSeconds": 30,
                    "automountServiceAccountToken": false
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            "revisionHistoryLimit": 10
        },
        "status": {}
    });
    assert_eq!(pb("apps/v1", "Deployment", &d), want);
}

#[test]
fn proto_configmap_and_secret_bytes_are_base64() {
    let cm = core::ConfigMap {
        metadata: meta("cm"),
        immutable: Some(false),
        data: strs(&[("k", "v"), ("empty", "")]),
        binary_data: [("bin".to_string(), vec![0u8, 0xff, 0x10])].into(),
    };
    let want = json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "cm", "namespace": "default", "creationTimestamp": null},
        "immutable": false, "data": {"empty": "", "k": "v"}, "binaryData": {"bin": "AP8Q"}});
    assert_eq!(pb("v1", "ConfigMap", &cm), want);

    let secret = core::Secret {
        metadata: meta("s"),
        immutable: None,
        data: [("k".to_string(), vec![0u8, 1]), ("e".to_string(), vec![])].into(),
        string_data: strs(&[("s", "v")]),
        r#type: s("Opaque"),
    };
    let want = json!({"kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "s", "namespace": "default", "creationTimestamp": null},
        "data": {"e": "", "k": "AAE="}, "stringData": {"s": "v"}, "type": "Opaque"});
    assert_eq!(pb("v1", "Secret", &secret), want);
}

#[test]
fn proto_event_and_lease_times() {
    let event = core::Event {
        metadata: meta("e1"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("p"),
            namespace: s("default"),
            ..Default::default()
        }),
        reason: s("Started"),
        message: s("hi"),
        source: Some(core::EventSource {
            component: s("kubelet"),
            host: s(""),
        }),
        first_timestamp: Some(time(0, 0)),
        count: Some(1),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime {
            seconds: Some(T0),
            nanos: Some(123_456_789),
        }),
        action: s("Pulled"),
        ..Default::default()
    };
    let want = json!({"kind": "Event", "apiVersion": "v1",
        "metadata": {"name": "e1", "namespace": "default", "creationTimestamp": null},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Started", "message": "hi", "source": {"component": "kubelet"},
        "firstTimestamp": "1970-01-01T00:00:00Z", "lastTimestamp": null, "count": 1, "type": "Normal",
        "eventTime": "2023-11-14T22:13:20.123456Z", "action": "Pulled",
        "reportingComponent": "", "reportingInstance": ""});
    assert_eq!(pb("v1", "Event", &event), want);

    let lease = coord::Lease {
        metadata: meta("l"),
        spec: Some(coord::LeaseSpec {
            holder_identity: s(""),
            lease_duration_seconds: Some(15),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(T0),
                nanos: None,
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let want = json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "l", "namespace": "default", "creationTimestamp": null},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 15, "acquireTime": "2023-11-14T22:13:20.000000Z", "leaseTransitions": 0}});
    assert_eq!(pb("coordination.k8s.io/v1", "Lease", &lease), want);
}

#[test]
fn proto_controller_revision_embeds_raw_json() {
    let cr = apps::ControllerRevision {
        metadata: meta("cr"),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"template":{"x":1}}}"#.to_vec()),
        }),
        revision: Some(3),
    };
    let want = json!({"kind": "ControllerRevision", "apiVersion": "apps/v1",
        "metadata": {"name": "cr", "namespace": "default", "creationTimestamp": null},
        "data": {"spec": {"template": {"x": 1}}}, "revision": 3});
    assert_eq!(pb("apps/v1", "ControllerRevision", &cr), want);

    let bad = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"{nope".to_vec()),
        }),
        ..cr
    };
    let err = decode(&envelope(
        "apps/v1",
        "ControllerRevision",
        bad.encode_to_vec(),
    ))
    .expect_err("refused");
    assert!(matches!(err, ProtoError::InvalidValue(_)), "{err}");
}

fn pod_template(restart: &str) -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: None,
        spec: Some(core::PodSpec {
            containers: vec![container("c", "busybox")],
            restart_policy: s(restart),
            ..Default::default()
        }),
    })
}

fn pod_template_json(restart: &str) -> Value {
    json!({"metadata": {"creationTimestamp": null},
           "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {}}], "restartPolicy": restart}})
}

#[test]
fn proto_job_and_cronjob() {
    let job = batch::Job {
        metadata: meta("j"),
        spec: Some(batch::JobSpec {
            parallelism: Some(2),
            completions: Some(4),
            backoff_limit: Some(0),
            completion_mode: s("Indexed"),
            suspend: Some(false),
            ttl_seconds_after_finished: Some(100),
            template: pod_template("Never"),
            ..Default::default()
        }),
        status: Some(batch::JobStatus {
            start_time: Some(time(T0, 0)),
            active: Some(0),
            conditions: vec![batch::JobCondition {
                r#type: s("Complete"),
                status: s("True"),
                last_transition_time: Some(time(T0, 0)),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let want = json!({"kind": "Job", "apiVersion": "batch/v1",
        "metadata": {"name": "j", "namespace": "default", "creationTimestamp": null},
        "spec": {"parallelism": 2, "completions": 4, "backoffLimit": 0, "ttlSecondsAfterFinished": 100,
                 "completionMode": "Indexed", "suspend": false, "template": pod_template_json("Never")},
        "status": {"conditions": [{"type": "Complete", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2023-11-14T22:13:20Z"}],
                   "startTime": "2023-11-14T22:13:20Z"}});
    assert_eq!(pb("batch/v1", "Job", &job), want);

    let cron = batch::CronJob {
        metadata: meta("cj"),
        spec: Some(batch::CronJobSpec {
            schedule: s("*/5 * * * *"),
            time_zone: s("Etc/UTC"),
            concurrency_policy: s("Forbid"),
            suspend: Some(true),
            successful_jobs_history_limit: Some(3),
            job_template: Some(batch::JobTemplateSpec {
                metadata: None,
                spec: Some(batch::JobSpec {
                    template: pod_template("OnFailure"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let want = json!({"kind": "CronJob", "apiVersion": "batch/v1",
        "metadata": {"name": "cj", "namespace": "default", "creationTimestamp": null},
        "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid", "suspend": true,
                 "jobTemplate": {"metadata": {"creationTimestamp": null}, "spec": {"template": pod_template_json("OnFailure")}},
                 "successfulJobsHistoryLimit": 3},
        "status": {}});
    assert_eq!(pb("batch/v1", "CronJob", &cron), want);
}

#[test]
fn proto_service_acronym_names_and_target_ports() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let svc = core::Service {
        metadata: meta("svc"),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "http",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "web",
                    81,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("web"),
                    },
                ),
            ],
            selector: strs(&[("app", "x")]),
            cluster_ip: s("10.43.0.10"),
            cluster_ips: vec!["10.43.0.10".into()],
            r#type: s("ClusterIP"),
            session_affinity: s("None"),
            ip_families: vec!["IPv4".into()],
            ip_family_policy: s("SingleStack"),
            internal_traffic_policy: s("Cluster"),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus {
                ingress: vec![core::LoadBalancerIngress {
                    ip: s("1.2.3.4"),
                    ip_mode: s("VIP"),
                    ..Default::default()
                }],
            }),
            conditions: vec![],
        }),
    };
    let want = json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "svc", "namespace": "default", "creationTimestamp": null},
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                      {"name": "web", "protocol": "TCP", "port": 81, "targetPort": "web"}],
            "selector": {"app": "x"}, "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "type": "ClusterIP",
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}}});
    assert_eq!(pb("v1", "Service", &svc), want);
}

#[test]
fn proto_pod_inline_volume_sources_and_ips() {
    let pod = core::Pod {
        metadata: meta("p"),
        spec: Some(core::PodSpec {
            volumes: vec![
                core::Volume {
                    name: s("cfg"),
                    volume_source: Some(core::VolumeSource {
                        config_map: Some(core::ConfigMapVolumeSource {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("cm"),
                            }),
                            default_mode: Some(420),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
                core::Volume {
                    name: s("tmp"),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource {
                            medium: s(""),
                            size_limit: Some(q("1Gi")),
                        }),
                        ..Default::default()
                    }),
                },
            ],
            containers: vec![core::Container {
                volume_mounts: vec![core::VolumeMount {
                    name: s("cfg"),
                    mount_path: s("/etc/cfg"),
                    read_only: Some(true),
                    ..Default::default()
                }],
                ..container("c", "x")
            }],
            node_name: s("n1"),
            security_context: Some(core::PodSecurityContext {
                supplemental_groups: vec![1, 2],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            host_ip: s("10.0.0.1"),
            host_ips: vec![core::HostIp { ip: s("10.0.0.1") }],
            pod_ip: s("10.42.0.5"),
            pod_ips: vec![core::PodIp { ip: s("10.42.0.5") }],
            // A 1.35 field this schema does not know: skipped.
            extended_resource_claim_status: Some(Default::default()),
            ..Default::default()
        }),
    };
    let want = json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "p", "namespace": "default", "creationTimestamp": null},
        "spec": {
            "volumes": [{"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            "containers": [{"name": "c", "image": "x", "resources": {}, "volumeMounts": [{"name": "cfg", "readOnly": true, "mountPath": "/etc/cfg"}]}],
            "nodeName": "n1",
            "securityContext": {"supplementalGroups": [1, 2]}
        },
        "status": {"phase": "Running", "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
                   "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}]}});
    assert_eq!(pb("v1", "Pod", &pod), want);
}

#[test]
fn proto_subject_access_review_extra_values_are_arrays() {
    let sar = authz::SubjectAccessReview {
        metadata: None,
        spec: Some(authz::SubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("get"),
                resource: s("pods"),
                ..Default::default()
            }),
            user: s("u"),
            groups: vec!["g".into()],
            extra: [
                (
                    "scopes".to_string(),
                    authz::ExtraValue {
                        items: vec!["a".into(), "b".into()],
                    },
                ),
                ("none".to_string(), authz::ExtraValue { items: vec![] }),
            ]
            .into(),
            ..Default::default()
        }),
        status: None,
    };
    let want = json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"},
                 "user": "u", "groups": ["g"], "extra": {"none": null, "scopes": ["a", "b"]}},
        "status": {"allowed": false}});
    assert_eq!(
        pb("authorization.k8s.io/v1", "SubjectAccessReview", &sar),
        want
    );
}

/// Drops `null`s, empty strings and empty lists and objects: upstream's JSON has `null` for
/// unset non-omitempty fields where k8s-openapi has nothing, `""` (a required `[]byte`, such
/// as a CSR's `spec.request`), `[]` or `{}` (required fields).
fn without_empty(v: &Value) -> Value {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_str() == Some("")
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(Map::is_empty)
    };
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), without_empty(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_empty).collect()),
        other => other.clone(),
    }
}

/// Every served kind decodes, and what it decodes to survives k8s-openapi unchanged: every
/// name and type the table produces is one the typed API knows.
#[test]
fn proto_every_served_kind_decodes_to_typed_json() {
    let registry = Registry::builtin();
    for r in registry.resources() {
        let api_version = r.api_version();
        assert!(
            lookup_kind(&api_version, r.kind).is_some(),
            "{api_version} {} not in the protobuf schema",
            r.kind
        );
        let zero = decode(&envelope(&api_version, r.kind, vec![])).expect("empty object decodes");
        let typed = r
            .ops
            .roundtrip(zero.clone())
            .unwrap_or_else(|e| panic!("{}: {e}: {zero}", r.kind));
        assert_eq!(without_empty(&typed), without_empty(&zero), "{}", r.kind);
        assert_eq!(
            decode(&encode(&zero).expect("encodes")).expect("decodes"),
            zero,
            "{}",
            r.kind
        );
    }
    for (name, pb, _) in GOLDEN {
        let v = decode(pb).expect("decodes");
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        let Some(r) = registry.by_kind(api_version, v["kind"].as_str().unwrap_or_default()) else {
            continue;
        };
        let typed = r
            .ops
            .roundtrip(v.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(without_empty(&typed), without_empty(&v), "{name}");
    }
}

#[test]
fn proto_envelope_errors() {
    assert_eq!(decode(b""), Err(ProtoError::BadMagic));
    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtoError::BadMagic));
    assert_eq!(decode(b"k8s\0"), Err(ProtoError::Empty));
    assert_eq!(
        decode(&envelope("", "Pod", vec![])),
        Err(ProtoError::MissingVersion)
    );
    assert_eq!(
        decode(&envelope("v1", "", vec![])),
        Err(ProtoError::MissingKind)
    );
    assert_eq!(
        decode(&envelope("v1", "Deployment", vec![])),
        Err(ProtoError::UnknownKind {
            api_version: "v1".into(),
            kind: "Deployment".into()
        })
    );
    // DeleteOptions is accepted under any group version, as upstream registers it in each.
    let opts = decode(&envelope("apps/v1", "DeleteOptions", vec![0x08, 5])).expect("decodes");
    assert_eq!(
        opts,
        json!({"kind": "DeleteOptions", "apiVersion": "apps/v1", "gracePeriodSeconds": 5})
    );
}

#[test]
fn proto_malformed_bodies_are_errors_never_panics() {
    let (_, deployment, _) = GOLDEN
        .iter()
        .find(|g| g.0 == "deployment")
        .expect("fixture");
    assert!(matches!(
        decode(&deployment[..deployment.len() - 10]),
        Err(ProtoError::Malformed(_))
    ));
    // Every prefix and a deterministic spray of byte flips: errors or values, no panic.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for (_, pb, _) in GOLDEN {
        for end in 0..pb.len() {
            let _ = decode(&pb[..end]);
        }
        for _ in 0..300 {
            let mut body = pb.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = 4 + (state as usize) % (body.len() - 4);
                body[i] ^= (state >> 32) as u8 | 1;
            }
            let _ = decode(&body);
        }
    }
    // Wrong wire type for a known field (ConfigMap.metadata as a varint).
    let err = decode(&envelope("v1", "ConfigMap", vec![0x08, 1])).expect_err("refused");
    assert!(
        matches!(
            err,
            ProtoError::WrongWireType {
                field: "metadata",
                ..
            }
        ),
        "{err}"
    );
    // Deeply nested groups are refused, not recursed into without bound.
    let raw = [0xcb, 0x06].repeat(200); // start group 105, 200 deep
    assert_eq!(
        decode(&envelope("v1", "ConfigMap", raw)),
        Err(ProtoError::TooDeep)
    );
    // An impossible IntOrString type.
    let pdb = k8s_pb::api::policy::v1::PodDisruptionBudget {
        spec: Some(k8s_pb::api::policy::v1::PodDisruptionBudgetSpec {
            min_available: Some(IntOrString {
                r#type: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&envelope(
            "policy/v1",
            "PodDisruptionBudget",
            pdb.encode_to_vec()
        )),
        Err(ProtoError::InvalidValue(_))
    ));
}

#[test]
fn proto_wire_details_match_protobuf_semantics() {
    let name = |n: &str| {
        let mut m = vec![0x0a, n.len() as u8];
        m.extend(n.as_bytes());
        m
    };
    // A singular message twice merges; unknown fields (tag 99) are skipped.
    let mut raw = vec![0x0a];
    let first = name("a");
    raw.push(first.len() as u8);
    raw.extend(&first);
    raw.extend([0x98, 0x06, 0x01]); // field 99, varint
    raw.extend([0x0a, 0x09, 0x1a, 0x07]);
    raw.extend(b"default");
    let v = decode(&envelope("v1", "ConfigMap", raw)).expect("decodes");
    assert_eq!(
        v["metadata"],
        json!({"name": "a", "namespace": "default", "creationTimestamp": null})
    );

    // Repeated scalars are accepted packed as well as unpacked.
    let unpacked = core::PodSecurityContext {
        supplemental_groups: vec![1, 300],
        ..Default::default()
    }
    .encode_to_vec();
    let packed = vec![0x22, 0x03, 0x01, 0xac, 0x02];
    assert_eq!(unpacked, vec![0x20, 0x01, 0x20, 0xac, 0x02]);
    let pod = |sc: Vec<u8>| {
        let mut spec = vec![0x72, sc.len() as u8];
        spec.extend(sc);
        let mut raw = vec![0x12, spec.len() as u8];
        raw.extend(spec);
        decode(&envelope("v1", "Pod", raw)).expect("decodes")
    };
    assert_eq!(
        pod(unpacked)["spec"]["securityContext"],
        json!({"supplementalGroups": [1, 300]})
    );
    assert_eq!(
        pod(packed)["spec"]["securityContext"],
        json!({"supplementalGroups": [1, 300]})
    );

    // Negative int32 (ten-byte varint) and invalid UTF-8 (replaced, as Go's encoder does).
    let pc = k8s_pb::api::scheduling::v1::PriorityClass {
        value: Some(-5),
        description: s("x"),
        ..Default::default()
    };
    let mut raw = pc.encode_to_vec();
    raw.extend([0x22, 0x02, 0xff, b'y']); // description (4) again, invalid UTF-8: last wins
    let v = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", raw)).expect("decodes");
    assert_eq!(v["value"], json!(-5));
    assert_eq!(v["description"], json!("\u{fffd}y"));
}

#[test]
fn proto_content_type_detection() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=utf-8"
    ));
    assert!(is_protobuf(
        "Application/Vnd.Kubernetes.Protobuf;stream=watch"
    ));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf+json"));
    assert!(!is_protobuf(""));
}

#[test]
fn proto_go_formats() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1), "1ns");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(1_500_000), "1.5ms");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
    assert_eq!(go_duration(90_500_000_000), "1m30.5s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    assert_eq!(format_time(GO_ZERO_TIME, 0, false), Ok(Value::Null));
    assert_eq!(format_time(-1, 0, false), Ok(json!("1969-12-31T23:59:59Z")));
    assert_eq!(
        format_time(0, -1000, true),
        Ok(json!("1969-12-31T23:59:59.999999Z"))
    );
    assert!(format_time(i64::MAX, 0, false).is_err());
    assert!(format_time(-70_000_000_000, 0, false).is_err());
}

#[test]
fn proto_encode_refuses_what_it_cannot_write() {
    assert!(matches!(
        encode(&json!([])),
        Err(ProtoError::Unencodable(_))
    ));
    assert_eq!(
        encode(&json!({"apiVersion": "v1"})),
        Err(ProtoError::MissingKind)
    );
    let bad = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": 1}});
    assert!(matches!(encode(&bad), Err(ProtoError::Unencodable(_))));
    let bad =
        json!({"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1", "value": 1u64 << 40});
    assert!(matches!(encode(&bad), Err(ProtoError::Unencodable(_))));
    // Numbers are accepted for quantities, as upstream's JSON decoder does.
    let quota =
        json!({"kind": "ResourceQuota", "apiVersion": "v1", "spec": {"hard": {"pods": 10}}});
    let v = decode(&encode(&quota).expect("encodes")).expect("decodes");
    assert_eq!(v["spec"]["hard"], json!({"pods": "10"}));
}

/// The table's JSON names against k8s-openapi's schemas (an independent source, same
/// Kubernetes version): every field we produce is a property there, and every property
/// there is a field we decode.
#[test]
fn proto_schema_names_match_k8s_openapi() {
    let registry = Registry::builtin();
    let mut generator = schemars::SchemaGenerator::default();
    let roots: Vec<(usize, Value)> = registry
        .resources()
        .iter()
        .filter_map(|r| {
            Some((
                lookup_kind(&r.api_version(), r.kind)?,
                r.ops.schema(&mut generator).as_value().clone(),
            ))
        })
        .collect();
    let defs = generator.definitions().clone();
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for (msg, schema) in roots {
        check_names(msg, &schema, &defs, true, &mut seen, &mut errors);
    }
    assert!(seen.len() > 200, "walked {} messages", seen.len());
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => defs
            .get(r.rsplit('/').next().unwrap_or(r))
            .unwrap_or(schema),
        None => schema,
    }
}

fn check_names(
    msg: usize,
    schema: &Value,
    defs: &Map<String, Value>,
    root: bool,
    seen: &mut BTreeSet<usize>,
    errors: &mut Vec<String>,
) {
    let m = &schema::MESSAGES[msg];
    if m.special != Special::None || !seen.insert(msg) {
        return;
    }
    let schema = resolve(schema, defs);
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut names = BTreeSet::new();
    check_fields(m, props, defs, &mut names, seen, errors);
    for p in props.keys() {
        if !names.contains(p.as_str()) && !(root && (p == "apiVersion" || p == "kind")) {
            errors.push(format!(
                "{}: k8s-openapi has {p}, the table does not",
                m.name()
            ));
        }
    }
}

fn check_fields(
    m: &Message,
    props: &Map<String, Value>,
    defs: &Map<String, Value>,
    names: &mut BTreeSet<&'static str>,
    seen: &mut BTreeSet<usize>,
    errors: &mut Vec<String>,
) {
    for f in m.fields() {
        if f.has(INLINE) {
            if let Ty::Msg(sub) = f.ty {
                check_fields(
                    &schema::MESSAGES[usize::from(sub)],
                    props,
                    defs,
                    names,
                    seen,
                    errors,
                );
            }
            continue;
        }
        names.insert(f.json());
        let Some(prop) = props.get(f.json()) else {
            errors.push(format!(
                "{}: the table has {}, k8s-openapi does not",
                m.name(),
                f.json()
            ));
            continue;
        };
        if let Ty::Msg(sub) = f.ty {
            let inner = if f.has(REPEATED) {
                prop.get("items")
            } else if f.has(MAP) {
                prop.get("additionalProperties")
            } else {
                Some(prop)
            };
            match inner {
                Some(inner) => check_names(usize::from(sub), inner, defs, false, seen, errors),
                None => errors.push(format!("{}.{}: no item schema", m.name(), f.json())),
            }
        }
    }
}
