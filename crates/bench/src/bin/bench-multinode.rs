//! Multi-node benchmark (issue 16): a `krust server` on a bridge this benchmark makes, and
//! two agents joined by token from network namespaces on it (`krust-testbed`), as in the
//! multinode end-to-end test. It prints:
//!
//! - join: the time from spawning `krust agent --server --token` to its Node's Ready
//!   condition being True (the token's CA discovery, the CSR round trip, containerd's start,
//!   image import and registration all included), for each joined node;
//! - pod to pod: HTTP throughput (one 512 MiB response streamed by a CGI, no disk) and
//!   latency (sequential small requests, each a new connection) from a pod on the same node
//!   as the server pod and from a pod on the other joined node, and the cross/same ratio.
//!   Timing is read in the client pod (`/proc/uptime`, 10 ms ticks: the runs are long
//!   enough that a tick is under 2 % of them).
//!
//! Run: `cargo build --release -p krust -p krust-bench && target/release/bench-multinode
//! [auto|host-gw|vxlan]` (the agents' `--pod-network-backend`; default auto, which is
//! host-gw on one bridge). Needs root, containerd, runc, the CNI plugins and nsenter.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use krust_bench::{free_port, krust_binary, Proc};
use krust_testbed::{JoinedAgent, Link, Netns};

const KUBECTL: &str = "kubectl";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const STREAM_MIB: u32 = 512;
const REQUESTS: u32 = 300;

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("kubectl")?;
    if let Some(input) = stdin {
        use std::io::Write;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(input.as_bytes())?;
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} within {timeout:?}")
}

fn ready(kubeconfig: &Path, node: &str) -> bool {
    kubectl(
        kubeconfig,
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    )
    .is_ok_and(|s| s == "True")
}

