#!/usr/bin/env bash
# SYN flood benchmark: an established TCP transfer through Warden while random-tuple SYNs flood
# the same inline pair. See perf/README.md ("SYN flood"). Needs root. Only creates (and always
# deletes) namespaces named wsyn-*; addresses are in 198.18.0.0/15 and never leave them.
#
#   perf/synflood.sh [--count 10000000] [--rate 100000] [--policies none,protect] [--ports 1-65535]
#                    [--max-sessions 65536] [--unloaded 10] [--tail 5] [--bulk-mbit 400]
#                    [--idle-conns 200] [--nice -10] [--no-build]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WARDEN_BIN=${WARDEN_BIN:-$BIN/warden}
COMMAND="perf/synflood.sh $*"
COUNT=10000000  # SYNs per run
RATE=100000     # SYNs/s offered; 0 = as fast as the generator goes
POLICIES=none,protect
PORTS=1-65535   # destination ports of the SYNs (one port or a range)
MAX_SESSIONS=65536
UNLOADED=10     # seconds of transfer measured before the flood
TAIL=5          # seconds of transfer measured after it
BULK_MBIT=400   # cap of the transfer (0: as fast as TCP goes)
IDLE_CONNS=200  # idle established connections held through the flood, checked after it
NICE=-10        # niceness of Warden, the generator and the transfer (the machine is shared)
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
    --count) COUNT=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --policies) POLICIES=$2; shift 2 ;;
    --ports) PORTS=$2; shift 2 ;;
    --max-sessions) MAX_SESSIONS=$2; shift 2 ;;
    --unloaded) UNLOADED=$2; shift 2 ;;
    --tail) TAIL=$2; shift 2 ;;
    --bulk-mbit) BULK_MBIT=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "synflood.sh needs root" >&2; exit 1; }

GEN_CPU=0     # generator, transfer client and server
WARDEN_CPU=1  # Warden's one worker
NS_C=wsyn-c NS_M=wsyn-m NS_S=wsyn-s
CLI=198.18.0.1 SRV=198.18.0.2 PORT=5201
WORK=$(mktemp -d /tmp/wsyn.XXXXXX)
SOCK=$WORK/warden.sock
OUT=$ROOT/perf/out/synflood-$(date +%Y%m%d-%H%M%S).jsonl
PIDS=()

LOG_TAG=synflood
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"

stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}

teardown() {
    stop_pids
    delete_namespaces $NS_C $NS_M $NS_S
}
trap 'teardown; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

if [ "$BUILD" = 1 ]; then
    log "building warden, wardenctl and warden-perf (release)"
    (cd "$ROOT" && cargo build --release -q -p warden-dp -p warden-control -p warden-perf)
fi

# client ns: c0 <-veth-> wsa (Warden) ... wsb (Warden) <-veth-> s0 :server ns. Offloads off on
# the hosts, as in the e2e topology: frames on the wire are what the stacks see.
setup() {
    teardown
    for ns in $NS_C $NS_M $NS_S; do
        ip netns add "$ns"
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        in_ns "$ns" ip link set lo up
    done
    ip link add c0 netns $NS_C type veth peer name wsa netns $NS_M
    ip link add s0 netns $NS_S type veth peer name wsb netns $NS_M
    for x in "$NS_C c0 $CLI" "$NS_S s0 $SRV"; do
        set -- $x
        in_ns "$1" ip addr add "$3/24" dev "$2"
        in_ns "$1" ip link set "$2" up
        in_ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
    done
    in_ns $NS_M ip link set wsa up
    in_ns $NS_M ip link set wsb up
    # A frame Warden transmits is received by the host's stack in Warden's context (veth); the
    # hosts stand for other machines, so RPS moves their receive work to the hosts' core.
    local mask=$(printf '%x' $((1 << GEN_CPU)))
    in_ns $NS_C sh -c "echo $mask > /sys/class/net/c0/queues/rx-0/rps_cpus"
    in_ns $NS_S sh -c "echo $mask > /sys/class/net/s0/queues/rx-0/rps_cpus"
    SRV_MAC=$(in_ns $NS_S cat /sys/class/net/s0/address)
}

