#!/usr/bin/env bash
# Warden forwarding rig: gen -> [A | forwarder | B] -> sink, one leg per forwarder and frame
# size. See perf/README.md. Needs root. Only creates (and always deletes) namespaces named
# wperf-*; traffic is 198.18.0.1 -> 198.19.0.1 and never leaves them.
#
#   perf/rig.sh [--only bridge,redirect,testpmd,warden,warden_policy,warden_fast] [--sizes 64,1500] [--duration 5]
#               [--runs 3] [--no-install] [--no-build]
# Environment: WARDEN_BIN (the warden binary of the warden legs), WARDEN_TOML (TOML appended to
# their config, e.g. '[metrics]\nlisten = "127.0.0.1:9597"' to measure a feature's cost),
# WARDEN_CAPTURE (arguments of `wardenctl capture start` run once the warden leg is up, e.g.
# '--duration 3600 --max-size 4000000000 --snaplen 128 -w rig', with [capture] dir and
# max_disk_bytes in WARDEN_TOML; `capture list` is logged at the end of the leg).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WARDEN_BIN=${WARDEN_BIN:-$BIN/warden}
COMMAND="perf/rig.sh $*"
LEGS=bridge,redirect,testpmd,warden,warden_policy,warden_fast
SIZES=64,1500
DURATION=5
RUNS=3
INSTALL=1
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
    --only) LEGS=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "rig.sh needs root" >&2; exit 1; }

GEN_CPU=0 # the generator (and the veth rx work its sends trigger in softirq)
FWD_CPU=1 # the forwarder: bridge/redirect NAPI thread, testpmd or warden
LOG_TAG=rig
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"
rig_init rig

if [ "$INSTALL" = 1 ]; then
    need=()
    command -v ethtool >/dev/null || need+=(ethtool)
    command -v ip >/dev/null || need+=(iproute2)
    command -v jq >/dev/null || need+=(jq)
    command -v dpdk-testpmd >/dev/null || need+=(dpdk dpdk-dev)
    [ -e /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_af_xdp.so ] || need+=(librte-net-af-xdp23)
    command -v clang >/dev/null || need+=(clang)
    [ -e /usr/include/bpf/libbpf.h ] || need+=(libbpf-dev libelf-dev)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    fi
fi
if [ "$BUILD" = 1 ]; then
    log "building warden-perf (release)"
    (cd "$ROOT" && cargo build --release -q -p warden-perf)
fi
mkdir -p "$WORK/bpf" && mount -t bpf wperf-bpf "$WORK/bpf"

# The rig's namespaces and veth pairs (perf/lib.sh), once the machine is quiet.
setup() {
    teardown
    wait_quiet
    rig_setup 1
}

