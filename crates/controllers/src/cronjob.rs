//! CronJobController (upstream's v2): creates a Job at each time of the CronJob's schedule.
//!
//! Each reconcile reads the CronJob's Jobs from the cache, records finished ones (status
//! `active`, `lastSuccessfulTime`, a SawCompletedJob event), deletes the oldest finished ones
//! beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`, then, unless suspended, finds
//! the latest scheduled time since `lastScheduleTime` (or creation), no older than
//! `startingDeadlineSeconds`, and starts Job `<cronjob>-<minutes since the epoch>` for it,
//! honouring `concurrencyPolicy` (Allow, Forbid: skip while one runs, Replace: delete the
//! running ones first). It then sleeps until the next scheduled time. Schedules are parsed by
//! [`schedule`], with `timeZone` or `CRON_TZ=`.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, object_reference, Backoff,
    Recorder, Result,
};
use crate::{Shared, Shutdown};
use schedule::Schedule;

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed runs beyond which a warning is recorded (upstream: 100).
const TOO_MANY_MISSED: u32 = 100;

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
        recorder: Recorder::new(shared.client.clone(), "cronjob-controller"),
    });
    Controller::for_stream(shared.cronjobs.subscribe(), shared.cronjobs.store())
        .owns_stream(shared.jobs.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |c, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*c)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The name of the Job for scheduled time `t`.
pub fn job_name(cronjob: &str, t: Timestamp) -> String {
    format!("{cronjob}-{}", t.as_second().div_euclid(60))
}

/// `Complete` or `Failed` and when, for a finished Job.
fn finished(job: &Job) -> Option<(&str, Timestamp)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            (
                c.type_.as_str(),
                c.last_transition_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            )
        })
}

fn started(job: &Job) -> Timestamp {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The names of the finished Jobs to delete so at most `limit` of each kind stay, oldest first.
pub fn over_history(finished_jobs: &mut [(Timestamp, String)], limit: i32) -> Vec<String> {
    finished_jobs.sort();
    let excess = finished_jobs.len().saturating_sub(limit.max(0) as usize);
    finished_jobs[..excess]
        .iter()
        .map(|(_, n)| n.clone())
        .collect()
}

/// What to do at scheduled time `t` given the running Jobs.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Run,
    Skip,
    ReplaceThenRun,
}

