//! End-to-end: a real node. `krust server` plus `krust agent --node-ip 127.0.0.1` with its own
//! containerd, images built on the spot, pods run with runc on a CNI bridge of the test's
//! own; driven with kubectl. Skipped (with a message) when containerd, runc, the CNI plugins,
//! busybox-static or gcc are not installed; `scripts/test.sh` installs them.
//!
//! Everything the test makes is removed afterwards, also on failure: pods through CRI,
//! containerd, the bridge, cgroups, temporary directories (`krust agent-reset` in a guard).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::*;
use common::{eventually, Server};

const NODE: &str = "krust-e2e-node";
const BRIDGE: &str = "krte2e0";
const CIDR: &str = "10.42.200.0/24";

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

#[test]
fn agent_runs_pods_with_containerd() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    // The Node exists with its podCIDR before the agent registers (so the node IPAM
    // controller leaves it alone); the agent picks the CIDR up for its bridge. The node
    // registers and turns Ready (containerd started, images built and imported).
    let t = Instant::now();
    let mut agent = ready_node(&s);
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

    // A container over its memory limit (32Mi) is OOMKilled: dd's 100M buffer is touched.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(
            &pod_yaml(
                "oom",
                "Never",
                "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
                None,
            )
            .replace("memory: 64Mi", "memory: 32Mi"),
        ),
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
    assert_eq!(
        jsonpath(
            &s,
            "pod/oom",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "137"
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/oom",
            "{.spec.containers[0].resources.limits.memory}"
        ),
        "32Mi"
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
    service_account_and_downward_api_volumes(&s, &agent);

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

    probes_and_hooks(&s, &agent);

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
    for p in [
        "once",
        "fails",
        "crash",
        "oom",
        "reader",
        "live",
        "ready-exec",
        "ready-http",
    ] {
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

/// A `docker-registry` on a loopback port with one htpasswd user, stopped when dropped.
struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const REGISTRY_USER: &str = "krust";
const REGISTRY_PASSWORD: &str = "krust-secret";
/// bcrypt (cost 5) of REGISTRY_PASSWORD: the registry accepts only bcrypt htpasswd entries.
const REGISTRY_HTPASSWD: &str =
    "krust:$2y$05$xSICqmE/ELNfi9zxmvrwYu12z5iRMx5WVekYUpp8TOlWbcXXmmNja";

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("krust-registry")
            .tempdir()
            .expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{REGISTRY_HTPASSWD}\n"),
        )
        .expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: krust\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = dir.path().join("registry.log");
        let file = std::fs::File::create(&log).expect("registry log");
        let file2 = file.try_clone().expect("registry log");
        // The access log goes to stdout, the rest to stderr.
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(file)
            .stderr(file2)
            .spawn()
            .expect("start docker-registry");
        let r = Registry {
            child,
            addr,
            log,
            _dir: dir,
        };
        let up = eventually(Duration::from_secs(20), || {
            r.curl(&["-o", "/dev/null", "-w", "%{http_code}", "/v2/"], false) == "401"
        });
        assert!(up, "registry did not start:\n{}", r.log());
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// curl against the registry (authenticated if `auth`), stdout as text.
    fn curl(&self, args: &[&str], auth: bool) -> String {
        let mut cmd = Command::new("curl");
        cmd.arg("-s");
        if auth {
            cmd.arg("-u")
                .arg(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
        }
        let (last, rest) = args.split_last().expect("a path");
        cmd.args(rest).arg(format!("http://{}{last}", self.addr));
        cmd.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// How many requests (HEAD or GET) for a manifest of `repo` the access log shows.
    fn manifest_gets(&self, repo: &str, reference: &str) -> usize {
        let log = self.log();
        ["HEAD", "GET"]
            .iter()
            .map(|m| {
                log.matches(&format!("\"{m} /v2/{repo}/manifests/{reference} HTTP"))
                    .count()
            })
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Ready node, its Node created beforehand with a podCIDR.
fn ready_node(s: &Server) -> Agent {
    ready_node_named(s, NODE, BRIDGE, CIDR, "10.42.250.0/24")
}

fn registry_pod(name: &str, image: &str, policy: &str, secret: Option<&str>) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets:\n  - name: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  restartPolicy: Never\n{secrets}  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [\"sh\", \"-c\", \"echo pulled\"]\n"
    )
}

/// Real pulls through CRI from a private loopback registry: credentials from
/// imagePullSecrets, a refused pull without them (ErrImagePull, then ImagePullBackOff), a
/// digest reference, and `imagePullPolicy: Always` fetching the manifest again.
#[test]
fn agent_pulls_from_a_loopback_registry() {
    let mut missing = missing_tools();
    if !Path::new("/usr/bin/docker-registry").exists() {
        missing.push("docker-registry");
    }
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let registry = Registry::start();
    let s = Server::start();
    let agent = ready_node(&s);

    // Push the node's busybox into the registry under two tags, then forget those names on
    // the node, so that only a pull can bring them back.
    let ctr = |args: &[&str]| {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(agent.socket())
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let repo = "krust/busybox";
    let user = format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}");
    for tag in ["v1", "v2"] {
        let image = format!("{}/{repo}:{tag}", registry.addr);
        ctr(&["images", "tag", "docker.io/library/busybox:latest", &image]);
        ctr(&["images", "push", "--plain-http", "-u", &user, &image]);
        ctr(&["images", "rm", &image]);
    }
    let accept = "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let headers = registry.curl(
        &["-I", "-H", accept, &format!("/v2/{repo}/manifests/v1")],
        true,
    );
    let digest = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest:")
                .map(|d| d.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest in {headers}"));
    assert!(digest.starts_with("sha256:"), "{digest}");

    // Without credentials the registry refuses: ErrImagePull, then ImagePullBackOff.
    let v2 = format!("{}/{repo}:v2", registry.addr);
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&registry_pod("anonymous", &v2, "IfNotPresent", None)),
    );
    let mut reasons = Vec::new();
    let backed_off = eventually(Duration::from_secs(60), || {
        let r = jsonpath(
            &s,
            "pod/anonymous",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        if !r.is_empty() && reasons.last() != Some(&r) {
            reasons.push(r.clone());
        }
        r == "ImagePullBackOff"
    });
    assert!(
        backed_off && reasons.contains(&"ErrImagePull".to_string()),
        "reasons {reasons:?}: {}\n{}",
        s.kubectl(&["get", "pod", "anonymous", "-o", "yaml"]),
        agent.log()
    );
    let message = jsonpath(
        &s,
        "pod/anonymous",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("pulling image"), "{message}");
    assert_eq!(jsonpath(&s, "pod/anonymous", "{.status.phase}"), "Pending");

    // With the secret `kubectl create secret docker-registry` makes, by digest and by tag.
    s.kubectl_ok(
        common::KUBECTL,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={}", registry.addr),
            &format!("--docker-username={REGISTRY_USER}"),
            &format!("--docker-password={REGISTRY_PASSWORD}"),
        ],
        None,
    );
    let by_digest = format!("{}/{repo}@{digest}", registry.addr);
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&registry_pod(
            "by-digest",
            &by_digest,
            "IfNotPresent",
            Some("regcred"),
        )),
    );
    wait_phase(
        &s,
        &agent,
        "by-digest",
        "Succeeded",
        Duration::from_secs(60),
    );
    assert!(
        registry.manifest_gets(repo, &digest) >= 1,
        "{}",
        registry.log()
    );

    let v1 = format!("{}/{repo}:v1", registry.addr);
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&registry_pod(
            "by-tag",
            &v1,
            "IfNotPresent",
            Some("regcred"),
        )),
    );
    wait_phase(&s, &agent, "by-tag", "Succeeded", Duration::from_secs(60));

    // IfNotPresent does not go back to the registry; Always does.
    let gets = registry.manifest_gets(repo, "v1");
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&registry_pod("again", &v1, "IfNotPresent", Some("regcred"))),
    );
    wait_phase(&s, &agent, "again", "Succeeded", Duration::from_secs(60));
    assert_eq!(registry.manifest_gets(repo, "v1"), gets);
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&registry_pod("always", &v1, "Always", Some("regcred"))),
    );
    wait_phase(&s, &agent, "always", "Succeeded", Duration::from_secs(60));
    assert!(
        registry.manifest_gets(repo, "v1") > gets,
        "Always did not fetch the manifest:\n{}",
        registry.log()
    );

    for p in ["anonymous", "by-digest", "by-tag", "again", "always"] {
        s.kubectl(&["delete", "pod", p, "--timeout=60s"]);
    }
}