# Runs the generator for every size; $1 leg, $2 placement text, $3 note.
measure() {
    local leg=$1 placement=$2 note=${3:-} size
    for size in ${SIZES//,/ }; do
        local r
        r=$(in_ns $NS_GEN taskset -c $GEN_CPU "$BIN/xdp-gen" --iface g0 --size "$size" --warmup 1 \
            --duration "$DURATION" --runs "$RUNS" --dst-mac "$DST_MAC" --sink-pin "$PIN")
        log "$leg $size B: $(jq -c '[.runs[] | {offered_pps, sink_pps}]' <<<"$r")"
        jq -c --arg leg "$leg" --arg p "$placement" --arg n "$note" --arg bg "$BACKGROUND" \
            '. + {leg: $leg, placement: $p, note: $n, busy_pct_before: ($bg | tonumber)}' \
            <<<"$r" >>"$RESULTS"
    done
}

skip() {
    local leg=$1 why=$2 size
    log "$leg skipped: $why"
    for size in ${SIZES//,/ }; do
        jq -nc --arg leg "$leg" --arg s "$size" --arg why "$why" \
            '{leg: $leg, size: ($s | tonumber), skipped: $why}' >>"$RESULTS"
    done
}

# Starts a user-space forwarder ($2...) in the fwd namespace pinned to FWD_CPU, logging to
# $WORK/$1.log. If it is dead after $WAIT seconds, sets WHY and returns non-zero.
leg_bridge() {
    setup
    in_ns $NS_FWD ip link add br0 type bridge
    in_ns $NS_FWD ip link set wpa master br0
    in_ns $NS_FWD ip link set wpb master br0
    in_ns $NS_FWD ip link set br0 up
    napi_to_fwd_cpu
    measure bridge "gen cpu$GEN_CPU; bridge in wpa's threaded NAPI on cpu$FWD_CPU"
}

leg_redirect() {
    setup
    in_ns $NS_FWD "$BIN/xdp-redirect" wpa wpb
    napi_to_fwd_cpu
    measure redirect "gen cpu$GEN_CPU; XDP redirect in wpa's threaded NAPI on cpu$FWD_CPU"
}

leg_testpmd() {
    command -v dpdk-testpmd >/dev/null || { skip testpmd "dpdk-testpmd not installed"; return; }
    setup
    # --no-huge --no-shconf: no hugepages, no shared runtime files (--in-memory needs hugepages). lcore 0 (main, idle while
    # forwarding) and lcore 1 (io forwarding) both on FWD_CPU. One queue per port.
    if ! start_forwarder testpmd dpdk-testpmd --lcores "0@$FWD_CPU,1@$FWD_CPU" --main-lcore 0 \
        --no-pci --no-huge --no-shconf --file-prefix wperf -m 512 --log-level=pmd.net.af_xdp:info \
        --vdev net_af_xdp0,iface=wpa,start_queue=0,queue_count=1 \
        --vdev net_af_xdp1,iface=wpb,start_queue=0,queue_count=1 \
        -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384 --auto-start --stats-period=10; then
        skip testpmd "$WHY"
        return
    fi
    measure testpmd "gen cpu$GEN_CPU (+wpa rx softirq); testpmd io fwd cpu$FWD_CPU" \
        "net_af_xdp copy mode, no hugepages"
    stop_forwarder
}

leg_warden() {
    [ -x "$WARDEN_BIN" ] || {
        skip warden "no $WARDEN_BIN (build it: cargo build --release -p warden-dp)"
        return
    }
    setup
    # Warden pins its workers itself (default: cores 0..workers), so taskset alone is not enough.
    # Full inspection of every frame: the fast path off (the generator's flow would qualify).
    printf '[dataplane]\ncores = [%s]\nfast_path = false\n%b\n' $FWD_CPU "${WARDEN_TOML:-}" >"$WORK/warden.toml"
    if ! start_forwarder warden "$WARDEN_BIN" run --config "$WORK/warden.toml" --inline wpa:wpb \
        --workers 1 --socket "$SOCK"; then
        skip warden "$WHY"
        return
    fi
    if [ -n "${WARDEN_CAPTURE:-}" ]; then
        # shellcheck disable=SC2086 # the arguments are words on purpose
        if ! "$BIN/wardenctl" --socket "$SOCK" capture start $WARDEN_CAPTURE >&2; then
            skip warden "wardenctl capture start $WARDEN_CAPTURE failed"
            stop_forwarder
            return
        fi
    fi
    measure warden "gen cpu$GEN_CPU (+wpa rx softirq); warden cpu$FWD_CPU" "--workers 1, cores = [$FWD_CPU]${WARDEN_CAPTURE:+, capture $WARDEN_CAPTURE}"
    [ -n "${WARDEN_CAPTURE:-}" ] && "$BIN/wardenctl" --socket "$SOCK" capture list >&2
    stop_forwarder
}

# Warden with the XDP fast path (issue 16): the generator's flow (one-way UDP, app unknown after
# its first datagram) is offloaded and redirected in the kernel by Warden's XDP program, like the
# redirect leg, so wpa's receive NAPI (where that runs) moves to the forwarder's core as there.
leg_warden_fast() {
    [ -x "$WARDEN_BIN" ] || {
        skip warden_fast "no $WARDEN_BIN (build it: cargo build --release -p warden-dp)"
        return
    }
    setup
    printf '[dataplane]\ncores = [%s]\nfast_path = true\n%b\n' $FWD_CPU "${WARDEN_TOML:-}" >"$WORK/warden.toml"
    if ! start_forwarder warden_fast "$WARDEN_BIN" run --config "$WORK/warden.toml" --inline wpa:wpb \
        --workers 1 --socket "$SOCK"; then
        skip warden_fast "$WHY"
        return
    fi
    napi_to_fwd_cpu
    measure warden_fast "gen cpu$GEN_CPU; Warden's XDP fast path in wpa's threaded NAPI on cpu$FWD_CPU, worker cpu$FWD_CPU" \
        "--workers 1, fast_path = true"
    stop_forwarder
}

# Warden with a policy of 1000 rules: both ends are protect-mode workloads, 999 rules about
# other addresses and ports come first, and the rule allowing the generator's flow is last.
leg_warden_policy() {
    [ -x "$WARDEN_BIN" ] || {
        skip warden-policy "no $WARDEN_BIN (build it: cargo build --release -p warden-dp)"
        return
    }
    setup
    printf '[dataplane]\ncores = [%s]\nfast_path = false\n%b\n' $FWD_CPU "${WARDEN_TOML:-}" >"$WORK/warden.toml"
    python3 - "$WORK/policy.toml" <<'PY'
import sys
out = ['[[workload]]\nid = "gen"\nips = ["198.18.0.1"]\nmode = "protect"\n',
       '[[workload]]\nid = "sink"\nips = ["198.19.0.1"]\nmode = "protect"\n']
for i in range(1, 1000):
    a, b = (i >> 8) & 0xff, i & 0xff
    out.append(f'[[rule]]\nid = {i}\nfrom = "198.18.{a}.{b}/32"\nto = "198.19.{b}.0/24"\n'
               f'ip_proto = "{"tcp" if i % 2 else "udp"}"\nports = ["{1000 + i}", "{20000 + i}-{20010 + i}"]\n'
               f'action = "{"deny" if i % 3 == 0 else "allow"}"\n')
out.append('[[rule]]\nid = 1000\nfrom = "gen"\nto = "sink"\nip_proto = "udp"\nports = ["9"]\naction = "allow"\n')
open(sys.argv[1], "w").write("\n".join(out))
PY
    if ! start_forwarder warden-policy "$WARDEN_BIN" run --config "$WORK/warden.toml" --inline wpa:wpb \
        --workers 1 --socket "$SOCK" --policy "$WORK/policy.toml"; then
        skip warden-policy "$WHY"
        return
    fi
    measure warden-policy "gen cpu$GEN_CPU (+wpa rx softirq); warden cpu$FWD_CPU" \
        "--workers 1, 1000 rules, both ends protect-mode workloads"
    stop_forwarder
}

# The ceiling first, so the others have a ratio.
for leg in redirect bridge testpmd warden warden_policy warden_fast; do
    case ",$LEGS," in *",$leg,"*) "leg_$leg" ;; esac
done
teardown

mkdir -p "$(dirname "$OUT")"
"$BIN/rig-report" --results "$RESULTS" --out "$OUT" --previous-dir "$ROOT/perf/out" \
    --command "$COMMAND"
