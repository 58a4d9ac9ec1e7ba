#!/usr/bin/env bash
# Callgrind profile of `warden replay` by pipeline stage (issue 16): instructions per frame of
# read, decode, defrag, sessions, normalisation, streams, app detection and parsers, threats,
# policy, records, pipeline glue and start-up, over a mixed capture built from the corpus
# (`mkpcap.py corpus`, 20 MB: 119 251 frames, 11 passes over the 24 captures), one pipeline.
# Instructions are the figure to compare: the same whatever else the machine does.
#
# Usage: perf/replay/profile.sh [BIN[=LABEL]...]   (default: a release build of this tree)
# Env: MIN_BYTES (capture size, default 20000000), PCAP (capture path), OUT (directory for the
# callgrind files, default perf/out). Needs: valgrind, python3.
# Prints a Markdown table, one column pair per binary (`perf/replay/cgstages.py`).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
MIN=${MIN_BYTES:-20000000}
PCAP=${PCAP:-/tmp/warden-replay-profile-$MIN.pcap}
OUT=${OUT:-perf/out}
mkdir -p "$OUT"
if [ "$#" -eq 0 ]; then
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo build --release --quiet -p warden-dp --bin warden
  set -- "${CARGO_TARGET_DIR:-target}/release/warden=this tree"
fi
if [ ! -s "$PCAP" ]; then
  python3 perf/replay/mkpcap.py corpus "$PCAP" "$MIN" >&2
fi
frames=""
files=()
n=0
for spec in "$@"; do
  bin=${spec%%=*}
  label=${spec#*=}
  [ "$label" = "$spec" ] && label=$(basename "$bin")
  n=$((n + 1))
  cg="$OUT/callgrind-replay-$n.out"
  echo "profile: $label ($bin) over $PCAP" >&2
  valgrind --tool=callgrind --callgrind-out-file="$cg" "$bin" replay "$PCAP" >/dev/null 2>"$cg.err"
  f=$(grep -o '[0-9]* frames,' "$cg.err" | head -1 | grep -o '[0-9]*')
  frames=${frames:-$f}
  files+=("$cg=$label")
done
python3 perf/replay/cgstages.py "$frames" "${files[@]}"