# Starts "$@" in the background (exec'd, so $! is the process itself) and records its PID.
spawn() {
    local log=$1; shift
    (exec "$@" </dev/null >"$log" 2>"$log.err") &
    PIDS+=($!)
    LAST_PID=$!
}

# One line of Warden's memory: unix_ns VmRSS VmHWM VmData RssFile RssShmem (KiB).
mem_line() {
    awk -v t="$(date +%s%N)" '/^VmRSS/{r=$2} /^VmHWM/{h=$2} /^VmData/{d=$2} /^RssFile/{f=$2}
        /^RssShmem/{s=$2} END{print t, r, h, d, f, s}' "/proc/$1/status"
}

# CPU time (clock ticks, user+system) of each of Warden's threads: "tid name ticks" per line.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        awk '{ sub(/^[^(]*\(/, ""); n = $0; sub(/\).*$/, "", n); sub(/^.*\) /, ""); print n, $12 + $13 }' \
            "$t/stat" 2>/dev/null | sed "s|^|$(basename "$t") |"
    done
}

# Writes Warden's thread ticks and every CPU's busy/total jiffies, with the time, to $1.
snap_cpu() {
    { echo "time $(date +%s.%N)"; thread_ticks "$2"; awk '/^cpu[0-9]/ { b = $2 + $3 + $4 + $7 + $8 + $9;
        print "cpu", $1, b, b + $5 + $6 }' /proc/stat; } >"$1"
}

# "name share; ..." of CPU between two snap_cpu files: Warden's threads (share of one core),
# then each CPU's busy share (all processes on the machine).
cpu_shares() {
    awk -v hz="$(getconf CLK_TCK)" '
        NR == FNR { if ($1 == "time") t0 = $2; else if ($1 == "cpu") { cb[$2] = $3; ct[$2] = $4 } else b[$1] = $3; next }
        $1 == "time" { dt = $2 - t0; next }
        $1 == "cpu" { printf "%s busy %.0f%%; ", $2, 100 * ($3 - cb[$2]) / (($4 - ct[$2]) > 0 ? $4 - ct[$2] : 1); next }
        ($3 - b[$1]) > 0 { printf "%s %.0f%%; ", $2, 100 * ($3 - b[$1]) / hz / dt }' "$1" "$2"
}

counters() { "$BIN/wardenctl" --socket "$SOCK" --json counters; }

# The machine may be shared (builds, tests): before each run, wait up to QUIET_WAIT s (default
# 300) for it to be less than QUIET_PCT % busy (default 25); BUSY is the figure recorded.
wait_quiet_run() {
    wait_quiet "${QUIET_PCT:-25}"
    BUSY=$BACKGROUND
}

