# Shared by the forwarding rig's scripts (rig.sh, cpu.sh, synflood.sh): sourced, not run.
#
# The caller sets, before sourcing:
#   LOG_TAG              prefix of log lines (`rig`, `cpu`, `synflood`)
# and, for the rig topology (rig_setup, rig_teardown, napi_to_fwd_cpu):
#   NS_GEN NS_FWD NS_SINK  the three namespaces (only ever wperf-* names)
#   BIN PIN              the release binaries' directory and the sink map's pin path
#   FWD_CPU              the forwarder's CPU
# Every function here only touches the namespaces, processes and files the caller names.

log() { echo "[$LOG_TAG] $*" >&2; }

# The rig's names and its run directory ($1: the script's name, in the directory's and the
# results file's names): NS_GEN NS_FWD NS_SINK, WORK (private: Warden refuses a socket directory
# others can write, such as /tmp), SOCK, PIN (the sink map, pinned on a bpffs of our own:
# `ip netns exec` remounts /sys, hiding /sys/fs/bpf), RESULTS, OUT; `teardown` (the forwarder
# and the namespaces) and `cleanup` on exit.
rig_init() {
    NS_GEN=wperf-gen NS_FWD=wperf-fwd NS_SINK=wperf-sink
    WORK=$(mktemp -d "/tmp/wperf-$1.XXXXXX")
    SOCK=$WORK/warden.sock
    PIN=$WORK/bpf/sink-counts
    RESULTS=$WORK/results.jsonl
    OUT=$ROOT/perf/out/$1-$(date +%Y%m%d-%H%M%S).json
    FWD_PID=
    trap rig_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Stops the forwarder and deletes the rig's namespaces and pinned files.
teardown() {
    stop_forwarder
    delete_namespaces $NS_GEN $NS_FWD $NS_SINK
    rm -f "$PIN" "$PIN-lat" "$SOCK"
}

# Everything: the rig, its bpffs and its run directory.
rig_cleanup() {
    teardown
    mountpoint -q "$WORK/bpf" && umount "$WORK/bpf"
    rm -rf "$WORK"
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Stops the process FWD_PID (SIGINT, then SIGKILL after 5 s) if it runs; clears FWD_PID.
stop_forwarder() {
    if [ -n "${FWD_PID:-}" ] && kill -0 "$FWD_PID" 2>/dev/null; then
        kill -INT "$FWD_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$FWD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$FWD_PID" 2>/dev/null || true
        wait "$FWD_PID" 2>/dev/null || true
    fi
    FWD_PID=
}

# Deletes the namespaces given as arguments, after killing what still runs in them (only what
# the script started there). Deleting a namespace deletes its veths, their peers and their XDP
# programs.
delete_namespaces() {
    local ns p
    for ns in "$@"; do
        [ -e "/run/netns/$ns" ] || continue
        for p in $(ip netns pids "$ns"); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

# Percent of all CPUs busy over one second (/proc/stat, idle and iowait excluded).
busy_pct() {
    local a b
    a=($(head -n1 /proc/stat)); sleep 1; b=($(head -n1 /proc/stat))
    local busy=0 total=0 i d
    for i in 1 2 3 4 5 6 7 8; do
        d=$((b[i] - a[i])); total=$((total + d))
        [ "$i" = 4 ] || [ "$i" = 5 ] || busy=$((busy + d))
    done
    echo $((100 * busy / (total > 0 ? total : 1)))
}

# The machine may be shared (builds, tests): waits up to QUIET_WAIT s (default 300) for it to be
# less than $1 % busy (default QUIET_PCT, else 10). BACKGROUND is then the last busy figure, to
# record beside the measurement.
wait_quiet() {
    local limit=${1:-${QUIET_PCT:-10}} waited=0
    BACKGROUND=$(busy_pct)
    while [ "$BACKGROUND" -ge "$limit" ] && [ "$waited" -lt "${QUIET_WAIT:-300}" ]; do
        log "machine ${BACKGROUND}% busy before measuring; waiting"
        sleep 4; waited=$((waited + 5))
        BACKGROUND=$(busy_pct)
    done
}

# The rig: gen ns g0 <-veth-> wpa in the fwd ns; fwd ns wpb <-veth-> s0 in the sink ns; the
# sink program on s0 (it also makes s0 accept frames redirected into wpb: a veth needs an XDP
# program or GRO on the receiving peer for ndo_xdp_xmit). $1: queues of each veth (default 1).
# Sets DST_MAC (s0's address) and GEN_QUEUES.
rig_setup() {
    local q=${1:-1}
    for ns in $NS_GEN $NS_FWD $NS_SINK; do
        ip netns add "$ns"
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        in_ns "$ns" ip link set lo up
    done
    local qs="numtxqueues $q numrxqueues $q"
    ip link add g0 $qs netns $NS_GEN type veth peer name wpa $qs netns $NS_FWD
    ip link add s0 $qs netns $NS_SINK type veth peer name wpb $qs netns $NS_FWD
    in_ns $NS_GEN ip link set g0 up
    in_ns $NS_SINK ip link set s0 up
    in_ns $NS_FWD ip link set wpa up
    in_ns $NS_FWD ip link set wpb up
    in_ns $NS_SINK "$BIN/xdp-sink" attach s0 --pin "$PIN"
    DST_MAC=$(in_ns $NS_SINK cat /sys/class/net/s0/address)
    GEN_QUEUES=$q
}

# Moves wpa's rx NAPI (created by GRO or an XDP program on it) into a kernel thread pinned to
# FWD_CPU, so that in-kernel forwarding runs on the forwarder's core, not in the generator's
# softirq. veth only queues an skb to the peer's NAPI (rather than to the backlog of the sending
# CPU) when it is eligible for GRO: with TSO off on the sender, g0. NAPI_TIDS lists the threads.
napi_to_fwd_cpu() {
    in_ns $NS_GEN ethtool -K g0 tso off >/dev/null
    in_ns $NS_FWD ethtool -K wpa gro on >/dev/null
    echo 1 | in_ns $NS_FWD tee /sys/class/net/wpa/threaded >/dev/null
    sleep 0.2
    NAPI_TIDS=$(pgrep -x "napi/wpa-[0-9]+" || true)
    [ -n "$NAPI_TIDS" ] || { log "no NAPI thread for wpa"; return 1; }
    for p in $NAPI_TIDS; do taskset -pc $FWD_CPU "$p" >/dev/null; done
}

# Starts the forwarder `$2...` (log $WORK/$1.log) in NS_FWD pinned to FWD_CPU; FWD_PID is the
# forwarder itself (ip netns exec and taskset exec). Fails (WHY says why) when it has exited
# after WAIT s (default 3).
start_forwarder() {
    local name=$1 rc=0; shift
    (exec ip netns exec $NS_FWD taskset -c $FWD_CPU "$@" </dev/null >"$WORK/$name.log" 2>&1) &
    FWD_PID=$!
    sleep "${WAIT:-3}"
    kill -0 "$FWD_PID" 2>/dev/null && return 0
    wait "$FWD_PID" || rc=$?
    FWD_PID=
    WHY="$name exited with status $rc: $(grep -v '^ *$' "$WORK/$name.log" | tail -n 3 | tr '\n' ' ')"
    log "$name log:"; tail -n 20 "$WORK/$name.log" >&2
    return 1
}
