//! JobController: runs a Job's pods to `completions` successes with at most `parallelism`
//! active, fails it after more than `backoffLimit` failed pods or past
//! `activeDeadlineSeconds`, writes status (active, succeeded, failed, startTime,
//! completionTime, Complete/Failed conditions) and deletes finished Jobs after
//! `ttlSecondsAfterFinished`. Pod creations are recorded as expectations, as for ReplicaSets.
//! In `Indexed` completion mode each pod gets an index in `[0, completions)` (annotation and
//! label `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX` from it,
//! hostname `<job>-<index>`); the Job completes when every index has succeeded, and
//! `status.completedIndexes` lists them as ranges (`0-2,4`). Not yet: pod failure policy,
//! backoff per index, suspend.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::util::{
    controller_of, controller_ref, is_not_found, key_of, pod_is_active, pod_is_ready, Backoff,
    Expectations, Recorder, Result,
};
use crate::{Shared, Shutdown};

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    expectations: Expectations,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        expectations: Expectations::default(),
        recorder: Recorder::new(shared.client.clone(), "job-controller"),
    });
    Controller::for_stream(shared.jobs.subscribe(), shared.jobs.store())
        .owns_stream(shared.pods.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |j, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*j)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// What a Job should do next, from its counts.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Create this many pods (negative: delete that many active ones).
    Run(i32),
    Complete,
    Fail(&'static str),
}

pub fn next(
    completions: i32,
    parallelism: i32,
    backoff_limit: i32,
    active: i32,
    succeeded: i32,
    failed: i32,
) -> Next {
    if failed > backoff_limit {
        return Next::Fail("BackoffLimitExceeded");
    }
    if succeeded >= completions {
        return Next::Complete;
    }
    let want = parallelism.min(completions - succeeded).max(0);
    Next::Run(want - active)
}

/// The annotation and label with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index of a pod of an Indexed Job.
pub fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// Indexes as upstream's `completedIndexes`: sorted, runs of consecutive ones as `a-b`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The `n` lowest indexes below `completions` that neither succeeded nor run.
pub fn free_indexes(
    completions: i32,
    succeeded: &BTreeSet<i32>,
    active: &BTreeSet<i32>,
    n: usize,
) -> Vec<i32> {
    (0..completions.max(0))
        .filter(|i| !succeeded.contains(i) && !active.contains(i))
        .take(n)
        .collect()
}

/// Gives a pod template its completion index.
fn with_index(mut pod: Pod, job: &str, index: i32) -> Pod {
    pod.metadata.generate_name = Some(format!("{job}-{index}-"));
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), index.to_string());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), index.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        if spec.hostname.is_none() {
            spec.hostname = Some(format!("{job}-{index}"));
        }
        let var = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.name == var.name) {
                env.push(var.clone());
            }
        }
    }
    pod
}

