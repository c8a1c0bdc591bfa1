//! Service networking benchmark (issue 15), in four parts, each printed as it runs and
//! gathered in a table at the end:
//!
//! - `dns`: queries/s and latency of the cluster DNS of a `krust server` (port from the
//!   kube-dns EndpointSlice): an in-cluster name, and names forwarded to a dnsmasq on
//!   127.0.0.77 (distinct names, so each one is forwarded, and one repeated name, answered
//!   from the forwarder's cache), with dnsmasq queried directly as the baseline. Workers with
//!   one UDP socket each send one query at a time; no reply in 2 s is a loss.
//! - `ingress`: requests/s and latency through the ingress controller against straight to
//!   an HTTP backend in this process (a selectorless Service with a hand-made
//!   EndpointSlice), with keep-alive HTTP/1.1 connections, and the ratio of the two.
//! - `sync`: the service proxy's and network policy's rule sync for synthetic clusters
//!   (1,000 and 10,000 Services; 1,000 and 10,000 policies over 10,000 pods): computing the
//!   rules, rendering the nftables script and loading it with `nft -f` into a scratch
//!   network namespace (the load needs root and nft).
//! - `startup`: launch to `/readyz` and idle RSS of a `krust server` with every add-on
//!   (hosted agent, DNS, ingress, load balancer, network policy) against one with those
//!   disabled; for the full one also launch to its Node Ready and to the kube-dns
//!   EndpointSlice. The agent part needs root, containerd, runc and the CNI plugins; the node
//!   is reset (`krust agent-reset`) afterwards.
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-networking
//! [dns|ingress|sync|startup|all]`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use krust_bench::{
    free_port, krust_binary, ms, percentile, rss_anon_mib, rss_mib, start_server_with, Proc, Server,
};
use krust_proxy::ProxyBackend;

const DNS_QUERIES: usize = 100_000;
const DNS_WORKERS: usize = 32;
const DNS_LIMIT: Duration = Duration::from_secs(20);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const DNSMASQ_ADDR: &str = "127.0.0.77";

const HTTP_CONNS: usize = 16;
const HTTP_WARMUP: Duration = Duration::from_secs(1);
const HTTP_RUN: Duration = Duration::from_secs(5);
const BODY: &[u8] = b"krust bench backend\n";
const HOST: &str = "bench.example";

const NODE: &str = "krust-bench-node";
const BRIDGE: &str = "kbench0";
const POD_CIDR: &str = "10.42.230.0/24";
const IDLE: Duration = Duration::from_secs(10);
/// The longest one `nft -f` load may take before it is killed and reported as such.
const NFT_LIMIT: Duration = Duration::from_secs(120);

/// One row of the closing table.
struct Row {
    part: &'static str,
    measure: String,
    figure: String,
}

#[derive(Default)]
struct Summary(Vec<Row>);

impl Summary {
    fn add(&mut self, part: &'static str, measure: impl Into<String>, figure: impl Into<String>) {
        self.0.push(Row {
            part,
            measure: measure.into(),
            figure: figure.into(),
        });
    }

