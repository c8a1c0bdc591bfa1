//! The runtime suite against a real containerd (the agent's own, in a temporary directory),
//! with the images the agent builds. Skipped when containerd or its companions are not
//! installed (`scripts/test.sh` installs them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use krust_agent::runtime::cri::CriRuntime;
use krust_agent::{cni, containerd, images, runtime};

const BRIDGE: &str = "krtsuite0";
const CIDR: &str = "10.42.201.0/24";

fn missing_tools() -> Vec<&'static str> {
    let on_path = |b: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).exists()))
    };
    let mut missing = Vec::new();
    for b in ["containerd", "ctr", "runc", "gcc", "ip"] {
        if !on_path(b) {
            missing.push(b);
        }
    }
    for f in ["/usr/lib/cni/bridge", "/bin/busybox"] {
        if !Path::new(f).exists() {
            missing.push(f);
        }
    }
    missing
}

/// Stops containerd and removes what the test made, also when it fails.
struct Cleanup {
    dir: PathBuf,
    ip_forward: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(krust_agent::reset(
                        &dir,
                        BRIDGE,
                        Path::new("/sys/fs/cgroup"),
                    ))
                })
        })
        .join();
        if let Ok(Ok(report)) = done {
            eprintln!("cleanup: {report:?}");
        }
        krust_agent::pod::worker::cleanup_cgroups(
            Path::new("/sys/fs/cgroup"),
            &runtime::suite::uid(),
        );
        if let Some(v) = &self.ip_forward {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_passes_the_runtime_suite() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!("skipping: not installed: {missing:?} (scripts/test.sh installs them)");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("krust-cri")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let _cleanup = Cleanup {
        dir: dir.clone(),
        ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
    };
    let layout = containerd::Layout::new(&dir);
    cni::write_conflist(
        &layout.cni_conf_dir(),
        BRIDGE,
        cni::Cidr::parse(CIDR).expect("cidr"),
        &layout.cni_ipam_dir(),
    )
    .expect("conflist");
    let started = containerd::ensure_running(
        &layout,
        &containerd::Settings::default(),
        Duration::from_secs(30),
    )
    .await
    .expect("containerd starts");
    assert!(started);
    assert!(containerd::running_pid(&layout).is_some());
    // A second call finds it answering.
    assert!(!containerd::ensure_running(
        &layout,
        &containerd::Settings::default(),
        Duration::from_secs(30)
    )
    .await
    .expect("containerd answers"));
    let rt = CriRuntime::new(&layout.socket()).expect("client");
    let t = std::time::Instant::now();
    images::ensure_images(&rt, &layout.socket(), &dir.join("images"))
        .await
        .expect("images");
    eprintln!("images built and imported in {:?}", t.elapsed());
    for name in images::PRELOADED {
        assert!(
            runtime::Runtime::image_status(&rt, name)
                .await
                .expect("ImageStatus")
                .is_some(),
            "{name} imported"
        );
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    runtime::suite::run_in(&rt, &logs.display().to_string()).await;
    krust_agent::pod::worker::cleanup_cgroups(Path::new("/sys/fs/cgroup"), &runtime::suite::uid());
    let left = std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup root")
        .flatten()
        .map(|h| h.path().join(format!("krust/pod{}", runtime::suite::uid())))
        .find(|p| p.exists());
    assert_eq!(left, None, "the suite's pod cgroups are removed");
}