/// Reasons of the events about `pod`, in order.
fn event_reasons(s: &Server, pod: &str) -> String {
    jsonpath(
        s,
        "events",
        &format!("{{.items[?(@.involvedObject.name==\"{pod}\")].reason}}"),
    )
}

/// Liveness restarts, readiness gating (exec and httpGet), postStart and preStop hooks, and
/// a graceful deletion of a container that ignores SIGTERM.
fn probes_and_hooks(s: &Server, agent: &Agent) {
    let host = tempfile::Builder::new()
        .prefix("krust-probes")
        .tempdir()
        .expect("tempdir");
    let dir = host.path().display().to_string();
    let www = host.path().join("www");
    std::fs::create_dir_all(&www).expect("www");

    // A liveness probe that starts failing: the container is killed and restarted.
    let live = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: live
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
"#
    );
    // Readiness by exec: not Ready until the file the probe reads appears (on a hostPath).
    let ready_exec = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ready-exec
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["cat", "/data/ready"]}}
      periodSeconds: 1
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    hostPath: {{path: "{dir}"}}
"#
    );
    // Readiness by httpGet against busybox httpd: 404 until index.html exists.
    let ready_http = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ready-http
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports:
    - {{name: web, containerPort: 8080}}
    readinessProbe:
      httpGet: {{path: /index.html, port: web, httpHeaders: [{{name: X-Probe, value: e2e}}]}}
      periodSeconds: 1
    volumeMounts:
    - {{name: www, mountPath: /www}}
  volumes:
  - name: www
    hostPath: {{path: "{dir}/www"}}
"#
    );
    for y in [&live, &ready_exec, &ready_http] {
        s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(y));
    }
    for pod in ["ready-exec", "ready-http"] {
        wait_phase(s, agent, pod, "Running", Duration::from_secs(60));
    }
    // Running for a while, yet not Ready.
    std::thread::sleep(Duration::from_secs(3));
    for pod in ["ready-exec", "ready-http"] {
        assert_eq!(
            ready_of(s, pod),
            ("Running".to_string(), "False".to_string()),
            "{pod} is Ready before its probe succeeded"
        );
        assert_eq!(
            jsonpath(
                s,
                &format!("pod/{pod}"),
                "{.status.containerStatuses[0].ready}"
            ),
            "false"
        );
    }
    std::fs::write(host.path().join("ready"), "yes").expect("ready file");
    std::fs::write(www.join("index.html"), "ok").expect("index.html");
    for pod in ["ready-exec", "ready-http"] {
        let t = Instant::now();
        let ready = eventually(Duration::from_secs(15), || ready_of(s, pod).1 == "True");
        assert!(
            ready,
            "{pod} never Ready: {}\n{}",
            s.kubectl(&["get", "pod", pod, "-o", "yaml"]),
            agent.log()
        );
        eprintln!(
            "{pod}: Ready {:?} after the probe could succeed",
            t.elapsed()
        );
        assert_eq!(
            jsonpath(
                s,
                &format!("pod/{pod}"),
                "{.status.conditions[?(@.type==\"ContainersReady\")].status}"
            ),
            "True"
        );
    }
    // Readiness goes away again when the probe fails.
    std::fs::remove_file(host.path().join("ready")).expect("rm ready");
    assert!(eventually(Duration::from_secs(15), || ready_of(
        s,
        "ready-exec"
    )
    .1 == "False"));

    let restarted = eventually(Duration::from_secs(60), || {
        jsonpath(s, "pod/live", "{.status.containerStatuses[0].restartCount}")
            .parse::<i32>()
            .is_ok_and(|n| n >= 1)
    });
    assert!(
        restarted,
        "liveness never restarted the container: {}\n{}",
        s.kubectl(&["get", "pod", "live", "-o", "yaml"]),
        agent.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let reasons = event_reasons(s, "live");
            reasons.contains("Unhealthy") && reasons.contains("Killing")
        }),
        "events: {}",
        event_reasons(s, "live")
    );
    assert_eq!(
        jsonpath(
            s,
            "pod/live",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "137",
        "killed after the grace period (sh ignores SIGTERM)"
    );

    // postStart and preStop hooks, and a container that ignores SIGTERM: deletion takes the
    // grace period (3 s), no more.
    let stopper = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: stopper
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo post-start-ran > /data/poststart"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo pre-stop-ran > /data/prestop"]}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    hostPath: {{path: "{dir}"}}
"#
    );
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(&stopper));
    wait_phase(s, agent, "stopper", "Running", Duration::from_secs(60));
    let post = std::fs::read_to_string(host.path().join("poststart")).unwrap_or_default();
    assert_eq!(
        post.trim(),
        "post-start-ran",
        "postStart ran before Running"
    );
    let t = Instant::now();
    s.kubectl(&["delete", "pod", "stopper", "--timeout=60s"]);
    let took = t.elapsed();
    eprintln!("stopper (grace 3s, ignores SIGTERM): deleted in {took:?}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(3 + 3),
        "deletion took {took:?}"
    );
    let pre = std::fs::read_to_string(host.path().join("prestop")).unwrap_or_default();
    assert_eq!(pre.trim(), "pre-stop-ran", "preStop ran");
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