    fn print(&self) {
        let w = self.0.iter().map(|r| r.measure.len()).max().unwrap_or(0);
        println!("\n{:<8} {:<w$}  figure", "part", "measure");
        println!("{}", "-".repeat(8 + 1 + w + 2 + 40));
        for r in &self.0 {
            println!("{:<8} {:<w$}  {}", r.part, r.measure, r.figure);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers: the machine, processes, the API.

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program` on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM, up to `grace` to exit, then SIGKILL (the [`Proc`] drop).
async fn stop(mut proc: Proc, grace: Duration) -> Duration {
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status();
    while t.elapsed() < grace {
        if let Ok(Some(_)) = proc.0.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(proc);
    t.elapsed()
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn create(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let r = client
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status();
    if !status.is_success() {
        bail!(
            "POST {path}: {status}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// GET `path` as JSON; None on 404.
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    path: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let r = client.get(format!("{url}{path}")).send().await?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    ensure!(r.status().is_success(), "GET {path}: {}", r.status());
    Ok(Some(r.json().await?))
}

const KUBE_DNS_SLICE: &str =
    "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns";

// ---------------------------------------------------------------------------------------
// dns

/// What a run of DNS queries gave.
struct DnsFigures {
    answered: usize,
    /// Replies that were not NOERROR with an answer.
    failed: usize,
    lost: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

enum Outcome {
    Answered,
    Failed,
    Lost,
}

/// One query for `name` to the connected socket and its matching reply.
async fn query_once(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
    name: &Name,
) -> anyhow::Result<(Outcome, Duration)> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), RecordType::A));
    let id = msg.metadata.id;
    let wire = msg.to_vec()?;
    let t = Instant::now();
    let deadline = tokio::time::Instant::from_std(t + DNS_TIMEOUT);
    sock.send(&wire).await?;
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
            Err(_) => return Ok((Outcome::Lost, t.elapsed())),
            // A refused port (nothing listening) answers the next receive with an error.
            Ok(Err(_)) => return Ok((Outcome::Failed, t.elapsed())),
            Ok(Ok(n)) => {
                let took = t.elapsed();
                match Message::from_vec(&buf[..n]) {
                    // A late reply to an earlier, lost query: keep waiting.
                    Ok(reply) if reply.metadata.id != id => {}
                    Ok(reply) => {
                        let ok = reply.metadata.response_code == ResponseCode::NoError
                            && !reply.answers.is_empty();
                        let outcome = if ok {
                            Outcome::Answered
                        } else {
                            Outcome::Failed
                        };
                        return Ok((outcome, took));
                    }
                    Err(_) => return Ok((Outcome::Failed, took)),
                }
            }
        }
    }
}

/// `DNS_QUERIES` queries (stopping after `DNS_LIMIT`) for `names` in turn, from
/// `DNS_WORKERS` workers with one socket and one query in flight each.
async fn dns_load(target: SocketAddr, names: Arc<Vec<Name>>) -> anyhow::Result<DnsFigures> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..DNS_WORKERS {
        let (next, names) = (next.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(target).await?;
            let mut buf = vec![0u8; 4096];
            let (mut answered, mut failed, mut lost, mut lat) = (0, 0, 0, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= DNS_QUERIES || start.elapsed() > DNS_LIMIT {
                    break;
                }
                let (outcome, took) = query_once(&sock, &mut buf, &names[i % names.len()]).await?;
                match outcome {
                    Outcome::Answered => {
                        answered += 1;
                        lat.push(took);
                    }
                    Outcome::Failed => failed += 1,
                    Outcome::Lost => lost += 1,
                }
            }
            anyhow::Ok((answered, failed, lost, lat))
        }));
    }
    let mut f = DnsFigures {
        answered: 0,
        failed: 0,
        lost: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (a, e, l, lat) = t.await??;
        f.answered += a;
        f.failed += e;
        f.lost += l;
        f.latencies.extend(lat);
    }
    f.elapsed = start.elapsed();
    Ok(f)
}

/// Queries `name` until it is answered (at most `limit`).
async fn wait_answer(target: SocketAddr, name: &Name, limit: Duration) -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(target).await?;
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    loop {
        if let Ok((Outcome::Answered, _)) = query_once(&sock, &mut buf, name).await {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("{target} did not answer {name} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report_dns(summary: &mut Summary, what: &str, f: &mut DnsFigures) {
    let qps = f.answered as f64 / f.elapsed.as_secs_f64();
    let (p50, p99) = (
        percentile(&mut f.latencies, 50.0),
        percentile(&mut f.latencies, 99.0),
    );
    println!(
        "dns {what}: {} answered in {:.2} s: {qps:.0} queries/s, p50 {}, p99 {}, {} lost, {} failed",
        f.answered,
        f.elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
        f.lost,
        f.failed
    );
    summary.add(
        "dns",
        what.to_string(),
        format!(
            "{qps:>8.0} q/s  p50 {:>9}  p99 {:>9}  lost {}  failed {}",
            ms(p50),
            ms(p99),
            f.lost,
            f.failed
        ),
    );
}

async fn dns(summary: &mut Summary) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("bench-net-dns").tempdir()?;
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {DNSMASQ_ADDR}\n"))?;
    // dnsmasq answers every name under bench.example itself; --local-ttl gives those answers
    // a TTL (dnsmasq's default for them is 0), so that the forwarder may cache them.
    let dnsmasq = if Path::new(DNSMASQ).exists() {
        let log = std::fs::File::create(tmp.path().join("dnsmasq.log"))?;
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-dynamic",
                &format!("--listen-address={DNSMASQ_ADDR}"),
                "--port=53",
                "--pid-file=",
                "--user=root",
                "--local-ttl=300",
                "--cache-size=10000",
                &format!("--address=/{HOST}/192.0.2.1"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting dnsmasq")?;
        Some(Proc(child))
    } else {
        println!("dns: {DNSMASQ} is missing: skipping the forwarded names");
        None
    };
    let log = tmp.path().join("server.log");
    let resolv_arg = resolv.to_string_lossy().to_string();
    let server = start_server_with(
        &tmp.path().join("server"),
        Some("agent,ingress,servicelb"),
        &["--dns-port", "0", "--resolv-conf", &resolv_arg],
        Some(&log),
    )
    .await?;
    let client = server.client()?;
    // The DNS port from the kube-dns EndpointSlice.
    let t = Instant::now();
    let target = loop {
        if let Some(slice) = get_json(&client, &server.url, KUBE_DNS_SLICE).await? {
            let ip = slice["endpoints"][0]["addresses"][0]
                .as_str()
                .and_then(|a| a.parse::<IpAddr>().ok());
            let port = slice["ports"][0]["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok());
            if let (Some(ip), Some(port)) = (ip, port) {
                break SocketAddr::new(ip, port);
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!(
                "no kube-dns EndpointSlice after 20 s; server log:\n{}",
                tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "dns: cluster DNS at {target} (kube-dns EndpointSlice {:.0} ms after launch)",
        server.started.elapsed().as_secs_f64() * 1000.0
    );

    let in_cluster = Name::from_ascii("kubernetes.default.svc.cluster.local.")?;
    wait_answer(target, &in_cluster, Duration::from_secs(20)).await?;
    let mut f = dns_load(target, Arc::new(vec![in_cluster])).await?;
    report_dns(summary, "in-cluster name (kubernetes.default A)", &mut f);

    if dnsmasq.is_some() {
        let upstream: SocketAddr = format!("{DNSMASQ_ADDR}:53").parse()?;
        let probe = Name::from_ascii(format!("probe.{HOST}."))?;
        wait_answer(upstream, &probe, Duration::from_secs(5))
            .await
            .with_context(|| {
                format!(
                    "dnsmasq does not answer: {}",
                    tail(&tmp.path().join("dnsmasq.log"))
                )
            })?;
        // Distinct names, new in every run of the bench.
        let run = std::process::id();
        let names: Vec<Name> = (0..DNS_QUERIES)
            .map(|i| Name::from_ascii(format!("q{i}.r{run}.{HOST}.")))
            .collect::<Result<_, _>>()?;
        let mut f = dns_load(target, Arc::new(names)).await?;
        report_dns(summary, "forwarded, distinct names (uncached)", &mut f);

        let cached = Name::from_ascii(format!("cached.{HOST}."))?;
        wait_answer(target, &cached, Duration::from_secs(5)).await?;
        let mut f = dns_load(target, Arc::new(vec![cached.clone()])).await?;
        report_dns(summary, "forwarded, one name (cached)", &mut f);

        let mut f = dns_load(upstream, Arc::new(vec![cached])).await?;
        report_dns(summary, "dnsmasq itself, one name (baseline)", &mut f);
    }
    let rss = server.rss_mib();
    println!("dns: server RSS after the runs {rss:.1} MiB");
    drop(server);
    drop(dnsmasq);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ingress

/// A task aborted when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/1.1 server on loopback answering every request with `BODY`.
async fn backend() -> anyhow::Result<(SocketAddr, Task)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, Task(task)))
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET /` with `Host: host` on the connection; true when it answered 200 with `BODY`.
async fn get(sender: &mut Sender, host: &str) -> anyhow::Result<bool> {
    sender.ready().await?;
    let req = hyper::Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(status == hyper::StatusCode::OK && body.as_ref() == BODY)
}

struct HttpFigures {
    ok: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `HTTP_CONNS` connections sending one request after another for `run`.
async fn http_load(addr: SocketAddr, host: &str, run: Duration) -> anyhow::Result<HttpFigures> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..HTTP_CONNS {
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
            let mut conn: Option<Sender> = None;
            while start.elapsed() < run {
                let sender = match &mut conn {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Ok(s) => conn.insert(s),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let t = Instant::now();
                match get(sender, &host).await {
                    Ok(true) => {
                        ok += 1;
                        lat.push(t.elapsed());
                    }
                    Ok(false) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut f = HttpFigures {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await?;
        f.ok += ok;
        f.errors += errors;
        f.latencies.extend(lat);
    }
    f.elapsed = start.elapsed();
    Ok(f)
}

/// Requests/s, p50 and p99 of a load run, printed and added to the summary.
fn report_http(summary: &mut Summary, what: &str, f: &mut HttpFigures) -> (f64, Duration) {
    let rps = f.ok as f64 / f.elapsed.as_secs_f64();
    let (p50, p99) = (
        percentile(&mut f.latencies, 50.0),
        percentile(&mut f.latencies, 99.0),
    );
    println!(
        "ingress {what}: {} requests in {:.1} s on {HTTP_CONNS} connections: {rps:.0} requests/s, p50 {}, p99 {}, {} errors",
        f.ok,
        f.elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
        f.errors
    );
    summary.add(
        "ingress",
        what.to_string(),
        format!(
            "{rps:>8.0} req/s  p50 {:>9}  p99 {:>9}  errors {}",
            ms(p50),
            ms(p99),
            f.errors
        ),
    );
    (rps, p99)
}

async fn ingress(summary: &mut Summary) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("bench-net-ingress")
        .tempdir()?;
    let (backend_addr, _backend) = backend().await?;
    let (http_port, https_port) = (free_port()?, free_port()?);
    let log = tmp.path().join("server.log");
    let server = start_server_with(
        &tmp.path().join("server"),
        Some("agent,dns,servicelb"),
        &[
            "--ingress-http-port",
            &http_port.to_string(),
            "--ingress-https-port",
            &https_port.to_string(),
        ],
        Some(&log),
    )
    .await?;
    let client = server.client()?;
    let url = &server.url;
    let bp = backend_addr.port();
    create(
        &client,
        url,
        "/api/v1/namespaces/default/services",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": bp, "protocol": "TCP"}]}
        }),
    )
    .await?;
    create(
        &client,
        url,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bench-1", "labels": {
                "kubernetes.io/service-name": "bench",
                "endpointslice.kubernetes.io/managed-by": "bench-networking"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": bp, "protocol": "TCP"}]
        }),
    )
    .await?;
    create(
        &client,
        url,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "bench"},
            "spec": {"rules": [{"host": HOST, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "bench", "port": {"number": 80}}}}]}}]}
        }),
    )
    .await?;
    let via: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    let t = Instant::now();
    loop {
        let answered = match connect(via).await {
            Ok(mut s) => get(&mut s, HOST).await.unwrap_or(false),
            Err(_) => false,
        };
        if answered {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!(
                "the ingress did not answer for {HOST} within 20 s; server log:\n{}",
                tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ingress: routes {HOST} {:.0} ms after the objects were created",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let straight_host = backend_addr.to_string();
    http_load(backend_addr, &straight_host, HTTP_WARMUP).await?;
    let mut direct = http_load(backend_addr, &straight_host, HTTP_RUN).await?;
    http_load(via, HOST, HTTP_WARMUP).await?;
    let mut through = http_load(via, HOST, HTTP_RUN).await?;
    let (rps_d, p99_d) = report_http(summary, "straight to the backend", &mut direct);
    let (rps_i, p99_i) = report_http(summary, "through the ingress", &mut through);
    let (r_rps, r_p99) = (
        rps_i / rps_d,
        p99_i.as_secs_f64() / p99_d.as_secs_f64().max(1e-9),
    );
    println!("ingress/straight: requests/s x{r_rps:.2}, p99 x{r_p99:.2}");
    summary.add(
        "ingress",
        "ratio ingress/straight",
        format!("requests/s x{r_rps:.2}  p99 x{r_p99:.2}"),
    );
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// sync

/// A scratch network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    /// Whether this machine can make them and load rules there (root, `ip` and nft).
    fn possible() -> bool {
        is_root() && succeeds("nft", &["--version"]) && succeeds("ip", &["-V"])
    }

    /// A fresh namespace `krust-bench-PID-TAG`.
    fn new(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("krust-bench-{}-{tag}", std::process::id());
        ensure!(
            succeeds("ip", &["netns", "add", &name]),
            "ip netns add {name} failed"
        );
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Loads `script` with `nft -f -` in `netns`: how long it took (process start included, as
/// in a sync), or None when it had not finished after `NFT_LIMIT` (nft is then killed).
async fn nft_load(netns: &str, script: &str) -> anyhow::Result<Option<Duration>> {
    let t = Instant::now();
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running ip netns exec nft")?;
    let mut stdin = child.stdin.take().context("nft stdin")?;
    let text = script.to_string();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(text.as_bytes()).await;
    });
    let Ok(out) = tokio::time::timeout(NFT_LIMIT, child.wait_with_output()).await else {
        writer.abort();
        return Ok(None);
    };
    let out = out?;
    let took = t.elapsed();
    ensure!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(2000)
            .collect::<String>()
    );
    Ok(Some(took))
}

/// With `BENCH_NET_SCRIPTS=DIR`, saves a rendered script there.
fn save_script(name: &str, script: &str) {
    if let Some(dir) = std::env::var_os("BENCH_NET_SCRIPTS") {
        let path = Path::new(&dir).join(name);
        if let Err(e) = std::fs::write(&path, script) {
            println!("saving {}: {e}", path.display());
        }
    }
}

fn load_figure(loaded: Option<Duration>) -> String {
    loaded.map_or_else(|| format!("> {} s (killed)", NFT_LIMIT.as_secs()), msf)
}

fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v)?)
}

