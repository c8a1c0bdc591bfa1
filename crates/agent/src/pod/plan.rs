//! The pod state machine, pure: from the Pod and what the runtime holds for it, the next
//! actions. Nothing here does I/O, so every transition is unit tested.
//!
//! The state is never stored: it is derived each time from the runtime's sandboxes and
//! containers (their labels and CRI attempt numbers are the checkpoint), so an agent that
//! restarts picks up where it was and never starts a container twice. The stages a pod goes
//! through, and what moves it on:
//!
//! 1. **No sandbox** (or the newest one is not ready): run a sandbox, attempt = previous + 1.
//!    A sandbox that died takes its containers with it; init containers run again in the new
//!    one and app containers restart (their restart counts go on).
//! 2. **Initializing**: init containers of the current sandbox, one at a time, in order. One
//!    that exits 0 lets the next start; one that fails is restarted with back-off, or, with
//!    `restartPolicy: Never`, fails the pod.
//! 3. **Running**: every app container is started; one that exits is restarted by the restart
//!    policy (Always: always; OnFailure: on a non-zero exit; Never: not) after the crash-loop
//!    back-off: none for the first restart, then 10 s doubling to 5 min, reset when the
//!    container ran 10 minutes.
//! 4. **Terminal** (Succeeded/Failed): no app container will run again (or the API already
//!    says so): the sandbox is stopped, containers are kept for their logs and status.
//!
//! Deletion (`deletionTimestamp`, or the Pod gone) leaves this machine for the worker's
//! termination: stop containers within the grace period, remove sandbox, delete the Pod.
//!
//! Of each container, the newest attempt and the one before are kept (for `--previous` logs
//! and `lastState`); older ones are removed.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::spec::Kind;

/// A container as the runtime holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: CState,
    pub image_ref: String,
}

/// A container's state, with the times the status needs (nanoseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CState {
    Created,
    Running {
        started_at: i64,
    },
    Exited {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: i64,
        finished_at: i64,
    },
    Unknown,
}

/// A sandbox as the runtime holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub ip: String,
    pub created_at: i64,
}

/// Everything the runtime holds for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub sandboxes: Vec<ObservedSandbox>,
    pub containers: Vec<ObservedContainer>,
}

impl Observed {
    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.attempt, s.created_at))
    }

    /// The newest attempt of container `name` in any sandbox.
    pub fn latest(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.name == name)
            .max_by_key(|c| c.attempt)
    }

    /// The newest attempt of container `name` in sandbox `sandbox_id`.
    pub fn latest_in(&self, name: &str, sandbox_id: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.name == name && c.sandbox_id == sandbox_id)
            .max_by_key(|c| c.attempt)
    }

    /// The attempt before the newest of container `name`, if it is still there.
    pub fn previous(&self, name: &str) -> Option<&ObservedContainer> {
        let latest = self.latest(name)?.attempt;
        self.containers
            .iter()
            .filter(|c| c.name == name && c.attempt < latest)
            .max_by_key(|c| c.attempt)
    }
}

/// One thing to do to the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    RunSandbox {
        attempt: u32,
    },
    /// Ensure the image, create and start container `index` of `kind` at `attempt`.
    StartContainer {
        kind: Kind,
        index: usize,
        attempt: u32,
    },
    /// Start a container that was created but never started (the agent stopped in between).
    StartCreated {
        id: String,
    },
    StopSandbox {
        id: String,
    },
    RemoveContainer {
        id: String,
    },
}

/// The pod's phase when it will not run anything again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    Succeeded,
    Failed,
}

/// What to do now, and what the status should say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Look again after this long even if nothing changes (a back-off ends).
    pub requeue_after: Option<Duration>,
    /// Containers waiting out a crash-loop back-off: name -> message.
    pub backoff: HashMap<String, String>,
    pub terminal: Option<Terminal>,
    /// Whether all init containers of the current sandbox completed.
    pub initialized: bool,
}

