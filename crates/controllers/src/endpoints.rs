//! EndpointsController and EndpointSliceController: for every Service with a selector, the
//! ready and not-ready addresses of the pods it selects, with target ports resolved by name
//! against each pod's container ports. Endpoints group pods by their resolved port set into
//! subsets; EndpointSlices (one per port set, labelled `kubernetes.io/service-name` and owned
//! by the Service) carry ready/serving/terminating conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::util::{
    controller_ref, is_conflict, is_not_found, key_of, object_reference, pod_is_ready, Backoff,
    Result,
};
use crate::{Shared, Shutdown};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

struct Ctx {
    shared: Arc<Shared>,
    backoff: Backoff,
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        backoff: Backoff::default(),
    });
    let services = shared.services.store();
    let pod_services = move |pod: Pod| -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.selector.as_ref())
                    .is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
            })
            .map(|s| ObjectRef::from_obj(&**s))
            .collect()
    };
    Controller::for_stream(shared.services.subscribe(), shared.services.store())
        .watches_stream(shared.pods.subscribe(), pod_services)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |s, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&key_of(&*s)),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A pod's ports for the service's ports: (name, port, protocol), None when a named target
/// port is not found on the pod.
pub fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<(Option<String>, i32, String)> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in ports {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(i)) => Some(*i),
            Some(IntOrString::String(name)) => pod
                .spec
                .as_ref()
                .into_iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|cp| cp.container_port),
        };
        if let Some(port) = port {
            out.push((p.name.clone(), port, protocol));
        }
    }
    out
}

/// Endpoints subsets and slices' endpoints by port set, for the selected pods.
#[allow(clippy::type_complexity)]
pub fn group(
    svc: &Service,
    pods: &[Arc<Pod>],
) -> BTreeMap<Vec<(Option<String>, i32, String)>, Vec<(Arc<Pod>, bool)>> {
    let mut by_ports: BTreeMap<_, Vec<(Arc<Pod>, bool)>> = BTreeMap::new();
    for pod in pods {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if ip.is_none() || matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let ports = resolve_ports(svc, pod);
        // publishNotReadyAddresses: every pod counts as ready (upstream's tolerate-unready).
        let publish_all = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let ready = publish_all || (pod_is_ready(pod) && pod.metadata.deletion_timestamp.is_none());
        by_ports
            .entry(ports)
            .or_default()
            .push((pod.clone(), ready));
    }
    by_ports
}

/// The pod's hostname for the Service's endpoints: set when the pod names the Service as its
/// `subdomain` and has a `hostname` (StatefulSet pods do), as upstream; DNS serves it as
/// `<hostname>.<service>.<namespace>.svc.<domain>`.
fn endpoint_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let same_ns = pod.metadata.namespace == svc.metadata.namespace;
    (same_ns && spec.subdomain.is_some() && spec.subdomain == svc.metadata.name)
        .then(|| spec.hostname.clone())
        .flatten()
        .filter(|h| !h.is_empty())
}

fn address(svc: &Service, pod: &Pod) -> EndpointAddress {
    EndpointAddress {
        ip: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        hostname: endpoint_hostname(svc, pod),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(object_reference(pod)),
    }
}

fn slice_name(svc: &str, ports: &[(Option<String>, i32, String)]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{ports:?}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{svc}-{h:08x}")
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = key_of(&*svc);
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return Ok(Action::await_change());
    };
    if ctx
        .shared
        .services
        .store()
        .get(&ObjectRef::from_obj(&*svc))
        .is_none()
    {
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = ctx
        .shared
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .collect();
    let groups = group(&svc, &pods);
    let owner = OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..controller_ref(&*svc)
    };

    // Endpoints.
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .map(|(ports, pods)| {
            let ready: Vec<_> = pods
                .iter()
                .filter(|(_, r)| *r)
                .map(|(p, _)| address(&svc, p))
                .collect();
            let not_ready: Vec<_> = pods
                .iter()
                .filter(|(_, r)| !*r)
                .map(|(p, _)| address(&svc, p))
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| EndpointPort {
                            name: n.clone(),
                            port: *p,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let mut ep = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                controller: None,
                block_owner_deletion: None,
                ..owner.clone()
            }]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match ep_api.get_opt(&name).await? {
        None => match ep_api.create(&PostParams::default(), &ep).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        },
        Some(cur) => {
            if cur.subsets != ep.subsets || cur.metadata.labels != ep.metadata.labels {
                ep.metadata.resource_version = cur.metadata.resource_version.clone();
                ep.metadata.owner_references = cur
                    .metadata
                    .owner_references
                    .clone()
                    .or(ep.metadata.owner_references);
                ep_api.replace(&name, &PostParams::default(), &ep).await?;
            }
        }
    }

    // EndpointSlices.
    let es_api: Api<EndpointSlice> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let existing = es_api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?;
    let mut wanted = Vec::new();
    for (ports, pods) in &groups {
        let sname = slice_name(&name, ports);
        wanted.push(sname.clone());
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let mut slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(sname.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: pods
                .iter()
                .map(|(p, ready)| {
                    let terminating = p.metadata.deletion_timestamp.is_some();
                    Endpoint {
                        addresses: vec![address(&svc, p).ip],
                        hostname: endpoint_hostname(&svc, p),
                        conditions: Some(EndpointConditions {
                            ready: Some(*ready),
                            serving: Some(pod_is_ready(p)),
                            terminating: Some(terminating),
                        }),
                        node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                        target_ref: Some(object_reference(&**p)),
                        ..Default::default()
                    }
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| SlicePort {
                        name: n.clone(),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        };
        match existing
            .items
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(sname.as_str()))
        {
            None => match es_api.create(&PostParams::default(), &slice).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {
                    return Ok(Action::requeue(Duration::from_millis(200)))
                }
                Err(e) => return Err(e.into()),
            },
            Some(cur) => {
                let strip = |eps: &[Endpoint]| -> Vec<Endpoint> {
                    eps.iter()
                        .cloned()
                        .map(|mut e| {
                            if let Some(r) = e.target_ref.as_mut() {
                                r.resource_version = None;
                            }
                            e
                        })
                        .collect()
                };
                if strip(&cur.endpoints) != strip(&slice.endpoints) || cur.ports != slice.ports {
                    slice.metadata.resource_version = cur.metadata.resource_version.clone();
                    es_api
                        .replace(&sname, &PostParams::default(), &slice)
                        .await?;
                }
            }
        }
    }
    for s in existing.items {
        let n = s.name_any();
        if !wanted.contains(&n) {
            match es_api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ctx.backoff.forget(&key);
    // Pods that stopped matching do not name this Service: look again now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_group_subsets() {
        let svc = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("web".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("a", "10.0.0.1", true, "web", 8080),
            pod("b", "10.0.0.2", false, "web", 8080),
            pod("c", "10.0.0.3", true, "web", 9090),
        ];
        let g = group(&svc, &pods);
        assert_eq!(g.len(), 2);
        let k8080 = vec![(Some("http".to_string()), 8080, "TCP".to_string())];
        let ready: Vec<bool> = g[&k8080].iter().map(|(_, r)| *r).collect();
        assert_eq!(ready, vec![true, false]);
        assert_ne!(slice_name("s", &k8080), slice_name("s", &[]));
    }
}
