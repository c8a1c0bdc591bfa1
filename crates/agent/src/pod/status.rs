//! The pod's status, pure: phase, conditions, container statuses, addresses, from the Pod,
//! what the runtime holds and the plan.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::plan::{self, CState, Observed, ObservedContainer, Plan, Terminal};
use super::probe::{self, ProbeType};
use super::spec::Kind;

/// What the status is computed from besides the Pod.
pub struct Inputs<'a> {
    pub obs: &'a Observed,
    pub plan: &'a Plan,
    /// The node's address (`hostIP`).
    pub host_ip: &'a str,
    /// Prefix of container ids, `containerd` for `containerd://<id>`.
    pub runtime_name: &'a str,
    /// Why a container could not be started: name -> (reason, message), e.g. `ErrImagePull`.
    pub errors: &'a HashMap<String, (String, String)>,
    /// Probe verdicts by (container id, probe type): `ready` and `started` follow them.
    pub probes: &'a HashMap<(String, ProbeType), bool>,
    pub now: Timestamp,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
        .map(Time)
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

fn terminated(c: &ObservedContainer, runtime: &str) -> Option<ContainerState> {
    let CState::Exited {
        exit_code,
        reason,
        message,
        started_at,
        finished_at,
    } = &c.state
    else {
        return None;
    };
    let reason = if reason.is_empty() {
        if *exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    } else {
        reason.as_str()
    };
    Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.clone()),
            started_at: time(*started_at),
            finished_at: time(*finished_at),
            container_id: Some(format!("{runtime}://{}", c.id)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_status(c: &Container, kind: Kind, inputs: &Inputs<'_>) -> ContainerStatus {
    let obs = inputs.obs;
    let latest = obs.latest(&c.name);
    let error = inputs.errors.get(&c.name);
    let runtime = inputs.runtime_name;
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("{runtime}://{}", l.id)),
        restart_count: latest
            .map(|l| i32::try_from(l.attempt).unwrap_or(i32::MAX))
            .unwrap_or(0),
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let initializing = kind == Kind::App && !inputs.plan.initialized;
    match latest {
        None => {
            st.state = Some(match error {
                Some((reason, message)) => waiting(reason, Some(message)),
                None if initializing => waiting("PodInitializing", None),
                None => waiting("ContainerCreating", None),
            });
        }
        Some(l) => match &l.state {
            CState::Created => st.state = Some(waiting("ContainerCreating", None)),
            CState::Unknown => st.state = Some(waiting("ContainerStatusUnknown", None)),
            CState::Running { started_at } => {
                st.state = Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time(*started_at),
                    }),
                    ..Default::default()
                });
                st.started = Some(probe::started(c, &l.id, inputs.probes));
                st.ready = kind == Kind::App && probe::ready(c, &l.id, inputs.probes);
                st.last_state = obs.previous(&c.name).and_then(|p| terminated(p, runtime));
            }
            CState::Exited { exit_code, .. } => {
                if let Some(message) = inputs.plan.backoff.get(&c.name) {
                    st.state = Some(waiting("CrashLoopBackOff", Some(message)));
                    st.last_state = terminated(l, runtime);
                } else if let Some((reason, message)) = error {
                    st.state = Some(waiting(reason, Some(message)));
                    st.last_state = terminated(l, runtime);
                } else {
                    st.state = terminated(l, runtime);
                    st.last_state = obs.previous(&c.name).and_then(|p| terminated(p, runtime));
                    st.ready = kind == Kind::Init && *exit_code == 0;
                }
            }
        },
    }
    st
}

/// Sets condition `type_` in `conds`, keeping its transition time if its status is unchanged.
fn set_condition(
    conds: &mut Vec<PodCondition>,
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conds.retain(|c| c.type_ != type_);
    conds.push(PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..Default::default()
    });
}

