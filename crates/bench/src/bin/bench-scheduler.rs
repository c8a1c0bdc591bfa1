//! Scheduler benchmark: pods scheduled per second and p50/p99 time from creation to binding,
//! for 1,000 nodes / 30,000 pods and 5,000 nodes / 50,000 pods, with plain pods (requests
//! only) and with pods that each carry a preferred anti-affinity term; plus the scheduler's
//! RSS. Nodes are Node objects only (as upstream's scheduler_perf), so the figures are the
//! scheduler's and the API server's, not a node agent's. Pods are created by 32 concurrent
//! clients while the scheduler runs; a watch on bound pods times each binding.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-scheduler`
//! (or `bench-scheduler NODES PODS plain|anti ...` for chosen runs). With `--backlog` all pods
//! are created first and the scheduler is started afterwards, which measures how fast it
//! drains a queue rather than how fast the API server accepts pods.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use krust_bench::{krust_binary, ms, percentile, rss_mib, start_server, Proc, Server};

const CREATORS: usize = 32;

fn node(i: usize) -> String {
    let name = format!("node-{i}");
    serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    })
    .to_string()
}

fn pod(i: usize, anti: bool) -> String {
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    });
    if anti {
        p["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"app": "bench"}},
                "topologyKey": "kubernetes.io/hostname"}}]}});
    }
    p.to_string()
}

struct Figures {
    pods_per_sec: f64,
    creates_per_sec: f64,
    p50: Duration,
    p99: Duration,
    rss: f64,
    cpu: f64,
    bound: usize,
}

/// User plus system CPU seconds a process has used (clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

async fn post_all(
    server: &Server,
    path: &str,
    bodies: Vec<(String, String)>,
    created: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> anyhow::Result<()> {
    let bodies = Arc::new(Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..CREATORS {
        let client = server.client()?;
        let url = format!("{}{}", server.url, path);
        let bodies = bodies.clone();
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = bodies.lock().map_err(|_| anyhow::anyhow!("lock"))?.pop();
                let Some((name, body)) = next else {
                    return anyhow::Ok(());
                };
                if let Some(c) = &created {
                    c.lock()
                        .map_err(|_| anyhow::anyhow!("lock"))?
                        .insert(name, Instant::now());
                }
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().as_u16() == 201, "create answered {}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn run(nodes: usize, pods: usize, anti: bool, backlog: bool) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    // The API server alone, as upstream's scheduler_perf: the hosted scheduler would race the
    // one under test, and hosted controllers would watch every pod.
    let server = start_server(tmp.path(), &["--disable", "controllers,scheduler"]).await?;
    let client = server.client()?;
    post_all(
        &server,
        "/api/v1/nodes",
        (0..nodes).map(|i| (String::new(), node(i))).collect(),
        None,
    )
    .await?;
    // Node status on create may be reset by the server; set it through /status as a kubelet would.
    let status_client = client.clone();
    futures::stream::iter(0..nodes)
        .map(|i| {
            let c = status_client.clone();
            let url = format!("{}/api/v1/nodes/node-{i}/status", server.url);
            let body = serde_json::json!({"status": serde_json::from_str::<serde_json::Value>(&node(i)).map(|v| v["status"].clone()).unwrap_or_default()}).to_string();
            async move {
                c.patch(url)
                    .header("content-type", "application/merge-patch+json")
                    .body(body)
                    .send()
                    .await
            }
        })
        .buffer_unordered(CREATORS)
        .for_each(|_| async {})
        .await;

    let spawn_scheduler = || -> anyhow::Result<Proc> {
        let log = std::fs::File::create(tmp.path().join("scheduler.log"))?;
        Ok(Proc(
            Command::new(krust_binary())
                .arg("scheduler")
                .arg("--kubeconfig")
                .arg(tmp.path().join("admin.kubeconfig"))
                .args(
                    std::env::var("BENCH_SCHEDULER_ARGS")
                        .unwrap_or_default()
                        .split_whitespace(),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()?,
        ))
    };
    let mut sched = if backlog {
        None
    } else {
        Some(spawn_scheduler()?)
    };

    // Watch bound pods from now on.
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let bound = bound.clone();
        let resp = client
            .get(format!(
                "{}/api/v1/namespaces/default/pods?watch=true&fieldSelector=spec.nodeName!%3D",
                server.url
            ))
            .timeout(Duration::from_secs(3600))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "watch answered {}",
            resp.status()
        );
        tokio::spawn(async move {
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
                    if obj["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty())
                    {
                        if let Some(name) = obj["metadata"]["name"].as_str() {
                            if let Ok(mut b) = bound.lock() {
                                b.entry(name.to_string()).or_insert(now);
                            }
                        }
                    }
                }
            }
        })
    };
    // Let the scheduler list the nodes before the load starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let bodies: Vec<(String, String)> = (0..pods)
        .rev()
        .map(|i| (format!("pod-{i}"), pod(i, anti)))
        .collect();
    post_all(
        &server,
        "/api/v1/namespaces/default/pods",
        bodies,
        Some(created.clone()),
    )
    .await?;
    let create_secs = start.elapsed().as_secs_f64();
    let start = if backlog {
        sched = Some(spawn_scheduler()?);
        Instant::now()
    } else {
        start
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = bound.lock().map(|b| b.len()).unwrap_or(0);
        if n >= pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = sched.as_ref().map_or(0.0, |p| rss_mib(p.0.id()));
    let cpu = sched.as_ref().map_or(0.0, |p| cpu_secs(p.0.id()));
    watch.abort();
    let created = created.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let bound = bound.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let last = bound.values().max().copied().unwrap_or(start);
    let mut lat: Vec<Duration> = bound
        .iter()
        .filter_map(|(n, t)| created.get(n).map(|c| t.saturating_duration_since(*c)))
        .collect();
    Ok(Figures {
        pods_per_sec: bound.len() as f64 / last.duration_since(start).as_secs_f64().max(1e-9),
        creates_per_sec: pods as f64 / create_secs,
        p50: percentile(&mut lat, 50.0),
        p99: percentile(&mut lat, 99.0),
        rss,
        cpu,
        bound: bound.len(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backlog = args.iter().any(|a| a == "--backlog");
    let args: Vec<String> = args.into_iter().filter(|a| a != "--backlog").collect();
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for c in args.chunks(3) {
        if let [n, p, m] = c {
            runs.push((n.parse()?, p.parse()?, m == "anti"));
        }
    }
    if runs.is_empty() {
        runs = vec![
            (1000, 30_000, false),
            (1000, 30_000, true),
            (5000, 50_000, false),
            (5000, 50_000, true),
        ];
    }
    if backlog {
        println!("Backlog: all pods exist before the scheduler starts; scheduled/s counts from its start (initial list included); latencies are not meaningful.");
    }
    println!("| nodes | pods | pods | scheduled/s | created/s | p50 create->bind | p99 create->bind | scheduler RSS | scheduler CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (nodes, pods, anti) in runs {
        let f = run(nodes, pods, anti, backlog).await?;
        println!(
            "| {nodes} | {pods} | {} | {:.0} | {:.0} | {} | {} | {:.0} MiB | {:.1} s |{}",
            if anti {
                "preferred anti-affinity"
            } else {
                "plain"
            },
            f.pods_per_sec,
            f.creates_per_sec,
            ms(f.p50),
            ms(f.p99),
            f.rss,
            f.cpu,
            if f.bound < pods {
                format!(" only {} bound", f.bound)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
