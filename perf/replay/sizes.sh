#!/usr/bin/env bash
# Per-frame cost of `warden replay` by frame size and protocol (issue 10): four synthetic
# captures (perf/replay/sizes.py: UDP and TCP, 64- and 1500-byte frames, real checksums), each
# replayed RUNS times by each given warden binary pinned to one core; prints the median
# frames/s of Warden's own packet loop and the ns per frame.
#
#   perf/replay/sizes.sh [--runs 3] [--frames 300000] [--cpu 1] [BIN...]   (default: target/release/warden)
#
# Compare builds: check an older commit out in a worktree, `cargo build --release -p warden-dp`
# there, and pass both binaries. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=3 FRAMES=300000 CPU=1
BINS=()
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --cpu) CPU=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) BINS+=("$1"); shift ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || { cargo build --release --quiet -p warden-dp; BINS=(target/release/warden); }
DIR=${SIZES_DIR:-/tmp/warden-sizes-$FRAMES}
if [ ! -s "$DIR/tcp-1500.pcap" ]; then
    echo "sizes: writing captures to $DIR" >&2
    python3 perf/replay/sizes.py "$DIR" "$FRAMES"
fi
printf '%-40s %-14s %14s %10s\n' binary capture frames/s ns/frame
for bin in "${BINS[@]}"; do
    for cap in udp-64 udp-1500 tcp-64 tcp-1500; do
        rates=()
        for _ in $(seq "$RUNS"); do
            err=$(taskset -c "$CPU" "$bin" replay "$DIR/$cap.pcap" 2>&1 >/dev/null | grep -o '[0-9]* frames/s' | tail -1)
            rates+=("${err% frames/s}")
        done
        med=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
        printf '%-40s %-14s %14s %10.0f\n' "$bin" "$cap" "$med" "$(echo "1000000000 / $med" | bc -l)"
    done
done