/// The status the agent reports for `pod`.
pub fn pod_status(pod: &Pod, inputs: &Inputs<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let now = inputs.now;
    let init_statuses: Vec<ContainerStatus> = plan::init_containers(pod)
        .iter()
        .map(|c| container_status(c, Kind::Init, inputs))
        .collect();
    let app_statuses: Vec<ContainerStatus> = plan::app_containers(pod)
        .iter()
        .map(|c| container_status(c, Kind::App, inputs))
        .collect();

    let phase = match inputs.plan.terminal {
        Some(Terminal::Succeeded) => "Succeeded",
        Some(Terminal::Failed) => "Failed",
        None if !inputs.plan.initialized => "Pending",
        None => {
            let all_ran = plan::app_containers(pod).iter().all(|c| {
                inputs
                    .obs
                    .latest(&c.name)
                    .is_some_and(|l| !matches!(l.state, CState::Created))
            });
            if all_ran {
                "Running"
            } else {
                "Pending"
            }
        }
    };

    let sandbox = inputs.obs.sandbox().filter(|s| s.ready);
    let mut conds: Vec<PodCondition> = old_conds
        .iter()
        .filter(|c| {
            !matches!(
                c.type_.as_str(),
                "PodReadyToStartContainers" | "Initialized" | "ContainersReady" | "Ready"
            )
        })
        .cloned()
        .collect();
    if !conds.iter().any(|c| c.type_ == "PodScheduled") {
        set_condition(
            &mut conds,
            &old_conds,
            "PodScheduled",
            true,
            None,
            None,
            now,
        );
    }
    set_condition(
        &mut conds,
        &old_conds,
        "PodReadyToStartContainers",
        sandbox.is_some() && inputs.plan.terminal.is_none(),
        None,
        None,
        now,
    );
    let incomplete: Vec<&str> = init_statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let initialized = inputs.plan.initialized;
    set_condition(
        &mut conds,
        &old_conds,
        "Initialized",
        initialized,
        (!initialized).then_some("ContainersNotInitialized"),
        (!initialized).then(|| {
            format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )
        }),
        now,
    );
    let unready: Vec<&str> = app_statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = unready.is_empty() && inputs.plan.terminal.is_none();
    let (reason, message) = if ready {
        (None, None)
    } else if inputs.plan.terminal == Some(Terminal::Succeeded) {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    set_condition(
        &mut conds,
        &old_conds,
        "ContainersReady",
        ready,
        reason,
        message.clone(),
        now,
    );
    set_condition(&mut conds, &old_conds, "Ready", ready, reason, message, now);
    let order = |t: &str| match t {
        "PodReadyToStartContainers" => 0,
        "Initialized" => 1,
        "Ready" => 2,
        "ContainersReady" => 3,
        "PodScheduled" => 4,
        _ => 5,
    };
    conds.sort_by_key(|c| order(&c.type_));

    let pod_ip = sandbox
        .map(|s| s.ip.clone())
        .filter(|ip| !ip.is_empty())
        .or(old.pod_ip.clone());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conds),
        host_ip: Some(inputs.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: inputs.host_ip.to_string(),
        }]),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: old.start_time.clone().or(Some(Time(now))),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        qos_class: old.qos_class.clone(),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::{ctr, exited, pod, sandbox, SEC};
    use super::super::plan::{plan, Observed};
    use super::*;

    fn status_of(pd: &Pod, obs: &Observed, now: i64) -> PodStatus {
        let p = plan(pd, obs, now);
        let errors = HashMap::new();
        pod_status(
            pd,
            &Inputs {
                obs,
                plan: &p,
                host_ip: "127.0.0.1",
                runtime_name: "containerd",
                errors: &errors,
                probes: &HashMap::new(),
                now: Timestamp::from_second(1_700_000_000).expect("ts"),
            },
        )
    }

    fn cond(st: &PodStatus, t: &str) -> String {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn pending_while_initializing() {
        let pd = pod(&["i"], &["a"], "Always");
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "i", 0, CState::Running { started_at: SEC })],
        };
        let st = status_of(&pd, &obs, 2 * SEC);
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&st, "Initialized"), "False");
        assert_eq!(cond(&st, "Ready"), "False");
        assert_eq!(cond(&st, "PodScheduled"), "True");
        assert_eq!(st.pod_ip.as_deref(), Some("10.42.0.9"));
        assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
        let app = &st.container_statuses.as_ref().expect("statuses")[0];
        let w = app
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("PodInitializing"));
    }

    #[test]
    fn running_and_ready() {
        let pd = pod(&["i"], &["a"], "Always");
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![
                ctr("s", "i", 0, exited(0, SEC, 2 * SEC)),
                ctr(
                    "s",
                    "a",
                    0,
                    CState::Running {
                        started_at: 3 * SEC,
                    },
                ),
            ],
        };
        let st = status_of(&pd, &obs, 4 * SEC);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        for t in [
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodReadyToStartContainers",
        ] {
            assert_eq!(cond(&st, t), "True", "{t}");
        }
        let app = &st.container_statuses.as_ref().expect("statuses")[0];
        assert!(app.ready);
        assert_eq!(app.container_id.as_deref(), Some("containerd://s-a-0"));
        let init = &st.init_container_statuses.as_ref().expect("init")[0];
        let t = init
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        assert!(init.ready);
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let pd = pod(&[], &["a"], "Always");
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![
                ctr("s", "a", 1, exited(1, 0, SEC)),
                ctr("s", "a", 2, exited(2, 10 * SEC, 11 * SEC)),
            ],
        };
        let st = status_of(&pd, &obs, 12 * SEC);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let a = &st.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(a.restart_count, 2);
        let w = a
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = a
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last terminated");
        assert_eq!(last.exit_code, 2);
        assert_eq!(cond(&st, "Ready"), "False");
    }

    #[test]
    fn terminal_phases_and_oom() {
        let pd = pod(&[], &["a"], "Never");
        let mut oom = exited(137, SEC, 2 * SEC);
        if let CState::Exited { reason, .. } = &mut oom {
            *reason = "OOMKilled".to_string();
        }
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, false)],
            containers: vec![ctr("s", "a", 0, oom)],
        };
        let st = status_of(&pd, &obs, 3 * SEC);
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        let a = &st.container_statuses.as_ref().expect("statuses")[0];
        let t = a
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));

        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "a", 0, exited(0, SEC, 2 * SEC))],
        };
        let st = status_of(&pd, &obs, 3 * SEC);
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        let ready = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn transition_times_are_kept() {
        let pd = pod(&[], &["a"], "Always");
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "a", 0, CState::Running { started_at: SEC })],
        };
        let st = status_of(&pd, &obs, 2 * SEC);
        let mut again = pd.clone();
        again.status = Some(st.clone());
        let p = plan(&again, &obs, 5 * SEC);
        let errors = HashMap::new();
        let later = pod_status(
            &again,
            &Inputs {
                obs: &obs,
                plan: &p,
                host_ip: "127.0.0.1",
                runtime_name: "containerd",
                errors: &errors,
                probes: &HashMap::new(),
                now: Timestamp::from_second(1_700_000_100).expect("ts"),
            },
        );
        assert_eq!(later, st, "an unchanged pod gets an identical status");
    }

    #[test]
    fn probes_gate_ready_and_started() {
        let mut pd = pod(&[], &["a"], "Always");
        if let Some(spec) = pd.spec.as_mut() {
            spec.containers[0].readiness_probe = Some(Default::default());
            spec.containers[0].startup_probe = Some(Default::default());
        }
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "a", 0, CState::Running { started_at: SEC })],
        };
        let p = plan(&pd, &obs, 2 * SEC);
        let errors = HashMap::new();
        let with = |probes: &HashMap<(String, ProbeType), bool>| {
            pod_status(
                &pd,
                &Inputs {
                    obs: &obs,
                    plan: &p,
                    host_ip: "127.0.0.1",
                    runtime_name: "containerd",
                    errors: &errors,
                    probes,
                    now: Timestamp::from_second(1_700_000_000).expect("ts"),
                },
            )
        };
        let mut probes = HashMap::new();
        let st = with(&probes);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(
            (cond(&st, "Ready"), cond(&st, "ContainersReady")),
            ("False".into(), "False".into())
        );
        let cs = &st.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!((cs.ready, cs.started), (false, Some(false)));
        // Readiness alone is not enough while the startup probe has not succeeded.
        probes.insert(("s-a-0".to_string(), ProbeType::Readiness), true);
        assert_eq!(cond(&with(&probes), "Ready"), "False");
        probes.insert(("s-a-0".to_string(), ProbeType::Startup), true);
        let st = with(&probes);
        assert_eq!(
            (cond(&st, "Ready"), cond(&st, "ContainersReady")),
            ("True".into(), "True".into())
        );
        let cs = &st.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!((cs.ready, cs.started), (true, Some(true)));
        probes.insert(("s-a-0".to_string(), ProbeType::Readiness), false);
        assert_eq!(cond(&with(&probes), "Ready"), "False");
    }
}
