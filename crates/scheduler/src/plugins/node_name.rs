//! NodeName: a pod that names a node fits only there.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, FilterPlugin, Plugin, Status};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    #[test]
    fn only_the_named_node() {
        let n = NodeInfo::new(node("a", "1", "1Gi", json!({})));
        let st = CycleState::default();
        assert!(NodeName.filter(&st, &pod("p", json!({})), &n).is_success());
        assert!(NodeName
            .filter(&st, &pod("p", json!({"nodeName": "a"})), &n)
            .is_success());
        let s = NodeName.filter(&st, &pod("p", json!({"nodeName": "b"})), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    }
}