const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before it exited restarts without back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// How long to wait before restarting a container that exited after `restarts` restarts
/// having run for `ran`.
pub fn backoff(restarts: u32, ran: Duration) -> Duration {
    if restarts == 0 || ran >= BACKOFF_RESET {
        return Duration::ZERO;
    }
    let doublings = (restarts - 1).min(16);
    BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// The pod's restart policy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether a container that exited with `code` runs again under `policy`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

pub fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

pub fn app_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

fn api_phase(pod: &Pod) -> Option<Terminal> {
    match pod.status.as_ref()?.phase.as_deref()? {
        "Succeeded" => Some(Terminal::Succeeded),
        "Failed" => Some(Terminal::Failed),
        _ => None,
    }
}

fn nanos_to_duration(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n.max(0)).unwrap_or(0))
}

/// The next attempt number of container `name`: one past every attempt seen, and past the
/// restart count the API last showed (in case the runtime lost containers).
fn next_attempt(pod: &Pod, obs: &Observed, name: &str) -> u32 {
    let seen = obs.latest(name).map(|c| c.attempt + 1).unwrap_or(0);
    let reported = pod
        .status
        .as_ref()
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter(|s| s.name == name && s.container_id.is_some())
        .map(|s| u32::try_from(s.restart_count).unwrap_or(0) + 1)
        .max()
        .unwrap_or(0);
    seen.max(reported)
}

/// Whether the pod is done, and how.
fn terminal(pod: &Pod, obs: &Observed) -> Option<Terminal> {
    if let Some(t) = api_phase(pod) {
        return Some(t);
    }
    let policy = restart_policy(pod);
    let sandbox = obs.sandbox()?;
    if policy == "Never" {
        let init_failed = init_containers(pod).iter().any(|c| {
            matches!(obs.latest_in(&c.name, &sandbox.id).map(|c| &c.state),
                Some(CState::Exited { exit_code, .. }) if *exit_code != 0)
        });
        if init_failed {
            return Some(Terminal::Failed);
        }
    }
    let apps = app_containers(pod);
    if apps.is_empty() {
        return None;
    }
    let mut failed = false;
    for c in apps {
        match obs.latest(&c.name).map(|c| &c.state) {
            Some(CState::Exited { exit_code, .. }) if !restarts(policy, *exit_code) => {
                failed |= *exit_code != 0;
            }
            _ => return None,
        }
    }
    Some(if failed {
        Terminal::Failed
    } else {
        Terminal::Succeeded
    })
}

/// What to do with an exited container that may restart: start it now, or wait.
enum Restart {
    Now,
    Wait(Duration, String),
}

fn restart_decision(pod: &Pod, c: &ObservedContainer, now: i64) -> Restart {
    let CState::Exited {
        started_at,
        finished_at,
        ..
    } = &c.state
    else {
        return Restart::Now;
    };
    let ran = nanos_to_duration(finished_at - started_at);
    let delay = backoff(c.attempt, ran);
    let elapsed = nanos_to_duration(now - finished_at);
    if elapsed >= delay {
        return Restart::Now;
    }
    let message = format!(
        "back-off {}s restarting failed container={} pod={}_{}({})",
        delay.as_secs(),
        c.name,
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or(""),
    );
    Restart::Wait(delay - elapsed, message)
}

fn requeue(plan: &mut Plan, after: Duration) {
    plan.requeue_after = Some(plan.requeue_after.map_or(after, |d| d.min(after)));
}

