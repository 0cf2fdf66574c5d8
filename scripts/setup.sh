#!/usr/bin/env bash
# Installs what weft needs on a fresh machine: the wasm toolchain and a
# pinned Synapse. Safe to run again: each step checks before it installs.
# (The plugins are built by whoever needs them: `cargo weft build` in
# scripts/run.sh, the test crate's build script for the tests.)
#
#   scripts/setup.sh            wasm toolchain, Synapse venv
#   scripts/setup.sh --no-synapse
#
# The wasm toolchain: rustup's wasm targets if rustup can add them;
# otherwise (machines that reach only package registries) Debian's
# rustc-web, whose std source builds wasm std with -Zbuild-std, plus lld
# and wasi-libc. `cargo weft build` picks whichever is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

SYNAPSE_VERSION="1.163.2"
WANT_SYNAPSE=1
for arg in "$@"; do
  case "$arg" in
    --no-synapse) WANT_SYNAPSE=0 ;;
    *) echo "usage: $0 [--no-synapse]" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
step() { printf '\n==> %s\n' "$*"; }

have_rustup_targets() {
  command -v rustup >/dev/null &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1
}

have_debian_route() {
  [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] &&
    [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/std" ] &&
    ls /usr/bin/wasm-ld-* >/dev/null 2>&1 && [ -f /usr/lib/wasm32-wasi/libc.a ]
}

apt_install() {
  step "apt-get install $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

step "wasm toolchain"
if [ "${WEFT_WASM_TOOLCHAIN:-auto}" != debian ] && have_rustup_targets; then
  echo "rustup has the wasm targets"
elif [ "${WEFT_WASM_TOOLCHAIN:-auto}" != debian ] && command -v rustup >/dev/null &&
  timeout 120 rustup target add wasm32-unknown-unknown wasm32-wasip1 >/dev/null 2>&1; then
  echo "added the wasm targets with rustup"
elif have_debian_route; then
  echo "Debian's rustc-web with std source is installed"
elif command -v apt-get >/dev/null; then
  # The recipe of shared/reference/wasm-toolchain.md.
  apt_install rustc-web cargo-web rust-web-src lld-19 wasi-libc
else
  echo "no wasm toolchain: run 'rustup target add wasm32-unknown-unknown wasm32-wasip1'" >&2
  exit 1
fi

if [ "$WANT_SYNAPSE" = 1 ]; then
  step "Synapse $SYNAPSE_VERSION (for the Matrix tests and the demo)"
  if [ -x .venv-synapse/bin/python ] &&
    .venv-synapse/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('matrix-synapse') != '$SYNAPSE_VERSION')" 2>/dev/null; then
    echo "already in .venv-synapse"
  else
    if ! python3 -c "import venv, ensurepip" 2>/dev/null; then apt_install python3-venv; fi
    python3 -m venv .venv-synapse
    .venv-synapse/bin/pip install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
  fi
fi
