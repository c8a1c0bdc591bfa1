//! GarbageCollector: cascading deletion by ownerReferences, as upstream's
//! `pkg/controller/garbagecollector`.
//!
//! A graph of every object of every listable, watchable, deletable resource found through
//! discovery (events left out) is kept from one watch per resource: for each uid its identity,
//! owners, finalizers and whether it is being deleted. Changes enqueue uids on a work queue;
//! one worker processes them:
//! - an object whose owners are all gone (absent from the graph, then confirmed absent or
//!   replaced through a live GET, so a lagging watch never deletes anything) is deleted in the
//!   background; dangling references next to a live owner are removed;
//! - an object being deleted with the `foregroundDeletion` finalizer has its dependents deleted
//!   (in the foreground too), and loses the finalizer once no blocking dependent is left; a
//!   dependent whose owner is being deleted in the foreground and blocks it is deleted;
//! - an object being deleted with the `orphan` finalizer has its references removed from its
//!   dependents, then loses the finalizer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Api;
use serde_json::json;
use tokio::sync::Notify;

use crate::util::{is_not_found, patch_finalizers, FinalizerChange};
use crate::{Shared, Shutdown};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// One object in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

/// The ownership graph: objects by uid and dependents by owner uid.
#[derive(Default)]
pub struct Graph {
    pub nodes: HashMap<String, Node>,
    pub dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Inserts or replaces `uid`; returns the uids whose processing this may affect.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Vec<String> {
        let mut touched = vec![uid.to_string()];
        if let Some(old) = self.nodes.get(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        if node.deleting {
            touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        }
        self.nodes.insert(uid.to_string(), node);
        touched
    }

    /// Removes `uid`; returns its dependents and owners, which must be looked at again.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() && !self.nodes.contains_key(&o.uid) {
                        self.dependents.remove(&o.uid);
                    }
                }
                touched.push(o.uid.clone());
            }
        }
        touched
    }
}

/// A de-duplicating FIFO of uids.
#[derive(Default)]
struct Queue {
    items: Mutex<(VecDeque<String>, HashSet<String>)>,
    notify: Notify,
}

impl Queue {
    fn add(&self, uids: impl IntoIterator<Item = String>) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for u in uids {
            if q.1.insert(u.clone()) {
                q.0.push_back(u);
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    async fn next(&self) -> String {
        loop {
            {
                let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(u) = q.0.pop_front() {
                    q.1.remove(&u);
                    return u;
                }
            }
            self.notify.notified().await;
        }
    }
}

struct Gc {
    client: kube::Client,
    /// Append-only (nodes name resources by index); new kinds join as discovery finds them.
    resources: std::sync::RwLock<Vec<(ApiResource, bool)>>,
    graph: Mutex<Graph>,
    queue: Queue,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let client = shared.client.clone();
    let resources = loop {
        match discover(&client).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector discovery failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.clone() => return,
                }
            }
        }
    };
    let gc = Arc::new(Gc {
        client,
        resources: std::sync::RwLock::new(Vec::new()),
        graph: Mutex::default(),
        queue: Queue::default(),
    });
    gc.add_resources(resources);
    tokio::spawn(rediscover(gc.clone()));
    let worker = async {
        loop {
            let uid = gc.queue.next().await;
            match process(&gc, &uid).await {
                Ok(Some(again)) => {
                    let gc = gc.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(again).await;
                        gc.queue.add([uid]);
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, %uid, "garbage collection failed; retrying");
                    let gc = gc.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        gc.queue.add([uid]);
                    });
                }
            }
        }
    };
    tokio::select! {
        _ = worker => {}
        _ = shutdown => {}
    }
}

async fn discover(client: &kube::Client) -> Result<Vec<(ApiResource, bool)>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if ar.plural == "events" {
                continue;
            }
            if caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::WATCH)
                && caps.supports_operation(verbs::DELETE)
            {
                out.push((ar, caps.scope == Scope::Namespaced));
            }
        }
    }
    Ok(out)
}

