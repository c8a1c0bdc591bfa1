//! NodePorts: a container's hostPort must be free on the node (same protocol, port and IP, or
//! either IP the wildcard, conflict).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    state_of, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status,
};
use crate::snapshot::{HostPort, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

struct Wanted(Vec<HostPort>);

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::PodDelete]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &Snapshot) -> Status {
        let ports = PodInfo::new(std::sync::Arc::new(pod.clone()), 0).ports;
        if ports.is_empty() {
            return Status::skip();
        }
        state.write(NAME, Wanted(ports));
        Status::success()
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let w = match state_of::<Wanted>(state, NAME) {
            Ok(w) => w,
            Err(e) => return e,
        };
        if w.0
            .iter()
            .any(|p| node.used_ports.iter().any(|u| u.conflicts(p)))
        {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    fn with_port(name: &str, port: i32, ip: &str) -> std::sync::Arc<Pod> {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}),
        )
    }

    #[test]
    fn host_port_conflicts() {
        let mut s = snapshot(&[node("a", "1", "1Gi", json!({}))]);
        place(&mut s, with_port("x", 8080, "10.0.0.1"), "a");
        let n = s.node("a").expect("node");
        let check = |p: &Pod| {
            let mut st = CycleState::default();
            if NodePorts
                .pre_filter(&mut st, p, &Snapshot::default())
                .is_skip()
            {
                return Status::success();
            }
            NodePorts.filter(&st, p, n)
        };
        assert_eq!(check(&with_port("p", 8080, "")).reasons, vec![REASON]);
        assert!(check(&with_port("p", 8080, "10.0.0.2")).is_success());
        assert!(check(&with_port("p", 8081, "")).is_success());
        assert!(check(&pod("p", json!({}))).is_success());
    }
}
