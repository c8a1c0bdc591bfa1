//! ImageLocality: prefers nodes that already have the pod's images, weighted by how widely
//! each image is spread (so one node holding an image does not attract every pod).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    state_of, CycleState, Plugin, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::{normalize_image, NodeInfo, Snapshot};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

/// The pod's images with the fraction of nodes holding each.
struct Images {
    list: Vec<(String, f64)>,
    containers: i64,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snap: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        let Some(spec) = &pod.spec else {
            return Status::skip();
        };
        let total = snap.num_nodes().max(1) as f64;
        let list: Vec<(String, f64)> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .map(|i| {
                let n = normalize_image(i);
                let spread = snap.image_spread(&n) as f64 / total;
                (n, spread)
            })
            .collect();
        state.write(
            NAME,
            Images {
                list,
                containers: spec.containers.len() as i64,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(
        &self,
        state: &CycleState,
        _: &Pod,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let imgs = state_of::<Images>(state, NAME)?;
        let sum: f64 = imgs
            .list
            .iter()
            .filter_map(|(n, spread)| node.images.get(n).map(|size| *size as f64 * spread))
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * imgs.containers.max(1);
        let sum = (sum as i64).clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testutil::*;
    use serde_json::json;

    #[test]
    fn nodes_with_the_image_score_higher() {
        let with = node_json(json!({"metadata": {"name": "a"}, "status": {"images": [
            {"names": ["docker.io/library/big:1"], "sizeBytes": 500 * MB}]}}));
        let s = snapshot(&[with, node("b", "1", "1Gi", json!({}))]);
        let p = pod(
            "p",
            json!({"containers": [{"name": "c", "image": "big:1"}]}),
        );
        let mut st = CycleState::default();
        ImageLocality.pre_score(&mut st, &p, &s, &[]);
        let a = ImageLocality
            .score(&st, &p, s.node("a").expect("a"), &s)
            .expect("score");
        let b = ImageLocality
            .score(&st, &p, s.node("b").expect("b"), &s)
            .expect("score");
        assert!(a > b, "{a} > {b}");
        assert_eq!(b, 0);
    }
}