/// exec (output, stdin to its end, exit codes, large output, a TTY) and port-forward, over
/// WebSocket or over SPDY as `websockets` says.
fn exec_and_port_forward(s: &Server, websockets: bool) {
    let flag = if websockets { "true" } else { "false" };
    let envs = [
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", flag),
        ("KUBECTL_PORT_FORWARD_WEBSOCKETS", flag),
    ];
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(common::KUBECTL);
        cmd.env("KUBECONFIG", &s.kubeconfig)
            .env("HOME", &s.data_dir)
            .envs(envs)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(mut w) = child.stdin.take() {
            use std::io::Write;
            let _ = w.write_all(stdin.unwrap_or_default().as_bytes());
        }
        child.wait_with_output().expect("kubectl output")
    };
    let ok = |args: &[&str], stdin: Option<&str>| {
        let out = kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} (websockets {websockets}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        ok(&["exec", "talker", "--", "cat", "/etc/hostname"], None),
        "talker\n"
    );
    // stdin to its end: the half-close reaches cat.
    let out = ok(
        &["exec", "-i", "talker", "--", "cat"],
        Some("hello\nworld\n"),
    );
    assert_eq!(out, "hello\nworld\n");
    let out = kubectl(
        &["exec", "talker", "--", "sh", "-c", "echo oops >&2; exit 3"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    // Quiet for longer than client-go's heartbeat deadline: pings are answered.
    let out = ok(
        &["exec", "talker", "--", "sh", "-c", "sleep 12; echo late"],
        None,
    );
    assert_eq!(out, "late\n");
    // Far more than one flow-control window.
    let out = ok(&["exec", "talker", "--", "seq", "1", "50000"], None);
    assert_eq!(out.lines().count(), 50000);
    assert!(out.ends_with("\n50000\n"));
    let out = kubectl(&["exec", "talker", "-c", "nope", "--", "true"], None);
    let err = String::from_utf8_lossy(&out.stderr);
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
            .envs(envs)
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
        .envs(envs)
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
        "port-forward (websockets {websockets}): {second:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl logs`, `exec` (with a TTY too), `attach` and `port-forward` against pods the
/// agent runs: through the API server, the agent's HTTPS API and containerd's streaming
/// server.
#[test]
fn agent_streams_logs_exec_and_port_forward() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    let agent = ready_node_named(
        &s,
        STREAM_NODE,
        "krte2e1",
        "10.42.201.0/24",
        "10.42.251.0/24",
    );
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
    let echoer = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: echoer\nspec:\n  nodeName: {STREAM_NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    stdin: true\n    command: [\"sh\", \"-c\", \"while read l; do echo got:$l; done\"]\n"
    );
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(&echoer));
    wait_phase(&s, &agent, "talker", "Running", Duration::from_secs(60));
    wait_phase(&s, &agent, "web", "Running", Duration::from_secs(60));
    wait_phase(&s, &agent, "echoer", "Running", Duration::from_secs(60));

    // attach -i: lines sent to the container's stdin come back on its stdout.
    attach_echoes(&s);

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

    // kubectl 1.33 speaks WebSocket (v5.channel.k8s.io, tunnelled SPDY for port-forward),
    // which the API server translates to the node's SPDY; older clients speak SPDY.
    let translations = || {
        s.log()
            .lines()
            .filter(|l| l.contains("translating a WebSocket stream to SPDY"))
            .map(|l| {
                if l.contains("SPDY/3.1+portforward.k8s.io") {
                    (0, 1)
                } else {
                    (1, 0)
                }
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    exec_and_port_forward(&s, true);
    let (execs, tunnels) = translations();
    assert!(
        execs >= 4 && tunnels >= 1,
        "translated: {execs} exec, {tunnels} port-forward"
    );
    exec_and_port_forward(&s, false);
    assert_eq!(
        translations(),
        (execs, tunnels),
        "SPDY clients are proxied as they are"
    );
    // Generated clients' exec: the Python client (v5, and v4 proxied as it is) and
    // client-node (v5).
    for (program, script, ok) in [
        ("python3", "python/exec_e2e.py", "python exec scenario: ok"),
        (
            "node",
            "node/watch_exec.mjs",
            "client-node exec scenario: ok",
        ),
    ] {
        let mut args: Vec<&std::ffi::OsStr> = vec![s.kubeconfig.as_os_str()];
        if program == "node" {
            args.push("exec".as_ref());
        }
        args.push("default".as_ref());
        args.push("talker".as_ref());
        common::client_scenario(program, script, &args, ok);
    }

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

    for p in ["talker", "restarter", "web", "echoer"] {
        s.kubectl(&["delete", "pod", p, "--timeout=60s"]);
    }
}

/// `kubectl attach -i echoer`: what is typed reaches the running container's stdin, and its
/// answers come back, twice over one attachment.
fn attach_echoes(s: &Server) {
    use std::io::{BufRead, BufReader, Write};
    let mut attach = Command::new(common::KUBECTL)
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", &s.data_dir)
        .args(["attach", "-i", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    let stdout = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdin = attach.stdin.take().expect("stdin");
    let mut answers = Vec::new();
    for word in ["hello", "world"] {
        let _ = stdin.write_all(format!("{word}\n").as_bytes());
        let _ = stdin.flush();
        let want = format!("got:{word}");
        answers.push(common::wait_line(&rx, Duration::from_secs(20), |l| {
            l == want
        }));
    }
    let _ = attach.kill();
    let out = attach.wait_with_output().expect("attach output");
    assert!(
        answers.iter().all(Option::is_some),
        "attach answers {answers:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = s.kubectl(&["logs", "echoer"]);
    assert!(logs.contains("got:hello\ngot:world\n"), "{logs:?}");
}

/// The kube-api-access volume (token, CA, namespace) and a downwardAPI volume seen from inside
/// a container; the token file's token authenticates as the pod's ServiceAccount.
fn service_account_and_downward_api_volumes(s: &Server, agent: &Agent) {
    const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: sa-reader
  labels: {{app: sa-reader, tier: test}}
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo ns=$(cat {SA_DIR}/namespace); echo token-parts=$(tr . ' ' < {SA_DIR}/token | wc -w); grep -c 'BEGIN CERTIFICATE' {SA_DIR}/ca.crt; cat /etc/podinfo/labels; echo; echo name=$(cat /etc/podinfo/name); echo mem=$(cat /etc/podinfo/mem); stat -c mode=%a /etc/podinfo/name"]
    resources:
      limits: {{memory: 64Mi}}
    volumeMounts:
    - {{name: podinfo, mountPath: /etc/podinfo}}
  volumes:
  - name: podinfo
    downwardAPI:
      defaultMode: 0600
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
"#
    );
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(&pod));
    wait_phase(s, agent, "sa-reader", "Succeeded", Duration::from_secs(60));
    let uid = jsonpath(s, "pod/sa-reader", "{.metadata.uid}");
    let log = agent
        .data_dir
        .join(format!("pods/default_sa-reader_{uid}/c/0.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for want in [
        "ns=default",
        "token-parts=3",
        "F 1\n",
        "app=\"sa-reader\"",
        "tier=\"test\"",
        "name=sa-reader",
        "mem=64",
        "mode=600",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the log:\n{text}"
        );
    }
    // The token the agent wrote for the pod authenticates as the pod's ServiceAccount.
    let vol = jsonpath(s, "pod/sa-reader", "{.spec.volumes[1].name}");
    assert!(vol.starts_with("kube-api-access-"), "{vol}");
    let token = std::fs::read_to_string(agent.data_dir.join(format!("volumes/{uid}/{vol}/token")))
        .expect("token file");
    let (ca, _, _) = s.client_files();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#)
        .arg(format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            s.url
        ))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("system:serviceaccount:default:default"),
        "{body}"
    );
    s.kubectl(&["delete", "pod", "sa-reader", "--timeout=60s"]);
}

const SHUTDOWN_NODE: &str = "krust-e2e-shutdown";

/// A private message bus standing in for the system bus: anyone may own any name.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::Builder::new()
            .prefix("krust-dbus")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("bus.conf");
        let socket = dir.path().join("bus.sock");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dbus-daemon");
        let mut address = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = BufReader::new(stdout).read_line(&mut address);
        assert!(address.starts_with("unix:"), "dbus-daemon said {address:?}");
        Bus {
            child,
            address: address.trim().to_string(),
            _dir: dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the stand-in logind saw: Inhibit calls, and locks whose descriptor was closed; and
/// its InhibitDelayMaxUSec (systemd's default 5 s until a drop-in raises it).
#[derive(Clone)]
struct LockLog {
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_usec: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for LockLog {
    fn default() -> Self {
        LockLog {
            taken: Default::default(),
            released: Default::default(),
            max_usec: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(5_000_000)),
        }
    }
}

impl LockLog {
    fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn released(&self) -> usize {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The part of `org.freedesktop.login1.Manager` the agent uses. A lock is one end of a
/// socket pair; the stand-in reads the other end, whose EOF means the lock was released.
struct Login1Manager(LockLog);

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Login1Manager {
    fn inhibit(
        &self,
        what: String,
        _who: String,
        _why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        if what != "shutdown" || mode != "delay" {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "unexpected lock {what}/{mode}"
            )));
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let released = self.0.released.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut ours = ours;
            let mut buf = [0u8; 16];
            while matches!(ours.read(&mut buf), Ok(n) if n > 0) {}
            released.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        self.0
            .taken
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(std::os::fd::OwnedFd::from(theirs).into())
    }

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> u64 {
        self.0.max_usec.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The part of `org.freedesktop.systemd1.Manager` the agent uses: SIGHUP to
/// `systemd-logind.service` makes the stand-in logind read its drop-in directory again.
struct Systemd1Manager {
    log: LockLog,
    conf_dir: PathBuf,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Systemd1Manager {
    fn kill_unit(&self, name: String, _whom: String, signal: i32) -> zbus::fdo::Result<()> {
        if name != "systemd-logind.service" || signal != 1 {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "unexpected signal {signal} to {name}"
            )));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let setting = text
                .lines()
                .rev()
                .filter_map(|l| l.strip_prefix("InhibitDelayMaxSec="))
                .find_map(|v| v.trim().parse::<u64>().ok());
            if let Some(secs) = setting {
                self.log
                    .max_usec
                    .store(secs * 1_000_000, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

/// The operating system's side of a shutdown: a stand-in for systemd-logind on `Bus`.
struct FakeLogind {
    conn: zbus::Connection,
    log: LockLog,
    rt: tokio::runtime::Runtime,
}

impl FakeLogind {
    /// logind and systemd's manager on the bus at `address`; logind's drop-ins are read
    /// from `conf_dir`.
    fn start(address: &str, conf_dir: &Path) -> FakeLogind {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let log = LockLog::default();
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(address)?
                    .name("org.freedesktop.login1")?
                    .name("org.freedesktop.systemd1")?
                    .serve_at("/org/freedesktop/login1", Login1Manager(log.clone()))?
                    .serve_at(
                        "/org/freedesktop/systemd1",
                        Systemd1Manager {
                            log: log.clone(),
                            conf_dir: conf_dir.to_path_buf(),
                        },
                    )?
                    .build()
                    .await
            })
            .expect("stand-in logind on the bus");
        FakeLogind { conn, log, rt }
    }

    /// Emits `PrepareForShutdown(start)`.
    fn announce(&self, start: bool) {
        self.rt
            .block_on(self.conn.emit_signal(
                None::<&str>,
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                "PrepareForShutdown",
                &start,
            ))
            .expect("PrepareForShutdown");
    }
}

fn shutdown_pod(name: &str, critical: bool, dir: &Path) -> String {
    let priority = if critical {
        "  priorityClassName: system-node-critical\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {SHUTDOWN_NODE}
{priority}  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "echo stopped > /data/{name}"]}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    hostPath: {{path: "{}"}}
"#,
        dir.display()
    )
}

fn ready_condition(s: &Server, field: &str) -> String {
    jsonpath(
        s,
        &format!("node/{SHUTDOWN_NODE}"),
        &format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
    )
}

/// Graceful node shutdown against a stand-in logind on a private bus: the agent holds a
/// delay lock; on PrepareForShutdown(true) the node turns NotReady, regular pods stop
/// (preStop hooks run) before critical ones, all end Failed/Terminated with a
/// DisruptionTarget condition, pods arriving meanwhile are rejected, and the lock is
/// released; PrepareForShutdown(false) makes the node Ready again with a new lock. logind's
/// 5 s InhibitDelayMaxUSec is first raised to the grace period, as upstream does it.
#[test]
fn agent_graceful_node_shutdown() {
    let mut missing = missing_tools();
    if !on_path("dbus-daemon") {
        missing.push("dbus-daemon");
    }
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    let bus = Bus::start();
    let logind_conf = tempfile::Builder::new()
        .prefix("krust-logind")
        .tempdir()
        .expect("tempdir");
    let conf_dir = logind_conf.path().join("logind.conf.d");
    let logind = FakeLogind::start(&bus.address, &conf_dir);
    let conf_flag = conf_dir.display().to_string();
    let agent = ready_node_with(
        &s,
        SHUTDOWN_NODE,
        "kshut0",
        "10.42.226.0/24",
        "10.42.227.0/24",
        &[
            "--shutdown-grace-period",
            "20s",
            "--shutdown-grace-period-critical-pods",
            "5s",
            "--logind-conf-dir",
            &conf_flag,
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())],
    );
    assert!(
        eventually(Duration::from_secs(10), || logind.log.taken() == 1),
        "the agent took no inhibitor lock:\n{}",
        agent.log()
    );
    // logind's 5 s limit was raised to the grace period with a drop-in and a reload.
    assert_eq!(
        std::fs::read_to_string(conf_dir.join("99-krust-agent.conf")).unwrap_or_default(),
        "# Written by krust agent for --shutdown-grace-period.\n[Login]\nInhibitDelayMaxSec=20\n"
    );
    assert_eq!(
        logind
            .log
            .max_usec
            .load(std::sync::atomic::Ordering::SeqCst),
        20_000_000
    );
    let host = tempfile::Builder::new()
        .prefix("krust-shutdown")
        .tempdir()
        .expect("tempdir");
    for (name, critical) in [("regular", false), ("critical", true)] {
        s.kubectl_ok(
            common::KUBECTL,
            &["apply", "-f", "-"],
            Some(&shutdown_pod(name, critical, host.path())),
        );
    }
    wait_phase(&s, &agent, "regular", "Running", Duration::from_secs(60));
    wait_phase(&s, &agent, "critical", "Running", Duration::from_secs(60));

    let t = Instant::now();
    logind.announce(true);
    let not_ready = eventually(Duration::from_secs(10), || {
        ready_condition(&s, "status") == "False"
    });
    assert!(not_ready, "node still Ready:\n{}", agent.log());
    assert_eq!(ready_condition(&s, "message"), "node is shutting down");
    // A pod arriving now is rejected.
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&shutdown_pod("late", false, host.path())),
    );
    for pod in ["regular", "critical"] {
        wait_phase(&s, &agent, pod, "Failed", Duration::from_secs(30));
        let what = format!("pod/{pod}");
        assert_eq!(jsonpath(&s, &what, "{.status.reason}"), "Terminated");
        assert_eq!(
            jsonpath(&s, &what, "{.status.message}"),
            "Pod was terminated in response to imminent node shutdown."
        );
        assert_eq!(
            jsonpath(
                &s,
                &what,
                "{.status.conditions[?(@.type==\"DisruptionTarget\")].status}/{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
            ),
            "True/TerminationByKubelet"
        );
        let stopped = std::fs::read_to_string(host.path().join(pod)).unwrap_or_default();
        assert_eq!(stopped.trim(), "stopped", "preStop of {pod} ran");
    }
    eprintln!("pods stopped {:?} after the announcement", t.elapsed());
    let finished = |pod: &str| {
        jsonpath(
            &s,
            &format!("pod/{pod}"),
            "{.status.containerStatuses[0].state.terminated.finishedAt}",
        )
    };
    let (regular, critical) = (finished("regular"), finished("critical"));
    assert!(
        !regular.is_empty() && regular <= critical,
        "regular pods stop first: {regular:?} vs {critical:?}"
    );
    wait_phase(&s, &agent, "late", "Failed", Duration::from_secs(20));
    assert_eq!(jsonpath(&s, "pod/late", "{.status.reason}"), "NodeShutdown");
    assert!(
        eventually(Duration::from_secs(10), || logind.log.released() == 1),
        "the inhibitor lock was not released:\n{}",
        agent.log()
    );

    // The shutdown is cancelled: Ready again, with a new lock.
    logind.announce(false);
    assert!(
        eventually(Duration::from_secs(10), || ready_condition(&s, "status")
            == "True"),
        "node not Ready after the cancellation:\n{}",
        agent.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || logind.log.taken() == 2),
        "no new lock after the cancellation"
    );
    for p in ["regular", "critical", "late"] {
        s.kubectl(&["delete", "pod", p, "--timeout=60s"]);
    }
}

/// Pods reach Services through the agent's service proxy (nftables DNAT from the cluster IP
/// to the endpoints), and the API server through the `kubernetes` Service with their
/// service account token, as in-cluster clients do: `KUBERNETES_SERVICE_HOST/PORT` and the
/// service link variables come from the agent. A node port answers on the node's addresses
/// (here the pod bridge's); a Service without endpoints refuses; a Service with
/// `sessionAffinity: ClientIP` keeps sending the client to one of its two endpoints.
#[test]
fn pods_reach_services_and_the_api_server() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let route_localnet = std::fs::read_to_string(ROUTE_LOCALNET).ok();
    let s = Server::start();
    let agent = ready_node_named(
        &s,
        "krust-svc-node",
        "ksvc0",
        "10.42.212.0/24",
        "10.42.213.0/24",
    );
    let manifests = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: sticky}
