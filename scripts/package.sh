#!/usr/bin/env bash
# Builds the Debian package target/debian/warden_*.deb (cargo-deb; metadata in dp/Cargo.toml).
# Installs cargo-deb first when it is missing (`cargo install cargo-deb`: several minutes).
# Install the result with: apt install ./target/debian/warden_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb (cargo install, takes a few minutes)"
  cargo install --locked cargo-deb
fi
echo "package.sh: building release binaries (warden, wardenctl, warden-cni)"
cargo build --release -p warden-dp -p warden-control -p warden-cni
echo "package.sh: assembling the .deb"
cargo deb -p warden-dp --no-build "$@"
ls -1 target/debian/warden_*.deb
