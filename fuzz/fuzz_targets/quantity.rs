//! Resource quantities (`500m`, `1Gi`, `1e3`): `Quantity::parse` and the validation that
//! reads them from request bodies (`validate_quantity`, container resources, PVC sizes).
#![no_main]

use krust_machinery::validation::quantity::{compare, Quantity};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(q) = Quantity::parse(s) {
        let _ = (q.is_negative(), q.is_zero(), q.is_integer(), q.nanos());
        assert_eq!(compare(s, s), Some(std::cmp::Ordering::Equal));
        let _ = compare(s, "1Gi");
    }
    let v = Value::String(s.to_string());
    let _ = compare("100m", s);
    // A pod and a claim carrying the quantity, through the create path.
    let reg = krust_fuzz::registry();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "q", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": v, "memory": v, "example.com/gpu": v},
                          "limits": {"cpu": "2", "memory": v}}}],
            "overhead": {"cpu": v}},
    });
    if let Some(info) = reg.lookup("", "v1", "pods") {
        krust_fuzz::create_pipeline(info, pod, &[]);
    }
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "q", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": v}}},
    });
    if let Some(info) = reg.lookup("", "v1", "persistentvolumeclaims") {
        krust_fuzz::create_pipeline(info, pvc, &[]);
    }
    let limits = json!({
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "q", "namespace": "default"},
        "spec": {"limits": [{"type": "Container", "min": {"cpu": v}, "max": {"cpu": "1"}, "default": {"memory": v}}]},
    });
    if let Some(info) = reg.lookup("", "v1", "limitranges") {
        krust_fuzz::create_pipeline(info, limits, &[]);
    }
});
