#!/usr/bin/env bash
# Command 1 of the README: set up a fresh machine and run the main job — the
# lab quickstart: an emulated datacenter (3 hypervisors + a gateway host, each
# a network namespace running its own `netvirt agent`), two tenants on the same
# 10.0.0.0/24, routers with SNAT, security groups, a floating IP and a load
# balancer, VMs addressed by a real DHCP client — then the connectivity checks.
# Needs root (network namespaces). `netvirt lab down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
netvirt lab down >/dev/null 2>&1 || true
exec netvirt lab up examples/quickstart.yaml --check "$@"