run() {
    local policy=$1 dir=$WORK/$1
    mkdir -p "$dir"
    setup
    printf '[dataplane]\ncores = [%s]\nreport_interval = 1\n[sessions]\nmax = %s\n' \
        $WARDEN_CPU "$MAX_SESSIONS" >"$dir/warden.toml"
    local extra=()
    if [ "$policy" = protect ]; then
        # Both hosts are protect-mode workloads; only the transfer's port is allowed, so every
        # SYN of the flood (from other addresses) is denied.
        printf '%s\n' '[[workload]]' 'id = "srv"' "ips = [\"$SRV\"]" 'mode = "protect"' \
            '[[workload]]' 'id = "cli"' "ips = [\"$CLI\"]" 'mode = "protect"' \
            '[[rule]]' 'id = 1' 'from = "cli"' 'to = "srv"' 'ip_proto = "tcp"' "ports = [\"$PORT\"]" \
            'action = "allow"' >"$dir/policy.toml"
        extra=(--policy "$dir/policy.toml")
    fi
    wait_quiet_run
    local load_before busy=$BUSY
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    log "[$policy] load average $load_before, machine ${busy}% busy before starting"
    spawn "$dir/warden.log" ip netns exec $NS_M nice -n "$NICE" "$WARDEN_BIN" run --config "$dir/warden.toml" \
        --inline wsa:wsb --workers 1 --socket "$SOCK" "${extra[@]}"
    local warden=$LAST_PID
    for _ in $(seq 100); do [ -S "$SOCK" ] && counters >/dev/null 2>&1 && break; sleep 0.1; done
    counters >/dev/null || { cat "$dir/warden.log.err" >&2; return 1; }
    sleep 1
    mem_line "$warden" >"$dir/mem.txt" # before any traffic: the bound
    spawn "$dir/samples.jsonl" ip netns exec $NS_S nice -n "$NICE" taskset -c $GEN_CPU "$BIN/tcp-bulk" serve --bind "$SRV:$PORT"
    sleep 0.5
    spawn "$dir/send.log" ip netns exec $NS_C nice -n "$NICE" taskset -c $GEN_CPU "$BIN/tcp-bulk" send --to "$SRV:$PORT" \
        --rate-mbit "$BULK_MBIT"
    local sender=$LAST_PID
    spawn "$dir/idle.json" ip netns exec $NS_C nice -n "$NICE" taskset -c $GEN_CPU "$BIN/tcp-bulk" idle \
        --to "$SRV:$PORT" --conns "$IDLE_CONNS" --until "$dir/check-idle"
    local idler=$LAST_PID
    (while kill -0 "$warden" 2>/dev/null; do mem_line "$warden" >>"$dir/mem.txt"; sleep 0.5; done) &
    local sampler=$!
    log "[$policy] transfer running; measuring ${UNLOADED}s unloaded"
    sleep 2
    snap_cpu "$dir/cpu-1.txt" "$warden"
    sleep "$UNLOADED"
    counters >"$dir/counters-before.jsonl"
    snap_cpu "$dir/cpu-2.txt" "$warden"
    log "[$policy] flood: $COUNT SYNs (rate ${RATE:-0}/s, ports $PORTS)"
    in_ns $NS_C nice -n "$NICE" taskset -c $GEN_CPU "$BIN/syn-flood" --iface c0 --dst-mac "$SRV_MAC" --dst-ip $SRV \
        --dst-ports "$PORTS" --count "$COUNT" --rate "$RATE" --exclude "$CLI,$SRV" >"$dir/flood.json"
    snap_cpu "$dir/cpu-3.txt" "$warden"
    sleep "$TAIL"
    counters >"$dir/counters-after.jsonl"
    log "[$policy] CPU unloaded: $(cpu_shares "$dir/cpu-1.txt" "$dir/cpu-2.txt")"
    log "[$policy] CPU during the flood: $(cpu_shares "$dir/cpu-2.txt" "$dir/cpu-3.txt")"
    mem_line "$warden" >>"$dir/mem.txt"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    touch "$dir/check-idle"
    wait "$idler" 2>/dev/null || true
    kill -INT "$sender" 2>/dev/null || true
    sleep 1
    local rc=0
    "$BIN/synflood-report" --label "$policy" --samples "$dir/samples.jsonl" --flood "$dir/flood.json" \
        --mem "$dir/mem.txt" --counters-before "$dir/counters-before.jsonl" \
        --counters-after "$dir/counters-after.jsonl" --out "$OUT" --max-sessions "$MAX_SESSIONS" \
        --idle "$dir/idle.json" \
        --meta "{\"command\":\"$COMMAND\",\"load_average_before\":\"$load_before\",\"busy_pct_before\":$busy,\"max_sessions\":$MAX_SESSIONS,\"bulk_mbit_cap\":$BULK_MBIT,\"nice\":$NICE,\"placement\":\"generator, tcp-bulk client and server on cpu$GEN_CPU; warden worker on cpu$WARDEN_CPU\"}" \
        || rc=$?
    log "[$policy] load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    # Raw files (samples, memory, counters, flood) kept for a closer look.
    cp -r "$dir" "${OUT%.jsonl}-$policy"
    teardown
    return $rc
}

mkdir -p "$ROOT/perf/out"
status=0
for p in ${POLICIES//,/ }; do
    run "$p" || status=1
done
log "results appended to $OUT"
exit $status
