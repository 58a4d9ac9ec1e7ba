#!/usr/bin/env bash
# CPU that follows the load (issue 16): the forwarder's CPU at fixed offered rates, per leg, on
# the rig of rig.sh (gen -> [A | forwarder | B] -> sink), with the one-way latency the sink
# measures from the generator's stamps. See perf/README.md ("CPU at fixed rates"). Needs root.
# Only creates (and always deletes) namespaces named wperf-*; traffic is 198.18.0.1 ->
# 198.19.0.1 and never leaves them.
#
#   perf/cpu.sh [--legs bridge,redirect,testpmd,warden,warden2,warden_busy,warden_fast] [--rates 30000,1%,10%,50%,90%,100%]
#               [--capacity PPS] [--duration 10] [--size 64] [--spin-us N] [--profile] [--no-build]
#   perf/cpu.sh --report perf/out/cpu-<date>.json      # print a run's table again
#
# A rate with % is a share of the capacity: the sink rate of the `warden` leg sending all out
# (measured first, unless --capacity gives it); 100% sends all out. Every forwarding leg runs
# all its work on cpu1: wpa's receive NAPI is a kernel thread pinned there (threaded NAPI) in
# every leg, and the bridge / XDP redirect run in it, Warden's worker is pinned there too (its
# socket's receive copy runs in that NAPI thread). The generator runs alone on cpu0. The
# forwarding CPU of a leg is its threads' CPU time (/proc/<tid>/schedstat, ns): the NAPI thread,
# plus the worker in Warden legs; cpu1's busy share from /proc/stat is printed beside it (tick
# sampling: it misses most of a load that runs in bursts of microseconds).
#
# --profile samples FWD_CPU with `perf record -g` during every point (from 2 s into it, for
# duration - 3 s) and splits each forwarding thread's time per frame delivered (µs): its user
# space, its transmit system calls (the copy-mode XSK transmit builds an skb per frame and runs
# veth's transmit), the softirq work run inside them (the receiving veth's NAPI: on a veth the
# receiver's work runs on the sender's core), receive calls and sleeps (`profile` in the JSON
# row; needs perf, Debian package linux-perf).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WARDEN_BIN=${WARDEN_BIN:-$BIN/warden}
COMMAND="perf/cpu.sh $*"
LEGS=bridge,redirect,testpmd,warden,warden2,warden_busy,warden_fast
RATES=30000,1%,10%,50%,90%,100%
CAPACITY=
DURATION=10
SIZE=64
SPIN_US=
PROFILE=0
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
    --legs) LEGS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --capacity) CAPACITY=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --spin-us) SPIN_US=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --report) REPORT=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
