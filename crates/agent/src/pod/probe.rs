//! Container probes and lifecycle hook handlers, as upstream's prober runs them.
//!
//! - [`Handler`]: an exec, httpGet (HTTP or HTTPS), tcpSocket, grpc (or, for hooks, sleep)
//!   action resolved against the container (named ports) and the pod IP; [`check`] runs one
//!   with a time limit. HTTPS probes do not verify the certificate and gRPC probes call
//!   `grpc.health.v1.Health/Check` in plaintext, both as upstream's prober does.
//! - [`Settings`]: a probe's timing and thresholds with upstream's defaults.
//! - [`run`]: one task per running container and probe type. It waits `initialDelaySeconds`
//!   after the container started, then probes every `periodSeconds`; a result flips only
//!   after `successThreshold` successes or `failureThreshold` failures in a row. Results go to
//!   the pod's [`Results`] and wake the pod worker, which turns them into `ready` and kills
//!   containers whose liveness or startup probe failed. Liveness and readiness probes wait
//!   for the startup probe to succeed; the startup probe stops once it has. A task ends after
//!   a liveness or startup failure (the container will be killed and a new one gets new
//!   tasks) and is aborted by the worker when its container stops or the pod goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Probe, SleepAction,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::events::EventSink;
use crate::runtime::Runtime;

/// The three kinds of probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeType {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeType {
    /// As upstream writes it in events ("Liveness probe failed: ...").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        }
    }

    /// The container's probe of this type.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeType::Liveness => c.liveness_probe.as_ref(),
            ProbeType::Readiness => c.readiness_probe.as_ref(),
            ProbeType::Startup => c.startup_probe.as_ref(),
        }
    }

    pub const ALL: [ProbeType; 3] = [
        ProbeType::Startup,
        ProbeType::Liveness,
        ProbeType::Readiness,
    ];
}

/// Why a probe or hook cannot be run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandlerError {
    #[error("the handler has no action (exec, httpGet, tcpSocket)")]
    NoAction,
    #[error("container has no port named {0:?}")]
    UnknownPort(String),
    #[error("port {0} is out of range")]
    BadPort(i32),
    #[error("scheme {0:?} is not supported (only HTTP and HTTPS)")]
    UnsupportedScheme(String),
}

/// A probe or hook action, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    Exec(Vec<String>),
    Http {
        /// HTTPS (certificate not verified) rather than HTTP.
        tls: bool,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// `grpc.health.v1.Health/Check` for `service` ("" asks about the whole server).
    Grpc {
        host: String,
        port: u16,
        service: String,
    },
    Sleep(Duration),
}

/// A probe's timing and thresholds, upstream's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
}

