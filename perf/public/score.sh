#!/usr/bin/env bash
# Prints the public-capture score: per tshark label, the flows, how many Warden labels right and
# how many nDPI labels right (perf/public/score.py; --markdown for RESULTS.md). Builds the
# warden binary first (debug: the captures are small) unless WARDEN names one. Regenerate the labels and nDPI's verdicts with
# perf/public/label.py and perf/public/ndpi.py (tshark, libndpi-bin: scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${WARDEN:-}" ]; then
  CARGO_INCREMENTAL=0 cargo build -q -p warden-dp --bin warden
  WARDEN=target/debug/warden
fi
exec python3 perf/public/score.py --warden "$WARDEN" "$@"