GEN_CPU=0
FWD_CPU=1
# Prints the table of a results file ($1: perf/out/cpu-*.json).
report() {
    python3 - "$1" "$FWD_CPU" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
rows, capacity, fwd = doc["rows"], doc.get("capacity_pps", 0), int(sys.argv[2])

def cpu(r):
    """The forwarding threads' CPU (share of one core, /proc/<tid>/schedstat): the NAPI
    thread, plus the worker in Warden legs."""
    return sum(r.get("tasks", {}).values())

def wt(t):
    """The worker's own split of its wall time over the run (warm-up included)."""
    wall = sum(t.get(k, 0) for k in ("busy_ns", "spin_ns", "sleep_ns"))
    if not wall:
        return "-"
    return "/".join(f"{100 * t.get(k, 0) / wall:.0f}" for k in ("busy_ns", "spin_ns", "sleep_ns"))

def busy_per_mframe(r):
    """The user-space forwarder's busy CPU-seconds per million frames, by its own count:
    testpmd's `--record-core-cycles` (cycles of loops that received frames), Warden's `busy`
    time (loops that did work); None for the kernel legs, whose figure is the NAPI thread's."""
    b = r.get("fwd_busy") or {}
    if b.get("frames"):
        return b["busy_ns"] / b["frames"] / 1e3
    w = r.get("warden_time") or {}
    if w.get("frames"):
        return w["busy_ns"] / w["frames"] / 1e3
    return None

bridge = {r["rate"]: cpu(r) for r in rows if r["leg"] == "bridge"}
head = ["leg", "rate/s", "offered/s", "sink/s", "loss%", "fwd CPU%", "worker%", "napi%", "x bridge",
        "cpu-s/Mframe", "napi s/M", "fwd busy s/M", "cpu1% (ticks)", "p50us", "p99us", "p99.9us", "w:busy/spin/sleep%", "w:sleeps/s", "bg%"]
table = [head]
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
for r in rows:
    t = r.get("tasks", {})
    sink = r.get("sink_pps") or 0
    c = cpu(r)
    b = bridge.get(r["rate"])
    w = r.get("warden_time") or {}
    table.append([
        r["leg"], "all out" if r["rate"] == 0 else str(r["rate"]), f(r["offered_pps"], 0), f(sink, 0),
        f(100 * (1 - sink / r["offered_pps"]) if r["offered_pps"] else None, 2),
        f(100 * c), f(100 * sum(v for k, v in t.items() if k.startswith("worker"))) if "worker" in t else "-", f(100 * t["napi"]) if "napi" in t else "-",
        f(c / b, 2) if b else "-", f(c / sink * 1e6 if sink else None, 2),
        f(t["napi"] / sink * 1e6 if sink and "napi" in t else None, 2), f(busy_per_mframe(r), 2),
        f(100 * r["cpu_busy"][fwd]),
        f(r.get("lat_p50_us"), 0), f(r.get("lat_p99_us"), 0), f(r.get("lat_p999_us"), 0),
        wt(w), f(w.get("sleeps", 0) / (r["secs"] + 1), 0) if w else "-",
        str(r.get("busy_pct_before", "-")),
    ])
w = [max(len(row[i]) for row in table) for i in range(len(head))]
for row in table:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip())
print(f"\ncapacity (warden all out): {capacity:.0f} frames/s; results in {sys.argv[1]}")
PY
}

if [ -n "${REPORT:-}" ]; then
    report "$REPORT"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "cpu.sh needs root" >&2; exit 1; }

LOG_TAG=cpu
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"
rig_init cpu

if [ "$BUILD" = 1 ]; then
    log "building warden-perf, warden and wardenctl (release)"
    (cd "$ROOT" && cargo build --release -q -p warden-perf -p warden-dp -p warden-control)
fi
mkdir -p "$WORK/bpf" && mount -t bpf wperf-bpf "$WORK/bpf"

# The rig's namespaces and veth pairs (perf/lib.sh); $1: queues of each veth (default 1).
setup() {
    teardown
    rig_setup "${1:-1}"
}

# The workers' time counters summed over workers (wardenctl counters: busy, spin, sleep, CPU,
# sleeps, frames), or {}.
warden_time() {
    [ -S "$SOCK" ] && [ -x "$BIN/wardenctl" ] || { echo '{}'; return; }
    "$BIN/wardenctl" --socket "$SOCK" --json counters 2>/dev/null | jq -c -s '[.[] | select(.worker != null) | .time]
        | reduce .[] as $t ({}; reduce ($t | to_entries[] | select(.value | type == "number")) as $e (.; .[$e.key] += $e.value))' \
        || echo '{}'
}

