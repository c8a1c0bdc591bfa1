//! Node agent benchmark on one real node: `krust server` (controllers, no agent) plus a
//! separate `krust agent --node-ip 127.0.0.1` (so its RSS is its own) with its own containerd
//! under a temporary directory. It creates PODS (default 100) busybox `sleep 3600` pods bound
//! to the node, one every INTERVAL ms (default 200; 0 creates them all at once), and times each
//! from just before its create request to the watch event that shows it Ready (the API's
//! transition times have one-second resolution). It prints p50 and p99 of create→Ready, the
//! agent's RSS (split into anonymous memory and file pages, and its PSS) idle, when 50 pods
//! are Ready and when all are, and the agent's CPU time; then deletes the pods and resets
//! the node (`krust agent-reset`). `BENCH_AGENT_SMAPS=FILE` saves the agent's smaps with 50
//! pods Ready.
//!
//! Run as root with containerd, runc, the CNI plugins, busybox-static and gcc installed:
//! `cargo build --release -p krust -p krust-bench && target/release/bench-agent [PODS [INTERVAL]]
//! [-- AGENT FLAGS]`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use krust_bench::{krust_binary, ms, percentile, start_server, Proc};

const NODE: &str = "bench-agent-node";
const BRIDGE: &str = "krbench0";
const CIDR: &str = "10.42.210.0/24";

/// User plus system CPU seconds a process has used (clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// The agent's RSS in MiB and its split: anonymous memory, file pages (the binary's code and
/// read-only data) and the proportional share (file pages shared with the server process
/// on the same machine count half).
fn memory(pid: u32) -> (f64, String) {
    // A `Name:  N kB` line, in MiB.
    let field = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let split = format!(
        "anon {:.1}, file {:.1}, PSS {:.1}",
        field(&status, "RssAnon:"),
        field(&status, "RssFile:"),
        field(&rollup, "Pss:")
    );
    (field(&status, "VmRSS:"), split)
}

/// [`memory`] with 50 pods running; with `BENCH_AGENT_SMAPS=FILE` also a copy of the agent's
/// smaps there, to see which mappings the pages belong to.
fn memory_at_50(pid: u32) -> (f64, String) {
    if let Some(path) = std::env::var_os("BENCH_AGENT_SMAPS") {
        if let Err(e) = std::fs::copy(format!("/proc/{pid}/smaps"), &path) {
            eprintln!("copying smaps: {e}");
        }
    }
    memory(pid)
}

fn pod(i: usize) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench-agent"}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}
    })
    .to_string()
}

fn is_ready(obj: &serde_json::Value) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Removes the node's pods, containerd and bridge even when the run fails.
struct Reset {
    data_dir: std::path::PathBuf,
    ip_forward: Option<String>,
}

