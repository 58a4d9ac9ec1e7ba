#!/usr/bin/env bash
# Cost of tunnel decapsulation (issue 11): instructions per frame (callgrind, repeatable on a
# busy machine) and wall-clock frames/s of `warden replay` over a capture built from the corpus,
# plain and wrapped in VXLAN (wrap_vxlan.py), for each warden binary given (default: this
# checkout's release build). Usage: perf/replay/tunnel_cost.sh [WARDEN_BIN...]
# Needs: python3, valgrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -eq 0 ]; then
  cargo build --release --quiet -p warden-dp --bin warden
  set -- target/release/warden
fi
PLAIN=${PLAIN:-/tmp/warden-tunnel-cost.pcap}
WRAPPED=${PLAIN%.pcap}-vxlan.pcap
[ -s "$PLAIN" ] || python3 perf/replay/mkpcap.py corpus "$PLAIN" 20000000
[ -s "$WRAPPED" ] || PYTHONHASHSEED=0 python3 perf/replay/wrap_vxlan.py "$PLAIN" "$WRAPPED"
for bin in "$@"; do
  for cap in "$PLAIN" "$WRAPPED"; do
    ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" replay "$cap" 2>&1 >/dev/null \
      | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    frames=$(taskset -c 1 "$bin" replay "$cap" 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) frames, .*/\1/p' | head -1)
    wall=$(taskset -c 1 "$bin" replay "$cap" 2>&1 >/dev/null | grep -o '[0-9]* frames/s' | head -1)
    echo "$bin $(basename "$cap"): $frames frames, $((ir / frames)) instructions/frame, $wall"
  done
done
