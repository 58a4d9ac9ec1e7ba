#!/usr/bin/env bash
# Replay throughput and its scaling with pipelines (issue 16): `warden replay --threads N` over
# the mixed corpus capture (`mkpcap.py corpus`, 1 GiB by default), for each N: wall clock,
# CPU time of the process and of each pipeline thread, Gbit/s on the wall clock and per
# CPU-second (frame bytes x 8 / process CPU time: the figure to compare on a machine others
# share), and a check that every N wrote the same records as N = 1. Runs each N `RUNS` times
# and prints every run; the machine's load (`uptime`) before and after.
#
# Usage: perf/replay/threads.sh [N...]   (default: 1 2)
# Env: BIN (default: a release build of this tree), MIN_BYTES (default 1073741824), PCAP,
# RUNS (default 2), CPUS (taskset list for every run, default: all).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIN=${MIN_BYTES:-1073741824}
PCAP=${PCAP:-/tmp/warden-replay-bench.pcap}
RUNS=${RUNS:-2}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet -p warden-dp --bin warden
  BIN=target/release/warden
fi
[ "$#" -gt 0 ] || set -- 1 2
if [ ! -s "$PCAP" ] || [ "$(stat -c %s "$PCAP")" -lt "$MIN" ]; then
  python3 perf/replay/mkpcap.py corpus "$PCAP" "$MIN" >&2
fi
mkdir -p perf/out
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pin=()
[ -n "${CPUS:-}" ] && pin=(taskset -c "$CPUS")
echo "threads: $BIN over $PCAP ($(stat -c %s "$PCAP") bytes), $(nproc) CPUs; load before: $(uptime | sed 's/.*average: //')"
printf '%-8s %-4s %9s %9s %10s %12s  %s\n' threads run 'wall s' 'CPU s' 'Gbit/s' 'Gbit/s/CPU' 'pipelines CPU s'
ref=""
for n in "$@"; do
  for r in $(seq 1 "$RUNS"); do
    "${pin[@]}" "$BIN" replay --threads "$n" "$PCAP" >"$tmp/out.jsonl" 2>"$tmp/err"
    line=$(grep -m1 ' frames, ' "$tmp/err")
    sum=$(md5sum <"$tmp/out.jsonl" | cut -d' ' -f1)
    [ -n "$ref" ] || ref=$sum
    same=$([ "$sum" = "$ref" ] && echo same || echo DIFFERENT)
    python3 - "$n" "$r" "$line" "$same" <<'PY'
import re, sys
n, r, line, same = sys.argv[1:5]
b = int(re.search(r"frames, (\d+) bytes", line).group(1))
wall = float(re.search(r"([\d.]+) s, \d+ frames/s", line).group(1))
cpu = float(re.search(r"CPU ([\d.]+) s \(process\)", line).group(1))
pipes = re.search(r"\(process\), (.*) s \(pipelines\)", line).group(1)
print(f"{n:<8} {r:<4} {wall:>9.2f} {cpu:>9.2f} {b*8/wall/1e9:>10.3f} {b*8/cpu/1e9:>12.3f}  {pipes}  records {same}")
PY
  done
done
echo "load after: $(uptime | sed 's/.*average: //')"
