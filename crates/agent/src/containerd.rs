//! containerd for krust: its config, starting it, and stopping it.
//!
//! Every path is under `<data dir>/containerd/` (root, state, sockets, runc state, the CNI
//! config directory), so a krust node never touches a system containerd and several nodes
//! (tests) can share a machine. The CRI plugin is configured for this machine: the cgroupfs
//! driver (no systemd), `restrict_oom_score_adj` (root lacks CAP_SYS_RESOURCE here), the
//! sandbox image krust builds itself, network namespaces under the state directory.
//!
//! Ownership: as upstream's kubelet, the agent does not own containerd's lifetime. At start it
//! launches containerd only if the socket does not answer, in a process group of its own, so
//! that containerd (and with it every running container) survives the agent being killed or
//! restarted. `krust agent-reset` ([`crate::reset`]) stops it. The pid is kept in
//! `containerd.pid`; containerd's log goes to `containerd.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::runtime::cri::CriRuntime;
use crate::runtime::Runtime;

/// What can go wrong managing containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd did not answer on {} within {timeout:?}; see {}", .socket.display(), .log.display())]
    NotReady {
        socket: PathBuf,
        log: PathBuf,
        timeout: Duration,
    },
    #[error("the CRI socket path {} is too long for a unix socket", .0.display())]
    SocketPathTooLong(PathBuf),
}

/// Where a node's containerd keeps everything.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            dir: data_dir.join("containerd"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
}

/// Settings of the containerd config that are not paths.
#[derive(Clone, Debug)]
pub struct Settings {
    pub sandbox_image: String,
    pub cni_bin_dir: PathBuf,
    pub runc: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sandbox_image: crate::images::PAUSE_IMAGE.to_string(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            runc: PathBuf::from("/usr/sbin/runc"),
        }
    }
}

fn toml_str(p: &Path) -> String {
    serde_json::Value::String(p.display().to_string()).to_string()
}

/// The config.toml text for `layout`.
pub fn config_toml(layout: &Layout, settings: &Settings) -> String {
    let s = |p: PathBuf| toml_str(&p);
    format!(
        r#"# Written by the krust node agent; rewritten at each start.
version = 2
root = {root}
state = {state}

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = {debug}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {sandbox}
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = {runc}
          SystemdCgroup = false
          Root = {runc_root}
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
      max_conf_num = 1
"#,
        root = s(layout.root()),
        state = s(layout.state()),
        socket = s(layout.socket()),
        ttrpc = s(layout.dir.join("containerd.sock.ttrpc")),
        debug = s(layout.dir.join("debug.sock")),
        opt = s(layout.dir.join("opt")),
        sandbox = serde_json::Value::String(settings.sandbox_image.clone()),
        runc = toml_str(&settings.runc),
        runc_root = s(layout.runc_root()),
        cni_bin = toml_str(&settings.cni_bin_dir),
        cni_conf = s(layout.cni_conf_dir()),
    )
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerdError + 'a {
    move |source| ContainerdError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether containerd answers CRI calls on the layout's socket.
pub async fn answers(layout: &Layout) -> bool {
    if !layout.socket().exists() {
        return false;
    }
    let Ok(rt) = CriRuntime::new(&layout.socket()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), rt.version()).await,
        Ok(Ok(_))
    )
}

/// Writes the config and starts containerd unless it already answers; waits until it does.
/// Returns whether this call started it.
pub async fn ensure_running(
    layout: &Layout,
    settings: &Settings,
    timeout: Duration,
) -> Result<bool, ContainerdError> {
    // sun_path is 108 bytes; the ttrpc socket's name is the longest.
    let ttrpc = layout.dir.join("containerd.sock.ttrpc");
    if ttrpc.as_os_str().len() >= 100 {
        return Err(ContainerdError::SocketPathTooLong(ttrpc));
    }
    for d in [
        layout.dir.clone(),
        layout.cni_conf_dir(),
        layout.cni_ipam_dir(),
    ] {
        std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
    }
    let config = layout.config();
    std::fs::write(&config, config_toml(layout, settings)).map_err(io("writing", &config))?;
    if answers(layout).await {
        return Ok(false);
    }
    let log_path = layout.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("opening", &log_path))?;
    let log2 = log.try_clone().map_err(io("opening", &log_path))?;
    // A stale socket from a containerd that died would make it refuse to start.
    let _ = std::fs::remove_file(layout.socket());
    let mut cmd = tokio::process::Command::new("containerd");
    cmd.arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(io("starting containerd with", &config))?;
    let pid_file = layout.pid_file();
    if let Some(pid) = child.id() {
        std::fs::write(&pid_file, format!("{pid}\n")).map_err(io("writing", &pid_file))?;
    }
    // Reap it if it exits while this process lives; if this process dies first, containerd
    // is reparented and keeps running.
    tokio::spawn(async move {
        let status = child.wait().await;
        tracing::info!(?status, "containerd exited");
    });
    let deadline = Instant::now() + timeout;
    loop {
        if answers(layout).await {
            tracing::info!(socket = %layout.socket().display(), "containerd started");
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(ContainerdError::NotReady {
                socket: layout.socket(),
                log: log_path,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid in the layout's pid file if that process is still a containerd.
pub fn running_pid(layout: &Layout) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(layout.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let config = layout.config().display().to_string();
    (cmdline.contains("containerd") && cmdline.contains(&config)).then_some(pid)
}

/// Stops the layout's containerd (SIGTERM, SIGKILL after `timeout`). Returns whether one was
/// running.
pub async fn stop(layout: &Layout, timeout: Duration) -> bool {
    let Some(pid) = running_pid(layout) else {
        return false;
    };
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    let deadline = Instant::now() + timeout;
    while running_pid(layout).is_some() {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            tokio::time::sleep(Duration::from_millis(100)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(layout.pid_file());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_what_this_machine_needs() {
        let layout = Layout::new(Path::new("/var/lib/krust/agent"));
        let text = config_toml(&layout, &Settings::default());
        for want in [
            r#"address = "/var/lib/krust/agent/containerd/containerd.sock""#,
            r#"sandbox_image = "krust.local/pause:3.9""#,
            "restrict_oom_score_adj = true",
            "SystemdCgroup = false",
            r#"conf_dir = "/var/lib/krust/agent/containerd/cni/net.d""#,
            r#"Root = "/var/lib/krust/agent/containerd/runc""#,
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }
}
