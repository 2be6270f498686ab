#!/usr/bin/env bash
# Command 1 of the README: set everything up and run the main job. Until the
# lab lands, the main job is the API server on the embedded default store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NETVIRT_DB="${NETVIRT_DB:-sqlite:///$PWD/.netvirt/netvirt.db}"
exec netvirt serve --bootstrap "$@"
