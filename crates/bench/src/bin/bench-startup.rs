//! Start-up benchmark: time from launch to `/readyz` and RSS once ready (and the part of it
//! that is not mapped files), after `kill -9`,
//! with 0, 30,000 and 150,000 objects stored (two pods to one event, about 1 KiB and
//! 0.4 KiB encoded), for the embedded store and for etcd side by side. Also the time of one
//! full paged list (limit 500) of every pod once ready.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-startup`
//! (`bench-startup 0 30000` for other sizes).

use std::path::Path;
use std::time::{Duration, Instant};

use krust_bench::{ms, start_server, Server};
use krust_store::suite::EtcdCluster;

const CLIENTS: usize = 16;
const BARE: [&str; 2] = ["--disable", "controllers,scheduler"];

fn pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{i:06}","labels":{{"app":"startup","tier":"t{t}"}},"annotations":{{"note":"{pad}"}}}},"spec":{{"containers":[{{"name":"c","image":"registry.example/app:1.0","env":[{{"name":"INDEX","value":"{i}"}}],"resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#,
        t = i % 7,
        pad = "x".repeat(256)
    )
}

fn event(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"e-{i:06}"}},"involvedObject":{{"kind":"Pod","name":"p-{i:06}","namespace":"default"}},"reason":"Scheduled","message":"Successfully assigned default/p-{i:06} to node-{n}","type":"Normal","source":{{"component":"bench"}}}}"#,
        n = i % 50
    )
}

/// Creates objects `from..to` (every third one an event) with `CLIENTS` clients at once.
async fn seed(server: &Server, from: usize, to: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = server.client()?;
        let base = server.url.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + c..to).step_by(CLIENTS) {
                let (path, body) = match i % 3 {
                    2 => ("events", event(i)),
                    _ => ("pods", pod(i)),
                };
                let r = client
                    .post(format!("{base}/api/v1/namespaces/default/{path}"))
                    .header("content-type", "application/json")
                    .body(body)
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
    Ok(())
}

/// Pages through every pod; returns how many and how long it took.
async fn list_all_pods(server: &Server) -> anyhow::Result<(usize, Duration)> {
    let client = server.client()?;
    let t = Instant::now();
    let mut n = 0;
    let mut token = String::new();
    loop {
        let url = format!(
            "{}/api/v1/namespaces/default/pods?limit=500&continue={token}",
            server.url
        );
        let v: serde_json::Value = client.get(url).send().await?.json().await?;
        n += v["items"].as_array().map_or(0, Vec::len);
        match v["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return Ok((n, t.elapsed())),
        }
    }
}

struct Figure {
    objects: usize,
    ready: Duration,
    rss: f64,
    anon: f64,
    list: Duration,
}

/// For each size: grow the store to it, `kill -9`, start again and measure.
async fn run(dir: &Path, args: &[&str], sizes: &[usize]) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut have = 0;
    for &size in sizes {
        let server = start_server(dir, args).await?;
        seed(&server, have, size).await?;
        have = size;
        drop(server); // SIGKILL
        let server = start_server(dir, args).await?;
        let ready = server.ready_after;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = server.rss_mib();
        let anon = krust_bench::rss_anon_mib(server.proc.0.id());
        let (pods, list) = list_all_pods(&server).await?;
        anyhow::ensure!(
            pods == size - size / 3,
            "{pods} pods listed of {size} objects"
        );
        figures.push(Figure {
            objects: size,
            ready,
            rss,
            anon,
            list,
        });
    }
    Ok(figures)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![0, 30_000, 150_000]
    } else {
        sizes
    };
    let dir = tempfile::tempdir()?;
    let embedded = run(dir.path(), &BARE, &sizes).await?;
    let cluster = EtcdCluster::start(1).await;
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir()?;
    let etcd_args = [
        &BARE[..],
        &["--store", "etcd", "--etcd-endpoints", &endpoints],
    ]
    .concat();
    let etcd = run(dir.path(), &etcd_args, &sizes).await?;
    println!(
        "{:>9} {:>16} {:>16} {:>22} {:>22} {:>16} {:>16}",
        "objects",
        "ready embedded",
        "ready etcd",
        "RSS (anon) embedded",
        "RSS (anon) etcd",
        "list embedded",
        "list etcd"
    );
    for (a, b) in embedded.iter().zip(&etcd) {
        println!(
            "{:>9} {:>16} {:>16} {:>9.1} ({:>5.1}) MiB {:>9.1} ({:>5.1}) MiB {:>16} {:>16}",
            a.objects,
            ms(a.ready),
            ms(b.ready),
            a.rss,
            a.anon,
            b.rss,
            b.anon,
            ms(a.list),
            ms(b.list)
        );
    }
    Ok(())
}
