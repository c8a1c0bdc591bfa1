//! CustomResourceDefinition benchmark: time from creating a definition to its
//! `Established` condition (and to its first served request), then custom resource creates
//! per second (structural schema validation, defaults and one CEL rule) against built-in
//! ConfigMap creates per second in the same server, 8 concurrent clients over HTTPS.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-crd [COUNT]`

use std::time::{Duration, Instant};

use krust_bench::{ms, start_server, Server};

const CLIENTS: usize = 8;

const CRD: &str = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
"metadata":{"name":"benches.example.com"},
"spec":{"group":"example.com","scope":"Namespaced",
 "names":{"plural":"benches","singular":"bench","kind":"Bench"},
 "versions":[{"name":"v1","served":true,"storage":true,
  "schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object",
   "x-kubernetes-validations":[{"rule":"self.replicas <= self.maxReplicas","message":"too many"}],
   "properties":{"replicas":{"type":"integer","minimum":0},"maxReplicas":{"type":"integer","default":10},
    "image":{"type":"string","pattern":"^[a-z0-9./:-]+$"},
    "labels":{"type":"object","additionalProperties":{"type":"string"}}}}}}}}]}}"#;

fn custom(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"example.com/v1","kind":"Bench","metadata":{{"name":"{name}"}},"spec":{{"replicas":3,"image":"busybox:1.36","labels":{{"app":"bench","tier":"web"}}}}}}"#
    )
}

fn config_map(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"replicas":"3","image":"busybox:1.36","app":"bench","tier":"web"}}}}"#
    )
}

/// Creates `count` objects from `body` at `path` with [`CLIENTS`] clients; creates/s.
async fn creates(
    server: &Server,
    path: &str,
    count: usize,
    body: fn(&str) -> String,
    prefix: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = server.client()?;
        let url = format!("{}{path}", server.url);
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (c..count).step_by(CLIENTS) {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(&format!("{prefix}-{i}")))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().as_u16() == 201, "create answered {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn established(server: &Server) -> anyhow::Result<(Duration, Duration)> {
    let client = server.client()?;
    let started = Instant::now();
    let r = client
        .post(format!(
            "{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            server.url
        ))
        .header("content-type", "application/json")
        .body(CRD)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "CRD create answered {}",
        r.status()
    );
    let mut established = None;
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "not established in 30 s"
        );
        if established.is_none() {
            let crd: serde_json::Value = client
                .get(format!(
                    "{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/benches.example.com",
                    server.url
                ))
                .send()
                .await?
                .json()
                .await?;
            let ok = crd["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            if ok {
                established = Some(started.elapsed());
            }
        }
        if let Some(at) = established {
            let r = client
                .get(format!(
                    "{}/apis/example.com/v1/namespaces/default/benches",
                    server.url
                ))
                .send()
                .await?;
            if r.status().is_success() {
                return Ok((at, started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), &[]).await?;
    let (established, served) = established(&server).await?;
    println!(
        "CRD create -> Established: {}   -> first list served: {}",
        ms(established),
        ms(served)
    );
    // Warm both paths, then measure them alternately in the same server.
    creates(
        &server,
        "/apis/example.com/v1/namespaces/default/benches",
        200,
        custom,
        "warm",
    )
    .await?;
    creates(
        &server,
        "/api/v1/namespaces/default/configmaps",
        200,
        config_map,
        "warm",
    )
    .await?;
    let cm = creates(
        &server,
        "/api/v1/namespaces/default/configmaps",
        count,
        config_map,
        "cm",
    )
    .await?;
    let cr = creates(
        &server,
        "/apis/example.com/v1/namespaces/default/benches",
        count,
        custom,
        "cr",
    )
    .await?;
    println!(
        "creates/s, {count} each, {CLIENTS} clients: custom resource {cr:.0}   ConfigMap {cm:.0}   ratio {:.2}",
        cr / cm
    );
    Ok(())
}