fn pod_ip(k: usize) -> String {
    format!("10.42.{}.{}", k / 250, k % 250 + 1)
}

/// `n` Services over 100 namespaces, one TCP port each (every tenth a NodePort), with one
/// EndpointSlice of 2 or 3 ready endpoints each.
fn synthetic_services(n: usize) -> anyhow::Result<(Vec<Service>, Vec<EndpointSlice>)> {
    let (mut services, mut slices) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut k = 0;
    for i in 0..n {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let mut port =
            serde_json::json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
        let mut spec = serde_json::json!({
            "clusterIP": format!("10.43.{}.{}", i / 250, i % 250 + 1),
            "selector": {"app": name},
        });
        if i % 10 == 0 {
            port["nodePort"] = serde_json::json!(30000 + i / 10);
            spec["type"] = serde_json::json!("NodePort");
        }
        spec["ports"] = serde_json::json!([port]);
        services.push(from(serde_json::json!({
            "metadata": {"namespace": ns, "name": name}, "spec": spec
        }))?);
        let endpoints: Vec<serde_json::Value> = (0..2 + i % 2)
            .map(|_| {
                k += 1;
                serde_json::json!({"addresses": [pod_ip(k)], "conditions": {"ready": true},
                                   "nodeName": format!("node-{}", k % 10)})
            })
            .collect();
        slices.push(from(serde_json::json!({
            "metadata": {"namespace": ns, "name": format!("{name}-x1"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))?);
    }
    Ok((services, slices))
}

/// `policies` NetworkPolicies over 100 namespaces of 100 pods each (labels `app=a0..a9`,
/// every tenth pod `role=frontend`, ten nodes), mixing pod, namespace and ipBlock peers,
/// numbered, named and ranged ports, ingress and egress: the same shape as the network
/// policy crate's own scale test.
fn synthetic_policies(
    policies: usize,
) -> anyhow::Result<(Vec<NetworkPolicy>, Vec<Pod>, Vec<Namespace>)> {
    use serde_json::json;
    let namespaces = (0..100)
        .map(|n| {
            from(json!({"metadata": {"name": format!("ns-{n}"),
                                     "labels": {"team": format!("t{}", n % 5)}}}))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut pods = Vec::new();
    for n in 0..100 {
        for j in 0..100 {
            let role = if j % 10 == 0 { "frontend" } else { "backend" };
            pods.push(from(json!({
                "metadata": {"namespace": format!("ns-{n}"), "name": format!("p-{j}"),
                             "labels": {"app": format!("a{}", j % 10), "role": role}},
                "spec": {"nodeName": format!("node-{}", j % 10), "containers": [{"name": "c",
                         "ports": [{"name": "http", "containerPort": 8080 + j % 3}]}]},
                "status": {"phase": "Running", "podIP": format!("10.64.{n}.{}", j + 1)},
            }))?);
        }
    }
    let policies = (0..policies)
        .map(|i| {
            let mut spec = json!({
                "podSelector": {"matchLabels": {"app": format!("a{}", (i / 100) % 10)}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (i / 100 + 1) % 10)}}}],
                     "ports": [{"port": 8000 + (i / 100) % 50}, {"port": "http"}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}},
                               "podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"port": 9000, "endPort": 9100}]},
                ],
            });
            if i % 4 == 0 {
                spec["egress"] = json!([
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.64.0.0/16"]}}],
                     "ports": [{"port": 443}]},
                    {"to": [{"namespaceSelector": {"matchLabels": {"team": "t0"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]},
                ]);
            }
            from(json!({"metadata": {"namespace": format!("ns-{}", i % 100),
                                     "name": format!("np-{i}")},
                        "spec": spec}))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((policies, pods, namespaces))
}

fn msf(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn proxy_sync(summary: &mut Summary, load: bool, n: usize) -> anyhow::Result<()> {
    let netns = load
        .then(|| Netns::new(&format!("proxy-{n}")))
        .transpose()?;
    let (services, slices) = synthetic_services(n)?;
    let t = Instant::now();
    let rules = krust_proxy::rules::compute(&services, &slices, None);
    let computed = t.elapsed();
    ensure!(
        rules.ports.len() == n,
        "{} service ports of {n}",
        rules.ports.len()
    );
    let table = "krust-proxy-bench";
    let nft = match &netns {
        Some(ns) => krust_proxy::backend::nftables::Nftables::new(Some("10.42.0.0/16"))?
            .in_netns(&ns.0, table),
        None => krust_proxy::backend::nftables::Nftables::new(Some("10.42.0.0/16"))?,
    };
    let t = Instant::now();
    let (script, _) = nft.render(&rules, None);
    let rendered = t.elapsed();
    let size = format!(
        "{} KiB, {} lines",
        script.len() / 1024,
        script.lines().count()
    );
    let mut line = format!(
        "sync proxy, {n} Services ({} endpoints): compute {}, render {} ({size})",
        rules.ports.iter().map(|p| p.endpoints.len()).sum::<usize>(),
        msf(computed),
        msf(rendered)
    );
    let mut figure = format!("compute {:>9}  render {:>9}", msf(computed), msf(rendered));
    save_script(&format!("proxy-{n}.nft"), &script);
    if let Some(ns) = &netns {
        let loaded = nft_load(&ns.0, &script).await?;
        line += &format!(", nft -f load {}", load_figure(loaded));
        figure += &format!("  nft load {:>9}", load_figure(loaded));
        // The proxy's own sync: the first replaces the table, later ones update it (flush the
        // rules, keep the affinity sets); time an update after one endpoint moved. Its nft
        // cannot be bounded from here, so only where the plain load was quick.
        if loaded.is_some_and(|d| d < NFT_LIMIT / 6) {
            nft.sync(&rules).await?;
            let mut moved = rules.clone();
            if let Some(e) = moved
                .ports
                .first_mut()
                .and_then(|p| p.endpoints.first_mut())
            {
                e.ip = std::net::Ipv4Addr::new(10, 42, 250, 1);
            }
            let t = Instant::now();
            nft.sync(&moved).await?;
            let updated = t.elapsed();
            line += &format!(
                "; a whole update sync (render + nft) after one endpoint moved {}",
                msf(updated)
            );
            figure += &format!("  update sync {:>9}", msf(updated));
            let _ = nft.cleanup().await;
        } else {
            line += "; update sync skipped (the load was too slow)";
        }
    }
    println!("{line}");
    summary.add("sync", format!("proxy, {n} Services ({size})"), figure);
    Ok(())
}

async fn policy_sync(summary: &mut Summary, load: bool, count: usize) -> anyhow::Result<()> {
    let (policies, pods, namespaces) = synthetic_policies(count)?;
    for node in [Some("node-0"), None] {
        let tag = format!("netpol-{count}-{}", node.unwrap_or("all"));
        let netns = load.then(|| Netns::new(&tag)).transpose()?;
        let t = Instant::now();
        let rules = krust_netpol::rules::compute(&policies, &pods, &namespaces, node);
        let computed = t.elapsed();
        let nft = match &netns {
            Some(ns) => krust_netpol::backend::nftables::Nftables::new()
                .in_netns(&ns.0, "krust-netpol-bench"),
            None => krust_netpol::backend::nftables::Nftables::new(),
        };
        let t = Instant::now();
        let script = nft.render(&rules);
        let rendered = t.elapsed();
        let (ingress, egress) = rules.isolated();
        let scope = match node {
            Some(n) => format!("pods of {n} (1,000)"),
            None => "all 10,000 pods".into(),
        };
        let size = format!("{} KiB", script.len() / 1024);
        let mut line = format!(
            "sync netpol, {count} policies, {scope}: {ingress} pods isolated for ingress, {egress} for egress; compute {}, render {} ({size})",
            msf(computed),
            msf(rendered)
        );
        let mut figure = format!("compute {:>9}  render {:>9}", msf(computed), msf(rendered));
        save_script(&format!("{tag}.nft"), &script);
        if let Some(ns) = &netns {
            let loaded = nft_load(&ns.0, &script).await?;
            line += &format!(", nft -f load {}", load_figure(loaded));
            figure += &format!("  nft load {:>9}", load_figure(loaded));
        }
        println!("{line}");
        summary.add(
            "sync",
            format!("netpol, {count} policies, {scope} ({size})"),
            figure,
        );
    }
    Ok(())
}

async fn sync(summary: &mut Summary) -> anyhow::Result<()> {
    let load = Netns::possible();
    if !load {
        println!("sync: not root, or nft or ip missing: skipping the nft loads");
    }
    for n in [1_000, 10_000] {
        proxy_sync(summary, load, n).await?;
    }
    for n in [1_000, 10_000] {
        policy_sync(summary, load, n).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// startup

/// Resets the node (its containerd, bridge, sandboxes and the proxy's and network
/// policy's tables) and puts back the sysctls the agent and proxy set, even on failure.
struct NodeReset {
    data_dir: PathBuf,
    sysctls: Vec<(&'static str, String)>,
}

const SYSCTLS: [&str; 3] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv4/conf/all/route_localnet",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
];

impl NodeReset {
    fn new(data_dir: PathBuf) -> NodeReset {
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|p| Some((*p, std::fs::read_to_string(p).ok()?)))
            .collect();
        NodeReset { data_dir, sysctls }
    }
}

impl Drop for NodeReset {
    fn drop(&mut self) {
        let out = Command::new(krust_binary())
            .arg("agent-reset")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--bridge", BRIDGE])
            .output();
        match out {
            Ok(o) => println!(
                "startup: agent-reset: {}{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => println!("startup: agent-reset failed to run: {e}"),
        }
        for (path, value) in &self.sysctls {
            let _ = std::fs::write(path, value);
        }
    }
}

/// The processes below `pid`, with their command names.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parent: BTreeMap<u32, (u32, String)> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            parent.insert(p, (ppid, comm));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, (ppid, comm)) in &parent {
            if *ppid == p {
                out.push((*child, comm.clone()));
                frontier.push(*child);
            }
        }
    }
    out
}

struct Started {
    ready: Duration,
    rss: f64,
    anon: f64,
}

async fn idle_memory(server: &Server) -> Started {
    tokio::time::sleep(IDLE).await;
    let pid = server.proc.0.id();
    Started {
        ready: server.ready_after,
        rss: rss_mib(pid),
        anon: rss_anon_mib(pid),
    }
}

fn agent_missing() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    for p in ["containerd", "runc"] {
        if !on_path(p) {
            return Some(format!("{p} is not installed"));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return Some("the CNI plugins (/usr/lib/cni/bridge) are missing".into());
    }
    None
}

fn is_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

async fn startup(summary: &mut Summary) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("bench-net-startup")
        .tempdir()?;
    // Bare: the API server, controllers and scheduler only.
    let bare_log = tmp.path().join("bare.log");
    let server = start_server_with(
        &tmp.path().join("bare"),
        Some("agent,dns,ingress,servicelb,network-policy"),
        &[],
        Some(&bare_log),
    )
    .await?;
    let bare = idle_memory(&server).await;
    stop(server.proc, Duration::from_secs(10)).await;
    println!(
        "startup bare (--disable agent,dns,ingress,servicelb,network-policy): /readyz {}, idle RSS {:.1} MiB (anon {:.1})",
        msf(bare.ready),
        bare.rss,
        bare.anon
    );
    summary.add(
        "startup",
        "bare: launch to /readyz; idle RSS (anon)",
        format!(
            "{:>9}  {:.1} MiB ({:.1})",
            msf(bare.ready),
            bare.rss,
            bare.anon
        ),
    );

    // Default: everything, the hosted agent included when this machine can run it.
    let missing = agent_missing();
    let what = match &missing {
        None => "default (agent, DNS, ingress, LB, netpol)",
        Some(why) => {
            println!("startup: {why}: the default server runs without its hosted agent (--disable agent)");
            "default without agent (DNS, ingress, LB)"
        }
    };
    let dir = tmp.path().join("default");
    let (http, https) = (free_port()?, free_port()?);
    let (http, https) = (http.to_string(), https.to_string());
    let mut args = vec![
        "--dns-port",
        "0",
        "--ingress-http-port",
        &http,
        "--ingress-https-port",
        &https,
    ];
    if missing.is_none() {
        args.extend([
            "--node-ip",
            "127.0.0.1",
            "--kubelet-port",
            "0",
            "--bridge",
            BRIDGE,
            "--pod-cidr",
            POD_CIDR,
            "--node-name",
            NODE,
        ]);
    }
    // Declared before the server, so it runs after the server is gone.
    let _reset = missing.is_none().then(|| NodeReset::new(dir.join("agent")));
    let log = tmp.path().join("default.log");
    let server = start_server_with(
        &dir,
        if missing.is_none() {
            None
        } else {
            Some("agent")
        },
        &args,
        Some(&log),
    )
    .await?;
    let client = server.client()?;
    let (mut node_ready, mut dns_slice) = (None, None);
    while (node_ready.is_none() && missing.is_none()) || dns_slice.is_none() {
        if node_ready.is_none() && missing.is_none() {
            if let Some(n) =
                get_json(&client, &server.url, &format!("/api/v1/nodes/{NODE}")).await?
            {
                if is_ready(&n) {
                    node_ready = Some(server.started.elapsed());
                }
            }
        }
        if dns_slice.is_none()
            && get_json(&client, &server.url, KUBE_DNS_SLICE)
                .await?
                .is_some()
        {
            dns_slice = Some(server.started.elapsed());
        }
        if server.started.elapsed() > Duration::from_secs(120) {
            bail!(
                "after 120 s: node Ready {node_ready:?}, kube-dns EndpointSlice {dns_slice:?}; server log:\n{}",
                tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = idle_memory(&server).await;
    let children: Vec<String> = descendants(server.proc.0.id())
        .into_iter()
        .map(|(pid, comm)| {
            format!(
                "{comm} {:.1} MiB (anon {:.1})",
                rss_mib(pid),
                rss_anon_mib(pid)
            )
        })
        .collect();
    let children = if children.is_empty() {
        "none".to_string()
    } else {
        children.join(", ")
    };
    let took = stop(server.proc, Duration::from_secs(15)).await;
    let node = node_ready.map_or("-".to_string(), msf);
    let dns = dns_slice.map_or("-".to_string(), msf);
    println!(
        "startup {what}: /readyz {}, Node Ready {node}, kube-dns EndpointSlice {dns}; idle RSS {:.1} MiB (anon {:.1}); child processes: {children}; stopped in {}",
        msf(full.ready),
        full.rss,
        full.anon,
        msf(took)
    );
    summary.add(
        "startup",
        "default: launch to /readyz; idle RSS (anon)",
        format!(
            "{:>9}  {:.1} MiB ({:.1})",
            msf(full.ready),
            full.rss,
            full.anon
        ),
    );
    if missing.is_none() {
        summary.add("startup", "default: launch to Node Ready", node);
    }
    summary.add("startup", "default: launch to kube-dns EndpointSlice", dns);
    summary.add("startup", "default: child processes, idle RSS", children);
    summary.add(
        "startup",
        "RSS default - bare (anon)",
        format!(
            "{:+.1} MiB ({:+.1})",
            full.rss - bare.rss,
            full.anon - bare.anon
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let part = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let parts: &[&str] = match part.as_str() {
        "all" => &["dns", "ingress", "sync", "startup"],
        "dns" => &["dns"],
        "ingress" => &["ingress"],
        "sync" => &["sync"],
        "startup" => &["startup"],
        other => bail!("usage: bench-networking [dns|ingress|sync|startup|all] (not {other:?})"),
    };
    println!("machine: {}", machine());
    println!("krust: {}", krust_binary().display());
    let work = async {
        let mut summary = Summary::default();
        let mut failed = Vec::new();
        for p in parts {
            let t = Instant::now();
            let r = match *p {
                "dns" => dns(&mut summary).await,
                "ingress" => ingress(&mut summary).await,
                "sync" => sync(&mut summary).await,
                _ => startup(&mut summary).await,
            };
            match r {
                Ok(()) => println!("({p}: {:.1} s)", t.elapsed().as_secs_f64()),
                Err(e) => {
                    println!("{p}: FAILED: {e:#}");
                    let first = format!("{e:#}").lines().next().unwrap_or("").to_string();
                    summary.add("failed", *p, first);
                    failed.push(*p);
                }
            }
        }
        summary.print();
        ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
        Ok(())
    };
    // Dropping the work on a signal runs its guards: processes, namespaces, the node reset.
    tokio::select! {
        r = work => r,
        _ = interrupted() => bail!("interrupted; cleaned up"),
    }
}
