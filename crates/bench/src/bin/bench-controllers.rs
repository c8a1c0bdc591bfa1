//! Controller manager benchmark: a Deployment scaled from 0 to REPLICAS (10,000) on NODES (500)
//! simulated nodes, with `krust scheduler`, `krust sim` and `krust controller-manager` as
//! separate processes against one `krust server`. Prints the time from the scale request until
//! the Deployment reports every replica available, and the controller manager's RSS.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-controllers`
//! (or `bench-controllers NODES REPLICAS`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use krust_bench::{krust_binary, rss_mib, start_server, Proc};
use serde_json::{json, Value};

fn spawn(dir: &std::path::Path, sub: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(dir.join(format!("{sub}.log")))?;
    Ok(Proc(
        Command::new(krust_binary())
            .arg(sub)
            .arg("--kubeconfig")
            .arg(dir.join("admin.kubeconfig"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting krust {sub}"))?,
    ))
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(500);
    let replicas: i64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir()?;
    let server = start_server(tmp.path(), &["--disable", "controllers,scheduler"]).await?;
    let client = server.client()?;
    let _sim = spawn(tmp.path(), "sim", &["--nodes", &nodes.to_string()])?;
    let _sched = spawn(tmp.path(), "scheduler", &[])?;
    let cm = spawn(tmp.path(), "controller-manager", &[])?;

    let started = Instant::now();
    loop {
        let list: Value = client
            .get(format!("{}/api/v1/nodes", server.url))
            .send()
            .await?
            .json()
            .await?;
        let n = list["items"].as_array().map(Vec::len).unwrap_or(0);
        if n >= nodes {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("only {n} of {nodes} nodes registered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{nodes} simulated nodes registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                         "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}
        }
    });
    let base = format!("{}/apis/apps/v1/namespaces/default/deployments", server.url);
    let r = client.post(&base).json(&deployment).send().await?;
    anyhow::ensure!(r.status().as_u16() == 201, "create answered {}", r.status());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0 = Instant::now();
    let r = client
        .patch(format!("{base}/bench/scale"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"spec": {"replicas": replicas}}).to_string())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "scale answered {}", r.status());
    let mut last_print = Instant::now();
    loop {
        let d: Value = client
            .get(format!("{base}/bench"))
            .send()
            .await?
            .json()
            .await?;
        let available = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
        if available >= replicas {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:.0} s: {available} available, {} replicas",
                t0.elapsed().as_secs_f64(),
                d["status"]["replicas"].as_i64().unwrap_or(0)
            );
            last_print = Instant::now();
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("only {available} of {replicas} available after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    let pid = cm.0.id();
    println!(
        "Deployment 0 -> {replicas} replicas on {nodes} simulated nodes: all available after {:.1} s ({:.0} pods/s)",
        took.as_secs_f64(),
        replicas as f64 / took.as_secs_f64()
    );
    println!(
        "controller manager RSS: {:.1} MiB now, {:.1} MiB peak; API server RSS {:.1} MiB",
        rss_mib(pid),
        peak_rss_mib(pid),
        server.rss_mib()
    );
    Ok(())
}
