//! The pod state machine of a simulated kubelet, pure: what to do with a pod bound to a
//! simulated node, and the statuses it writes.
//!
//! Transitions:
//! - any phase, `deletionTimestamp` set -> [`Step::Delete`] (grace period 0, as a kubelet
//!   does once the containers stopped); with finalizers pending and the grace period already
//!   0, [`Step::Wait`] until they are removed.
//! - Pending (or no phase) -> [`Step::Start`]: Running, all containers running and ready.
//! - Running, pod terminates (owned by a Job, or annotated `krust.dev/sim-exit-code`) ->
//!   [`Step::FinishIn`] until `startTime + run seconds`, then [`Step::Finish`]: Succeeded for
//!   exit code 0, Failed otherwise.
//! - Running and not terminating, Succeeded, Failed -> [`Step::Wait`].

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Pod annotation: the exit code of the pod's containers; the pod terminates.
pub const ANNOTATION_EXIT_CODE: &str = "krust.dev/sim-exit-code";
/// Pod annotation: how many seconds a terminating pod runs.
pub const ANNOTATION_RUN_SECONDS: &str = "krust.dev/sim-run-seconds";

/// What to do next with a pod on a simulated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the pod changes.
    Wait,
    /// Delete it now with grace period 0.
    Delete,
    /// Write the Running status.
    Start,
    /// Write the terminal status with this exit code.
    Finish { exit_code: i32 },
    /// Look again after this long (then it finishes).
    FinishIn(Duration),
}

/// The exit code a pod terminates with, or `None` if it runs until deleted.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_EXIT_CODE))
        .and_then(|v| v.trim().parse::<i32>().ok());
    if annotated.is_some() {
        return annotated;
    }
    let job_owned = pod.metadata.owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|r| r.kind == "Job" && r.api_version.starts_with("batch/"))
    });
    job_owned.then_some(0)
}

/// How long a terminating pod runs: its annotation, else `default`.
pub fn run_seconds(pod: &Pod, default: u64) -> u64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RUN_SECONDS))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(default)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The next step for `pod` at `now`.
pub fn next_step(pod: &Pod, now: Timestamp, default_run_seconds: u64) -> Step {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        let finalizers = meta.finalizers.as_ref().is_some_and(|f| !f.is_empty());
        if finalizers && meta.deletion_grace_period_seconds == Some(0) {
            return Step::Wait;
        }
        return Step::Delete;
    }
    match phase(pod) {
        "Succeeded" | "Failed" => Step::Wait,
        "Running" => {
            let Some(exit_code) = exit_code(pod) else {
                return Step::Wait;
            };
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            let run = SignedDuration::from_secs(
                i64::try_from(run_seconds(pod, default_run_seconds)).unwrap_or(i64::MAX / 2),
            );
            let end = started.checked_add(run).unwrap_or(Timestamp::MAX);
            match Duration::try_from(end.duration_since(now)) {
                Ok(left) if !left.is_zero() => Step::FinishIn(left),
                _ => Step::Finish { exit_code },
            }
        }
        _ => Step::Start,
    }
}

/// Sets a condition, keeping its transition time when its status does not change.
fn set_condition(
    conds: &mut Vec<PodCondition>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.status = status.to_string();
            c.last_transition_time = Some(Time(now));
        }
        c.reason = reason.map(str::to_string);
        c.message = None;
        return;
    }
    conds.push(PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
}

fn container_id(pod: &Pod, c: &Container) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or("-");
    format!("sim://{uid}/{}", c.name)
}

fn running(pod: &Pod, c: &Container, now: Timestamp) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: format!("sim://{image}"),
        image,
        container_id: Some(container_id(pod, c)),
        ready: true,
        started: Some(true),
        restart_count: 0,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(now)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated(
    pod: &Pod,
    c: &Container,
    exit_code: i32,
    started: Option<Time>,
    now: Timestamp,
) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: format!("sim://{image}"),
        image,
        container_id: Some(container_id(pod, c)),
        ready: false,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.to_string()),
                started_at: started,
                finished_at: Some(Time(now)),
                container_id: Some(container_id(pod, c)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Init containers: regular ones have completed, sidecars (restartPolicy Always) run.
fn init_statuses(
    pod: &Pod,
    now: Timestamp,
    all_stopped: Option<i32>,
) -> Option<Vec<ContainerStatus>> {
    let inits = pod.spec.as_ref()?.init_containers.as_ref()?;
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .or(Some(Time(now)));
    Some(
        inits
            .iter()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                match (sidecar, all_stopped) {
                    (true, None) => running(pod, c, now),
                    (true, Some(_)) => terminated(pod, c, 0, start.clone(), now),
                    (false, _) => {
                        let mut s = terminated(pod, c, 0, start.clone(), now);
                        s.ready = true;
                        s
                    }
                }
            })
            .collect(),
    )
}

/// The status of `pod` once started on a node at `host_ip` with address `pod_ip`.
pub fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: Timestamp) -> PodStatus {
    let mut st = pod.status.clone().unwrap_or_default();
    st.phase = Some("Running".to_string());
    st.reason = None;
    st.message = None;
    st.host_ip = Some(host_ip.to_string());
    st.host_ips = Some(vec![HostIP {
        ip: host_ip.to_string(),
    }]);
    st.pod_ip = Some(pod_ip.to_string());
    st.pod_ips = Some(vec![PodIP {
        ip: pod_ip.to_string(),
    }]);
    if st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }
    let mut conds = st.conditions.take().unwrap_or_default();
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        set_condition(&mut conds, t, true, None, now);
    }
    st.conditions = Some(conds);
    st.init_container_statuses = init_statuses(pod, now, None);
    st.container_statuses = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| running(pod, c, now)).collect());
    st
}

