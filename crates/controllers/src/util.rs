//! What the controllers share: the error type, per-key retry backoff, expectations, events and
//! pod predicates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Event, EventSource, Node, ObjectReference, Pod, PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};

/// What a reconcile can fail with; every failure is retried with per-key backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error("invalid object: {0}")]
    Invalid(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Objects per list request in [`list_pages`], as upstream's pagers (`pager.New`).
pub const LIST_PAGE: u32 = 500;

/// Every item a list returns, asked for in pages of [`LIST_PAGE`] so that no single
/// response grows with the data; `fetch` lists with the given parameters.
pub async fn list_pages<T, F, Fut>(lp: &kube::api::ListParams, mut fetch: F) -> kube::Result<Vec<T>>
where
    T: Clone,
    F: FnMut(kube::api::ListParams) -> Fut,
    Fut: std::future::Future<Output = kube::Result<kube::core::ObjectList<T>>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut page = lp.clone().limit(LIST_PAGE);
        if let Some(t) = token.take() {
            page = page.continue_token(&t);
        }
        let list = fetch(page).await?;
        items.extend(list.items);
        match list.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(items),
        }
    }
}

/// The HTTP status of an API error, if it is one.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// True for 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    api_code(e) == Some(404)
}

/// True for 409 AlreadyExists or Conflict.
pub fn is_conflict(e: &kube::Error) -> bool {
    api_code(e) == Some(409)
}

/// True when a write of a per-namespace object lost a harmless race: someone else wrote it
/// (409; the watch brings the controller back), or the namespace is gone or terminating
/// (404, 403).
pub fn lost_namespace_race(e: &kube::Error) -> bool {
    is_conflict(e) || is_not_found(e) || api_code(e) == Some(403)
}

/// Per-key exponential backoff for failed reconciles, as upstream's rate-limited work queue:
/// 100 ms doubling up to 60 s, forgotten after a success.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn fail(&self, key: &str) -> Action {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let ms = 100u64.saturating_mul(1u64 << (*n - 1).min(20)).min(60_000);
        Action::requeue(Duration::from_millis(ms))
    }

    pub fn forget(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// How long an unmet expectation is trusted before the cache is believed instead (upstream: 5 min).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default, Debug)]
struct Expected {
    adds: Vec<String>,
    deletes: Vec<String>,
    at: Option<Instant>,
}

/// Expectations: the pods an owner has created (by name) and deleted (by uid) that its cache has
/// not shown yet. While any are outstanding the owner does not act, so a stale cache never makes
/// it create or delete twice.
#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    /// Records creations (names) and deletions (uids) just made for `key`.
    pub fn expect(&self, key: &str, adds: Vec<String>, deletes: Vec<String>) {
        if adds.is_empty() && deletes.is_empty() {
            return;
        }
        let mut m = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(key.to_string()).or_default();
        e.adds.extend(adds);
        e.deletes.extend(deletes);
        e.at = Some(Instant::now());
    }

    /// [`Expectations::satisfied`] against the pods in a controller's namespace.
    pub fn satisfied_by_pods(&self, key: &str, pods: &[std::sync::Arc<Pod>]) -> bool {
        let names: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let uids: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.satisfied(key, |n| names.contains(n), |u| uids.contains(u))
    }

    /// True when the cache has caught up with what `key` did: every created name is present and
    /// every deleted uid is gone (or the expectations expired). Satisfied ones are forgotten.
    pub fn satisfied(
        &self,
        key: &str,
        present_name: impl Fn(&str) -> bool,
        present_uid: impl Fn(&str) -> bool,
    ) -> bool {
        let mut m = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = m.get_mut(key) else {
            return true;
        };
        e.adds.retain(|n| !present_name(n));
        e.deletes.retain(|u| present_uid(u));
        let expired = e.at.is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        if (e.adds.is_empty() && e.deletes.is_empty()) || expired {
            m.remove(key);
            return true;
        }
        false
    }

    pub fn forget(&self, key: &str) {
        self.by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Writes core/v1 Events for what a controller did, so `kubectl describe` tells the story.
/// Writing is fire-and-forget: a lost event never fails a reconcile.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.record(obj, "Normal", reason, message)
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.record(obj, "Warning", reason, message)
    }

    fn record<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: &str,
        reason: &str,
        message: String,
    ) {
        let involved = object_reference(obj);
        let ns = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let now = Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    involved.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond() as u128 ^ rand::random::<u32>() as u128
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(kind.to_string()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.component.to_string()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "writing event failed");
            }
        });
    }
}

/// An ObjectReference to `obj`, as events and endpoints carry.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// The controlling owner reference `obj` would carry for `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether [`patch_finalizers`] adds or removes its finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    Add,
    Remove,
}

