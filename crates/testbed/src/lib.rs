//! Local multi-node clusters on one machine, for tests, benchmarks and users who want
//! several nodes without several machines (as kind does with containers).
//!
//! Layout:
//! - [`Link`]: a bridge on the host with the first address of a /24 (the "switch" every
//!   node is plugged into; the control plane listens on its address).
//! - [`Netns`]: a network namespace plugged into the link by a veth pair, with its own
//!   address: one machine's network. Commands run in it with `nsenter --net` only, not
//!   `ip netns exec`, which remounts `/sys` and hides the cgroup v1 hierarchy containerd
//!   and runc need.
//! - [`JoinedAgent`]: `krust agent --server --token` in a namespace, with its own data
//!   directory (and so its own containerd), killed and reset when dropped.
//!
//! Everything is made with `ip` and removed on drop, so a failed test leaves nothing
//! behind; names carry a prefix so that a crashed run's leftovers can be found
//! ([`cleanup_prefix`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> std::io::Result<()> {
    check(Command::new("ip").args(args).output()?, "ip", args)
}

fn check(out: Output, what: &str, args: &[&str]) -> std::io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{what} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// A host bridge with `gateway`/24, deleted (with every veth on it) when dropped.
pub struct Link {
    pub name: String,
    pub gateway: Ipv4Addr,
}

impl Link {
    pub fn create(name: &str, gateway: Ipv4Addr) -> std::io::Result<Link> {
        let _ = ip(&["link", "delete", name]);
        ip(&["link", "add", name, "type", "bridge"])?;
        let link = Link {
            name: name.to_string(),
            gateway,
        };
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", name])?;
        ip(&["link", "set", name, "up"])?;
        Ok(link)
    }

    /// The address of host `n` on the link (the gateway's /24, last octet `n`).
    pub fn address(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.gateway.octets();
        Ipv4Addr::new(a, b, c, n)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = ip(&["link", "delete", &self.name]);
    }
}

/// A network namespace on a [`Link`], deleted when dropped.
pub struct Netns {
    pub name: String,
    pub ip: Ipv4Addr,
    veth: String,
}

impl Netns {
    /// Namespace `name` with `ip`/24 on `eth0`, its peer on the host plugged into `link`.
    pub fn create(link: &Link, name: &str, ip_addr: Ipv4Addr) -> std::io::Result<Netns> {
        let veth = format!("v{}", name.chars().rev().take(12).collect::<String>());
        let _ = ip(&["netns", "delete", name]);
        let _ = ip(&["link", "delete", &veth]);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            ip: ip_addr,
            veth: veth.clone(),
        };
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])?;
        ip(&["link", "set", &veth, "master", &link.name])?;
        ip(&["link", "set", &veth, "up"])?;
        ns.run("ip", &["link", "set", "lo", "up"])?;
        ns.run(
            "ip",
            &["addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"],
        )?;
        ns.run("ip", &["link", "set", "eth0", "up"])?;
        // What a machine on the link would have: a default route through the host.
        ns.run(
            "ip",
            &["route", "add", "default", "via", &link.gateway.to_string()],
        )?;
        Ok(ns)
    }

    /// `program args` in the namespace's network (the host's mounts, /sys included).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    pub fn run(&self, program: &str, args: &[&str]) -> std::io::Result<()> {
        check(self.command(program).args(args).output()?, program, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "delete", &self.veth]);
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// `krust agent` joined by token, in its own namespace and data directory.
pub struct JoinedAgent {
    pub netns: Netns,
    pub node: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    krust: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl JoinedAgent {
    /// Starts `krust agent --server server --token token` as node `node` in `netns`, with
    /// `extra` flags.
    pub fn start(
        krust: &Path,
        netns: Netns,
        node: &str,
        server: &str,
        token: &str,
        extra: &[&str],
    ) -> std::io::Result<JoinedAgent> {
        let tmp = tempfile::Builder::new().prefix("krust-node").tempdir()?;
        let mut args: Vec<String> = [
            "agent",
            "--server",
            server,
            "--token",
            token,
            "--node-name",
            node,
            "--node-ip",
            &netns.ip.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--data-dir".into());
        args.push(tmp.path().join("agent").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = JoinedAgent {
            node: node.to_string(),
            data_dir: tmp.path().join("agent"),
            log: tmp.path().join("agent.log"),
            krust: krust.to_path_buf(),
            args,
            netns,
            child: None,
            _tmp: tmp,
        };
        a.spawn()?;
        Ok(a)
    }

    /// (Re)starts the agent process.
    pub fn spawn(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .netns
            .command(&self.krust)
            .args(&self.args)
            .env("KRUST_LOG", "info,krust_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the agent (its containers keep running, as after a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the agent to exit by itself; its status, if it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's own kubeconfig, as the join wrote it.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("pki/kubelet.kubeconfig")
    }
}

impl Drop for JoinedAgent {
    fn drop(&mut self) {
        self.kill();
        // Pods, containerd and the bridge inside the namespace go with `agent-reset`.
        let _ = self
            .netns
            .command(&self.krust)
            .args(["agent-reset", "--data-dir"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes namespaces and links whose names start with `prefix` (a crashed run's).
pub fn cleanup_prefix(prefix: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.split_whitespace().next() {
                if name.starts_with(prefix) {
                    let _ = ip(&["netns", "delete", name]);
                }
            }
        }
    }
}
