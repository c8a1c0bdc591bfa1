"""The Python kubernetes client's exec against krust, over WebSocket: v5.channel.k8s.io
(what the client offers first: stdin closed by the v5 close message) and v4.channel.k8s.io.

Usage: python3 exec_e2e.py KUBECONFIG NAMESPACE POD
"""
import sys
import time
from urllib.parse import urlencode

from kubernetes import client, config
from kubernetes.stream import stream
from kubernetes.stream.ws_client import WSClient, V4_CHANNEL_PROTOCOL, V5_CHANNEL_PROTOCOL


def run_to_end(resp, timeout=30):
    """Reads a session until the server closes it; returns stdout, stderr, exit code."""
    out, err = [], []
    deadline = time.monotonic() + timeout
    while resp.is_open() and time.monotonic() < deadline:
        resp.update(timeout=1)
        out.append(resp.read_stdout(timeout=0) or "")
        err.append(resp.read_stderr(timeout=0) or "")
    assert not resp.is_open(), "the exec session never ended"
    out.append(resp.read_stdout(timeout=0) or "")
    err.append(resp.read_stderr(timeout=0) or "")
    return "".join(out), "".join(err), resp.returncode


def main(kubeconfig, ns, pod):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    # The plain call: output collected, as the client's docs show it.
    out = stream(core.connect_get_namespaced_pod_exec, pod, ns,
                 command=["echo", "hello from exec"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hello from exec\n", repr(out)

    # stdout, stderr and an exit code, apart.
    resp = stream(core.connect_get_namespaced_pod_exec, pod, ns,
                  command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    assert resp.subprotocol == V5_CHANNEL_PROTOCOL, resp.subprotocol
    got = run_to_end(resp)
    assert got == ("out\n", "err\n", 3), got

    # stdin to its end: the v5 close message ends `cat`, which exits 0.
    resp = stream(core.connect_get_namespaced_pod_exec, pod, ns, command=["cat"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("line one\nline two\n")
    resp.close_channel(0)
    got = run_to_end(resp)
    assert got == ("line one\nline two\n", "", 0), got

    # v4.channel.k8s.io, as older clients speak it (no stdin close; exit code on channel 3).
    cfg = client.Configuration.get_default_copy()
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", "echo v4; exit 5"),
                       ("stdout", "True"), ("stderr", "True")])
    url = cfg.host.replace("https://", "wss://") + \
        "/api/v1/namespaces/%s/pods/%s/exec?%s" % (ns, pod, query)
    resp = WSClient(cfg, url, {"sec-websocket-protocol": V4_CHANNEL_PROTOCOL}, capture_all=True)
    assert resp.subprotocol == V4_CHANNEL_PROTOCOL, resp.subprotocol
    got = run_to_end(resp)
    assert got == ("v4\n", "", 5), got
    print("python exec scenario: ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