impl Settings {
    pub fn of(p: &Probe, kind: ProbeType) -> Settings {
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Settings {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            // Validation requires 1 for liveness and startup probes.
            success_threshold: if kind == ProbeType::Readiness {
                count(p.success_threshold, 1)
            } else {
                1
            },
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, HandlerError> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| HandlerError::UnknownPort(name.clone()))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(HandlerError::BadPort(n))
}

/// Resolves the action of a probe or hook. `pod_ip` is where httpGet and tcpSocket connect
/// unless they name a host.
pub fn handler(
    exec: Option<&ExecAction>,
    http: Option<&HTTPGetAction>,
    tcp: Option<&TCPSocketAction>,
    sleep: Option<&SleepAction>,
    c: &Container,
    pod_ip: &str,
) -> Result<Handler, HandlerError> {
    if let Some(e) = exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = http {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP");
        let tls = if scheme.eq_ignore_ascii_case("HTTP") {
            false
        } else if scheme.eq_ignore_ascii_case("HTTPS") {
            true
        } else {
            return Err(HandlerError::UnsupportedScheme(scheme.to_string()));
        };
        let path = h.path.clone().unwrap_or_default();
        return Ok(Handler::Http {
            tls,
            host: h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(&h.port, c)?,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = tcp {
        return Ok(Handler::Tcp {
            host: t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(&t.port, c)?,
        });
    }
    if let Some(s) = sleep {
        return Ok(Handler::Sleep(Duration::from_secs(
            u64::try_from(s.seconds).unwrap_or(0),
        )));
    }
    Err(HandlerError::NoAction)
}

/// The action of a probe.
pub fn probe_handler(p: &Probe, c: &Container, pod_ip: &str) -> Result<Handler, HandlerError> {
    if let Some(GRPCAction { port, service }) = &p.grpc {
        // The API allows only a number here, and only the pod IP.
        return Ok(Handler::Grpc {
            host: pod_ip.to_string(),
            port: u16::try_from(*port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(HandlerError::BadPort(*port))?,
            service: service.clone().unwrap_or_default(),
        });
    }
    handler(
        p.exec.as_ref(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
        None,
        c,
        pod_ip,
    )
}

/// The action of a lifecycle hook.
pub fn hook_handler(
    h: &LifecycleHandler,
    c: &Container,
    pod_ip: &str,
) -> Result<Handler, HandlerError> {
    handler(
        h.exec.as_ref(),
        h.http_get.as_ref(),
        h.tcp_socket.as_ref(),
        h.sleep.as_ref(),
        c,
        pod_ip,
    )
}

/// What one run of a handler found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// It ran and failed; the message is what upstream's events say.
    Failure(String),
    /// It could not be run (runtime unreachable, container gone): not counted.
    Error(String),
}

/// Runs `h` once against container `container_id`, giving up after `timeout`.
pub async fn check(
    rt: &dyn Runtime,
    container_id: &str,
    h: &Handler,
    timeout: Duration,
) -> Outcome {
    match h {
        Handler::Exec(cmd) => {
            let secs = i64::try_from(timeout.as_secs().max(1)).unwrap_or(1);
            match rt.exec_sync(container_id, cmd.clone(), secs).await {
                Ok(r) if r.exit_code == 0 => Outcome::Success,
                Ok(r) => {
                    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
                    out.push_str(&String::from_utf8_lossy(&r.stderr));
                    Outcome::Failure(out)
                }
                Err(e) if e.is_timeout() => Outcome::Failure(format!("command {cmd:?} timed out")),
                Err(e) => Outcome::Error(e.to_string()),
            }
        }
        Handler::Http {
            tls,
            host,
            port,
            path,
            headers,
        } => {
            let url = format!(
                "{}://{}{path}",
                if *tls { "https" } else { "http" },
                host_port(host, *port)
            );
            match tokio::time::timeout(timeout, http_get(*tls, host, *port, path, headers)).await
            {
                Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
                Ok(Ok(code)) => {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
                Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
                Err(_) => Outcome::Failure(format!(
                    "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
            }
        }
        Handler::Grpc {
            host,
            port,
            service,
        } => grpc_check(host, *port, service, timeout).await,
        Handler::Tcp { host, port } => {
            let addr = host_port(host, *port);
            match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
                Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Handler::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Outcome::Success
        }
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Largest response head read; the status line is all that matters.
const MAX_HEAD: usize = 8192;

/// Accepts any server certificate: probes, like upstream's, check that the container
/// answers, not who it is (pods mostly serve self-signed certificates). Signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client of HTTPS probes, built once.
fn tls_connector() -> std::io::Result<tokio_rustls::TlsConnector> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    match config {
        Ok(c) => Ok(tokio_rustls::TlsConnector::from(c.clone())),
        Err(e) => Err(std::io::Error::other(e.clone())),
    }
}

/// One HTTP/1.1 GET, over TLS if `tls`; returns the status code. A tiny client is enough:
/// probes only need the status line, and this keeps an HTTP client stack out of the agent.
async fn http_get(
    tls: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let stream = TcpStream::connect(host_port(host, port)).await?;
    if !tls {
        return http_exchange(stream, host, port, path, headers).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tls_connector()?.connect(name, stream).await?;
    http_exchange(stream, host, port, path, headers).await
}

/// Sends the GET on `stream` and reads the status line.
async fn http_exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", host_port(host, port)));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed HTTP response {line:?}"),
        )),
    }
}

/// One `grpc.health.v1.Health/Check` call in plaintext, as upstream's gRPC prober makes it;
/// only SERVING is a success.
async fn grpc_check(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let addr = host_port(host, port);
    let secs = timeout.as_secs_f64();
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Failure(format!("bad gRPC address {addr:?}: {e}")),
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}s: {e}"
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}s"
            ))
        }
    };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await {
        Ok(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => Outcome::Success,
            other => Outcome::Failure(format!(
                "service unhealthy (responded with {:?})",
                other.as_str_name()
            )),
        },
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Outcome::Failure(
            format!("this server does not implement the grpc health protocol (grpc.health.v1.Health): {}", status.message()),
        ),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            Outcome::Failure(format!("timeout: health rpc did not complete within {secs}s"))
        }
        Ok(Err(status)) => Outcome::Failure(format!(
            "error: health rpc probe failed: {}: {}",
            status.code(),
            status.message()
        )),
        Err(_) => Outcome::Failure(format!("timeout: health rpc did not complete within {secs}s")),
    }
}

