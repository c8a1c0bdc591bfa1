//! An in-memory runtime for unit tests.
//!
//! Containers do not run anything; what their "process" does follows one convention on the
//! command line (command and args joined with spaces): if it contains `exit N`, the container
//! exits with code N as soon as it starts; otherwise it runs until stopped (then it exits 137,
//! as a shell that ignores SIGTERM does). Tests can also end a running container with
//! [`FakeRuntime::exit`], fail the next call of an operation with [`FakeRuntime::fail_next`],
//! and read how often each container was started with [`FakeRuntime::starts`].
//!
//! ExecSync understands a few commands against a per-container set of files (see
//! [`FakeRuntime::write_file`]): `cat F` fails unless F exists, `touch F` creates it, `rm F`
//! removes it, `echo ...` prints, `sleep N` takes N seconds (or times out), `exit N` exits N;
//! anything else exits 0. Every exec is logged ([`FakeRuntime::execs`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{api, Result, Runtime, RuntimeError};

#[derive(Clone, Debug)]
struct Sandbox {
    config: api::PodSandboxConfig,
    ready: bool,
    ip: String,
    created_at: i64,
}

#[derive(Clone, Debug)]
struct Ctr {
    sandbox_id: String,
    config: api::ContainerConfig,
    state: api::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    files: HashSet<String>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_ip: u8,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Ctr>,
    images: HashSet<String>,
    pullable: HashSet<String>,
    fail_next: HashMap<&'static str, String>,
    starts: HashMap<(String, String, u32), u32>,
    execs: Vec<(String, String)>,
}

/// The in-memory runtime. Cheap to create; all state behind one lock.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The exit code a fake process exits with at once, if its command line says `exit N`.
fn scripted_exit(config: &api::ContainerConfig) -> Option<i32> {
    let line: Vec<&str> = config
        .command
        .iter()
        .chain(config.args.iter())
        .flat_map(|s| s.split(|c: char| c.is_whitespace() || c == ';'))
        .filter(|s| !s.is_empty())
        .collect();
    line.windows(2)
        .find(|w| w[0] == "exit")
        .and_then(|w| w[1].trim_matches(|c| c == '\'' || c == '"').parse().ok())
}

/// Normalizes an image reference the way containerd does for Docker Hub names.
pub fn normalize_image(image: &str) -> String {
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    };
    let name = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => name,
        Some(_) => format!("docker.io/{name}"),
    };
    format!("{name}:{tag}")
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `image` present, as an import does.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(normalize_image(image));
    }

    /// Makes `image` available to pulls (as a registry that has it would).
    pub fn add_pullable(&self, image: &str) {
        self.lock().pullable.insert(normalize_image(image));
    }

    /// Fails the next call of `op` (a CRI method name such as `"StartContainer"`).
    pub fn fail_next(&self, op: &'static str, message: &str) {
        self.lock().fail_next.insert(op, message.to_string());
    }

    /// Ends a running container with `exit_code` and `reason` (`"OOMKilled"`, `"Error"`, ...).
    pub fn exit(&self, id: &str, exit_code: i32, reason: &str) {
        let mut st = self.lock();
        if let Some(c) = st.containers.get_mut(id) {
            if c.state == api::ContainerState::ContainerRunning {
                c.state = api::ContainerState::ContainerExited;
                c.exit_code = exit_code;
                c.reason = reason.to_string();
                c.finished_at = now_nanos();
            }
        }
    }

    /// Creates file `path` in container `id`, for `cat` in exec probes.
    pub fn write_file(&self, id: &str, path: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.files.insert(path.to_string());
        }
    }

    /// Whether container `id` has file `path` (made by [`FakeRuntime::write_file`] or `touch`).
    pub fn has_file(&self, id: &str, path: &str) -> bool {
        self.lock()
            .containers
            .get(id)
            .is_some_and(|c| c.files.contains(path))
    }

    /// The commands exec'd so far, as (container id, command line), oldest first.
    pub fn execs(&self) -> Vec<(String, String)> {
        self.lock().execs.clone()
    }

    /// Marks a sandbox not ready, as if its pause process died.
    pub fn kill_sandbox(&self, id: &str) {
        let mut st = self.lock();
        let ids: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.sandbox_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        drop(st);
        for c in ids {
            self.exit(&c, 137, "Error");
        }
        st = self.lock();
        if let Some(s) = st.sandboxes.get_mut(id) {
            s.ready = false;
        }
    }

    /// How many times the container `name` of pod `uid` at `attempt` was started.
    pub fn starts(&self, uid: &str, name: &str, attempt: u32) -> u32 {
        self.lock()
            .starts
            .get(&(uid.to_string(), name.to_string(), attempt))
            .copied()
            .unwrap_or(0)
    }

    /// Ids of the containers with `name` (any pod), oldest first.
    pub fn container_ids(&self, name: &str) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<(&String, &Ctr)> = st
            .containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .collect();
        v.sort_by_key(|(_, c)| c.created_at);
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// How many sandboxes and containers exist.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.sandboxes.len(), st.containers.len())
    }

    fn check(&self, st: &mut State, op: &'static str) -> Result<()> {
        match st.fail_next.remove(op) {
            Some(msg) => Err(RuntimeError::Fake(format!("{op}: {msg}"))),
            None => Ok(()),
        }
    }
}