fn finished(job: &Job) -> Option<Timestamp> {
    let st = job.status.as_ref()?;
    st.conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*job);
    let ns = job.namespace().unwrap_or_default();
    let now = Timestamp::now();
    if ctx
        .shared
        .jobs
        .store()
        .get(&ObjectRef::from_obj(&*job))
        .is_none()
        || job.metadata.deletion_timestamp.is_some()
    {
        ctx.expectations.forget(&key);
        return Ok(Action::await_change());
    }
    let jobs: Api<Job> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    if let Some(done) = finished(&job) {
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let left = done.as_second() + i64::from(ttl) - now.as_second();
            if left > 0 {
                return Ok(Action::requeue(Duration::from_secs(left as u64)));
            }
            match jobs
                .delete(&job.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Action::await_change());
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods = ctx.shared.pods_in(&ns);
    {
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        if !ctx
            .expectations
            .satisfied(&key, |n| names.contains(n), |_| false)
        {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    let owned: Vec<Arc<Pod>> = pods
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let completions = spec.completions.unwrap_or(1);
    let parallelism = spec.parallelism.unwrap_or(1);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let succeeded_indexes: BTreeSet<i32> = owned
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(|p| index_of(p))
        .filter(|i| (0..completions).contains(i))
        .collect();
    let succeeded = if indexed {
        succeeded_indexes.len() as i32
    } else {
        owned.iter().filter(|p| phase(p) == "Succeeded").count() as i32
    };
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pod_is_active(p)).collect();
    let active_indexes: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
    let ready = active.iter().filter(|p| pod_is_ready(p)).count() as i32;
    let start = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(now));
    let mut decision = next(
        completions,
        parallelism,
        spec.backoff_limit.unwrap_or(6),
        active.len() as i32,
        succeeded,
        failed,
    );
    if let Some(ads) = spec.active_deadline_seconds {
        if decision != Next::Complete && start.0.as_second() + ads <= now.as_second() {
            decision = Next::Fail("DeadlineExceeded");
        }
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut completion_time = None;
    let mut active_count = active.len() as i32;
    let mut requeue = spec.active_deadline_seconds.map(|ads| {
        Duration::from_secs((start.0.as_second() + ads - now.as_second()).max(1) as u64)
    });
    match decision {
        Next::Run(n) if n > 0 => {
            let tm = spec.template.metadata.clone().unwrap_or_default();
            let pod = Pod {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{}-", job.name_any())),
                    namespace: Some(ns.clone()),
                    labels: tm.labels,
                    annotations: tm.annotations,
                    owner_references: Some(vec![controller_ref(&*job)]),
                    ..Default::default()
                },
                spec: spec.template.spec.clone(),
                status: None,
            };
            let pods: Vec<Pod> = if indexed {
                free_indexes(completions, &succeeded_indexes, &active_indexes, n as usize)
                    .into_iter()
                    .map(|i| with_index(pod.clone(), &job.name_any(), i))
                    .collect()
            } else {
                vec![pod; n as usize]
            };
            let pp = PostParams::default();
            let results =
                futures::future::join_all(pods.iter().map(|p| pod_api.create(&pp, p))).await;
            let mut names = Vec::new();
            let mut failure = None;
            for r in results {
                match r {
                    Ok(p) => {
                        ctx.recorder.normal(
                            &*job,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                        names.push(p.name_any());
                    }
                    Err(e) => failure = Some(e),
                }
            }
            active_count += names.len() as i32;
            ctx.expectations.expect(&key, names, Vec::new());
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
        Next::Run(n) if n < 0 => {
            for p in active.iter().take((-n) as usize) {
                match pod_api
                    .delete(&p.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Next::Run(_) => {}
        Next::Complete => {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
            completion_time = Some(Time(now));
            ctx.recorder
                .normal(&*job, "Completed", "Job completed".into());
            requeue = spec
                .ttl_seconds_after_finished
                .map(|t| Duration::from_secs(t.max(0) as u64));
        }
        Next::Fail(reason) => {
            for p in &active {
                let _ = pod_api
                    .delete(&p.name_any(), &DeleteParams::default())
                    .await;
            }
            active_count = 0;
            let msg = if reason == "DeadlineExceeded" {
                "Job was active longer than specified deadline"
            } else {
                "Job has reached the specified backoff limit"
            };
            conditions.push(condition("FailureTarget", reason, msg, now));
            conditions.push(condition("Failed", reason, msg, now));
            ctx.recorder.warning(&*job, reason, msg.into());
            requeue = spec
                .ttl_seconds_after_finished
                .map(|t| Duration::from_secs(t.max(0) as u64));
        }
    }
    let mut status = json!({
        "active": active_count,
        "succeeded": succeeded,
        "failed": failed,
        "ready": ready,
        "startTime": start,
        "conditions": conditions,
    });
    if let Some(t) = completion_time {
        status["completionTime"] = json!(t);
    }
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&succeeded_indexes));
    }
    let cur = serde_json::to_value(&job.status).unwrap_or_default();
    let changed = [
        "active",
        "succeeded",
        "failed",
        "ready",
        "startTime",
        "conditions",
        "completionTime",
        "completedIndexes",
    ]
    .iter()
    .any(|k| {
        let a = cur.get(*k).cloned().unwrap_or_default();
        let b = status.get(*k).cloned().unwrap_or_default();
        let zero = |v: &serde_json::Value| {
            v.is_null() || v == &json!(0) || v == &json!([]) || v == &json!("")
        };
        a != b && !(zero(&a) && zero(&b))
    });
    if changed {
        match jobs
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.backoff.forget(&key);
    Ok(requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_up_to_parallelism_then_completes_or_fails() {
        assert_eq!(next(5, 2, 6, 0, 0, 0), Next::Run(2));
        assert_eq!(next(5, 2, 6, 2, 0, 0), Next::Run(0));
        assert_eq!(next(5, 2, 6, 1, 4, 0), Next::Run(0));
        assert_eq!(next(5, 2, 6, 0, 4, 0), Next::Run(1));
        assert_eq!(next(5, 2, 6, 0, 5, 0), Next::Complete);
        assert_eq!(next(5, 2, 1, 0, 0, 2), Next::Fail("BackoffLimitExceeded"));
    }

    #[test]
    fn indexes_are_handed_out_lowest_first_and_listed_as_ranges() {
        let done: BTreeSet<i32> = [0, 1, 2, 4, 7, 8].into();
        assert_eq!(format_indexes(&done), "0-2,4,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        let running: BTreeSet<i32> = [3].into();
        assert_eq!(free_indexes(10, &done, &running, 2), vec![5, 6]);
        assert_eq!(free_indexes(5, &done, &running, 3), Vec::<i32>::new());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        use k8s_openapi::api::core::v1::{Container, PodSpec};
        let pod = Pod {
            metadata: ObjectMeta::default(),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let p = with_index(pod, "pi", 3);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-3-"));
        assert_eq!(index_of(&p), Some(3));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
    }
}
