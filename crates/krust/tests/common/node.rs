//! A real node for end-to-end tests: `krust agent --node-ip 127.0.0.1` with its own
//! containerd and a CNI bridge of the test's own, against a test [`Server`]; dropping it
//! kills the agent and resets the node (`krust agent-reset`). Tests that use one run one at
//! a time (the `real-node` test group).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, Server};

pub const KRUST: &str = env!("CARGO_BIN_EXE_krust");

pub fn on_path(b: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).exists()))
}

pub fn missing_tools() -> Vec<&'static str> {
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
pub struct Agent {
    pub child: Option<Child>,
    pub node: &'static str,
    pub bridge: &'static str,
    pub pod_cidr: &'static str,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
    pub ip_forward: Option<String>,
    /// More `krust agent` flags, and environment.
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// An agent for node `node` (tests running at once need their own name and bridge).
    pub fn start_node(
        server: &Server,
        node: &'static str,
        bridge: &'static str,
        pod_cidr: &'static str,
        extra_args: &[&str],
        env: &[(&str, &str)],
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
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _tmp: tmp,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
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
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KRUST_LOG", "info,krust_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start krust agent");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir.join("containerd/containerd.sock")
    }

    /// Container ids containerd has in the CRI namespace (sandboxes' pause containers too).
    pub fn containers(&self) -> Vec<String> {
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

pub fn jsonpath(s: &Server, what: &str, path: &str) -> String {
    let out = s.kubectl_with(
        super::KUBECTL,
        &["get", what, "-o", &format!("jsonpath={path}")],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_phase(
    s: &Server,
    agent: &Agent,
    pod: &str,
    phase: &str,
    timeout: Duration,
) -> Duration {
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

/// A Ready node `node` whose Node object gets `cidr` as podCIDR before the agent starts.
pub fn ready_node_named(
    s: &Server,
    node: &'static str,
    bridge: &'static str,
    cidr: &str,
    fallback_cidr: &'static str,
) -> Agent {
    ready_node_with(s, node, bridge, cidr, fallback_cidr, &[], &[])
}

/// [`ready_node_named`] with more agent flags and environment.
pub fn ready_node_with(
    s: &Server,
    node: &'static str,
    bridge: &'static str,
    cidr: &str,
    fallback_cidr: &'static str,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Agent {
    s.kubectl_ok(
        super::KUBECTL,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n"
        )),
    );
    let agent = Agent::start_node(s, node, bridge, fallback_cidr, extra_args, env);
    let ready = eventually(Duration::from_secs(90), || {
        jsonpath(
            s,
            &format!("node/{node}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    assert!(ready, "node not Ready; agent log:\n{}", agent.log());
    agent
}

pub fn ready_of(s: &Server, pod: &str) -> (String, String) {
    (
        jsonpath(s, &format!("pod/{pod}"), "{.status.phase}"),
        jsonpath(
            s,
            &format!("pod/{pod}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ),
    )
}
