#!/usr/bin/env bash
# Installs what weft needs on a fresh machine: the wasm toolchain, a
# pinned Synapse, a Mumble server for the Brmble tests, and headless
# Chromium with its driver for the helper-page tests. Safe to run again:
# each step checks before it installs.
# (The plugins are built by whoever needs them: `cargo weft build` in
# scripts/run.sh, the test crate's build script for the tests.)
#
#   scripts/setup.sh            wasm toolchain, Synapse venv, murmurd, Chromium
#   scripts/setup.sh --no-synapse
#   scripts/setup.sh --demo     what scripts/run.sh needs: no browser, no Node packages
#
# The wasm toolchain: rustup's wasm targets if rustup can add them;
# otherwise (machines that reach only package registries) Debian's
# rustc-web, whose std source builds wasm std with -Zbuild-std, plus lld
# and wasi-libc. `cargo weft build` picks whichever is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

SYNAPSE_VERSION="1.163.2"
WANT_SYNAPSE=1
WANT_TEST_TOOLS=1
for arg in "$@"; do
  case "$arg" in
    --no-synapse) WANT_SYNAPSE=0 ;;
    --demo) WANT_TEST_TOOLS=0 ;;
    *) echo "usage: $0 [--no-synapse] [--demo]" >&2; exit 2 ;;
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

# Waits up to 10 minutes for another apt (e.g. one already installing in
# the background) instead of failing on its lock.
apt_install() {
  step "apt-get install $*"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
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

# The Brmble tests run Debian's murmurd 1.3.4 on loopback
# (tests/support/mumble.rs), one per test on a free port; the package's own
# service is not needed (and in containers its start is refused).
step "Mumble server (murmurd, for the Brmble tests and the demo)"
if [ -x /usr/sbin/murmurd ]; then
  echo "murmurd is installed"
elif command -v apt-get >/dev/null; then
  apt_install mumble-server
else
  echo "no murmurd: install Debian's mumble-server (the Brmble tests run /usr/sbin/murmurd)" >&2
  exit 1
fi

if [ "$WANT_TEST_TOOLS" = 0 ]; then exit 0; fi

# The helper-page tests drive Debian's Chromium with playwright-core
# (tests/browser/capture.mjs): the npm package only, no browser download.
step "headless Chromium and the browser driver (tests/browser)"
if [ -x /usr/bin/chromium ]; then
  echo "Chromium is installed"
elif command -v apt-get >/dev/null; then
  apt_install chromium
else
  echo "no Chromium: install Debian's chromium (or set CHROMIUM for tests/browser/capture.mjs)" >&2
  exit 1
fi
if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
# npm ci writes node_modules/.package-lock.json: older than the lock file
# means the lock changed since.
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
  [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
else
  echo "tests/browser/node_modules is up to date"
fi

# The tests of OAuth-delegated auth (MSC3861, "MAS mode") run oidc-provider
# in place of the Matrix Authentication Service (tests/oidc/server.mjs,
# started by tests/support/mas.rs).
step "oidc-provider (tests/oidc, standing in for MAS)"
if [ ! -f tests/oidc/node_modules/.package-lock.json ] ||
  [ tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund
else
  echo "tests/oidc/node_modules is up to date"
fi