fn node_of(resource: usize, obj: &DynamicObject) -> Option<(String, Node)> {
    let m = &obj.metadata;
    Some((
        m.uid.clone()?,
        Node {
            resource,
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            owners: m.owner_references.clone().unwrap_or_default(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
        },
    ))
}

/// Keeps the graph current from one resource's watch.
/// Upstream's GC resyncs discovery every 30 s: kinds defined later (custom resources) join.
const REDISCOVERY: Duration = Duration::from_secs(30);

async fn rediscover(gc: Arc<Gc>) {
    loop {
        tokio::time::sleep(REDISCOVERY).await;
        match discover(&gc.client).await {
            Ok(found) => gc.add_resources(found),
            Err(e) => tracing::debug!(error = %e, "garbage collector rediscovery failed"),
        }
    }
}

async fn feed(gc: Arc<Gc>, i: usize) {
    let Some((ar, _)) = gc.resource(i) else {
        return;
    };
    let api: Api<DynamicObject> = Api::all_with(gc.client.clone(), &ar);
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        let touched = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let Some((uid, node)) = node_of(i, &o) else {
                    continue;
                };
                let interesting =
                    !node.owners.is_empty() || node.deleting || !node.finalizers.is_empty();
                let mut g = gc.graph.lock().unwrap_or_else(|p| p.into_inner());
                let t = g.upsert(&uid, node);
                if interesting {
                    t
                } else {
                    Vec::new()
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                let Some(uid) = o.metadata.uid.clone() else {
                    continue;
                };
                gc.graph
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&uid)
            }
            _ => continue,
        };
        if !touched.is_empty() {
            gc.queue.add(touched);
        }
    }
}

impl Gc {
    fn resource(&self, i: usize) -> Option<(ApiResource, bool)> {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
    }

    /// Watches the resources not watched yet.
    fn add_resources(self: &Arc<Self>, found: Vec<(ApiResource, bool)>) {
        let mut resources = self.resources.write().unwrap_or_else(|p| p.into_inner());
        for r in found {
            if resources
                .iter()
                .any(|(ar, _)| ar.api_version == r.0.api_version && ar.plural == r.0.plural)
            {
                continue;
            }
            resources.push(r);
            tokio::spawn(feed(self.clone(), resources.len() - 1));
        }
    }