/// The finalizers `current` should have after `change` of `finalizer`; `None` when they are
/// right already.
pub fn changed_finalizers(
    current: &[String],
    finalizer: &str,
    change: FinalizerChange,
) -> Option<Vec<String>> {
    let has = current.iter().any(|f| f == finalizer);
    match change {
        FinalizerChange::Add if !has => {
            let mut out = current.to_vec();
            out.push(finalizer.to_string());
            Some(out)
        }
        FinalizerChange::Remove if has => Some(
            current
                .iter()
                .filter(|f| *f != finalizer)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

/// Adds or removes one finalizer of the object `meta` describes (as cached). The merge patch
/// carries the cached resourceVersion, so a finalizer list that changed meanwhile is a
/// conflict and a retry rather than a lost finalizer; an object already gone is no error.
pub async fn patch_finalizers<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
    change: FinalizerChange,
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = meta.finalizers.clone().unwrap_or_default();
    let Some(next) = changed_finalizers(&current, finalizer, change) else {
        return Ok(());
    };
    let patch = serde_json::json!({"metadata": {
        "finalizers": next,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or("");
    match api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `namespace/name` of an object, the key of expectations and backoff.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Not terminated and not being deleted: the pods that count towards replicas.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition became True, if it is true.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// The labels of a selector as a `machinery` selector (an invalid selector matches nothing).
pub fn selector_of(
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> krust_machinery::selector::Selector {
    use krust_machinery::selector::Selector;
    let Some(sel) = sel else {
        return Selector::nothing();
    };
    match serde_json::to_value(sel) {
        Ok(v) => Selector::from_label_selector(&v).unwrap_or_else(|_| Selector::nothing()),
        Err(_) => Selector::nothing(),
    }
}

/// The labels of an object (empty when it has none).
pub fn labels_of(meta: &ObjectMeta) -> std::collections::BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Whether `tol` tolerates `taint` (upstream's `ToleratesTaint`): same effect (or any), and the
/// key matches with `Exists`, or key and value match with `Equal` (the default).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'t>(
    taints: &'t [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'t Taint> {
    taints.iter().find(|t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

/// Whether a pod spec's `nodeSelector` and required node affinity admit `node`.
pub fn node_selected(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    required.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        let fields = t.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|r| {
                krust_machinery::selector::node_requirement_holds(
                    r,
                    labels.get(&r.key).map(String::as_str),
                )
            })
            && fields.iter().all(|r| {
                krust_machinery::selector::node_requirement_holds(
                    r,
                    (r.key == "metadata.name").then_some(name),
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelectorRequirement;

    #[test]
    fn finalizer_changes() {
        let fins = vec!["a".to_string(), "b".to_string()];
        assert_eq!(changed_finalizers(&fins, "a", FinalizerChange::Add), None);
        assert_eq!(
            changed_finalizers(&fins, "c", FinalizerChange::Add),
            Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        );
        assert_eq!(
            changed_finalizers(&fins, "a", FinalizerChange::Remove),
            Some(vec!["b".to_string()])
        );
        assert_eq!(
            changed_finalizers(&fins, "c", FinalizerChange::Remove),
            None
        );
    }

    #[test]
    fn expectations_block_until_the_cache_catches_up() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", |_| false, |_| false));
        e.expect("ns/a", vec!["p1".into(), "p2".into()], vec!["u9".into()]);
        assert!(!e.satisfied("ns/a", |n| n == "p1", |_| true));
        assert!(!e.satisfied("ns/a", |n| n == "p2", |_| true));
        // both names seen (p1 forgotten already), uid still present
        assert!(!e.satisfied("ns/a", |_| true, |u| u == "u9"));
        assert!(e.satisfied("ns/a", |_| true, |_| false));
        assert!(e.satisfied("ns/a", |_| false, |_| true));
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(String::from),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(String::from),
            operator: Some(op.into()),
            value: value.map(String::from),
            effect: effect.map(String::from),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_match_taints_as_upstream() {
        let t = taint("node.kubernetes.io/unreachable", None, "NoExecute");
        assert!(tolerates(
            &tol(
                Some("node.kubernetes.io/unreachable"),
                "Exists",
                None,
                Some("NoExecute")
            ),
            &t
        ));
        assert!(
            tolerates(&tol(None, "Exists", None, None), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &tol(
                Some("node.kubernetes.io/unreachable"),
                "Exists",
                None,
                Some("NoSchedule")
            ),
            &t
        ));
        let g = taint("gpu", Some("true"), "NoSchedule");
        assert!(tolerates(
            &tol(Some("gpu"), "Equal", Some("true"), None),
            &g
        ));
        assert!(!tolerates(
            &tol(Some("gpu"), "Equal", Some("false"), None),
            &g
        ));
        assert!(untolerated(&[g.clone(), t.clone()], &[], &["NoExecute"])
            .is_some_and(|x| x.key == t.key));
        assert!(untolerated(&[g], &[], &["NoExecute"]).is_none());
    }

    #[test]
    fn node_selection_honours_selector_and_affinity_fields() {
        use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm};
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some([("disk".to_string(), "ssd".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut spec = PodSpec::default();
        assert!(node_selected(&spec, &node));
        spec.node_selector = Some([("disk".to_string(), "hdd".to_string())].into());
        assert!(!node_selected(&spec, &node));
        spec.node_selector = None;
        let pin = |name: &str| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec![name.into()]),
                        }]),
                        match_expressions: None,
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        };
        spec.affinity = Some(pin("n1"));
        assert!(node_selected(&spec, &node));
        spec.affinity = Some(pin("n2"));
        assert!(!node_selected(&spec, &node));
    }

    #[test]
    fn backoff_doubles_and_is_forgotten() {
        let b = Backoff::default();
        assert_eq!(b.fail("k"), Action::requeue(Duration::from_millis(100)));
        assert_eq!(b.fail("k"), Action::requeue(Duration::from_millis(200)));
        assert_eq!(b.fail("k"), Action::requeue(Duration::from_millis(400)));
        b.forget("k");
        assert_eq!(b.fail("k"), Action::requeue(Duration::from_millis(100)));
        for _ in 0..40 {
            b.fail("k");
        }
        assert_eq!(b.fail("k"), Action::requeue(Duration::from_secs(60)));
    }
}
