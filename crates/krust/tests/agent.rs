//! End-to-end: a real node. `krust server` plus `krust agent --node-ip 127.0.0.1` with its own
//! containerd, images built on the spot, pods run with runc on a CNI bridge of the test's
//! own; driven with kubectl. Skipped (with a message) when containerd, runc, the CNI plugins,
//! busybox-static or gcc are not installed; `scripts/test.sh` installs them.
//!
//! Everything the test makes is removed afterwards, also on failure: pods through CRI,
//! containerd, the bridge, cgroups, temporary directories (`krust agent-reset` in a guard).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Server};

const NODE: &str = "krust-e2e-node";
const BRIDGE: &str = "krte2e0";
const CIDR: &str = "10.42.200.0/24";
const KRUST: &str = env!("CARGO_BIN_EXE_krust");

fn missing_tools() -> Vec<&'static str> {
    let on_path = |b: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).exists()))
    };
    let mut missing: Vec<&'static str> = ["containerd", "ctr", "runc", "gcc", "ip"]
        .into_iter()
        .filter(|b| !on_path(b))
        .collect();
    for f in ["/usr/lib/cni/bridge", "/bin/busybox"] {
        if !Path::new(f).exists() {
            missing.push(f);
        }
    }
    missing
}

/// A `krust agent` process; dropping it kills the agent and resets the node.
struct Agent {
    child: Option<Child>,
    node: &'static str,
    bridge: &'static str,
    pod_cidr: &'static str,
    data_dir: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
    ip_forward: Option<String>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    fn start(server: &Server) -> Agent {
        Agent::start_node(server, NODE, BRIDGE, "10.42.250.0/24")
    }

