//! Cost of managed-fields bookkeeping on creates and updates of a defaulted Pod and
//! Deployment, for instruction counts under callgrind:
//!
//! ```text
//! cargo build --release -p krust-machinery --example managed_fields_bench
//! valgrind --tool=callgrind target/release/examples/managed_fields_bench 200
//! ```
//!
//! Each iteration does one create and one update of each kind (four calls in all); the
//! argument is the number of iterations (default 1000). It prints a digest of the results so
//! that runs before and after a change can be compared.

use krust_machinery::patch::update_managed_fields;
use krust_machinery::{defaults, Registry};
use serde_json::{json, Value};

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"example.com/owner": "team-a"},
            "uid": "6f1c2f0e-8b1e-4c59-9e55-0f6c5a1f7a11", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx:1.27",
                 "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}],
                 "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 80}}},
                {"name": "sidecar", "image": "busybox", "command": ["sh", "-c", "sleep 3600"],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
            "uid": "7f1c2f0e-8b1e-4c59-9e55-0f6c5a1f7a11", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27",
                     "ports": [{"containerPort": 80}],
                     "env": [{"name": "MODE", "value": "prod"}],
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
                ]}
            }
        }
    })
}

fn digest(v: &Value, acc: &mut u64) {
    for b in serde_json::to_string(v).unwrap_or_default().bytes() {
        *acc = acc
            .wrapping_mul(1_099_511_628_211)
            .wrapping_add(u64::from(b));
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let registry = Registry::builtin();
    let mut cases = Vec::new();
    for (api_version, kind, obj) in [
        ("v1", "Pod", pod()),
        ("apps/v1", "Deployment", deployment()),
    ] {
        let Some(info) = registry.by_kind(api_version, kind) else {
            eprintln!("{api_version} {kind} is not served");
            std::process::exit(1);
        };
        let mut obj = obj;
        defaults::apply_defaults(info, &mut obj);
        let created =
            update_managed_fields(info, None, &obj, "kubectl-create", "2026-01-01T00:00:00Z");
        let mut changed = created.clone();
        changed["metadata"]["labels"]["version"] = json!("v2");
        if let Some(c) = changed.pointer_mut("/spec/containers/0/image") {
            *c = json!("nginx:1.28");
        }
        if let Some(c) = changed.pointer_mut("/spec/template/spec/containers/0/image") {
            *c = json!("nginx:1.28");
        }
        cases.push((info, obj, created, changed));
    }
    let mut acc = 0u64;
    for _ in 0..n {
        for (info, obj, created, changed) in &cases {
            let a =
                update_managed_fields(info, None, obj, "kubectl-create", "2026-01-01T00:00:00Z");
            let b = update_managed_fields(
                info,
                Some(created),
                changed,
                "kubectl-edit",
                "2026-01-01T00:01:00Z",
            );
            std::hint::black_box((&a, &b));
        }
    }
    for (info, obj, created, changed) in &cases {
        digest(
            &update_managed_fields(info, None, obj, "kubectl-create", "2026-01-01T00:00:00Z"),
            &mut acc,
        );
        digest(
            &update_managed_fields(
                info,
                Some(created),
                changed,
                "kubectl-edit",
                "2026-01-01T00:01:00Z",
            ),
            &mut acc,
        );
    }
    println!("{n} iterations, digest {acc:016x}");
}
