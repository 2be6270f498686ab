#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for netvirt: system packages, then the
# Python package with its development extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang + libbpf-dev: the datapath's kernel offload (eBPF) is built on the machine
APT_PACKAGES=(postgresql redis-server iproute2 procps iputils-ping busybox iperf3 curl chromium traceroute
  clang libbpf-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: not root, skipping system packages: ${missing[*]}" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "setup: done"