    /// An agent for node `node` (tests running at once need their own name and bridge).
    fn start_node(
        server: &Server,
        node: &'static str,
        bridge: &'static str,
        pod_cidr: &'static str,
    ) -> Agent {
        let tmp = tempfile::Builder::new()
            .prefix("krust-agent")
            .tempdir()
            .expect("tempdir");
        let mut a = Agent {
            child: None,
            node,
            bridge,
            pod_cidr,
            data_dir: tmp.path().join("agent"),
            kubeconfig: server.kubeconfig.clone(),
            log: tmp.path().join("agent.log"),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
            _tmp: tmp,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(KRUST)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--node-name", self.node, "--node-ip", "127.0.0.1"])
            .args(["--pod-cidr", self.pod_cidr, "--bridge", self.bridge])
            .args(["--kubelet-port", "0"])
            .env("KRUST_LOG", "info,krust_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start krust agent");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.data_dir.join("containerd/containerd.sock")
    }

    /// Container ids containerd has in the CRI namespace (sandboxes' pause containers too).
    fn containers(&self) -> Vec<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let out = Command::new(KRUST)
            .arg("agent-reset")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--bridge", self.bridge])
            .output();
        if let Ok(o) = out {
            eprintln!("agent-reset: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        if let Some(v) = &self.ip_forward {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v);
        }
    }
}

fn jsonpath(s: &Server, what: &str, path: &str) -> String {
    let out = s.kubectl_with(
        common::KUBECTL,
        &["get", what, "-o", &format!("jsonpath={path}")],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_yaml(name: &str, policy: &str, script: &str, init: Option<&str>) -> String {
    let init = init
        .map(|s| {
            format!(
                "  initContainers:\n  - name: init\n    image: busybox\n    command: [\"sh\", \"-c\", {s:?}]\n"
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 10\n{init}  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n    resources:\n      limits:\n        memory: 64Mi\n        cpu: 500m\n"
    )
}

fn wait_phase(s: &Server, agent: &Agent, pod: &str, phase: &str, timeout: Duration) -> Duration {
    let t = Instant::now();
    let ok = eventually(timeout, || {
        jsonpath(s, &format!("pod/{pod}"), "{.status.phase}") == phase
    });
    assert!(
        ok,
        "pod {pod} did not reach {phase}: {}\nagent log:\n{}",
        s.kubectl(&["get", "pod", pod, "-o", "yaml"]),
        agent.log()
    );
    t.elapsed()
}

#[test]
fn agent_runs_pods_with_containerd() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    // The Node exists with its podCIDR before the agent registers (so the node IPAM
    // controller leaves it alone); the agent picks the CIDR up for its bridge.
    s.kubectl_ok(
        common::KUBECTL,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\nspec:\n  podCIDR: {CIDR}\n  podCIDRs: [{CIDR}]\n"
        )),
    );
    let mut agent = Agent::start(&s);

    // The node registers and turns Ready (containerd started, images built and imported).
    let t = Instant::now();
    let ready = eventually(Duration::from_secs(90), || {
        jsonpath(
            &s,
            &format!("node/{NODE}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    assert!(ready, "node not Ready; agent log:\n{}", agent.log());
    eprintln!("node Ready after {:?}", t.elapsed());
    assert_eq!(
        jsonpath(
            &s,
            &format!("node/{NODE}"),
            "{.status.addresses[?(@.type==\"InternalIP\")].address}"
        ),
        "127.0.0.1"
    );
    assert_eq!(
        jsonpath(&s, &format!("node/{NODE}"), "{.status.capacity.pods}"),
        "110"
    );
    let renewed = s.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        NODE,
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    assert!(!renewed.is_empty(), "the node's Lease has a renewTime");

    // A long-running pod: Running with an address from the node's CIDR.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            "hello",
            "Always",
            "trap 'exit 0' TERM; echo hello; sleep 3600 & wait",
            Some("echo init done"),
        )),
    );
    let took = wait_phase(&s, &agent, "hello", "Running", Duration::from_secs(60));
    eprintln!("hello: created to Running in {took:?}");
    let ip = jsonpath(&s, "pod/hello", "{.status.podIP}");
    assert!(ip.starts_with("10.42.200."), "pod IP {ip:?}");
    assert_eq!(jsonpath(&s, "pod/hello", "{.status.hostIP}"), "127.0.0.1");
    assert!(eventually(Duration::from_secs(10), || {
        jsonpath(
            &s,
            "pod/hello",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    }));
    assert_eq!(
        jsonpath(
            &s,
            "pod/hello",
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    let uid = jsonpath(&s, "pod/hello", "{.metadata.uid}");
    let log = agent
        .data_dir
        .join(format!("pods/default_hello_{uid}/c/0.log"));
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("stdout F hello"))),
        "container log {}",
        log.display()
    );
    // The memory limit reached the container's cgroup.
    let cgroup = format!("/sys/fs/cgroup/memory/krust/pod{uid}");
    if Path::new(&cgroup).exists() {
        let limits: Vec<String> = std::fs::read_dir(&cgroup)
            .expect("pod cgroup")
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("memory.limit_in_bytes")).ok())
            .map(|v| v.trim().to_string())
            .collect();
        assert!(
            limits.contains(&(64 * 1024 * 1024).to_string()),
            "{limits:?}"
        );
    }

    // A pod that finishes: Succeeded, and one whose container fails: Failed with its code.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml("once", "Never", "echo done; exit 0", None)),
    );
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml("fails", "Never", "exit 3", None)),
    );
    wait_phase(&s, &agent, "once", "Succeeded", Duration::from_secs(60));
    assert_eq!(
        jsonpath(
            &s,
            "pod/once",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    wait_phase(&s, &agent, "fails", "Failed", Duration::from_secs(60));
    assert_eq!(
        jsonpath(
            &s,
            "pod/fails",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );

    // A container over its memory limit is OOMKilled.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            "oom",
            "Never",
            "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
            None,
        )),
    );
    wait_phase(&s, &agent, "oom", "Failed", Duration::from_secs(60));
    assert_eq!(
        jsonpath(
            &s,
            "pod/oom",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );

    // An init container, a ConfigMap volume, a Secret env var and an emptyDir shared by both.
    s.kubectl(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=greeting=hi-from-configmap",
    ]);
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=password=s3cret",
    ]);
    let reader = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: {NODE}
  restartPolicy: Never
  initContainers:
  - name: init
    image: busybox
    command: ["sh", "-c", "echo init-was-here > /work/ready"]
    volumeMounts:
    - {{name: work, mountPath: /work}}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "cat /etc/config/greeting; echo; echo password=$PASSWORD; cat /work/ready"]
    env:
    - name: PASSWORD
      valueFrom:
        secretKeyRef: {{name: app-secret, key: password}}
    volumeMounts:
    - {{name: config, mountPath: /etc/config}}
    - {{name: work, mountPath: /work}}
  volumes:
  - name: config
    configMap: {{name: app-config}}
  - name: work
    emptyDir: {{}}