/// A pod on `node` running busybox httpd with a streaming CGI (`/cgi-bin/stream`) and a
/// small page.
fn web_pod(name: &str, node: &str) -> String {
    let script = format!(
        "mkdir -p /www/cgi-bin; echo ok > /www/small; printf '#!/bin/sh\\necho Content-Type: application/octet-stream\\necho\\nexec dd if=/dev/zero bs=1048576 count={STREAM_MIB} 2>/dev/null\\n' > /www/cgi-bin/stream; chmod +x /www/cgi-bin/stream; exec httpd -f -p 8080 -h /www"
    );
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// Seconds the client pod `pod` takes for `command` (a shell snippet), by its /proc/uptime.
fn timed(kubeconfig: &Path, pod: &str, command: &str) -> anyhow::Result<f64> {
    let script = format!(
        "a=$(cut -d' ' -f1 /proc/uptime); {command}; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
    );
    let out = kubectl(kubeconfig, &["exec", pod, "--", "sh", "-c", &script], None)?;
    let nums: Vec<f64> = out
        .split_whitespace()
        .rev()
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    ensure!(nums.len() == 2, "no timing in {out:?}");
    Ok(nums[0] - nums[1])
}

struct Figures {
    mib_per_s: f64,
    latency_ms: f64,
}

fn pod_to_pod(kubeconfig: &Path, client: &str, server_ip: &str) -> anyhow::Result<Figures> {
    let stream = format!("wget -qO /dev/null http://{server_ip}:8080/cgi-bin/stream");
    let small = format!(
        "i=0; while [ $i -lt {REQUESTS} ]; do wget -qO /dev/null http://{server_ip}:8080/small; i=$((i+1)); done"
    );
    // One warm-up of each, then the measured runs.
    timed(
        kubeconfig,
        client,
        &small.replace(&REQUESTS.to_string(), "10"),
    )?;
    let secs = timed(kubeconfig, client, &stream)?;
    let lat = timed(kubeconfig, client, &small)?;
    Ok(Figures {
        mib_per_s: f64::from(STREAM_MIB) / secs.max(0.01),
        latency_ms: lat * 1000.0 / f64::from(REQUESTS),
    })
}

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "auto".into());
    ensure!(
        ["auto", "host-gw", "vxlan"].contains(&mode.as_str()),
        "usage: bench-multinode [auto|host-gw|vxlan]"
    );
    let krust = krust_binary();
    let link = Link::create("kmb0", GATEWAY)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let gw = GATEWAY.to_string();
    let server = Proc(
        Command::new(&krust)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--listen",
                &format!("{gw}:{port}"),
                "--advertise-address",
                &gw,
            ])
            .args([
                "--node-ip",
                &gw,
                "--node-name",
                "bench-server",
                "--dns-port",
                "0",
            ])
            .args([
                "--disable",
                "servicelb,ingress",
                "--pod-network-backend",
                &mode,
            ])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("server.log"),
            )?))
            .spawn()
            .context("krust server (build it with cargo build --release -p krust)")?,
    );
    wait_for("the server's Node Ready", Duration::from_secs(60), || {
        kubeconfig.exists() && ready(&kubeconfig, "bench-server")
    })?;
    let token = Command::new(&krust)
        .args(["token", "create", "--ttl", "10m"])
        .env("KUBECONFIG", &kubeconfig)
        .output()?;
    ensure!(token.status.success(), "krust token create failed");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let url = format!("https://{gw}:{port}");

    let mut agents = Vec::new();
    let mut joins = BTreeMap::new();
    for (i, name) in ["bench-n1", "bench-n2"].iter().enumerate() {
        let ns = Netns::create(&link, &format!("kmb-{name}"), link.address(11 + i as u8))?;
        let started = Instant::now();
        let agent = JoinedAgent::start(
            &krust,
            ns,
            name,
            &url,
            &token,
            &["--pod-network-backend", &mode],
        )?;
        wait_for("the joined Node Ready", Duration::from_secs(120), || {
            ready(&kubeconfig, name)
        })
        .with_context(|| agent.log())?;
        let took = started.elapsed();
        println!("join {name}: agent start to Node Ready {took:.2?}");
        joins.insert(*name, took);
        agents.push(agent);
    }

    for (pod, node) in [
        ("srv", "bench-n1"),
        ("same", "bench-n1"),
        ("cross", "bench-n2"),
    ] {
        kubectl(
            &kubeconfig,
            &["apply", "-f", "-"],
            Some(&web_pod(pod, node)),
        )?;
    }
    wait_for("the pods Running", Duration::from_secs(120), || {
        kubectl(
            &kubeconfig,
            &["get", "pods", "-o", "jsonpath={.items[*].status.phase}"],
            None,
        )
        .is_ok_and(|s| s.split_whitespace().filter(|p| *p == "Running").count() == 3)
    })?;
    let srv_ip = kubectl(
        &kubeconfig,
        &["get", "pod", "srv", "-o", "jsonpath={.status.podIP}"],
        None,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let same = pod_to_pod(&kubeconfig, "same", &srv_ip)?;
    let cross = pod_to_pod(&kubeconfig, "cross", &srv_ip)?;
    println!();
    println!("bench-multinode ({mode}), {STREAM_MIB} MiB stream and {REQUESTS} sequential requests per client:");
    for (name, took) in &joins {
        println!("  join {name:<9} {:>8.2} s to Ready", took.as_secs_f64());
    }
    println!(
        "  same node    {:>8.0} MiB/s {:>8.2} ms/request",
        same.mib_per_s, same.latency_ms
    );
    println!(
        "  cross node   {:>8.0} MiB/s {:>8.2} ms/request",
        cross.mib_per_s, cross.latency_ms
    );
    println!(
        "  cross/same   throughput x{:.2}, latency x{:.2}",
        cross.mib_per_s / same.mib_per_s,
        cross.latency_ms / same.latency_ms
    );
    drop(agents);
    drop(server);
    let _ = Command::new(&krust)
        .args(["agent-reset", "--data-dir"])
        .arg(dir.path().join("agent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    drop(link);
    Ok(())
}
