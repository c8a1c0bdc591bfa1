//! Test harness: starts real `krust server` processes on loopback and drives them with the
//! real kubectl.
#![allow(dead_code)]

pub mod node;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// kubectl 1.33 (protobuf for typed commands), through the dispatcher.
pub const KUBECTL: &str = "/usr/bin/kubectl";
/// kubectl 1.29 (JSON bodies).
pub const KUBECTL_129: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29";

/// A running `krust server` that is killed when dropped.
pub struct Server {
    pub child: Child,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    _tmp: Option<tempfile::TempDir>,
    pub extra_args: Vec<String>,
}

/// What `Server` turns off unless a test starts it itself.
pub const ADDONS: &str = "agent,dns,servicelb,ingress";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Server {
    /// Starts a server on the embedded store in a fresh directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server with extra flags in a fresh directory.
    pub fn start_args(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server with its data in `dir` and extra flags.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Server::launch(dir, ADDONS, extra)
    }

    /// Starts a server in a fresh directory with only the components in `disable` off
    /// (tests of the add-ons themselves).
    #[allow(dead_code)]
    pub fn start_disabling(disable: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::launch(&dir, disable, extra);
        s._tmp = Some(tmp);
        s
    }

    fn launch(dir: &Path, disable: &str, extra: &[&str]) -> Server {
        Server::launch_on(dir, "127.0.0.1", disable, extra)
    }

    /// Starts a server in a fresh directory listening on `ip` (an address a test made, such
    /// as a test bridge's, so that agents in network namespaces reach it).
    pub fn start_on(ip: &str, disable: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::launch_on(&dir, ip, disable, extra);
        s._tmp = Some(tmp);
        s
    }

    fn launch_on(dir: &Path, ip: &str, disable: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let kubeconfig = dir.join(format!("admin-{port}.kubeconfig"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_krust"));
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            // Tests that need a real node start `krust agent` themselves; add-ons that
            // listen on fixed ports are started by the tests about them.
            .args(["--disable", disable])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join(format!("server-{port}.log"))).expect("log file"),
            ));
        let child = cmd.spawn().expect("start krust");
        let s = Server {
            child,
            data_dir: dir.to_path_buf(),
            kubeconfig,
            url: format!("https://{ip}:{port}"),
            _tmp: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.wait_ready(Duration::from_secs(20));
        s
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.kubeconfig.exists() {
                let out = Command::new("curl")
                    .args(["-sk", "--max-time", "2", &format!("{}/readyz", self.url)])
                    .output();
                if out.map(|o| o.stdout == b"ok").unwrap_or(false) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "krust server did not become ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.data_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs kubectl (1.33 unless `bin` says otherwise) against this server.
    pub fn kubectl_with(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, failing the test if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_ok(KUBECTL, args, None)
    }

    pub fn kubectl_ok(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(bin, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_err(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(KUBECTL, args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose stdout lines arrive on a channel.
    pub fn kubectl_stream(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new(KUBECTL)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (child, rx)
    }

    /// curl against the API with the admin credentials (or none), returning (code, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        with_cert: bool,
    ) -> (u16, String) {
        let certs = self.client_files();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "20",
            "--cacert",
        ])
        .arg(&certs.0);
        if with_cert {
            cmd.arg("--cert").arg(&certs.1).arg("--key").arg(&certs.2);
        }
        cmd.args(["-X", method, &format!("{}{}", self.url, path)]);
        let body_file = self.data_dir.join(format!("body-{}", std::process::id()));
        if let Some((ct, bytes)) = body {
            std::fs::write(&body_file, bytes).expect("write body");
            cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary"])
                .arg(format!("@{}", body_file.display()));
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// An HTTPS client with the admin identity, for tests that send many requests.
    pub fn http(&self) -> reqwest::blocking::Client {
        let (ca, cert, key) = self.client_files();
        let pem = |p: &Path| std::fs::read(p).expect("read pem");
        let mut ident = pem(&cert);
        ident.extend(pem(&key));
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem(&ca)).expect("ca"))
            .identity(reqwest::Identity::from_pem(&ident).expect("identity"))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
    }

    /// Creates `n` objects by POSTing `body(i)` to `path` from `threads` clients at once;
    /// panics unless every create gets a 201.
    pub fn create_many(
        &self,
        path: &str,
        n: usize,
        threads: usize,
        body: impl Fn(usize) -> String + Send + Sync + 'static,
    ) {
        let body = std::sync::Arc::new(body);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (client, url, body) =
                    (self.http(), format!("{}{path}", self.url), body.clone());
                std::thread::spawn(move || {
                    for i in (t..n).step_by(threads) {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body(i))
                            .send()
                            .expect("create");
                        let code = r.status().as_u16();
                        assert_eq!(code, 201, "create {i}: {}", r.text().unwrap_or_default());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("create worker");
        }
    }

    /// CA, client certificate and key as files (from the data directory's tls folder).
    pub fn client_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let tls = self.data_dir.join("tls");
        (
            tls.join("ca.crt"),
            tls.join("admin.crt"),
            tls.join("admin.key"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a line matching `pred` on `rx`.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Polls `f` until it returns true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Runs a client-library scenario from the repository's `tests/` folder (`python3
/// tests/python/x.py ARGS` or `node tests/node/x.mjs ARGS`) and asserts it ended with
/// `ok_line` on stdout.
pub fn client_scenario(program: &str, script: &str, args: &[&std::ffi::OsStr], ok_line: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests")
        .join(script);
    let out = Command::new(program)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(ok_line),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