spec:
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: web2
  labels: {tier: sticky}
spec:
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web2 > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30555}]
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
spec:
  selector: {tier: sticky}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  ports: [{port: 80}]
"#;
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(manifests));
    let ready = eventually(Duration::from_secs(60), || {
        ready_of(&s, "web").1 == "True"
            && ready_of(&s, "web2").1 == "True"
            && jsonpath(&s, "endpoints/sticky", "{.subsets[*].addresses[*].ip}")
                .split_whitespace()
                .count()
                == 2
    });
    assert!(ready, "web or web2 not Ready; agent log:\n{}", agent.log());
    let client = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  volumes:
  - name: kubectl
    hostPath: {path: KUBECTL_BIN, type: File}
  containers:
  - name: c
    image: busybox
    env: [{name: HOME, value: /tmp}]
    volumeMounts: [{name: kubectl, mountPath: /kubectl, readOnly: true}]
    command:
    - sh
    - -c
    - |
      echo "env host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT web=$WEB_SERVICE_HOST:$WEB_SERVICE_PORT_HTTP"
      for i in $(seq 1 20); do timeout 2 wget -qO- "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/" && break; sleep 1; done
      for i in $(seq 1 20); do /kubectl get pod client -o jsonpath='in-cluster {.metadata.name} {.spec.nodeName}' && break; sleep 1; done
      echo
      /kubectl auth whoami -o jsonpath='whoami {.status.userInfo.username}'
      echo
      timeout 3 wget -qO- "http://$EMPTY_SERVICE_HOST/" 2>&1 | head -n 1
      echo "nodeport $(timeout 2 wget -qO- http://10.42.212.1:30555/)"
      for i in $(seq 1 8); do echo "sticky $(timeout 2 wget -qO- http://$STICKY_SERVICE_HOST/)"; done