fn matches(labels: &HashMap<String, String>, want: &HashMap<String, String>) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        Ok(api::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: "fake".to_string(),
            runtime_version: "1.0.0".to_string(),
            runtime_api_version: "v1".to_string(),
        })
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "RunPodSandbox")?;
        if config.metadata.is_none() {
            return Err(RuntimeError::Fake("sandbox config has no metadata".into()));
        }
        st.next_id += 1;
        st.next_ip = st.next_ip.wrapping_add(1).max(2);
        let id = format!("sb{:06}", st.next_id);
        let ip = format!("10.88.0.{}", st.next_ip);
        st.sandboxes.insert(
            id.clone(),
            Sandbox {
                config,
                ready: true,
                ip,
                created_at: now_nanos(),
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        self.check(&mut st, "StopPodSandbox")?;
        if !st.sandboxes.contains_key(id) {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let now = now_nanos();
        for c in st.containers.values_mut().filter(|c| c.sandbox_id == id) {
            if c.state == api::ContainerState::ContainerRunning {
                c.state = api::ContainerState::ContainerExited;
                c.exit_code = 137;
                c.reason = "Error".to_string();
                c.finished_at = now;
            }
        }
        if let Some(s) = st.sandboxes.get_mut(id) {
            s.ready = false;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        self.check(&mut st, "RemovePodSandbox")?;
        st.sandboxes.remove(id);
        st.containers.retain(|_, c| c.sandbox_id != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        let st = self.lock();
        let s = st
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(api::PodSandboxStatus {
            id: id.to_string(),
            metadata: s.config.metadata.clone(),
            state: if s.ready {
                api::PodSandboxState::SandboxReady as i32
            } else {
                api::PodSandboxState::SandboxNotready as i32
            },
            created_at: s.created_at,
            network: Some(api::PodSandboxNetworkStatus {
                ip: if s.ready { s.ip.clone() } else { String::new() },
                additional_ips: Vec::new(),
            }),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::PodSandbox>> {
        let st = self.lock();
        Ok(st
            .sandboxes
            .iter()
            .filter(|(_, s)| matches(&s.config.labels, &labels))
            .map(|(id, s)| api::PodSandbox {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: if s.ready {
                    api::PodSandboxState::SandboxReady as i32
                } else {
                    api::PodSandboxState::SandboxNotready as i32
                },
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        _sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "CreateContainer")?;
        match st.sandboxes.get(sandbox_id) {
            Some(s) if s.ready => {}
            Some(_) => return Err(RuntimeError::Fake("sandbox is not ready".into())),
            None => return Err(RuntimeError::NotFound(sandbox_id.to_string())),
        }
        let image = config
            .image
            .as_ref()
            .map(|i| normalize_image(&i.image))
            .unwrap_or_default();
        if !st.images.contains(&image) {
            return Err(RuntimeError::Fake(format!("image {image} not present")));
        }
        let Some(meta) = config.metadata.as_ref() else {
            return Err(RuntimeError::Fake(
                "container config has no metadata".into(),
            ));
        };
        let taken = st.containers.values().any(|c| {
            c.sandbox_id == sandbox_id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        });
        if taken {
            return Err(RuntimeError::Fake(format!(
                "container {} attempt {} is already reserved",
                meta.name, meta.attempt
            )));
        }
        st.next_id += 1;
        let id = format!("c{:06}", st.next_id);
        st.containers.insert(
            id.clone(),
            Ctr {
                sandbox_id: sandbox_id.to_string(),
                config,
                state: api::ContainerState::ContainerCreated,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                files: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        self.check(&mut st, "StartContainer")?;
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if c.state != api::ContainerState::ContainerCreated {
            return Err(RuntimeError::Fake(format!(
                "container {id} is not in created state"
            )));
        }
        let now = now_nanos();
        c.started_at = now;
        match scripted_exit(&c.config) {
            Some(code) => {
                c.state = api::ContainerState::ContainerExited;
                c.exit_code = code;
                c.reason = if code == 0 { "Completed" } else { "Error" }.to_string();
                c.finished_at = now;
            }
            None => c.state = api::ContainerState::ContainerRunning,
        }
        let uid = c
            .config
            .labels
            .get(crate::labels::POD_UID)
            .cloned()
            .unwrap_or_default();
        let (name, attempt) = c
            .config
            .metadata
            .as_ref()
            .map(|m| (m.name.clone(), m.attempt))
            .unwrap_or_default();
        *st.starts.entry((uid, name, attempt)).or_default() += 1;
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout: i64) -> Result<()> {
        let exists = {
            let mut st = self.lock();
            self.check(&mut st, "StopContainer")?;
            st.containers.contains_key(id)
        };
        if !exists {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        self.exit(id, 137, "Error");
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        self.check(&mut st, "RemoveContainer")?;
        if let Some(c) = st.containers.get(id) {
            if c.state == api::ContainerState::ContainerRunning {
                return Err(RuntimeError::Fake(format!("container {id} is running")));
            }
        }
        st.containers.remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::Container>> {
        let st = self.lock();
        Ok(st
            .containers
            .iter()
            .filter(|(_, c)| matches(&c.config.labels, &labels))
            .map(|(id, c)| api::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: "sha256:fake".to_string(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: String::new(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        let st = self.lock();
        let c = st
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(api::ContainerStatus {
            id: id.to_string(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: "sha256:fake".to_string(),
            reason: c.reason.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            log_path: c.config.log_path.clone(),
            ..Default::default()
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<api::ExecSyncResponse> {
        let line = cmd.join(" ");
        {
            let mut st = self.lock();
            self.check(&mut st, "ExecSync")?;
            match st.containers.get(id) {
                None => return Err(RuntimeError::NotFound(id.to_string())),
                Some(c) if c.state != api::ContainerState::ContainerRunning => {
                    return Err(RuntimeError::Fake(format!("container {id} is not running")))
                }
                Some(_) => {}
            }
            st.execs.push((id.to_string(), line.clone()));
        }
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        let arg = |cmd: &str| {
            words
                .windows(2)
                .find(|w| w[0] == cmd)
                .map(|w| w[1].trim_matches(|c| c == '\'' || c == '"').to_string())
        };
        let mut resp = api::ExecSyncResponse::default();
        if let Some(secs) = arg("sleep").and_then(|n| n.parse::<i64>().ok()) {
            if timeout > 0 && secs > timeout {
                tokio::time::sleep(std::time::Duration::from_secs(timeout.unsigned_abs())).await;
                return Err(RuntimeError::Timeout {
                    op: "ExecSync",
                    seconds: timeout,
                });
            }
            tokio::time::sleep(std::time::Duration::from_secs(secs.unsigned_abs())).await;
        }
        let mut st = self.lock();
        let Some(c) = st.containers.get_mut(id) else {
            return Err(RuntimeError::NotFound(id.to_string()));
        };
        if let Some(f) = arg("touch") {
            c.files.insert(f);
        }
        if let Some(f) = arg("rm") {
            c.files.remove(&f);
        }
        if let Some(f) = arg("cat") {
            if !c.files.contains(&f) {
                resp.stderr = format!("cat: can't open '{f}': No such file or directory\n").into();
                resp.exit_code = 1;
            }
        }
        if let Some(pos) = words.iter().position(|w| *w == "echo") {
            let text: Vec<&str> = words[pos + 1..]
                .iter()
                .take_while(|w| **w != "exit")
                .copied()
                .collect();
            resp.stdout = format!("{}\n", text.join(" ")).into();
        }
        if let Some(code) = arg("exit").and_then(|n| n.parse().ok()) {
            resp.exit_code = code;
        }
        Ok(resp)
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let st = self.lock();
        let name = normalize_image(image);
        Ok(st.images.contains(&name).then(|| api::Image {
            id: format!("sha256:{:064}", name.len()),
            repo_tags: vec![name.clone()],
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        _auth: Option<api::AuthConfig>,
        _sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "PullImage")?;
        let name = normalize_image(image);
        if !st.pullable.contains(&name) {
            return Err(RuntimeError::Fake(format!(
                "failed to resolve reference \"{name}\": not found"
            )));
        }
        st.images.insert(name.clone());
        Ok(format!("sha256:{:064}", name.len()))
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "Exec")?;
        running(&st, &req.container_id)?;
        if req.cmd.is_empty() {
            return Err(RuntimeError::Fake("cmd must not be empty".into()));
        }
        st.next_id += 1;
        Ok(format!("http://127.0.0.1:0/exec/fake{}", st.next_id))
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "Attach")?;
        running(&st, &req.container_id)?;
        st.next_id += 1;
        Ok(format!("http://127.0.0.1:0/attach/fake{}", st.next_id))
    }

    async fn port_forward(&self, sandbox_id: &str) -> Result<String> {
        let mut st = self.lock();
        self.check(&mut st, "PortForward")?;
        if !st.sandboxes.contains_key(sandbox_id) {
            return Err(RuntimeError::NotFound(sandbox_id.to_string()));
        }
        st.next_id += 1;
        Ok(format!("http://127.0.0.1:0/portforward/fake{}", st.next_id))
    }
}

/// Exec and attach need a running container, as containerd's do.
fn running(st: &State, id: &str) -> Result<()> {
    let c = st
        .containers
        .get(id)
        .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
    if c.state != api::ContainerState::ContainerRunning {
        return Err(RuntimeError::Fake(format!("container {id} is not running")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_exits() {
        let cfg = |cmd: &[&str]| api::ContainerConfig {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            scripted_exit(&cfg(&["sh", "-c", "echo hi; exit 3"])),
            Some(3)
        );
        assert_eq!(scripted_exit(&cfg(&["sh", "-c", "exit 0"])), Some(0));
        assert_eq!(scripted_exit(&cfg(&["sleep", "3600"])), None);
    }

    #[test]
    fn image_names() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image("krust.local/pause:3.9"),
            "krust.local/pause:3.9"
        );
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_image("me/app:v1"), "docker.io/me/app:v1");
    }

    #[tokio::test]
    async fn passes_the_shared_suite() {
        let rt = FakeRuntime::new();
        rt.add_image(super::super::suite::IMAGE);
        super::super::suite::run(&rt).await;
    }
}
