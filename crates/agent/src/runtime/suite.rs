//! The behaviour every [`Runtime`] implementation must show, as one test suite: the fake
//! passes it in unit tests, containerd in `tests/cri.rs`. It needs the busybox image
//! ([`IMAGE`]) present and panics on the first deviation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{api, container_state, sandbox_ready, Runtime};
use crate::labels;

/// The image the suite runs (imported by the agent's setup; added by hand on the fake).
pub const IMAGE: &str = "docker.io/library/busybox:latest";

fn sandbox_config(uid: &str, log_dir: &str) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "suite".to_string(),
            uid: uid.to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: "suite".to_string(),
        log_directory: log_dir.to_string(),
        labels: HashMap::from([
            (labels::POD_UID.to_string(), uid.to_string()),
            (labels::MANAGED.to_string(), "true".to_string()),
        ]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/krust/pod{uid}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(uid: &str, name: &str, script: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: IMAGE.to_string(),
            ..Default::default()
        }),
        command: vec!["sh".to_string(), "-c".to_string(), script.to_string()],
        log_path: format!("{name}.log"),
        labels: HashMap::from([
            (labels::POD_UID.to_string(), uid.to_string()),
            (labels::CONTAINER_NAME.to_string(), name.to_string()),
            (labels::MANAGED.to_string(), "true".to_string()),
        ]),
        ..Default::default()
    }
}