"#;
    let client = client.replace("KUBECTL_BIN", IN_CLUSTER_KUBECTL);
    s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(&client));
    wait_phase(&s, &agent, "client", "Succeeded", Duration::from_secs(90));
    let logs = s.kubectl_ok(common::KUBECTL, &["logs", "client"], None);
    let web_ip = jsonpath(&s, "service/web", "{.spec.clusterIP}");
    let empty_ip = jsonpath(&s, "service/empty", "{.spec.clusterIP}");
    assert!(
        logs.contains(&format!("env host=10.43.0.1 port=443 web={web_ip}:80")),
        "service variables: {logs}"
    );
    assert!(
        logs.contains("hello-from-web"),
        "web through its cluster IP: {logs}"
    );
    assert!(
        logs.contains("in-cluster client krust-svc-node"),
        "kubectl in the pod reaches the API server through the kubernetes Service: {logs}"
    );
    assert!(
        logs.contains("whoami system:serviceaccount:default:default"),
        "with the pod's service account token: {logs}"
    );
    assert!(
        logs.contains("nodeport hello-from-web"),
        "the node port on the node's bridge address: {logs}"
    );
    assert!(
        logs.contains(empty_ip.as_str()) && logs.contains("refused"),
        "a Service without endpoints refuses: {logs}"
    );
    let sticky: BTreeSet<&str> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("sticky "))
        .collect();
    assert!(
        sticky.len() == 1 && sticky.iter().all(|l| l.starts_with("hello-from-web")),
        "ClientIP affinity keeps the client on one of the two endpoints: {logs}"
    );
    drop(agent);
    if let Some(v) = route_localnet {
        let _ = std::fs::write(ROUTE_LOCALNET, v);
    }
}