/// The terminal status of `pod` whose containers exited with `exit_code`.
pub fn finished_status(pod: &Pod, exit_code: i32, now: Timestamp) -> PodStatus {
    let mut st = pod.status.clone().unwrap_or_default();
    st.phase = Some(
        if exit_code == 0 {
            "Succeeded"
        } else {
            "Failed"
        }
        .to_string(),
    );
    let mut conds = st.conditions.take().unwrap_or_default();
    set_condition(&mut conds, "PodReadyToStartContainers", false, None, now);
    set_condition(&mut conds, "Initialized", true, Some("PodCompleted"), now);
    set_condition(&mut conds, "Ready", false, Some("PodCompleted"), now);
    set_condition(
        &mut conds,
        "ContainersReady",
        false,
        Some("PodCompleted"),
        now,
    );
    set_condition(&mut conds, "PodScheduled", true, None, now);
    st.conditions = Some(conds);
    let old = st.container_statuses.take().unwrap_or_default();
    st.init_container_statuses = init_statuses(pod, now, Some(exit_code));
    st.container_statuses = pod.spec.as_ref().map(|s| {
        s.containers
            .iter()
            .map(|c| {
                let started = old
                    .iter()
                    .find(|o| o.name == c.name)
                    .and_then(|o| o.state.as_ref()?.running.as_ref()?.started_at.clone())
                    .or_else(|| st.start_time.clone());
                terminated(pod, c, exit_code, started, now)
            })
            .collect()
    });
    st
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("timestamp")
    }

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("sim-0".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                qos_class: Some("BestEffort".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(-10))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn cond<'a>(st: &'a PodStatus, t: &str) -> &'a PodCondition {
        st.conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .expect("condition")
    }

    #[test]
    fn pending_pod_starts_running_and_ready() {
        let mut p = pod(&[]);
        assert_eq!(next_step(&p, ts(0), 0), Step::Start);
        let st = running_status(
            &p,
            Ipv4Addr::new(10, 224, 0, 1),
            Ipv4Addr::new(10, 244, 0, 2),
            ts(0),
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.host_ip.as_deref(), Some("10.224.0.1"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.2"));
        assert_eq!(st.start_time, Some(Time(ts(0))));
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
        for t in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
            assert_eq!(cond(&st, t).status, "True", "{t}");
        }
        // PodScheduled was already True: its transition time is kept.
        assert_eq!(
            cond(&st, "PodScheduled").last_transition_time,
            Some(Time(ts(-10)))
        );
        let cs = &st.container_statuses.as_ref().expect("statuses")[0];
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert_eq!(cs.image, "busybox");
        assert!(cs
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("sim://")));
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
        p.status = Some(st);
        // A plain pod then runs until deleted.
        assert_eq!(next_step(&p, ts(1000), 0), Step::Wait);
    }

    #[test]
    fn annotated_pod_finishes_after_its_run_time() {
        let mut p = pod(&[(ANNOTATION_EXIT_CODE, "3"), (ANNOTATION_RUN_SECONDS, "5")]);
        p.status = Some(running_status(
            &p,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            ts(0),
        ));
        assert_eq!(
            next_step(&p, ts(2), 0),
            Step::FinishIn(Duration::from_secs(3))
        );
        assert_eq!(next_step(&p, ts(5), 0), Step::Finish { exit_code: 3 });
        let st = finished_status(&p, 3, ts(5));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(cond(&st, "Ready").status, "False");
        assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("PodCompleted"));
        let t = st.container_statuses.as_ref().expect("statuses")[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
        assert_eq!(t.started_at, Some(Time(ts(0))));
        p.status = Some(st);
        assert_eq!(next_step(&p, ts(100), 0), Step::Wait);
    }

    #[test]
    fn zero_exit_code_succeeds_and_default_run_time_applies() {
        let mut p = pod(&[(ANNOTATION_EXIT_CODE, "0")]);
        p.status = Some(running_status(
            &p,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            ts(0),
        ));
        assert_eq!(next_step(&p, ts(0), 0), Step::Finish { exit_code: 0 });
        assert_eq!(
            next_step(&p, ts(0), 7),
            Step::FinishIn(Duration::from_secs(7))
        );
        let st = finished_status(&p, 0, ts(1));
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        let t = st.container_statuses.as_ref().expect("statuses")[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    }

    #[test]
    fn job_pods_terminate_and_others_do_not() {
        let mut p = pod(&[]);
        assert_eq!(exit_code(&p), None);
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "j".into(),
            uid: "j1".into(),
            ..Default::default()
        }]);
        assert_eq!(exit_code(&p), Some(0));
        let bad = pod(&[(ANNOTATION_EXIT_CODE, "x")]);
        assert_eq!(exit_code(&bad), None);
    }

    #[test]
    fn deleted_pods_are_removed() {
        let mut p = pod(&[]);
        p.metadata.deletion_timestamp = Some(Time(ts(0)));
        p.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(next_step(&p, ts(0), 0), Step::Delete);
        p.metadata.deletion_grace_period_seconds = Some(0);
        p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        assert_eq!(next_step(&p, ts(0), 0), Step::Wait);
    }

    #[test]
    fn init_containers_complete() {
        let mut p = pod(&[]);
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "init".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }]);
        }
        let st = running_status(&p, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, ts(0));
        let init = &st.init_container_statuses.as_ref().expect("init")[0];
        let t = init
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    }
}