/// The next actions for `pod` (not being deleted) given what the runtime holds, at `now`
/// (nanoseconds since the epoch, the runtime's clock).
pub fn plan(pod: &Pod, obs: &Observed, now: i64) -> Plan {
    let mut plan = Plan::default();
    let newest = obs.sandbox().cloned();
    // Older sandboxes are stopped; they stay (with their containers' restart history) until
    // the pod goes.
    for s in &obs.sandboxes {
        if s.ready && newest.as_ref().is_some_and(|n| n.id != s.id) {
            plan.actions.push(Action::StopSandbox { id: s.id.clone() });
        }
    }
    collect_garbage(obs, &mut plan);

    if let Some(t) = terminal(pod, obs) {
        plan.terminal = Some(t);
        plan.initialized = true;
        if let Some(s) = newest.filter(|s| s.ready) {
            plan.actions.push(Action::StopSandbox { id: s.id });
        }
        return plan;
    }
    let sandbox = match newest {
        Some(s) if s.ready => s,
        Some(s) => {
            plan.actions.push(Action::StopSandbox { id: s.id.clone() });
            plan.actions.push(Action::RunSandbox {
                attempt: s.attempt + 1,
            });
            return plan;
        }
        None => {
            plan.actions.push(Action::RunSandbox { attempt: 0 });
            return plan;
        }
    };
    let policy = restart_policy(pod);

    for (index, c) in init_containers(pod).iter().enumerate() {
        match obs.latest_in(&c.name, &sandbox.id) {
            None => {
                plan.actions.push(Action::StartContainer {
                    kind: Kind::Init,
                    index,
                    attempt: next_attempt(pod, obs, &c.name),
                });
                return plan;
            }
            Some(oc) => match &oc.state {
                CState::Created => {
                    plan.actions
                        .push(Action::StartCreated { id: oc.id.clone() });
                    return plan;
                }
                CState::Running { .. } | CState::Unknown => return plan,
                CState::Exited { exit_code: 0, .. } => continue,
                CState::Exited { .. } => {
                    // restartPolicy Never made the pod terminal above.
                    match restart_decision(pod, oc, now) {
                        Restart::Now => plan.actions.push(Action::StartContainer {
                            kind: Kind::Init,
                            index,
                            attempt: next_attempt(pod, obs, &c.name),
                        }),
                        Restart::Wait(left, message) => {
                            plan.backoff.insert(c.name.clone(), message);
                            requeue(&mut plan, left);
                        }
                    }
                    return plan;
                }
            },
        }
    }
    plan.initialized = true;

    for (index, c) in app_containers(pod).iter().enumerate() {
        let Some(oc) = obs.latest_in(&c.name, &sandbox.id) else {
            plan.actions.push(Action::StartContainer {
                kind: Kind::App,
                index,
                attempt: next_attempt(pod, obs, &c.name),
            });
            continue;
        };
        match &oc.state {
            CState::Created => plan
                .actions
                .push(Action::StartCreated { id: oc.id.clone() }),
            CState::Running { .. } | CState::Unknown => {}
            CState::Exited { exit_code, .. } => {
                if !restarts(policy, *exit_code) {
                    continue;
                }
                match restart_decision(pod, oc, now) {
                    Restart::Now => plan.actions.push(Action::StartContainer {
                        kind: Kind::App,
                        index,
                        attempt: next_attempt(pod, obs, &c.name),
                    }),
                    Restart::Wait(left, message) => {
                        plan.backoff.insert(c.name.clone(), message);
                        requeue(&mut plan, left);
                    }
                }
            }
        }
    }
    plan
}