    fn api_for(&self, node: &Node) -> Api<DynamicObject> {
        // Nodes only name resources that were pushed, and none is ever removed.
        let resources = self.resources.read().unwrap_or_else(|p| p.into_inner());
        let (ar, namespaced) = &resources[node.resource];
        match (&node.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The resource an owner reference points at.
    fn resource_of(&self, r: &OwnerReference) -> Option<usize> {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .position(|(ar, _)| ar.api_version == r.api_version && ar.kind == r.kind)
    }

    /// Whether the owner `r` of `dependent` exists, asking the API server when the graph does
    /// not know it.
    async fn owner_exists(
        &self,
        dependent: &Node,
        r: &OwnerReference,
    ) -> Result<bool, kube::Error> {
        if self
            .graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .contains_key(&r.uid)
        {
            return Ok(true);
        }
        let Some(res) = self.resource_of(r) else {
            // An owner of a kind we cannot resolve is never assumed absent.
            return Ok(true);
        };
        let probe = Node {
            resource: res,
            namespace: if self.resource(res).is_some_and(|(_, namespaced)| namespaced) {
                dependent.namespace.clone()
            } else {
                None
            },
            name: r.name.clone(),
            owners: Vec::new(),
            finalizers: Vec::new(),
            deleting: false,
        };
        match self.api_for(&probe).get(&r.name).await {
            Ok(o) => Ok(o.metadata.uid.as_deref() == Some(r.uid.as_str())),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), kube::Error> {
        let api = self.api_for(node);
        match api.get(&node.name).await {
            Ok(current) => {
                patch_finalizers(&api, &current.metadata, finalizer, FinalizerChange::Remove).await
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, uid: &str, node: &Node, dp: DeleteParams) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..dp
        };
        match self.api_for(node).delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Handles one uid; returns when to look at it again, if ever.
async fn process(gc: &Gc, uid: &str) -> Result<Option<Duration>, kube::Error> {
    let (node, dependents) = {
        let g = gc.graph.lock().unwrap_or_else(|p| p.into_inner());
        let Some(node) = g.nodes.get(uid).cloned() else {
            return Ok(None);
        };
        let deps: Vec<(String, Node)> = g
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect();
        (node, deps)
    };
    if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
        for (duid, dep) in &dependents {
            let refs: Vec<&OwnerReference> = dep.owners.iter().filter(|r| r.uid != uid).collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "uid": duid}});
            match gc
                .api_for(dep)
                .patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        gc.remove_finalizer(&node, ORPHAN).await?;
        return Ok(None);
    }
    if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
        let blocking: Vec<&(String, Node)> = dependents
            .iter()
            .filter(|(_, d)| {
                d.owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            })
            .collect();
        for (duid, dep) in &dependents {
            if !dep.deleting {
                gc.delete(duid, dep, DeleteParams::foreground()).await?;
            }
        }
        if blocking.is_empty() {
            gc.remove_finalizer(&node, FOREGROUND).await?;
            return Ok(None);
        }
        return Ok(Some(Duration::from_secs(1)));
    }
    if node.owners.is_empty() || node.deleting {
        return Ok(None);
    }
    let mut dangling = Vec::new();
    let mut alive = 0usize;
    let mut owner_foreground = false;
    for r in &node.owners {
        if gc.owner_exists(&node, r).await? {
            alive += 1;
            let g = gc.graph.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(o) = g.nodes.get(&r.uid) {
                if o.deleting
                    && o.finalizers.iter().any(|f| f == FOREGROUND)
                    && r.block_owner_deletion == Some(true)
                {
                    owner_foreground = true;
                }
            }
        } else {
            dangling.push(r.uid.clone());
        }
    }
    if alive == 0 {
        gc.delete(uid, &node, DeleteParams::background()).await?;
    } else if owner_foreground {
        gc.delete(uid, &node, DeleteParams::foreground()).await?;
    } else if !dangling.is_empty() {
        let refs: Vec<&OwnerReference> = node
            .owners
            .iter()
            .filter(|r| !dangling.contains(&r.uid))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": uid}});
        match gc
            .api_for(&node)
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, owners: &[&str], deleting: bool) -> Node {
        Node {
            resource: 0,
            namespace: Some("ns".into()),
            name: name.into(),
            owners: owners
                .iter()
                .map(|u| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: u.to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                })
                .collect(),
            finalizers: vec![],
            deleting,
        }
    }

    #[test]
    fn graph_tracks_dependents_and_reports_what_to_revisit() {
        let mut g = Graph::default();
        g.upsert("rs1", node("rs", &[], false));
        g.upsert("p1", node("p1", &["rs1"], false));
        g.upsert("p2", node("p2", &["rs1"], false));
        assert_eq!(g.dependents["rs1"].len(), 2);
        // the owner starts deleting: its dependents are revisited
        let mut t = g.upsert("rs1", node("rs", &[], true));
        t.sort();
        assert_eq!(t, vec!["p1", "p2", "rs1"]);
        // a dependent goes: its owner is revisited
        assert_eq!(g.remove("p1"), vec!["rs1"]);
        // the owner goes: remaining dependents are revisited
        assert_eq!(g.remove("rs1"), vec!["p2"]);
        // a dependent changes owners
        g.upsert("p2", node("p2", &["rs2"], false));
        assert!(g.dependents.get("rs1").is_none_or(|d| d.is_empty()));
        assert!(g.dependents["rs2"].contains("p2"));
    }
}
