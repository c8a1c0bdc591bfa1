#!/usr/bin/env bash
# Installs what krust needs on Debian 12, builds it, and starts a single-node cluster on
# the embedded store. Run as root: ./scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DATA_DIR=${KRUST_DATA_DIR:-/var/lib/krust}
LISTEN=${KRUST_LISTEN:-127.0.0.1:6443}

ensure_packages containerd runc containernetworking-plugins etcd-server busybox-static nftables conntrack \
  protobuf-compiler libprotobuf-dev curl ca-certificates build-essential
stop_system_etcd
command -v cargo >/dev/null || { echo "cargo is needed (https://rustup.rs)" >&2; exit 1; }
cargo build --release -p krust
install -m 0755 target/release/krust /usr/local/bin/krust

if pgrep -f "krust server --data-dir $DATA_DIR" >/dev/null; then
  echo "krust is already running (data in $DATA_DIR)"
else
  mkdir -p "$DATA_DIR"
  nohup /usr/local/bin/krust server --data-dir "$DATA_DIR" --listen "$LISTEN" >>"$DATA_DIR/krust.log" 2>&1 &
  for _ in $(seq 100); do
    curl -sk "https://$LISTEN/readyz" 2>/dev/null | grep -q ok && break
    sleep 0.1
  done
fi
curl -sk "https://$LISTEN/readyz" | grep -q ok || { echo "krust did not start; see $DATA_DIR/krust.log" >&2; exit 1; }
echo "krust is running (log: $DATA_DIR/krust.log). Point kubectl at it with:"
echo "  export KUBECONFIG=$DATA_DIR/admin.kubeconfig"
echo "  kubectl get nodes"
echo "To stop the node's containers and containerd after stopping krust: krust agent-reset --data-dir $DATA_DIR/agent"