"#
    );
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(&reader));
    wait_phase(&s, &agent, "reader", "Succeeded", Duration::from_secs(60));
    let reader_uid = jsonpath(&s, "pod/reader", "{.metadata.uid}");
    let reader_log = agent
        .data_dir
        .join(format!("pods/default_reader_{reader_uid}/c/0.log"));
    let text = std::fs::read_to_string(&reader_log).unwrap_or_default();
    for want in ["hi-from-configmap", "password=s3cret", "init-was-here"] {
        assert!(text.contains(want), "{want} missing from the log:\n{text}");
    }

    // A crashing container restarts, then waits in CrashLoopBackOff.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml("crash", "Always", "exit 1", None)),
    );
    let looped = eventually(Duration::from_secs(60), || {
        let restarts: i32 = jsonpath(
            &s,
            "pod/crash",
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse()
        .unwrap_or(0);
        restarts >= 1
            && jsonpath(
                &s,
                "pod/crash",
                "{.status.containerStatuses[0].state.waiting.reason}",
            ) == "CrashLoopBackOff"
    });
    assert!(
        looped,
        "no CrashLoopBackOff: {}\n{}",
        s.kubectl(&["get", "pod", "crash", "-o", "yaml"]),
        agent.log()
    );

    // The agent is killed and comes back: the running container is re-adopted, not restarted.
    let container_id = jsonpath(
        &s,
        "pod/hello",
        "{.status.containerStatuses[0].containerID}",
    );
    agent.kill9();
    agent.spawn();
    std::thread::sleep(Duration::from_secs(3));
    assert!(eventually(Duration::from_secs(30), || {
        agent.log().matches("node agent ready").count() >= 2
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jsonpath(
            &s,
            "pod/hello",
            "{.status.containerStatuses[0].containerID}"
        ),
        container_id
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/hello",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    assert_eq!(jsonpath(&s, "pod/hello", "{.status.phase}"), "Running");

    // Graceful deletion finishes within the grace period and leaves nothing behind.
    let t = Instant::now();
    s.kubectl(&["delete", "pod", "hello", "--timeout=60s"]);
    let took = t.elapsed();
    eprintln!("hello: deleted in {took:?}");
    assert!(took < Duration::from_secs(10), "deletion took {took:?}");
    for p in ["once", "fails", "crash", "oom", "reader"] {
        s.kubectl(&["delete", "pod", p, "--timeout=60s"]);
    }
    assert!(
        eventually(Duration::from_secs(20), || agent.containers().is_empty()),
        "containers left: {:?}",
        agent.containers()
    );
    assert!(!Path::new(&cgroup).exists(), "{cgroup} left behind");
    assert!(!agent
        .data_dir
        .join(format!("pods/default_hello_{uid}"))
        .exists());
}

const STREAM_NODE: &str = "krust-e2e-stream";

fn stream_pod(name: &str, script: &str, volume: bool) -> String {
    let (mounts, volumes) = if volume {
        (
            "    volumeMounts:\n    - {name: state, mountPath: /state}\n",
            "  volumes:\n  - name: state\n    emptyDir: {}\n",
        )
    } else {
        ("", "")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {STREAM_NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n{mounts}{volumes}"
    )
}

/// One HTTP/1.0 GET to 127.0.0.1:`port`; the whole answer.
fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = c.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// `kubectl logs`, `exec`, `attach`-free TTY exec and `port-forward` against pods the agent
/// runs: through the API server, the agent's HTTPS API and containerd's streaming server.
#[test]
fn agent_streams_logs_exec_and_port_forward() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    let cidr = "10.42.201.0/24";
    s.kubectl_ok(
        common::KUBECTL,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {STREAM_NODE}\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n"
        )),
    );
    let agent = Agent::start_node(&s, STREAM_NODE, "krte2e1", "10.42.251.0/24");
    let ready = eventually(Duration::from_secs(90), || {
        jsonpath(
            &s,
            &format!("node/{STREAM_NODE}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    assert!(ready, "node not Ready; agent log:\n{}", agent.log());
    let port = jsonpath(
        &s,
        &format!("node/{STREAM_NODE}"),
        "{.status.daemonEndpoints.kubeletEndpoint.Port}",
    );
    assert!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "kubelet port {port:?}"
    );

    let talker = "i=0; while true; do i=$((i+1)); echo line$i; sleep 1; done";
    let restarter =
        "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo instance-$n; sleep 1; exit 1";
    let web =
        "mkdir -p /www; echo hello-from-httpd > /www/index.html; exec httpd -f -p 8080 -h /www";
    for (name, script, volume) in [
        ("talker", talker, false),
        ("restarter", restarter, true),
        ("web", web, false),
    ] {
        s.kubectl_ok(
            common::KUBECTL,
            &["apply", "-f", "-"],
            Some(&stream_pod(name, script, volume)),
        );
    }
    wait_phase(&s, &agent, "talker", "Running", Duration::from_secs(60));
    wait_phase(&s, &agent, "web", "Running", Duration::from_secs(60));

    // Logs: all of them, the last two, and followed as they are written.
    assert!(eventually(Duration::from_secs(15), || s
        .kubectl(&["logs", "talker"])
        .contains("line3\n")));
    let all = s.kubectl(&["logs", "talker"]);
    assert!(all.starts_with("line1\nline2\nline3\n"), "{all:?}");
    let tail = s.kubectl(&["logs", "talker", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail:?}");
    let stamped = s.kubectl(&["logs", "talker", "--tail=1", "--timestamps"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z line"),
        "{stamped:?}"
    );
    let limited = s.kubectl(&["logs", "talker", "--limit-bytes=3"]);
    assert_eq!(limited, "lin");
    let last: u32 = all
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("line"))
        .and_then(|n| n.parse().ok())
        .expect("a last line");
    let (mut follow, rx) = s.kubectl_stream(&["logs", "-f", "talker"]);
    let newer = format!("line{}", last + 2);
    let seen = common::wait_line(&rx, Duration::from_secs(20), |l| l == newer);
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen.is_some(), "kubectl logs -f never showed {newer}");
    let err = s.kubectl_err(&["logs", "nope"], None);
    assert!(err.contains("not found"), "{err}");
    let err = s.kubectl_err(&["logs", "talker", "-c", "nope"], None);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );

    // exec: output, stdin to the end, exit codes, a TTY.
    assert_eq!(
        s.kubectl(&["exec", "talker", "--", "cat", "/etc/hostname"]),
        "talker\n"
    );
    let out = s.kubectl_ok(
        common::KUBECTL,
        &["exec", "-i", "talker", "--", "cat"],
        Some("hello\nworld\n"),
    );
    assert_eq!(out, "hello\nworld\n");
    let out = s.kubectl_with(
        common::KUBECTL,
        &["exec", "talker", "--", "sh", "-c", "echo oops >&2; exit 3"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let err = s.kubectl_err(&["exec", "talker", "-c", "nope", "--", "true"], None);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );
    if Path::new("/usr/bin/script").exists() {
        // util-linux's script gives kubectl a terminal, so -t really asks for a TTY.
        let out = Command::new("script")
            .args([
                "-qec",
                &format!("{} exec -it talker -- tty", common::KUBECTL),
                "/dev/null",
            ])
            .env("KUBECONFIG", &s.kubeconfig)
            .env("HOME", &s.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "tty said {text:?}");
    }

    // port-forward to busybox httpd.
    let local = common::free_port();
    let mut pf = Command::new(common::KUBECTL)
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", &s.data_dir)
        .args(["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let forwarding = eventually(Duration::from_secs(20), || {
        http_get(local).contains("hello-from-httpd")
    });
    let second = http_get(local);
    let _ = pf.kill();
    let out = pf.wait_with_output().expect("port-forward output");
    assert!(
        forwarding && second.contains("hello-from-httpd"),
        "port-forward: {second:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // --previous: the earlier instance's output after a restart.
    let restarted = eventually(Duration::from_secs(60), || {
        jsonpath(
            &s,
            "pod/restarter",
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });
    assert!(restarted, "restarter never restarted:\n{}", agent.log());
    let prev = s.kubectl(&["logs", "restarter", "--previous"]);
    let cur = s.kubectl(&["logs", "restarter"]);
    assert!(prev.starts_with("instance-"), "previous: {prev:?}");
    assert!(cur.starts_with("instance-"), "current: {cur:?}");
    assert_ne!(prev, cur);
    let err = s.kubectl_err(&["logs", "talker", "--previous"], None);
    assert!(err.contains("previous terminated container"), "{err}");

    for p in ["talker", "restarter", "web"] {
        s.kubectl(&["delete", "pod", p, "--timeout=60s"]);
    }
}
