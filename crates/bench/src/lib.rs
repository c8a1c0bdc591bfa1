//! Benchmark support: launching `krust server` on loopback, HTTPS clients with
//! the admin identity, and percentile arithmetic. The binaries in `src/bin` print figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `krust server` and how to reach it.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub dir: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
    /// From spawning the process to the first `ok` from `/readyz`.
    pub ready_after: Duration,
}

pub fn krust_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|p| p.join("krust"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("krust"))
}

/// `krust server` on a free loopback port with its node agent, cluster DNS, load balancer
/// and ingress disabled (`extra` adds flags), once `/readyz` answers `ok`.
pub async fn start_server(dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
    start_server_with(dir, Some("agent,dns,servicelb,ingress"), extra, None).await
}

/// [`start_server`] with the components in `disable` (comma separated; None: everything
/// runs) turned off, and the server's stderr in `log` (None: discarded).
pub async fn start_server_with(
    dir: &Path,
    disable: Option<&str>,
    extra: &[&str],
    log: Option<&Path>,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(1))
        .build()?;
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut command = Command::new(krust_binary());
    command
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    if let Some(disable) = disable {
        command.args(["--disable", disable]);
    }
    let started = Instant::now();
    let child = command
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting krust (build it with cargo build --release -p krust)")?;
    let mut proc = Proc(child);
    loop {
        if let Ok(r) = probe.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            bail!("krust server exited before it was ready: {status}");
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("krust did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Server {
        proc,
        url,
        dir: dir.to_path_buf(),
        started,
        ready_after: started.elapsed(),
    })
}

impl Server {
    /// An HTTPS client with the admin identity.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let tls = self.dir.join("tls");
        let ca = std::fs::read(tls.join("ca.crt"))?;
        let mut ident = std::fs::read(tls.join("admin.crt"))?;
        ident.extend(std::fs::read(tls.join("admin.key"))?);
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .identity(reqwest::Identity::from_pem(&ident)?)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// Resident set size of the server process, in MiB.
    pub fn rss_mib(&self) -> f64 {
        rss_mib(self.proc.0.id())
    }
}

pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// The part of the RSS that is the process's own memory, not mapped files (e.g. a
/// database mapped with mmap, which the kernel may drop at any time), in MiB.
pub fn rss_anon_mib(pid: u32) -> f64 {
    status_mib(pid, "RssAnon:")
}

/// A `kB` field of `/proc/PID/status`, in MiB (0 when unreadable).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The p-th percentile (0-100) of unsorted samples.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
