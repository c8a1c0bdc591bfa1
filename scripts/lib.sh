# Shared helpers for the install and test scripts (sourced, not run).

# Installs the Debian packages given that are missing (apt-get, as root).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Debian's etcd-server starts a system etcd on install; krust's tests run their own.
stop_system_etcd() {
  if pgrep -x etcd >/dev/null 2>&1 && [ -f /etc/default/etcd ]; then
    service etcd stop >/dev/null 2>&1 || pkill -x etcd || true
  fi
}

# Debian's docker-registry may start a system registry on :5000 on install; the tests run
# their own on loopback.
stop_system_registry() {
  if pgrep -f "docker-registry serve /etc/docker" >/dev/null 2>&1; then
    service docker-registry stop >/dev/null 2>&1 || pkill -f "docker-registry serve /etc/docker" || true
  fi
}
