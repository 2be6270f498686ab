#!/usr/bin/env bash
# Install what the side-by-side benchmarks need and CI does not: Open vSwitch and OVN
# from Debian (userspace datapath only: this kernel has no openvswitch module), ethtool,
# nftables (the kernel baseline's stateful filter + SNAT), and matplotlib + py-spy from
# PyPI. Safe to run again. Needs root for the apt part.
#
# The Debian packages would start a system-wide OVS/OVN on install; the harness never
# uses one (it runs its own daemons with private run/db/log dirs under /tmp/nvb-*), so
# service starts are denied during the install when no policy-rc.d already does it.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch ovn-central ovn-host ethtool nftables iperf3 iputils-ping
  util-linux procps iproute2 redis-server busybox)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_missing=()
python3 -c 'import matplotlib' 2>/dev/null || pip_missing+=(matplotlib)
command -v py-spy >/dev/null 2>&1 || pip_missing+=(py-spy)
if ((${#pip_missing[@]})); then
  python3 -m pip install -q --disable-pip-version-check "${pip_missing[@]}"
fi
echo "bench/setup.sh: done ($(ovs-vswitchd --version | head -1); $(ovn-northd --version | head -1))"
