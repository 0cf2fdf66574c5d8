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
cargo test --workspace --locked