impl Drop for Reset {
    fn drop(&mut self) {
        let out = Command::new(krust_binary())
            .arg("agent-reset")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--bridge", BRIDGE])
            .output();
        if let Ok(o) = out {
            eprintln!("agent-reset: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        if let Some(v) = &self.ip_forward {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    // Flags after `--` go to `krust agent` (e.g. `-- --disable-proxy`).
    let (args, agent_flags) = match all.iter().position(|a| a == "--") {
        Some(i) => (all[..i].to_vec(), all[i + 1..].to_vec()),
        None => (all, Vec::new()),
    };
    let pods: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let interval = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200));
    let tmp = tempfile::Builder::new().prefix("bench-agent").tempdir()?;
    let server = start_server(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let url = server.url.clone();

    // The Node with its podCIDR first, so the node IPAM controller leaves it alone.
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE}, "spec": {"podCIDR": CIDR, "podCIDRs": [CIDR]}});
    let r = client
        .post(format!("{url}/api/v1/nodes"))
        .header("content-type", "application/json")
        .body(node.to_string())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "creating the Node: {}", r.status());

    let data_dir = tmp.path().join("agent");
    let _reset = Reset {
        data_dir: data_dir.clone(),
        ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
    };
    let log = std::fs::File::create(tmp.path().join("agent.log"))?;
    let agent = Proc(
        Command::new(krust_binary())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(server.dir.join("admin.kubeconfig"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--node-name", NODE, "--node-ip", "127.0.0.1"])
            .args(["--pod-cidr", CIDR, "--bridge", BRIDGE])
            .args(&agent_flags)
            .env("KRUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting krust agent")?,
    );
    let pid = agent.0.id();
    let t = Instant::now();
    loop {
        let r = client
            .get(format!("{url}/api/v1/nodes/{NODE}"))
            .send()
            .await?;
        let v: serde_json::Value = r.json().await?;
        if is_ready(&v) {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "node not Ready; agent log:\n{}",
                std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "node Ready {:.1} s after the agent started",
        t.elapsed().as_secs_f64()
    );
    let (idle_rss, idle_split) = memory(pid);

    // Ready times from a watch on the pods.
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let resp = client
        .get(format!(
            "{url}/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dbench-agent"
        ))
        .timeout(Duration::from_secs(3600))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "watch: {}", resp.status());
    let seen = ready.clone();
    let watch = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                let obj = &ev["object"];
                if is_ready(obj) {
                    if let (Some(name), Ok(mut m)) = (obj["metadata"]["name"].as_str(), seen.lock())
                    {
                        m.entry(name.to_string()).or_insert(now);
                    }
                }
            }
        }
    });

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cpu_before = cpu_secs(pid);
    let start = Instant::now();
    let mut rss_at_50 = None;
    let mut creates = Vec::new();
    for i in 0..pods {
        let c = client.clone();
        let u = format!("{url}/api/v1/namespaces/default/pods");
        let created = created.clone();
        creates.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(pod(i))
                .send()
                .await;
            if let Ok(mut m) = created.lock() {
                m.insert(format!("bench-{i}"), t);
            }
            r.map(|r| r.status())
        }));
        if rss_at_50.is_none() && ready.lock().map(|m| m.len()).unwrap_or(0) >= 50 {
            rss_at_50 = Some(memory_at_50(pid));
        }
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    for c in creates {
        let status = c.await??;
        anyhow::ensure!(status.is_success(), "creating a pod: {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = ready.lock().map(|m| m.len()).unwrap_or(0);
        if rss_at_50.is_none() && n >= 50 {
            rss_at_50 = Some(memory_at_50(pid));
        }
        if n >= pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_ready = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_all, all_split) = memory(pid);
    let cpu = cpu_secs(pid) - cpu_before;
    watch.abort();

    let created = created.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let ready = ready.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let mut lat: Vec<Duration> = ready
        .iter()
        .filter_map(|(n, t)| created.get(n).map(|c| t.saturating_duration_since(*c)))
        .collect();
    let max = lat.iter().max().copied().unwrap_or_default();
    println!(
        "{pods} pods, one every {} ms: {} Ready in {:.1} s; create→Ready p50 {} p99 {} max {}",
        interval.as_millis(),
        ready.len(),
        all_ready.as_secs_f64(),
        ms(percentile(&mut lat, 50.0)),
        ms(percentile(&mut lat, 99.0)),
        ms(max),
    );
    let (rss_50, split_50) = rss_at_50.unwrap_or_default();
    println!(
        "agent RSS: {idle_rss:.1} MiB idle ({idle_split}), {rss_50:.1} MiB with 50 pods running ({split_50}), {rss_all:.1} MiB with {} running ({all_split}); agent CPU {cpu:.1} s",
        ready.len()
    );

    // Clean up through the API (the agent stops the containers), then reset the node.
    let t = Instant::now();
    let _ = client
        .delete(format!(
            "{url}/api/v1/namespaces/default/pods?labelSelector=app%3Dbench-agent"
        ))
        .send()
        .await?;
    loop {
        let v: serde_json::Value = client
            .get(format!(
                "{url}/api/v1/namespaces/default/pods?labelSelector=app%3Dbench-agent"
            ))
            .send()
            .await?
            .json()
            .await?;
        let left = v["items"].as_array().map_or(0, Vec::len);
        if left == 0 || t.elapsed() > Duration::from_secs(120) {
            println!(
                "deleted {pods} pods in {:.1} s ({left} left)",
                t.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(agent);
    Ok(())
}