/// The latest probe results of one pod's containers, shared by its probe tasks and worker.
#[derive(Default)]
pub struct Results {
    inner: Mutex<HashMap<(String, ProbeType), bool>>,
}

impl Results {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, ProbeType), bool>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The result of `kind` for container `id`; `None` before its first verdict.
    pub fn get(&self, id: &str, kind: ProbeType) -> Option<bool> {
        self.lock().get(&(id.to_string(), kind)).copied()
    }

    /// Records a verdict; says whether it changed.
    pub fn set(&self, id: &str, kind: ProbeType, ok: bool) -> bool {
        self.lock().insert((id.to_string(), kind), ok) != Some(ok)
    }

    /// Forgets containers not in `keep`.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.lock().retain(|(id, _), _| keep(id.as_str()));
    }

    /// A copy, for the pure status computation.
    pub fn snapshot(&self) -> HashMap<(String, ProbeType), bool> {
        self.lock().clone()
    }
}

/// Whether container `c` (running as `id`) has started: its startup probe succeeded, or it
/// has none.
pub fn started(c: &Container, id: &str, results: &HashMap<(String, ProbeType), bool>) -> bool {
    c.startup_probe.is_none()
        || results
            .get(&(id.to_string(), ProbeType::Startup))
            .copied()
            .unwrap_or(false)
}

/// Whether running container `c` (as `id`) is ready: started, and its readiness probe has
/// succeeded (no probe: ready once running).
pub fn ready(c: &Container, id: &str, results: &HashMap<(String, ProbeType), bool>) -> bool {
    started(c, id, results)
        && (c.readiness_probe.is_none()
            || results
                .get(&(id.to_string(), ProbeType::Readiness))
                .copied()
                .unwrap_or(false))
}

/// Everything one probe task needs.
pub struct Task {
    pub runtime: Arc<dyn Runtime>,
    pub container_id: String,
    pub container_name: String,
    pub kind: ProbeType,
    pub handler: Handler,
    pub settings: Settings,
    /// The container has a startup probe (liveness and readiness wait for it).
    pub has_startup: bool,
    /// How long the container has run when the task starts.
    pub running_for: Duration,
    pub results: Arc<Results>,
    /// Wakes the pod worker when a verdict changes.
    pub wake: Arc<Notify>,
    pub events: EventSink,
}