/// A static kubectl, mounted into a pod: an in-cluster client (service variables, token,
/// CA bundle and the `kubernetes` Service, verifying the serving certificate).
const IN_CLUSTER_KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.31";

/// The proxy turns this on for endpoints on loopback (the API server in tests).
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

const PVC_NODE: &str = "krust-pvc-node";

/// A pod (placed by the scheduler) that runs `script` with claim `claim` at `/data`.
fn claim_pod(name: &str, claim: &str, script: &str, read_only: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n    volumeMounts:\n    - name: data\n      mountPath: /data\n      readOnly: {read_only}\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

fn host_path_pv(name: &str, size: &str, path: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\nspec:\n  storageClassName: manual\n  capacity:\n    storage: {size}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  hostPath:\n    path: {}\n    type: DirectoryOrCreate\n",
        path.display()
    )
}

fn claim_yaml(name: &str, class: &str, size: &str, volume: Option<&str>) -> String {
    let volume = volume
        .map(|v| format!("  volumeName: {v}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  storageClassName: {class}\n  accessModes: [ReadWriteOnce]\n{volume}  resources:\n    requests:\n      storage: {size}\n"
    )
}

/// PersistentVolumeClaims end to end: the binder binds a claim to the smallest fitting
/// hostPath volume; a scheduled pod writes through the claim into the host directory and a
/// second pod reads it back (read-only); a pod whose claim does not exist waits with
/// FailedMount and starts once a pre-bound claim and its volume appear; a WaitForFirstConsumer
/// claim binds the local volume of the node the scheduler chose; an unbound Immediate claim
/// keeps its pod unscheduled; a claim deleted while pods name it, and its Bound volume, stay
/// Terminating (and no new pod starts on the claim) until the pods are gone, then the claim
/// goes, its Retain volume is released and the volume's deletion completes.
#[test]
fn agent_mounts_persistent_volume_claims() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let s = Server::start();
    let agent = ready_node_named(&s, PVC_NODE, "kpvc0", "10.42.217.0/24", "10.42.247.0/24");
    let dir = tempfile::Builder::new()
        .prefix("krust-pvc")
        .tempdir()
        .expect("tempdir");
    let apply = |yaml: &str| {
        s.kubectl_ok(common::KUBECTL, &["apply", "-f", "-"], Some(yaml));
    };

    // Binding: the smallest volume that fits wins, with upstream's annotations.
    let hp = dir.path().join("hp");
    apply(&host_path_pv("pvc-small", "1Gi", &hp));
    apply(&host_path_pv("pvc-big", "5Gi", &dir.path().join("big")));
    apply(&claim_yaml("data", "manual", "500Mi", None));
    let bound = eventually(Duration::from_secs(30), || {
        jsonpath(&s, "pvc/data", "{.status.phase}") == "Bound"
    });
    assert!(
        bound,
        "claim not bound: {}",
        s.kubectl(&["get", "pv,pvc", "-o", "yaml"])
    );
    assert_eq!(jsonpath(&s, "pvc/data", "{.spec.volumeName}"), "pvc-small");
    assert_eq!(
        jsonpath(&s, "pvc/data", "{.status.capacity.storage}"),
        "1Gi"
    );
    assert_eq!(
        jsonpath(
            &s,
            "pvc/data",
            "{.metadata.annotations.pv\\.kubernetes\\.io/bind-completed}"
        ),
        "yes"
    );
    assert!(eventually(Duration::from_secs(10), || jsonpath(
        &s,
        "pv/pvc-small",
        "{.status.phase}"
    ) == "Bound"));
    assert_eq!(
        jsonpath(&s, "pv/pvc-small", "{.spec.claimRef.uid}"),
        jsonpath(&s, "pvc/data", "{.metadata.uid}")
    );
    assert_eq!(
        jsonpath(
            &s,
            "pv/pvc-small",
            "{.metadata.annotations.pv\\.kubernetes\\.io/bound-by-controller}"
        ),
        "yes"
    );
    assert_eq!(jsonpath(&s, "pv/pvc-big", "{.status.phase}"), "Available");
    let table = s.kubectl(&["get", "pv,pvc"]);
    let pv_line = table
        .lines()
        .find(|l| l.starts_with("persistentvolume/pvc-small"))
        .unwrap_or_default();
    for want in ["1Gi", "RWO", "Retain", "Bound", "default/data", "manual"] {
        assert!(pv_line.contains(want), "{want} missing in:\n{table}");
    }
    let pvc_line = table
        .lines()
        .find(|l| l.starts_with("persistentvolumeclaim/data"))
        .unwrap_or_default();
    for want in ["Bound", "pvc-small", "1Gi", "RWO", "manual"] {
        assert!(pvc_line.contains(want), "{want} missing in:\n{table}");
    }

    // A pod writes through the claim (DirectoryOrCreate made the directory); another reads.
    apply(&claim_pod(
        "pvc-writer",
        "data",
        "echo hello-from-pvc > /data/greeting",
        false,
    ));
    wait_phase(
        &s,
        &agent,
        "pvc-writer",
        "Succeeded",
        Duration::from_secs(60),
    );
    assert_eq!(
        std::fs::read_to_string(hp.join("greeting")).unwrap_or_default(),
        "hello-from-pvc\n"
    );
    apply(&claim_pod(
        "pvc-reader",
        "data",
        "cat /data/greeting; if touch /data/x 2>/dev/null; then echo writable; else echo read-only; fi",
        true,
    ));
    wait_phase(
        &s,
        &agent,
        "pvc-reader",
        "Succeeded",
        Duration::from_secs(60),
    );
    assert_eq!(
        s.kubectl(&["logs", "pvc-reader"]),
        "hello-from-pvc\nread-only\n"
    );

    // A claim that does not exist yet: the pod waits, with FailedMount, then starts once a
    // claim pre-bound to a new volume is bound.
    let late_yaml = claim_pod("pvc-late", "late", "cat /data/note", false)
        .replace("spec:\n", &format!("spec:\n  nodeName: {PVC_NODE}\n"));
    apply(&late_yaml);
    let waited = eventually(Duration::from_secs(30), || {
        s.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pvc-late,reason=FailedMount",
            "-o",
            "name",
        ])
        .contains("event")
    });
    assert!(
        waited,
        "no FailedMount event: {}",
        s.kubectl(&["get", "events"])
    );
    assert_eq!(jsonpath(&s, "pod/pvc-late", "{.status.phase}"), "Pending");
    let late_dir = dir.path().join("late");
    std::fs::create_dir_all(&late_dir).expect("late dir");
    std::fs::write(late_dir.join("note"), "late-but-there\n").expect("note");
    apply(&host_path_pv("pvc-late-pv", "2Gi", &late_dir));
    apply(&claim_yaml("late", "manual", "1Gi", Some("pvc-late-pv")));
    wait_phase(&s, &agent, "pvc-late", "Succeeded", Duration::from_secs(90));
    assert_eq!(s.kubectl(&["logs", "pvc-late"]), "late-but-there\n");
    assert_eq!(
        jsonpath(&s, "pvc/late", "{.spec.volumeName}"),
        "pvc-late-pv"
    );

    // WaitForFirstConsumer: a local volume with node affinity binds once the scheduler has
    // chosen the node, to the volume of that node.
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).expect("local dir");
    apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local-wffc\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n");
    let local_pv = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\nspec:\n  storageClassName: local-wffc\n  capacity:\n    storage: 1Gi\n  accessModes: [ReadWriteOnce]\n  local:\n    path: {}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - key: kubernetes.io/hostname\n          operator: In\n          values: [{node}]\n",
            local.display()
        )
    };
    apply(&local_pv("pvc-local-elsewhere", "some-other-node"));
    apply(&local_pv("pvc-local-here", PVC_NODE));
    apply(&claim_yaml("local-data", "local-wffc", "1Gi", None));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(jsonpath(&s, "pvc/local-data", "{.status.phase}"), "Pending");
    apply(&claim_pod(
        "pvc-local",
        "local-data",
        "echo local-ok > /data/out",
        false,
    ));
    wait_phase(
        &s,
        &agent,
        "pvc-local",
        "Succeeded",
        Duration::from_secs(90),
    );
    assert_eq!(
        jsonpath(&s, "pvc/local-data", "{.spec.volumeName}"),
        "pvc-local-here"
    );
    assert_eq!(
        jsonpath(
            &s,
            "pvc/local-data",
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        PVC_NODE
    );
    assert_eq!(
        std::fs::read_to_string(local.join("out")).unwrap_or_default(),
        "local-ok\n"
    );

    // An Immediate claim that nothing can bind keeps its pod unscheduled.
    apply(&claim_yaml("huge", "manual", "100Gi", None));
    apply(&claim_pod("pvc-unbound", "huge", "true", false));
    let unschedulable = eventually(Duration::from_secs(30), || {
        jsonpath(
            &s,
            "pod/pvc-unbound",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )
        .contains("pod has unbound immediate PersistentVolumeClaims")
    });
    assert!(
        unschedulable,
        "{}",
        s.kubectl(&["get", "pod", "pvc-unbound", "-o", "yaml"])
    );

    // Protection: admission gave the claim and the volume their finalizers. Deleted while
    // pods that ran on it exist, the claim stays Terminating, and so does its Bound volume;
    // a pod that has not started does not start on a claim being deleted.
    assert_eq!(
        jsonpath(&s, "pvc/data", "{.metadata.finalizers}"),
        "[\"kubernetes.io/pvc-protection\"]"
    );
    assert_eq!(
        jsonpath(&s, "pv/pvc-small", "{.metadata.finalizers}"),
        "[\"kubernetes.io/pv-protection\"]"
    );
    s.kubectl(&["delete", "pvc", "data", "--wait=false"]);
    s.kubectl(&["delete", "pv", "pvc-small", "--wait=false"]);
    apply(
        &claim_pod("pvc-blocked", "data", "true", false)
            .replace("spec:\n", &format!("spec:\n  nodeName: {PVC_NODE}\n")),
    );
    let blocked = eventually(Duration::from_secs(30), || {
        s.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pvc-blocked,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .contains("PVC is being deleted")
    });
    assert!(blocked, "{}", s.kubectl(&["get", "events"]));
    assert_eq!(
        jsonpath(&s, "pod/pvc-blocked", "{.status.phase}"),
        "Pending"
    );
    assert!(!jsonpath(&s, "pvc/data", "{.metadata.deletionTimestamp}").is_empty());
    assert_eq!(jsonpath(&s, "pv/pvc-small", "{.status.phase}"), "Bound");

    // Once no pod names it, the claim goes; its Retain volume is released, with the data,
    // and then its own deletion completes.
    s.kubectl(&[
        "delete",
        "pod",
        "pvc-writer",
        "pvc-reader",
        "pvc-blocked",
        "--wait=false",
    ]);
    let gone = |what: &str| {
        s.kubectl(&["get", what, "--ignore-not-found", "-o", "name"])
            .trim()
            .is_empty()
    };
    let claim_gone = eventually(Duration::from_secs(60), || gone("pvc/data"));
    assert!(
        claim_gone,
        "claim still there: {}",
        s.kubectl(&["get", "pv,pvc,pods", "-o", "wide"])
    );
    let volume_gone = eventually(Duration::from_secs(60), || gone("pv/pvc-small"));
    assert!(
        volume_gone,
        "volume still there: {}",
        s.kubectl(&["get", "pv", "-o", "yaml"])
    );
    assert!(hp.join("greeting").exists());
    for pod in ["pvc-late", "pvc-local", "pvc-unbound"] {
        s.kubectl(&["delete", "pod", pod, "--wait=false"]);
    }
}

