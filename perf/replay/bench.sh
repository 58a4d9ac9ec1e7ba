#!/usr/bin/env bash
# Replay throughput benchmark (issue 3): `warden replay` vs nDPI's ndpiReader on the same large
# mixed capture built from the corpus, one core each, same run. Prints both and the ratio and
# writes JSON to perf/out/replay-<date>.json.
# Usage: perf/replay/bench.sh [MIN_BYTES] (default 1 GiB). Needs: python3, libndpi-bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
MIN=${1:-1073741824}
command -v ndpiReader >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libndpi-bin >/dev/null; }
cargo build --release --quiet -p warden-dp
mkdir -p perf/out
PCAP=${PCAP:-/tmp/warden-replay-bench.pcap}
if [ ! -s "$PCAP" ] || [ "$(stat -c %s "$PCAP")" -lt "$MIN" ]; then
  python3 perf/replay/mkpcap.py corpus "$PCAP" "$MIN"
fi
SIZE=$(stat -c %s "$PCAP")
CPU=${CPU:-1}
echo "replay-bench: $PCAP ($SIZE bytes), both pinned to core $CPU"

t0=$(date +%s.%N)
taskset -c "$CPU" target/release/warden replay "$PCAP" >/dev/null 2>/tmp/warden-replay.err
t1=$(date +%s.%N)
taskset -c "$CPU" ndpiReader -i "$PCAP" >/tmp/ndpi-replay.out 2>&1 || true
t2=$(date +%s.%N)

python3 - "$SIZE" "$t0" "$t1" "$t2" <<'PY'
import json, re, sys, time
size, t0, t1, t2 = int(sys.argv[1]), *map(float, sys.argv[2:5])
w = open("/tmp/warden-replay.err").read()
n = open("/tmp/ndpi-replay.out").read()
frames = int(re.search(r"(\d+) frames, (\d+) bytes", w).group(1))
wbytes = int(re.search(r"(\d+) frames, (\d+) bytes", w).group(2))
sessions = int(re.search(r"(\d+) sessions", w).group(1))
ws, ns = t1 - t0, t2 - t1
m = re.search(r"nDPI throughput:\s+([\d.]+) ([KM]) pps / ([\d.]+) ([MG])b/sec", n)
ndpi_internal = None
if m:
    ndpi_internal = float(m.group(1)) * (1e3 if m.group(2) == "K" else 1e6)
wi = re.search(r"([\d.]+) s, (\d+) frames/s, ([\d.]+) Gbit/s", w)
warden_internal = float(wi.group(2)) if wi else None
wc = re.search(r"CPU ([\d.]+) s \(process\)", w)
warden_cpu = float(wc.group(1)) if wc else None
pt = re.search(r"Packet Processing Time:\s+(\d+) msec", n)
ndpi_proc_s = int(pt.group(1)) / 1000 if pt else None
row = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "pcap_bytes": size, "frames": frames, "sessions": sessions,
    "warden_wall_s": round(ws, 3), "warden_fps": round(frames / ws), "warden_gbps": round(wbytes * 8 / ws / 1e9, 3),
    "ndpi_wall_s": round(ns, 3), "ndpi_fps": round(frames / ns), "ndpi_gbps": round(wbytes * 8 / ns / 1e9, 3),
    "ndpi_reported_pps": ndpi_internal, "ndpi_processing_s": ndpi_proc_s,
    "warden_reported_fps": warden_internal,
    "warden_cpu_s": warden_cpu,
    "warden_gbps_per_cpu_s": round(wbytes * 8 / warden_cpu / 1e9, 3) if warden_cpu else None,
    "ratio_wall": round(ns / ws, 2),
}
print(f"{'':14}{'wall s':>10}{'frames/s':>14}{'Gbit/s':>10}")
print(f"{'warden replay':14}{ws:>10.2f}{frames/ws:>14,.0f}{wbytes*8/ws/1e9:>10.3f}")
print(f"{'ndpiReader':14}{ns:>10.2f}{frames/ns:>14,.0f}{wbytes*8/ns/1e9:>10.3f}")
print(f"warden is {ns/ws:.2f}x nDPI (wall clock, same file, same core)")
if warden_cpu:
    print(f"warden CPU time {warden_cpu:.2f} s (process, user + system): {wbytes*8/warden_cpu/1e9:.3f} Gbit/s per CPU-second")
print(f"own figures (packet loop only): warden {warden_internal} frames/s, nDPI {ndpi_internal} pps"
      f" (processing {ndpi_proc_s} s)" + (f" -> {warden_internal/ndpi_internal:.2f}x" if warden_internal and ndpi_internal else ""))
out = f"perf/out/replay-{time.strftime('%Y%m%d-%H%M%S')}.json"
json.dump(row, open(out, "w"), indent=1)
print("wrote", out)
PY