# Splits the samples of FWD_CPU in perf data $1 by thread into µs per frame at $2 frames/s
# delivered (JSON: {thread: {total, user, transmit, softirq, receive, poll}}): the
# share of the core a thread's samples took, over the frames delivered per second.
profile_split() {
    perf report -i "$1" --children --sort comm,dso,sym -g none --stdio -q 2>/dev/null | python3 -c '
import json, re, sys
pps = float(sys.argv[1]) or 1.0
out = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
    if not m:
        continue
    children, own, comm, dso, kind, sym = float(m[1]), float(m[2]), re.sub(r"-\d+$", "", m[3]), m[4], m[5], m[6]
    t = out.setdefault(comm, {"total": 0.0, "user": 0.0, "transmit": 0.0, "softirq": 0.0, "receive": 0.0, "poll": 0.0})
    t["total"] += own
    if kind == ".":
        t["user"] += own
    named = {"__sys_sendto": "transmit", "__sys_recvfrom": "receive", "do_sys_poll": "poll"}
    if sym in named:
        t[named[sym]] += children
    if sym == "net_rx_action":
        t["softirq"] = max(t["softirq"], children)
# percent of one core -> µs per frame
res = {c: {k: round(v / 100 / pps * 1e6, 3) for k, v in t.items()} for c, t in out.items() if t["total"] >= 1.0}
print(json.dumps(res))
' "$2"
}

# Runs the generator once at rate $2 (0: all out) for leg $1, watching WATCH (NAME=TID ...); for
# Warden legs, also the worker's own accounting over the run (wardenctl counters, before/after:
# it includes the 1 s warm-up).
measure() {
    local leg=$1 rate=$2 r t0 t1
    t0=$(warden_time)
    local prof= prof_pid=
    if [ "$PROFILE" = 1 ]; then
        prof=$WORK/$leg-$rate.perf.data
        (sleep 2; exec perf record -q -C $FWD_CPU -g -o "$prof" -- sleep $((DURATION - 3)) 2>/dev/null) &
        prof_pid=$!
    fi
    r=$(in_ns $NS_GEN taskset -c $GEN_CPU "$BIN/xdp-gen" --iface g0 --size "$SIZE" --warmup 1 \
        --duration "$DURATION" --runs 1 --rate "$rate" --dst-mac "$DST_MAC" --sink-pin "$PIN" \
        --queues "${GEN_QUEUES:-1}" $WATCH)
    t1=$(warden_time)
    if [ -n "$prof" ]; then
        wait "$prof_pid" || true
        r=$(jq -c --argjson p "$(profile_split "$prof" "$(jq -r .sink_pps <<<"$r")")" '. + {profile: $p}' <<<"$r")
        log "$leg at $rate/s, per frame (µs): $(jq -c .profile <<<"$r")"
    fi
    r=$(jq -c --argjson a "${t0:-{\}}" --argjson b "${t1:-{\}}" \
        '. + {warden_time: ($b | with_entries(select(.value | type == "number") | .value -= ($a[.key] // 0)))}' <<<"$r")
    log "$leg at $rate/s: $(jq -c '{offered_pps, sink_pps, cpu_busy, tasks, lat_p50_us, lat_p99_us}' <<<"$r")"
    jq -c --arg leg "$leg" --arg rate "$rate" --arg bg "$BACKGROUND" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        '. + {leg: $leg, rate: ($rate | tonumber), busy_pct_before: ($bg | tonumber), loadavg: $load}' \
        <<<"$r" >>"$RESULTS"
}

# The rates to offer: `N` frames/s, or `P%` of CAPACITY (100% = all out, rate 0).
rates() {
    local r
    for r in ${RATES//,/ }; do
        case $r in
        100%) echo 0 ;;
        *%) echo $(( ${CAPACITY%.*} * ${r%\%} / 100 )) ;;
        *) echo "$r" ;;
        esac
    done
}

watch_napi() {
    local t
    WATCH=
    for t in $NAPI_TIDS; do WATCH+=" --watch napi=$t"; done
}

leg_bridge() {
    setup
    in_ns $NS_FWD ip link add br0 type bridge
    in_ns $NS_FWD ip link set wpa master br0
    in_ns $NS_FWD ip link set wpb master br0
    in_ns $NS_FWD ip link set br0 up
    napi_to_fwd_cpu
    watch_napi
    for rate in $(rates); do wait_quiet; measure bridge "$rate"; done
}