/// Probes until a liveness or startup verdict of failure (or forever; the worker aborts it).
pub async fn run(t: Task) {
    let delay = t.settings.initial_delay.saturating_sub(t.running_for);
    tokio::time::sleep(delay).await;
    let mut ticker = tokio::time::interval(t.settings.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        ticker.tick().await;
        let results = &t.results;
        if t.kind == ProbeType::Startup {
            if results.get(&t.container_id, ProbeType::Startup) == Some(true) {
                return;
            }
        } else if t.has_startup && results.get(&t.container_id, ProbeType::Startup) != Some(true) {
            // Liveness and readiness wait for the startup probe.
            continue;
        }
        // Boxed: a check's future (HTTP and gRPC clients) exists only while it runs.
        match Box::pin(check(
            t.runtime.as_ref(),
            &t.container_id,
            &t.handler,
            t.settings.timeout,
        ))
        .await
        {
            Outcome::Success => {
                failures = 0;
                successes = successes.saturating_add(1);
                if successes >= t.settings.success_threshold
                    && results.set(&t.container_id, t.kind, true)
                {
                    t.wake.notify_one();
                }
            }
            Outcome::Failure(output) => {
                successes = 0;
                failures = failures.saturating_add(1);
                // Each failure up to the verdict gets an event, then every 30th: upstream's
                // recorder folds repeats into one event's count, which this one does not.
                if failures <= t.settings.failure_threshold || failures % 30 == 0 {
                    t.events.warning(
                        &t.container_name,
                        "Unhealthy",
                        format!("{} probe failed: {}", t.kind.as_str(), output.trim_end()),
                    );
                }
                if failures >= t.settings.failure_threshold {
                    let changed = results.set(&t.container_id, t.kind, false);
                    if changed || t.kind != ProbeType::Readiness {
                        t.wake.notify_one();
                    }
                    if t.kind != ProbeType::Readiness {
                        return;
                    }
                }
            }
            Outcome::Error(e) => {
                tracing::debug!(container = %t.container_id, probe = t.kind.as_str(), error = %e, "probe errored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{api, suite};
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use tokio::net::TcpListener;

    fn container() -> Container {
        Container {
            name: "c".to_string(),
            ports: Some(vec![ContainerPort {
                name: Some("http".to_string()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn upstream_defaults() {
        let s = Settings::of(&Probe::default(), ProbeType::Readiness);
        assert_eq!(
            s,
            Settings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let p = Probe {
            success_threshold: Some(3),
            period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(Settings::of(&p, ProbeType::Readiness).success_threshold, 3);
        assert_eq!(Settings::of(&p, ProbeType::Liveness).success_threshold, 1);
        assert_eq!(
            Settings::of(&p, ProbeType::Liveness).period,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn handlers_resolve_ports_hosts_and_paths() {
        let c = container();
        let http = |port: IntOrString, host: Option<&str>, scheme: Option<&str>| Probe {
            http_get: Some(HTTPGetAction {
                port,
                host: host.map(str::to_string),
                path: Some("healthz".to_string()),
                scheme: scheme.map(str::to_string),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".to_string(),
                    value: "1".to_string(),
                }]),
            }),
            ..Default::default()
        };
        assert_eq!(
            probe_handler(
                &http(IntOrString::String("http".into()), None, None),
                &c,
                "10.42.0.5"
            ),
            Ok(Handler::Http {
                tls: false,
                host: "10.42.0.5".to_string(),
                port: 8080,
                path: "/healthz".to_string(),
                headers: vec![("X-Probe".to_string(), "1".to_string())],
            })
        );
        assert!(matches!(
            probe_handler(&http(IntOrString::Int(81), Some("127.0.0.1"), Some("HTTP")), &c, "x"),
            Ok(Handler::Http { host, port: 81, .. }) if host == "127.0.0.1"
        ));
        assert_eq!(
            probe_handler(
                &http(IntOrString::String("nope".into()), None, None),
                &c,
                "x"
            ),
            Err(HandlerError::UnknownPort("nope".to_string()))
        );
        assert_eq!(
            probe_handler(&http(IntOrString::Int(70000), None, None), &c, "x"),
            Err(HandlerError::BadPort(70000))
        );
        assert!(matches!(
            probe_handler(&http(IntOrString::Int(1), None, Some("HTTPS")), &c, "x"),
            Ok(Handler::Http {
                tls: true,
                port: 1,
                ..
            })
        ));
        assert_eq!(
            probe_handler(&http(IntOrString::Int(1), None, Some("FTP")), &c, "x"),
            Err(HandlerError::UnsupportedScheme("FTP".to_string()))
        );
        let grpc = |port: i32, service: Option<&str>| Probe {
            grpc: Some(GRPCAction {
                port,
                service: service.map(str::to_string),
            }),
            ..Default::default()
        };
        assert_eq!(
            probe_handler(&grpc(9090, Some("db")), &c, "10.42.0.5"),
            Ok(Handler::Grpc {
                host: "10.42.0.5".to_string(),
                port: 9090,
                service: "db".to_string()
            })
        );
        assert_eq!(
            probe_handler(&grpc(0, None), &c, "x"),
            Err(HandlerError::BadPort(0))
        );
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("8080".into()),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            probe_handler(&tcp, &c, "10.0.0.1"),
            Ok(Handler::Tcp {
                host: "10.0.0.1".to_string(),
                port: 8080
            })
        );
        assert_eq!(
            probe_handler(&Probe::default(), &c, "x"),
            Err(HandlerError::NoAction)
        );
    }

    /// A tiny HTTP server on 127.0.0.1: `/ok` answers 200, `/moved` 301, `/slow` never,
    /// anything else 500; the request head is sent back on `heads`.
    async fn server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = tx.send(head.clone());
                    let code = if head.starts_with("GET /ok ") {
                        "200 OK"
                    } else if head.starts_with("GET /moved ") {
                        "301 Moved Permanently"
                    } else if head.starts_with("GET /slow ") {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    } else {
                        "500 Internal Server Error"
                    };
                    let resp = format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn http_and_tcp_checks() {
        let rt = FakeRuntime::new();
        let (port, mut heads) = server().await;
        let http = |path: &str| Handler::Http {
            tls: false,
            host: "127.0.0.1".to_string(),
            port,
            path: path.to_string(),
            headers: vec![("X-Probe".to_string(), "yes".to_string())],
        };
        let t = Duration::from_secs(1);
        assert_eq!(check(&rt, "c", &http("/ok"), t).await, Outcome::Success);
        let head = heads.recv().await.expect("request");
        assert!(head.contains("X-Probe: yes\r\n"), "{head}");
        assert!(head.contains("User-Agent: kube-probe/"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert_eq!(check(&rt, "c", &http("/moved"), t).await, Outcome::Success);
        assert_eq!(
            check(&rt, "c", &http("/broken"), t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".to_string())
        );
        let started = std::time::Instant::now();
        assert!(matches!(
            check(&rt, "c", &http("/slow"), Duration::from_millis(300)).await,
            Outcome::Failure(m) if m.contains("deadline exceeded")
        ));
        assert!(started.elapsed() < Duration::from_secs(5));

        let tcp = |port| Handler::Tcp {
            host: "127.0.0.1".to_string(),
            port,
        };
        assert_eq!(check(&rt, "c", &tcp(port), t).await, Outcome::Success);
        // A port nobody listens on: bind, learn the port, close.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(matches!(
            check(&rt, "c", &tcp(closed), t).await,
            Outcome::Failure(m) if m.starts_with("dial tcp")
        ));
        assert!(matches!(
            check(&rt, "c", &http("/ok").with_port(closed), t).await,
            Outcome::Failure(_)
        ));
    }

    impl Handler {
        fn with_port(self, p: u16) -> Handler {
            match self {
                Handler::Http {
                    tls,
                    host,
                    path,
                    headers,
                    ..
                } => Handler::Http {
                    tls,
                    host,
                    port: p,
                    path,
                    headers,
                },
                other => other,
            }
        }
    }

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate: `/ok` answers 200,
    /// anything else 503.
    async fn https_server() -> u16 {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["pod.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let code = if buf[..n].starts_with(b"GET /ok ") {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let resp = format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_checks_skip_certificate_verification() {
        let rt = FakeRuntime::new();
        let port = https_server().await;
        let https = |path: &str| Handler::Http {
            tls: true,
            host: "127.0.0.1".to_string(),
            port,
            path: path.to_string(),
            headers: vec![],
        };
        let t = Duration::from_secs(2);
        assert_eq!(check(&rt, "c", &https("/ok"), t).await, Outcome::Success);
        assert_eq!(
            check(&rt, "c", &https("/down"), t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".to_string())
        );
        // Plain HTTP to the TLS port fails, with the https URL when TLS was asked for.
        let (plain, _) = server().await;
        assert!(matches!(
            check(&rt, "c", &https("/ok").with_port(plain), t).await,
            Outcome::Failure(m) if m.starts_with(&format!("Get \"https://127.0.0.1:{plain}/ok\""))
        ));
    }

    #[tokio::test]
    async fn grpc_checks_ask_the_health_service() {
        use tonic_health::ServingStatus;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("db", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("cache", ServingStatus::NotServing)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let rt = FakeRuntime::new();
        let grpc = |port: u16, service: &str| Handler::Grpc {
            host: "127.0.0.1".to_string(),
            port,
            service: service.to_string(),
        };
        let t = Duration::from_secs(2);
        // The whole server ("") is SERVING from the start.
        assert_eq!(check(&rt, "c", &grpc(port, ""), t).await, Outcome::Success);
        assert_eq!(
            check(&rt, "c", &grpc(port, "db"), t).await,
            Outcome::Success
        );
        assert_eq!(
            check(&rt, "c", &grpc(port, "cache"), t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".to_string())
        );
        assert!(matches!(
            check(&rt, "c", &grpc(port, "nope"), t).await,
            Outcome::Failure(m) if m.contains("NotFound") || m.contains("not found") || m.contains("unknown service"),
        ));
        server.abort();
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(matches!(
            check(&rt, "c", &grpc(closed, ""), t).await,
            Outcome::Failure(m) if m.starts_with("timeout: failed to connect service")
        ));
    }

    /// A fake runtime with one running container; returns its id.
    async fn running(rt: &FakeRuntime) -> String {
        rt.add_image(suite::IMAGE);
        let sb_config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: "p".to_string(),
                uid: "u".to_string(),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let sb = rt
            .run_pod_sandbox(sb_config.clone())
            .await
            .expect("sandbox");
        let id = rt
            .create_container(
                &sb,
                api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: "c".to_string(),
                        attempt: 0,
                    }),
                    image: Some(api::ImageSpec {
                        image: suite::IMAGE.to_string(),
                        ..Default::default()
                    }),
                    command: vec!["sleep".to_string(), "3600".to_string()],
                    ..Default::default()
                },
                sb_config,
            )
            .await
            .expect("container");
        rt.start_container(&id).await.expect("start");
        id
    }

    fn task(
        rt: &Arc<FakeRuntime>,
        id: &str,
        kind: ProbeType,
        command: &str,
        failure_threshold: u32,
    ) -> (
        Task,
        Arc<Results>,
        Arc<Notify>,
        crate::pod::events::Recorded,
    ) {
        let results = Arc::new(Results::default());
        let wake = Arc::new(Notify::new());
        let (events, log) = EventSink::memory(&k8s_openapi::api::core::v1::Pod::default());
        let t = Task {
            runtime: rt.clone(),
            container_id: id.to_string(),
            container_name: "c".to_string(),
            kind,
            handler: Handler::Exec(command.split(' ').map(str::to_string).collect()),
            // Seconds in real probes; tenths here to keep the tests quick.
            settings: Settings {
                initial_delay: Duration::from_millis(500),
                period: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold,
            },
            has_startup: false,
            running_for: Duration::from_millis(200),
            results: results.clone(),
            wake: wake.clone(),
            events,
        };
        (t, results, wake, log)
    }

    #[tokio::test]
    async fn readiness_flips_after_thresholds_and_recovers() {
        let rt = Arc::new(FakeRuntime::new());
        let id = running(&rt).await;
        let (t, results, wake, log) = task(&rt, &id, ProbeType::Readiness, "cat /tmp/ready", 3);
        let handle = tokio::spawn(run(t));
        // The initial delay (500 ms, of which the container ran 200) passes without a probe.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rt.execs().is_empty());
        assert_eq!(results.get(&id, ProbeType::Readiness), None);
        // Three failures in a row make the verdict.
        tokio::time::timeout(Duration::from_secs(4), wake.notified())
            .await
            .expect("woken by the failure verdict");
        assert!(rt.execs().len() >= 3);
        assert_eq!(results.get(&id, ProbeType::Readiness), Some(false));
        {
            let log = log.lock().expect("log");
            assert!(log.len() >= 3);
            assert_eq!(log[0].1, "Unhealthy");
            assert!(
                log[0]
                    .2
                    .starts_with("Readiness probe failed: cat: can't open"),
                "{:?}",
                log[0]
            );
        }
        rt.write_file(&id, "/tmp/ready");
        tokio::time::timeout(Duration::from_secs(2), wake.notified())
            .await
            .expect("woken by the success");
        assert_eq!(results.get(&id, ProbeType::Readiness), Some(true));
        assert!(!handle.is_finished(), "readiness keeps probing");
        handle.abort();
    }

    #[tokio::test]
    async fn liveness_failure_ends_the_task_and_startup_gates_it() {
        let rt = Arc::new(FakeRuntime::new());
        let id = running(&rt).await;
        let (mut t, results, _wake, _log) = task(&rt, &id, ProbeType::Liveness, "cat /healthy", 2);
        t.has_startup = true;
        let handle = tokio::spawn(run(t));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            rt.execs().is_empty(),
            "liveness waits for the startup probe"
        );
        results.set(&id, ProbeType::Startup, true);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the task ends after its failure verdict")
            .expect("task");
        assert_eq!(rt.execs().len(), 2);
        assert_eq!(results.get(&id, ProbeType::Liveness), Some(false));
    }

    #[tokio::test]
    async fn exec_timeout_is_a_failure_and_startup_stops_after_success() {
        let rt = Arc::new(FakeRuntime::new());
        let id = running(&rt).await;
        let (t, results, _wake, log) = task(&rt, &id, ProbeType::Startup, "sleep 5", 1);
        tokio::time::timeout(Duration::from_secs(20), run(t))
            .await
            .expect("startup verdict");
        assert_eq!(results.get(&id, ProbeType::Startup), Some(false));
        assert!(log.lock().expect("log")[0].2.contains("timed out"));

        let (t, results, _wake, _log) = task(&rt, &id, ProbeType::Startup, "echo ok", 1);
        let handle = tokio::spawn(run(t));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(results.get(&id, ProbeType::Startup), Some(true));
        assert!(
            handle.is_finished(),
            "a startup probe stops once it succeeded"
        );
    }

    #[test]
    fn ready_and_started_follow_the_verdicts() {
        let mut c = container();
        let mut r = HashMap::new();
        assert!(ready(&c, "x", &r) && started(&c, "x", &r));
        c.readiness_probe = Some(Probe::default());
        assert!(!ready(&c, "x", &r));
        r.insert(("x".to_string(), ProbeType::Readiness), true);
        assert!(ready(&c, "x", &r));
        c.startup_probe = Some(Probe::default());
        assert!(!ready(&c, "x", &r) && !started(&c, "x", &r));
        r.insert(("x".to_string(), ProbeType::Startup), true);
        assert!(ready(&c, "x", &r) && started(&c, "x", &r));
    }
}
