//! Events about a pod's containers (Unhealthy, Killing, FailedPostStartHook, ...), written as
//! core/v1 Events from `kubelet` so `kubectl describe pod` and `kubectl get events` tell the
//! story. Writing is fire-and-forget: a lost event never fails a sync.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

/// Events kept in memory: (type, reason, message).
pub type Recorded = Arc<Mutex<Vec<(String, String, String)>>>;

#[derive(Clone)]
enum Target {
    Api(kube::Client),
    /// Unit tests read what would have been written.
    Memory(Recorded),
}

/// Where a pod's events go.
#[derive(Clone)]
pub struct EventSink {
    target: Target,
    pod: ObjectReference,
    node: String,
}

impl EventSink {
    pub fn new(client: kube::Client, pod: &Pod, node: &str) -> EventSink {
        EventSink {
            target: Target::Api(client),
            pod: reference(pod),
            node: node.to_string(),
        }
    }

    /// A sink that keeps (type, reason, message) in memory, for tests.
    pub fn memory(pod: &Pod) -> (EventSink, Recorded) {
        let store = Arc::new(Mutex::new(Vec::new()));
        (
            EventSink {
                target: Target::Memory(store.clone()),
                pod: reference(pod),
                node: String::new(),
            },
            store,
        )
    }

    pub fn normal(&self, container: &str, reason: &str, message: String) {
        self.record(container, "Normal", reason, message);
    }

    pub fn warning(&self, container: &str, reason: &str, message: String) {
        self.record(container, "Warning", reason, message);
    }

    fn record(&self, container: &str, type_: &str, reason: &str, message: String) {
        let client = match &self.target {
            Target::Memory(store) => {
                store.lock().unwrap_or_else(|e| e.into_inner()).push((
                    type_.to_string(),
                    reason.to_string(),
                    message,
                ));
                return;
            }
            Target::Api(client) => client.clone(),
        };
        let ns = self
            .pod
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let now = Timestamp::now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut involved = self.pod.clone();
        if !container.is_empty() {
            involved.field_path = Some(format!("spec.containers{{{container}}}"));
        }
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{nanos:x}",
                    self.pod.name.as_deref().unwrap_or("pod")
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some("kubelet".to_string()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some("kubelet".to_string()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(client, &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "writing an event failed");
            }
        });
    }
}

fn reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: None,
    }
}