pub fn concurrency(policy: &str, active: usize) -> Start {
    match (policy, active) {
        (_, 0) => Start::Run,
        ("Forbid", _) => Start::Skip,
        ("Replace", _) => Start::ReplaceThenRun,
        _ => Start::Run,
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*cj);
    if ctx
        .shared
        .cronjobs
        .store()
        .get(&ObjectRef::from_obj(&*cj))
        .is_none()
        || cj.metadata.deletion_timestamp.is_some()
    {
        ctx.backoff.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let job_api: Api<Job> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let jobs: Vec<Arc<Job>> = ctx
        .shared
        .jobs
        .store()
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let was_active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    let mut active: Vec<Arc<Job>> = Vec::new();
    let mut last_successful = status.last_successful_time.as_ref().map(|t| t.0);
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for j in &jobs {
        match finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(j.clone()),
            None => {}
            Some((kind, at)) => {
                if was_active.contains(&j.name_any()) {
                    ctx.recorder.normal(
                        &*cj,
                        "SawCompletedJob",
                        format!("Saw completed job: {}, condition: {kind}", j.name_any()),
                    );
                }
                if kind == "Complete" {
                    last_successful = Some(last_successful.map_or(at, |l: Timestamp| l.max(at)));
                    succeeded.push((started(j), j.name_any()));
                } else {
                    failed.push((started(j), j.name_any()));
                }
            }
        }
    }
    // History limits.
    let mut doomed = over_history(
        &mut succeeded,
        spec.successful_jobs_history_limit.unwrap_or(3),
    );
    doomed.extend(over_history(
        &mut failed,
        spec.failed_jobs_history_limit.unwrap_or(1),
    ));
    for j in doomed {
        match job_api.delete(&j, &DeleteParams::background()).await {
            Ok(_) => ctx
                .recorder
                .normal(&*cj, "SuccessfulDelete", format!("Deleted job {j}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let now = Timestamp::now();
    let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut requeue = None;
    if !spec.suspend.unwrap_or(false) {
        match Schedule::parse(&spec.schedule, spec.time_zone.as_deref().unwrap_or("")) {
            Err(e) => {
                let reason = if matches!(e, schedule::ScheduleError::TimeZone(_)) {
                    "UnknownTimeZone"
                } else {
                    "UnparseableSchedule"
                };
                ctx.recorder.warning(
                    &*cj,
                    reason,
                    format!("unparseable schedule {:?}: {e}", spec.schedule),
                );
            }
            Ok(sched) => {
                let mut earliest = last_schedule
                    .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .unwrap_or(now);
                if let Some(sds) = spec.starting_deadline_seconds {
                    let floor = now
                        .checked_sub(SignedDuration::from_secs(sds.max(0)))
                        .unwrap_or(now);
                    earliest = earliest.max(floor);
                }
                let (due, missed) = sched.most_recent(earliest, now);
                if missed > TOO_MANY_MISSED {
                    ctx.recorder.warning(
                        &*cj,
                        "TooManyMissedTimes",
                        format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
                    );
                }
                if let Some(t) = due {
                    let jname = job_name(&name, t);
                    let exists = jobs.iter().any(|j| j.name_any() == jname);
                    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                    match concurrency(policy, if exists { 0 } else { active.len() }) {
                        _ if exists => last_schedule = Some(t),
                        Start::Skip => {
                            tracing::debug!(cronjob = %key, "a job is still running; Forbid skips this run");
                        }
                        start => {
                            if start == Start::ReplaceThenRun {
                                for j in active.drain(..) {
                                    match job_api
                                        .delete(&j.name_any(), &DeleteParams::background())
                                        .await
                                    {
                                        Ok(_) => ctx.recorder.normal(
                                            &*cj,
                                            "SuccessfulDelete",
                                            format!("Deleted job {}", j.name_any()),
                                        ),
                                        Err(e) if is_not_found(&e) => {}
                                        Err(e) => return Err(e.into()),
                                    }
                                }
                            }
                            let job = job_for(&cj, &jname, t);
                            match job_api.create(&PostParams::default(), &job).await {
                                Ok(j) => {
                                    ctx.recorder.normal(
                                        &*cj,
                                        "SuccessfulCreate",
                                        format!("Created job {jname}"),
                                    );
                                    active.push(Arc::new(j));
                                }
                                Err(e) if is_conflict(&e) => {}
                                Err(e) => {
                                    ctx.recorder.warning(
                                        &*cj,
                                        "FailedCreate",
                                        format!("Error creating job: {e}"),
                                    );
                                    return Err(e.into());
                                }
                            }
                            last_schedule = Some(t);
                        }
                    }
                }
                requeue = sched.next(now).map(|n| {
                    let d = n.as_millisecond() - now.as_millisecond() + 100;
                    Duration::from_millis(d.max(100) as u64)
                });
            }
        }
    }

    // Status.
    let refs: Vec<Value> = active
        .iter()
        .map(|j| serde_json::to_value(object_reference(&**j)).unwrap_or(Value::Null))
        .collect();
    let new_status = json!({
        "active": if refs.is_empty() { Value::Null } else { Value::Array(refs) },
        "lastScheduleTime": last_schedule.map(Time),
        "lastSuccessfulTime": last_successful.map(Time),
    });
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect()
    };
    let old = serde_json::to_value(&status).unwrap_or_default();
    if names(&old["active"]) != names(&new_status["active"])
        || old.get("lastScheduleTime").unwrap_or(&Value::Null) != &new_status["lastScheduleTime"]
        || old.get("lastSuccessfulTime").unwrap_or(&Value::Null)
            != &new_status["lastSuccessfulTime"]
    {
        let api: Api<CronJob> = Api::namespaced(ctx.shared.client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": new_status })),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    ctx.backoff.forget(&key);
    Ok(requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// The Job for scheduled time `t`, from the CronJob's jobTemplate.
pub fn job_for(cj: &CronJob, name: &str, t: Timestamp) -> Job {
    let tmpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = tmpl.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), t.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: tmpl.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_count_minutes() {
        let t: Timestamp = "2024-01-01T00:01:00Z".parse().expect("ts");
        assert_eq!(job_name("hello", t), "hello-28401121");
    }

    #[test]
    fn history_keeps_the_newest() {
        let t = |s: i64| Timestamp::from_second(s).expect("ts");
        let mut done = vec![
            (t(300), "c".to_string()),
            (t(100), "a".to_string()),
            (t(200), "b".to_string()),
        ];
        assert_eq!(over_history(&mut done, 1), vec!["a", "b"]);
        assert_eq!(over_history(&mut done, 3), Vec::<String>::new());
        assert_eq!(over_history(&mut done, 0).len(), 3);
    }

    #[test]
    fn concurrency_policies() {
        assert_eq!(concurrency("Allow", 2), Start::Run);
        assert_eq!(concurrency("Forbid", 1), Start::Skip);
        assert_eq!(concurrency("Forbid", 0), Start::Run);
        assert_eq!(concurrency("Replace", 1), Start::ReplaceThenRun);
    }
}
