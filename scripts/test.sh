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
# The integration tests run many hosts at once in one process, each with a
# wasm engine whose instance pool and guard pages are kernel mappings;
# together they can pass Linux's default of 65,530 mappings per process
# (then even a thread's stack guard fails: ENOMEM). A host runs one
# engine and stays far below it; the test binary gets more room where
# the machine lets us.
if [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt 1048576 ]; then
  if [ "$(id -u)" = 0 ]; then
    sysctl -q -w vm.max_map_count=1048576 || echo "note: could not raise vm.max_map_count"
  elif command -v sudo >/dev/null; then
    sudo sysctl -q -w vm.max_map_count=1048576 || echo "note: could not raise vm.max_map_count"
  fi
fi
cargo test --workspace --locked
