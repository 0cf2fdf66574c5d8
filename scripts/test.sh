#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs what is missing
# (scripts/setup.sh), then formatting, lints, and the whole test suite
# (unit tests, integration tests against real components, real HTTP
# servers and a real Synapse).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# The integration tests run many hosts in one process, each with a wasm
# engine whose instance pool and guard pages are kernel mappings. Test
# hosts reserve small pools, and the suite passes under Linux's default
# limit (65,530 per process); as root, give it headroom anyway.
if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt 262144 ]; then
  sysctl -q -w vm.max_map_count=262144 || echo "note: could not raise vm.max_map_count"
fi
cargo test --workspace --locked
