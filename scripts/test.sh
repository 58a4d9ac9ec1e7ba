#!/usr/bin/env bash
# Runs every test: unit tests, the corpus replay tests and the end-to-end tests in network
# namespaces (which need root). Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (end-to-end tests create network namespaces and attach XDP)" >&2
  exit 1
fi
source ./scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
ulimit -l unlimited 2>/dev/null || true
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest"
  cargo install --locked --quiet cargo-nextest
fi
echo "test.sh: building"
cargo build --workspace --all-targets --quiet
# The package test (dp/tests/packaging.rs) installs the release binaries: build them before the
# tests run, so the end-to-end tests do not share the machine with a release build.
echo "test.sh: building release binaries (warden, wardenctl)"
cargo build --release -p warden-dp -p warden-control --quiet
echo "test.sh: checking that the fuzz targets build"
cargo check --manifest-path fuzz/Cargo.toml --quiet
echo "test.sh: running tests"
cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