/// Removes exited attempts older than the previous one of each container.
fn collect_garbage(obs: &Observed, plan: &mut Plan) {
    for c in &obs.containers {
        let Some(latest) = obs.latest(&c.name) else {
            continue;
        };
        let keep_from = latest.attempt.saturating_sub(1);
        if c.attempt < keep_from && matches!(c.state, CState::Exited { .. }) {
            plan.actions
                .push(Action::RemoveContainer { id: c.id.clone() });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub const SEC: i64 = 1_000_000_000;

    pub fn pod(inits: &[&str], apps: &[&str], policy: &str) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox".to_string()),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("p".to_string()),
                namespace: Some("default".to_string()),
                uid: Some("u1".to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                init_containers: (!inits.is_empty()).then(|| inits.iter().map(c).collect()),
                containers: apps.iter().map(c).collect(),
                restart_policy: Some(policy.to_string()),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub fn sandbox(id: &str, attempt: u32, ready: bool) -> ObservedSandbox {
        ObservedSandbox {
            id: id.to_string(),
            attempt,
            ready,
            ip: if ready {
                "10.42.0.9".to_string()
            } else {
                String::new()
            },
            created_at: i64::from(attempt),
        }
    }

    pub fn ctr(sb: &str, name: &str, attempt: u32, state: CState) -> ObservedContainer {
        ObservedContainer {
            id: format!("{sb}-{name}-{attempt}"),
            sandbox_id: sb.to_string(),
            name: name.to_string(),
            attempt,
            state,
            image_ref: "sha256:abc".to_string(),
        }
    }

    pub fn exited(code: i32, started: i64, finished: i64) -> CState {
        CState::Exited {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
            message: String::new(),
            started_at: started,
            finished_at: finished,
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let ran = Duration::from_secs(1);
        let secs: Vec<u64> = (0..8).map(|n| backoff(n, ran).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(100, ran), BACKOFF_MAX);
        assert_eq!(backoff(5, Duration::from_secs(601)), Duration::ZERO);
    }

    #[test]
    fn fresh_pod_gets_a_sandbox() {
        let p = plan(&pod(&[], &["a"], "Always"), &Observed::default(), 0);
        assert_eq!(p.actions, [Action::RunSandbox { attempt: 0 }]);
        assert_eq!(p.terminal, None);
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order() {
        let pd = pod(&["i1", "i2"], &["a", "b"], "Always");
        let mut obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![],
        };
        let p = plan(&pd, &obs, 0);
        assert_eq!(
            p.actions,
            [Action::StartContainer {
                kind: Kind::Init,
                index: 0,
                attempt: 0
            }]
        );
        assert!(!p.initialized);
        obs.containers
            .push(ctr("s", "i1", 0, CState::Running { started_at: 1 }));
        assert!(plan(&pd, &obs, 0).actions.is_empty());
        obs.containers[0].state = exited(0, 1, 2);
        assert_eq!(
            plan(&pd, &obs, 3).actions,
            [Action::StartContainer {
                kind: Kind::Init,
                index: 1,
                attempt: 0
            }]
        );
        obs.containers.push(ctr("s", "i2", 0, exited(0, 3, 4)));
        let p = plan(&pd, &obs, 5);
        assert!(p.initialized);
        assert_eq!(
            p.actions,
            [
                Action::StartContainer {
                    kind: Kind::App,
                    index: 0,
                    attempt: 0
                },
                Action::StartContainer {
                    kind: Kind::App,
                    index: 1,
                    attempt: 0
                }
            ]
        );
    }

    #[test]
    fn failed_init_container_restarts_with_backoff_or_fails_the_pod() {
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "i1", 1, exited(1, 0, SEC))],
        };
        let p = plan(&pod(&["i1"], &["a"], "Always"), &obs, 2 * SEC);
        assert!(p.actions.is_empty());
        assert!(p.backoff["i1"].starts_with("back-off 10s restarting failed container=i1"));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(9)));
        let p = plan(&pod(&["i1"], &["a"], "OnFailure"), &obs, 11 * SEC);
        assert_eq!(
            p.actions,
            [Action::StartContainer {
                kind: Kind::Init,
                index: 0,
                attempt: 2
            }]
        );
        let p = plan(&pod(&["i1"], &["a"], "Never"), &obs, 2 * SEC);
        assert_eq!(p.terminal, Some(Terminal::Failed));
        assert_eq!(
            p.actions,
            [Action::StopSandbox {
                id: "s".to_string()
            }]
        );
    }

    #[test]
    fn restart_policies() {
        let with = |code: i32, policy: &str| {
            let obs = Observed {
                sandboxes: vec![sandbox("s", 0, true)],
                containers: vec![ctr("s", "a", 0, exited(code, 0, SEC))],
            };
            plan(&pod(&[], &["a"], policy), &obs, 2 * SEC)
        };
        let restart = [Action::StartContainer {
            kind: Kind::App,
            index: 0,
            attempt: 1,
        }];
        // First restart: no back-off.
        assert_eq!(with(1, "Always").actions, restart);
        assert_eq!(with(0, "Always").actions, restart);
        assert_eq!(with(1, "OnFailure").actions, restart);
        let done = with(0, "OnFailure");
        assert_eq!(done.terminal, Some(Terminal::Succeeded));
        assert_eq!(
            done.actions,
            [Action::StopSandbox {
                id: "s".to_string()
            }]
        );
        assert_eq!(with(0, "Never").terminal, Some(Terminal::Succeeded));
        assert_eq!(with(2, "Never").terminal, Some(Terminal::Failed));
    }

    #[test]
    fn crash_loop_backoff_grows() {
        let pd = pod(&[], &["a"], "Always");
        for (attempt, wait) in [(1u32, 10i64), (2, 20), (3, 40), (7, 300)] {
            let obs = Observed {
                sandboxes: vec![sandbox("s", 0, true)],
                containers: vec![
                    ctr("s", "a", attempt - 1, exited(1, 0, SEC)),
                    ctr("s", "a", attempt, exited(1, 100 * SEC, 101 * SEC)),
                ],
            };
            let p = plan(&pd, &obs, 101 * SEC);
            assert!(p.actions.is_empty(), "attempt {attempt}: {:?}", p.actions);
            assert_eq!(p.requeue_after, Some(Duration::from_secs(wait as u64)));
            let p = plan(&pd, &obs, (101 + wait) * SEC);
            assert_eq!(
                p.actions,
                [Action::StartContainer {
                    kind: Kind::App,
                    index: 0,
                    attempt: attempt + 1
                }]
            );
        }
    }

    #[test]
    fn old_attempts_are_removed_but_previous_kept() {
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![
                ctr("s", "a", 0, exited(1, 0, SEC)),
                ctr("s", "a", 1, exited(1, 0, SEC)),
                ctr("s", "a", 2, CState::Running { started_at: 5 }),
            ],
        };
        let p = plan(&pod(&[], &["a"], "Always"), &obs, 10 * SEC);
        assert_eq!(
            p.actions,
            [Action::RemoveContainer {
                id: "s-a-0".to_string()
            }]
        );
    }

    #[test]
    fn dead_sandbox_is_replaced_and_containers_continue_counting() {
        let pd = pod(&["i"], &["a"], "Always");
        let obs = Observed {
            sandboxes: vec![sandbox("s0", 0, false)],
            containers: vec![
                ctr("s0", "i", 0, exited(0, 0, SEC)),
                ctr("s0", "a", 3, exited(137, SEC, 2 * SEC)),
            ],
        };
        let p = plan(&pd, &obs, 3 * SEC);
        assert_eq!(
            p.actions,
            [
                Action::StopSandbox {
                    id: "s0".to_string()
                },
                Action::RunSandbox { attempt: 1 }
            ]
        );
        let mut obs = obs;
        obs.sandboxes.push(sandbox("s1", 1, true));
        // Init runs again in the new sandbox; the app container's count goes on.
        let p = plan(&pd, &obs, 3 * SEC);
        assert_eq!(
            p.actions,
            [Action::StartContainer {
                kind: Kind::Init,
                index: 0,
                attempt: 1
            }]
        );
        obs.containers.push(ctr("s1", "i", 1, exited(0, 0, SEC)));
        let p = plan(&pd, &obs, 3 * SEC);
        assert_eq!(
            p.actions,
            [Action::StartContainer {
                kind: Kind::App,
                index: 0,
                attempt: 4
            }]
        );
    }

    #[test]
    fn created_container_is_started_not_recreated() {
        let obs = Observed {
            sandboxes: vec![sandbox("s", 0, true)],
            containers: vec![ctr("s", "a", 0, CState::Created)],
        };
        let p = plan(&pod(&[], &["a"], "Always"), &obs, 0);
        assert_eq!(
            p.actions,
            [Action::StartCreated {
                id: "s-a-0".to_string()
            }]
        );
    }

    #[test]
    fn terminal_pod_in_api_never_runs_again() {
        let mut pd = pod(&[], &["a"], "Always");
        pd.status = Some(PodStatus {
            phase: Some("Succeeded".to_string()),
            ..Default::default()
        });
        let p = plan(&pd, &Observed::default(), 0);
        assert_eq!(p.terminal, Some(Terminal::Succeeded));
        assert!(p.actions.is_empty());
    }
}
