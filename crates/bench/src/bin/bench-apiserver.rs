//! API server benchmark: creates per second (pods, 16 concurrent clients over HTTPS),
//! p50/p99 latency of get and create, watch event delivery p99 with 100 watchers, idle
//! RSS, time from launch to `/readyz`, for the embedded store and for etcd side by side,
//! and the disk's fsyncs per second.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-apiserver`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use krust_bench::{ms, percentile, start_server, Server};
use krust_store::suite::EtcdCluster;

const CLIENTS: usize = 16;
const PODS_PER_CLIENT: usize = 1250;
const WATCHERS: usize = 100;
const WATCH_EVENTS: usize = 200;

fn pod(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#
    )
}

struct Figures {
    ready: Duration,
    idle_rss: f64,
    creates_per_sec: f64,
    create_p50: Duration,
    create_p99: Duration,
    get_p50: Duration,
    get_p99: Duration,
    watch_p99: Duration,
    watch_p50: Duration,
    rss_after: f64,
}

async fn create_load(server: &Server) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..CLIENTS {
        let client = server.client()?;
        let url = format!("{}/api/v1/namespaces/default/pods", server.url);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(PODS_PER_CLIENT);
            for i in 0..PODS_PER_CLIENT {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(pod(&format!("p-{c}-{i}")))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().as_u16() == 201, "create answered {}", r.status());
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, all))
}

async fn get_latency(server: &Server) -> anyhow::Result<Vec<Duration>> {
    let client = server.client()?;
    let mut lat = Vec::new();
    for i in 0..2000 {
        let url = format!(
            "{}/api/v1/namespaces/default/pods/p-{}-{}",
            server.url,
            i % CLIENTS,
            i % PODS_PER_CLIENT
        );
        let t = Instant::now();
        let r = client.get(&url).send().await?;
        anyhow::ensure!(r.status().is_success(), "get answered {}", r.status());
        let _ = r.bytes().await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// 100 watchers on ConfigMaps; ConfigMaps carrying their send time are created one by one.
async fn watch_latency(server: &Server) -> anyhow::Result<Vec<Duration>> {
    let ns_client = server.client()?;
    ns_client
        .post(format!("{}/api/v1/namespaces", server.url))
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"watch"}}"#)
        .send()
        .await?;
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(WATCHERS);
    for _ in 0..WATCHERS {
        let client = server.client()?;
        let url = format!(
            "{}/api/v1/namespaces/watch/configmaps?watch=true&resourceVersion=0",
            server.url
        );
        let lat = lat.clone();
        let ready = ready_tx.clone();
        watchers.push(tokio::spawn(async move {
            let resp = client
                .get(&url)
                .timeout(Duration::from_secs(120))
                .send()
                .await?;
            let _ = ready.send(()).await;
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut seen = 0;
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let now = now_nanos();
                    let v: serde_json::Value = serde_json::from_slice(&line)?;
                    if let Some(sent) = v
                        .pointer("/object/data/sent")
                        .and_then(|s| s.as_str())
                        .and_then(|s| s.parse::<u128>().ok())
                    {
                        lat.lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push(Duration::from_nanos((now.saturating_sub(sent)) as u64));
                        seen += 1;
                        if seen == WATCH_EVENTS {
                            return anyhow::Ok(());
                        }
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await;
    }
    let client = server.client()?;
    for i in 0..WATCH_EVENTS {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"w{i}"}},"data":{{"sent":"{}"}}}}"#,
            now_nanos()
        );
        client
            .post(format!("{}/api/v1/namespaces/watch/configmaps", server.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w).await???;
    }
    let v = lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    Ok(v)
}

async fn run(extra: &[&str]) -> anyhow::Result<Figures> {
    // The API server alone: no hosted scheduler or controllers reacting to the load.
    let extra = [extra, &["--disable", "controllers,scheduler"]].concat();
    let extra = extra.as_slice();
    let dir = tempfile::tempdir()?;
    // First start makes the certificates; the figure is a restart, as a node reboots.
    drop(start_server(dir.path(), extra).await?);
    let server = start_server(dir.path(), extra).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = server.rss_mib();
    let (creates_per_sec, mut create_lat) = create_load(&server).await?;
    let mut get_lat = get_latency(&server).await?;
    let mut watch_lat = watch_latency(&server).await?;
    Ok(Figures {
        ready: server.ready_after,
        idle_rss,
        creates_per_sec,
        create_p50: percentile(&mut create_lat, 50.0),
        create_p99: percentile(&mut create_lat, 99.0),
        get_p50: percentile(&mut get_lat, 50.0),
        get_p99: percentile(&mut get_lat, 99.0),
        watch_p50: percentile(&mut watch_lat, 50.0),
        watch_p99: percentile(&mut watch_lat, 99.0),
        rss_after: server.rss_mib(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let disk = tempfile::tempdir()?;
    let fsyncs = krust_store::measure_fsyncs_per_second(disk.path(), Duration::from_secs(2));
    println!("disk: {fsyncs:.0} fsyncs/s (4 KiB write + fsync)");
    let embedded = run(&[]).await?;
    let cluster = EtcdCluster::start(1).await;
    let endpoints = cluster.endpoints().join(",");
    let etcd = run(&["--store", "etcd", "--etcd-endpoints", &endpoints]).await?;
    println!("{:<34} {:>14} {:>14}", "figure", "embedded", "etcd");
    let row = |name: &str, a: String, b: String| println!("{name:<34} {a:>14} {b:>14}");
    row("launch to /readyz", ms(embedded.ready), ms(etcd.ready));
    row(
        "idle RSS",
        format!("{:.1} MiB", embedded.idle_rss),
        format!("{:.1} MiB", etcd.idle_rss),
    );
    row(
        &format!("pod creates/s ({CLIENTS} clients)"),
        format!("{:.0}", embedded.creates_per_sec),
        format!("{:.0}", etcd.creates_per_sec),
    );
    row("create p50", ms(embedded.create_p50), ms(etcd.create_p50));
    row("create p99", ms(embedded.create_p99), ms(etcd.create_p99));
    row("get p50", ms(embedded.get_p50), ms(etcd.get_p50));
    row("get p99", ms(embedded.get_p99), ms(etcd.get_p99));
    row(
        &format!("watch delivery p50 ({WATCHERS} watchers)"),
        ms(embedded.watch_p50),
        ms(etcd.watch_p50),
    );
    row(
        &format!("watch delivery p99 ({WATCHERS} watchers)"),
        ms(embedded.watch_p99),
        ms(etcd.watch_p99),
    );
    row(
        &format!("RSS after {} pods", CLIENTS * PODS_PER_CLIENT),
        format!("{:.1} MiB", embedded.rss_after),
        format!("{:.1} MiB", etcd.rss_after),
    );
    Ok(())
}
