#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (Debian packages, the Python
# kubernetes client), builds once in the release profile, and runs every test. Tests start
# and stop their own servers and etcd on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages etcd-server protobuf-compiler libprotobuf-dev curl ca-certificates dbus-daemon conntrack \
  containerd runc containernetworking-plugins busybox-static nftables build-essential iproute2 docker-registry \
  dnsmasq-base openssl
stop_system_etcd
stop_system_registry
# The client libraries the end-to-end tests drive, pinned: the Python client and, for a
# second generated client, @kubernetes/client-node (tests/node/package.json).
# kopf, an operator framework, reconciles a custom resource in the CRD tests.
PY_CLIENT=kubernetes==36.0.3
PY_KOPF=kopf==1.45.2
python3 -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '${PY_CLIENT#*==}')" 2>/dev/null ||
  python3 -m pip install -q "$PY_CLIENT" 2>/dev/null || python3 -m pip install -q --break-system-packages "$PY_CLIENT"
python3 -c "import kopf" 2>/dev/null ||
  python3 -m pip install -q "$PY_KOPF" 2>/dev/null || python3 -m pip install -q --break-system-packages "$PY_KOPF"
command -v npm >/dev/null 2>&1 || ensure_packages nodejs npm
(cd tests/node && npm install --no-audit --no-fund --no-package-lock --silent)

cargo build --release --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --no-fail-fast "$@"
else
  cargo test --release --workspace --no-fail-fast "$@"
fi