/// GPUs: the agent counts what `nvidia-smi -L` lists into `nvidia.com/gpu` capacity, and the
/// scheduler places a pod asking for one there while a pod asking for more than the node
/// has stays Pending. No GPU is lent to CI machines, so a stand-in `nvidia-smi` on the
/// agent's PATH prints a two-GPU listing in the real tool's format.
#[test]
fn node_offers_the_gpus_nvidia_smi_lists() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let bin = tempfile::Builder::new()
        .prefix("krust-gpu")
        .tempdir()
        .expect("tempdir");
    let smi = bin.path().join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\n[ \"$1\" = -L ] || exit 1\n\
         echo 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n\
         echo 'GPU 1: NVIDIA H200 (UUID: GPU-11111111-1111-1111-1111-111111111111)'\n",
    )
    .expect("write nvidia-smi");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let s = Server::start();
    let agent = ready_node_with(
        &s,
        "krust-gpu-node",
        "kgpu0",
        "10.42.214.0/24",
        "10.42.215.0/24",
        &[],
        &[("PATH", &path)],
    );
    let gpus = |field: &str| {
        jsonpath(
            &s,
            "node/krust-gpu-node",
            &format!("{{.status.{field}.nvidia\\.com/gpu}}"),
        )
    };
    assert_eq!(gpus("capacity"), "2");
    assert_eq!(gpus("allocatable"), "2");
    let pod = |name: &str, n: u32| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      limits: {{nvidia.com/gpu: {n}}}\n"
        )
    };
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod("one-gpu", 1)),
    );
    s.kubectl_ok(
        common::KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod("three-gpus", 3)),
    );
    wait_phase(&s, &agent, "one-gpu", "Running", Duration::from_secs(60));
    let unschedulable = eventually(Duration::from_secs(20), || {
        jsonpath(
            &s,
            "pod/three-gpus",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )
        .contains("Insufficient nvidia.com/gpu")
    });
    assert!(
        unschedulable,
        "{}",
        s.kubectl(&["get", "pod", "three-gpus", "-o", "yaml"])
    );
    s.kubectl(&["delete", "pod", "one-gpu", "three-gpus", "--wait=false"]);
}