leg_redirect() {
    setup
    in_ns $NS_FWD "$BIN/xdp-redirect" wpa wpb
    napi_to_fwd_cpu
    watch_napi
    for rate in $(rates); do wait_quiet; measure redirect "$rate"; done
}

# Warden with one worker on FWD_CPU; $1 leg name, $2 the [dataplane] lines of its poll setting.
warden_leg() {
    local leg=$1 poll=$2
    setup
    printf '[dataplane]\ncores = [%s]\n%b\n' $FWD_CPU "$poll" >"$WORK/warden.toml"
    if ! start_forwarder "$leg" "$WARDEN_BIN" run --config "$WORK/warden.toml" --inline wpa:wpb \
        --workers 1 --socket "$SOCK"; then
        log "$leg skipped"
        return
    fi
    napi_to_fwd_cpu
    local w
    w=$(grep -lx 'warden-w0' /proc/"$FWD_PID"/task/*/comm | head -n1 | cut -d/ -f5)
    [ -n "$w" ] || { log "no warden-w0 thread"; stop_forwarder; return; }
    watch_napi
    WATCH+=" --watch worker=$w"
}

# DPDK's testpmd, io forwarding over AF_XDP sockets on wpa and wpb (net_af_xdp, copy mode), on
# FWD_CPU with wpa's NAPI thread, started anew for every rate: `--record-core-cycles` makes it
# print its busy cycles (TSC cycles of loops that forwarded something) when it stops, the
# counterpart of Warden's own `busy` time.
leg_testpmd() {
    command -v dpdk-testpmd >/dev/null || { log "testpmd skipped: dpdk-testpmd not installed (apt install dpdk dpdk-dev librte-net-af-xdp23)"; return; }
    local rate
    for rate in $(rates); do
        setup
        # Before testpmd starts: it busy-polls its core, so the machine is never quiet after.
        wait_quiet
        if ! start_forwarder testpmd dpdk-testpmd --lcores "0@$FWD_CPU,1@$FWD_CPU" --main-lcore 0 \
            --no-pci --no-huge --no-shconf --file-prefix wperf -m 512 \
            --vdev net_af_xdp0,iface=wpa,start_queue=0,queue_count=1 \
            --vdev net_af_xdp1,iface=wpb,start_queue=0,queue_count=1 \
            -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384 \
            --record-core-cycles --auto-start --stats-period=100; then
            log "testpmd skipped"; return
        fi
        napi_to_fwd_cpu
        watch_napi
        local tid
        tid=$( (grep -lx 'lcore-worker-1\|rte-worker-1\|dpdk-worker1' /proc/"$FWD_PID"/task/*/comm || true) | head -n1 | cut -d/ -f5)
        if [ -n "$tid" ]; then WATCH+=" --watch worker=$tid"; else log "testpmd threads: $(cat /proc/"$FWD_PID"/task/*/comm | tr '\n' ' ')"; fi
        measure testpmd "$rate"
        stop_forwarder
        # "CPU cycles/packet=C (busy cycles=B / total ... packets=P) at M MHz Clock"
        local line
        line=$(grep -a 'CPU cycles/packet' "$WORK/testpmd.log" | tail -n1 || true)
        log "testpmd: ${line:-no cycles line}"
        TESTPMD_CYCLES_LINE=$line python3 - "$RESULTS" <<'PY'
import json, os, re, sys
line = os.environ["TESTPMD_CYCLES_LINE"]
rows = open(sys.argv[1]).read().splitlines()
last = json.loads(rows[-1])
m = re.search(r"cycles=(\d+) / total.*?packets=(\d+)\) at (\d+) MHz", line)
if m:
    busy, pkts, mhz = (int(g) for g in m.groups())
    last["fwd_busy"] = {"busy_ns": busy * 1000 // mhz, "frames": pkts, "source": "testpmd --record-core-cycles"}
last["testpmd_cycles"] = line.strip()
rows[-1] = json.dumps(last)
open(sys.argv[1], "w").write("\n".join(rows) + "\n")
PY
    done
}