async fn wait_state(rt: &dyn Runtime, id: &str, want: api::ContainerState) -> api::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.container_status(id).await.expect("ContainerStatus");
        if container_state(st.state) == want {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {want:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pod uid the suite's sandbox carries (its cgroups are `/krust/pod<uid>`).
pub fn uid() -> String {
    format!("suite-{}", std::process::id())
}

/// Runs the suite against `rt`. `log_dir` is where the sandbox's container logs go (it must
/// exist for a real runtime; the fake ignores it).
pub async fn run_in(rt: &dyn Runtime, log_dir: &str) {
    let uid = uid();
    let version = rt.version().await.expect("Version");
    assert_eq!(version.runtime_api_version, "v1");

    // Images: present and absent.
    assert!(rt.image_status(IMAGE).await.expect("ImageStatus").is_some());
    assert!(rt
        .image_status("busybox")
        .await
        .expect("ImageStatus")
        .is_some());
    assert!(rt
        .image_status("krust.local/absent:1")
        .await
        .expect("ImageStatus of an absent image is not an error")
        .is_none());
    assert!(rt
        .pull_image("krust.invalid/absent:1", None, None)
        .await
        .is_err());

    // A sandbox, found by its labels, with an address.
    let sb_config = sandbox_config(&uid, log_dir);
    let sb = rt
        .run_pod_sandbox(sb_config.clone())
        .await
        .expect("RunPodSandbox");
    let listed = rt
        .list_pod_sandboxes(HashMap::from([(labels::POD_UID.to_string(), uid.clone())]))
        .await
        .expect("ListPodSandbox");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sb);
    assert!(sandbox_ready(listed[0].state));
    let status = rt.pod_sandbox_status(&sb).await.expect("PodSandboxStatus");
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "sandbox ip {ip:?}"
    );

    // A container that exits with a code.
    let quick = rt
        .create_container(
            &sb,
            container_config(&uid, "quick", "echo hi; exit 3"),
            sb_config.clone(),
        )
        .await
        .expect("CreateContainer");
    let st = rt.container_status(&quick).await.expect("ContainerStatus");
    assert_eq!(
        container_state(st.state),
        api::ContainerState::ContainerCreated
    );
    rt.start_container(&quick).await.expect("StartContainer");
    let st = wait_state(rt, &quick, api::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 3);
    // Both set; containerd stamps the start after the task started and the exit from the
    // exit event, so for a process this quick the finish may come out before the start.
    assert!(st.started_at > 0 && st.finished_at > 0, "{st:?}");

    // A container that runs until stopped.
    let long = rt
        .create_container(
            &sb,
            container_config(&uid, "long", "sleep 3600"),
            sb_config.clone(),
        )
        .await
        .expect("CreateContainer");
    rt.start_container(&long).await.expect("StartContainer");
    let st = wait_state(rt, &long, api::ContainerState::ContainerRunning).await;
    assert!(st.started_at > 0);
    let mine = rt
        .list_containers(HashMap::from([(labels::POD_UID.to_string(), uid.clone())]))
        .await
        .expect("ListContainers");
    assert_eq!(mine.len(), 2);
    let names: Vec<&str> = mine
        .iter()
        .filter_map(|c| c.metadata.as_ref().map(|m| m.name.as_str()))
        .collect();
    assert!(names.contains(&"quick") && names.contains(&"long"));
    // ExecSync: output and exit codes come back; a time limit kills the command.
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = rt
        .exec_sync(&long, words(&["echo", "hi"]), 5)
        .await
        .expect("ExecSync");
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"hi\n"[..]));
    let out = rt
        .exec_sync(&long, words(&["sh", "-c", "exit 3"]), 5)
        .await
        .expect("ExecSync");
    assert_eq!(out.exit_code, 3);
    let out = rt
        .exec_sync(&long, words(&["cat", "/nonexistent"]), 0)
        .await
        .expect("ExecSync without a time limit");
    assert_ne!(out.exit_code, 0);
    let t = Instant::now();
    let timed_out = rt.exec_sync(&long, words(&["sleep", "10"]), 1).await;
    assert!(
        timed_out.as_ref().is_err_and(|e| e.is_timeout()),
        "{timed_out:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(rt
        .exec_sync(&quick, words(&["echo", "hi"]), 5)
        .await
        .is_err());

    // Streaming: URLs on the runtime's streaming server for a running container and the
    // sandbox; an exited container or an unknown one is refused.
    let exec = |id: &str| api::ExecRequest {
        container_id: id.to_string(),
        cmd: vec!["cat".to_string(), "/etc/hostname".to_string()],
        stdout: true,
        ..Default::default()
    };
    let url = rt.exec(exec(&long)).await.expect("Exec");
    assert!(url.starts_with("http://"), "exec url {url:?}");
    let url = rt
        .attach(api::AttachRequest {
            container_id: long.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Attach");
    assert!(url.starts_with("http://"), "attach url {url:?}");
    let url = rt.port_forward(&sb).await.expect("PortForward");
    assert!(url.starts_with("http://"), "port-forward url {url:?}");
    assert!(rt.exec(exec(&quick)).await.is_err());
    assert!(rt.exec(exec("no-such-container")).await.is_err());
    rt.stop_container(&long, 1).await.expect("StopContainer");
    let st = wait_state(rt, &long, api::ContainerState::ContainerExited).await;
    assert_ne!(st.exit_code, 0);

    // Removal.
    rt.remove_container(&quick).await.expect("RemoveContainer");
    assert!(rt
        .container_status(&quick)
        .await
        .is_err_and(|e| e.is_not_found()));
    rt.remove_container(&quick)
        .await
        .expect("removing a removed container is not an error");
    rt.stop_pod_sandbox(&sb).await.expect("StopPodSandbox");
    let status = rt.pod_sandbox_status(&sb).await.expect("PodSandboxStatus");
    assert!(!sandbox_ready(status.state));
    rt.remove_pod_sandbox(&sb).await.expect("RemovePodSandbox");
    assert!(rt
        .list_pod_sandboxes(HashMap::from([(labels::POD_UID.to_string(), uid.clone())]))
        .await
        .expect("ListPodSandbox")
        .is_empty());
    assert!(rt
        .list_containers(HashMap::from([(labels::POD_UID.to_string(), uid.clone())]))
        .await
        .expect("ListContainers")
        .is_empty());
    rt.remove_pod_sandbox(&sb)
        .await
        .expect("removing a removed sandbox is not an error");
}

/// [`run_in`] with a log directory the fake does not need.
pub async fn run(rt: &dyn Runtime) {
    run_in(rt, "/nonexistent").await
}