leg_warden() {
    warden_leg warden "poll = \"adaptive\"\nfast_path = false${SPIN_US:+\nspin_us = $SPIN_US}"
    [ -n "$FWD_PID" ] || return 0
    for rate in $(rates); do wait_quiet; measure warden "$rate"; done
    stop_forwarder
}

# Two workers on two queues (both veths with two queues; the generator sends one flow on each
# queue, the one Warden's owner hash gives to that queue's worker, so nothing is handed over):
# worker 0 on FWD_CPU, worker 1 on GEN_CPU beside the generator (a 2-core machine has no third
# core), both of wpa's NAPI threads on FWD_CPU. The figures are the sums over both workers.
leg_warden2() {
    setup 2
    printf '[dataplane]\ncores = [%s, %s]\npoll = "adaptive"\nfast_path = false\n' $FWD_CPU $GEN_CPU >"$WORK/warden.toml"
    if ! start_forwarder warden2 "$WARDEN_BIN" run --config "$WORK/warden.toml" --inline wpa:wpb \
        --workers 2 --socket "$SOCK"; then
        log "warden2 skipped"
        return
    fi
    napi_to_fwd_cpu
    local w0 w1
    w0=$( (grep -lx 'warden-w0' /proc/"$FWD_PID"/task/*/comm || true) | head -n1 | cut -d/ -f5)
    w1=$( (grep -lx 'warden-w1' /proc/"$FWD_PID"/task/*/comm || true) | head -n1 | cut -d/ -f5)
    [ -n "$w0" ] && [ -n "$w1" ] || { log "no warden-w0/w1 threads"; stop_forwarder; return; }
    watch_napi
    WATCH+=" --watch worker=$w0 --watch worker1=$w1"
    for rate in $(rates); do wait_quiet; measure warden2 "$rate"; done
    stop_forwarder
}

leg_warden_busy() {
    # Once, before Warden starts: its worker busy-polls, so the machine is never quiet after.
    wait_quiet
    warden_leg warden_busy 'poll = "busy"\nfast_path = false'
    [ -n "$FWD_PID" ] || return 0
    for rate in $(rates); do measure warden_busy "$rate"; done
    stop_forwarder
}

# Warden with the XDP fast path (issue 16): the generator's flow is offloaded after its first
# datagram and redirected in the kernel, in wpa's NAPI thread (watched, on cpu1).
leg_warden_fast() {
    warden_leg warden_fast "poll = \"adaptive\"\nfast_path = true"
    [ -n "$FWD_PID" ] || return 0
    for rate in $(rates); do wait_quiet; measure warden_fast "$rate"; done
    stop_forwarder
}

# Capacity: the warden leg all out (unless given).
if [ -z "$CAPACITY" ] && grep -q % <<<"$RATES"; then
    warden_leg warden "poll = \"adaptive\"\nfast_path = false${SPIN_US:+\nspin_us = $SPIN_US}"
    [ -n "$FWD_PID" ] || { log "warden does not start: no capacity"; exit 1; }
    wait_quiet
    r=$(in_ns $NS_GEN taskset -c $GEN_CPU "$BIN/xdp-gen" --iface g0 --size "$SIZE" --warmup 1 \
        --duration "$DURATION" --runs 1 --dst-mac "$DST_MAC" --sink-pin "$PIN")
    CAPACITY=$(jq -r '.sink_pps | floor' <<<"$r")
    stop_forwarder
    log "capacity (warden, all out): $CAPACITY frames/s"
fi
CAPACITY=${CAPACITY:-0}

for leg in redirect bridge testpmd warden warden2 warden_busy warden_fast; do
    case ",$LEGS," in *",$leg,"*) "leg_$leg" ;; esac
done
teardown

mkdir -p "$(dirname "$OUT")"
jq -s --arg c "$COMMAND" --argjson cap "$CAPACITY" '{command: $c, capacity_pps: $cap, rows: .}' "$RESULTS" >"$OUT"
report "$OUT"
