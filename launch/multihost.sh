#!/usr/bin/env bash
# multihost.sh: runs dptrain on N "hosts" made on this one machine: N network namespaces,
# each with a veth link to one Linux bridge (in a namespace of its own), Open MPI over TCP
# between them, optionally rate-limited like a real NIC. Needs root.
#
#   launch/multihost.sh [options] [run] -- DPTRAIN_ARGS...   dptrain DPTRAIN_ARGS across the hosts
#   launch/multihost.sh [options] check                      2 hosts vs 1 host: same weights?
#   launch/multihost.sh [options] bench [-- BENCH_ARGS...]   allreduce time/bandwidth, with and
#                                                            without a rate limit
#   launch/multihost.sh [options] cleanup                    remove what a crashed run left
#
# See usage() below for the options. Every namespace (and with it every veth and the bridge)
# is removed when the script ends, on success, failure, Ctrl-C or SIGTERM; leftovers of an
# earlier run that was killed with SIGKILL are removed at the start. Nothing is added to the
# root namespace: no interface, no address, no route. The namespaces' only interface besides
# lo is their veth, with an address in a private /24 and no default route, so no packet can
# leave for any other address.
# shellcheck disable=SC2054  # commas in layer specs (784,256,128,10) are dptrain's syntax
# shellcheck disable=SC2016  # sh -c '... "$0" ... "$@"' is expanded by that sh, on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
AGENT=$ROOT/launch/netns-rsh.sh

# ---- options and their defaults ----------------------------------------------------------
HOSTS=2               # namespaces ("hosts")
RPH=1                 # MPI ranks per host
RATE=""               # tc rate per host and direction (e.g. 1gbit); empty = unlimited
BURST=""              # tbf bucket (tc units); empty = 4 ms at RATE, at least 512 KiB
LATENCY=10ms          # tbf: longest a packet may wait in the queue (sets the queue length)
PREFIX=dpt            # names: PREFIX-sw (the switch), PREFIX-h0, PREFIX-h1, ...
SUBNET=10.77.0        # the hosts are SUBNET.1, SUBNET.2, ... /24
BTL=tcp,self          # Open MPI transports between ranks
TIMEOUT=0             # seconds for each mpirun (0 = none); check uses 120 when 0
WORKDIR=""            # scratch (hostfile, check/bench files); default: a temporary directory
KEEP=0                # keep WORKDIR
DPTRAIN=${DPTRAIN:-$ROOT/build/dptrain}
CMD=""
ARGS=()

usage() {
    cat <<EOF
usage: launch/multihost.sh [options] [run] -- DPTRAIN_ARGS...
       launch/multihost.sh [options] check
       launch/multihost.sh [options] bench [-- BENCH_ARGS...]
       launch/multihost.sh [--prefix P] cleanup

Runs dptrain across N network namespaces on this machine ("hosts" SUBNET.1 .. SUBNET.N,
joined by a bridge), Open MPI over TCP, mpirun on the first host. Needs root.

  run       mpirun -np HOSTS*RANKS_PER_HOST dptrain DPTRAIN_ARGS (exit status is mpirun's)
  check     trains a small synthetic model on HOSTS hosts (also under --rate, default 1gbit),
            on one host with plain mpirun (same rank count) and with 1 rank; the models must
            match (bit for bit at 2 ranks), every host must have sent its gradients over the
            bridge, and another --seed must not match (negative control). Exit 1 on failure.
  bench     dptrain bench across the hosts without and with --rate (default 1gbit), and on
            one host with plain mpirun, and prints allreduce time and bus bandwidth
  cleanup   removes the namespaces of PREFIX and the processes still in them

  --hosts N            hosts (namespaces)                               [$HOSTS]
  --ranks-per-host R   MPI ranks on each host                           [$RPH]
  --rate RATE          tc tbf rate per host and direction, e.g. 1gbit   [unlimited]
  --burst SIZE         tbf bucket size, e.g. 1mb              [4 ms at RATE, >= 512 KiB]
  --latency TIME       tbf queue: longest wait before a drop            [$LATENCY]
  --btl LIST           Open MPI BTLs (e.g. tcp,self,vader for R > 1)    [$BTL]
  --dptrain PATH       the dptrain binary (or \$DPTRAIN)                 [build/dptrain]
  --prefix P           namespace names P-sw, P-h0, ... (one run per P)  [$PREFIX]
  --subnet A.B.C       the hosts' private /24                           [$SUBNET]
  --timeout SEC        kill each mpirun after SEC s (0: run never,      [$TIMEOUT]
                       check and bench 120)
  --workdir DIR        scratch directory (kept)                         [a temporary one]
  --keep               keep the temporary scratch directory
EOF
}

die() { local code=$1; shift; echo "multihost.sh: $*" >&2; exit "$code"; }
log() { echo "multihost: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --hosts) HOSTS=${2:?}; shift 2 ;;
        --ranks-per-host) RPH=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --burst) BURST=${2:?}; shift 2 ;;
        --latency) LATENCY=${2:?}; shift 2 ;;
        --btl) BTL=${2:?}; shift 2 ;;
        --dptrain) DPTRAIN=${2:?}; shift 2 ;;
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --subnet) SUBNET=${2:?}; shift 2 ;;
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --workdir) WORKDIR=${2:?}; KEEP=1; shift 2 ;;
        --keep) KEEP=1; shift ;;
        run|check|bench|cleanup)
            [ -z "$CMD" ] || die 2 "two commands: $CMD and $1"
            CMD=$1; shift ;;
        --) shift; ARGS=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die 2 "unknown argument '$1'" ;;
    esac
done

# ---- checks of the options ------------------------------------------------------------
if [ -z "$CMD" ]; then
    [ ${#ARGS[@]} -gt 0 ] || { usage >&2; die 2 "nothing to do: give run -- ARGS, check, bench or cleanup"; }
    CMD=run
fi
[ "$CMD" != run ] || [ ${#ARGS[@]} -gt 0 ] || die 2 "run needs -- DPTRAIN_ARGS"
if ! [[ $HOSTS =~ ^[0-9]+$ ]] || [ "$HOSTS" -lt 1 ] || [ "$HOSTS" -gt 64 ]; then die 2 "--hosts must be 1..64"; fi
[ "$CMD" != check ] || [ "$HOSTS" -ge 2 ] || die 2 "check needs --hosts 2 or more"
if ! [[ $RPH =~ ^[0-9]+$ ]] || [ "$RPH" -lt 1 ] || [ "$RPH" -gt 64 ]; then die 2 "--ranks-per-host must be 1..64"; fi
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die 2 "--timeout must be a number of seconds"
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,11}$ ]] || die 2 "--prefix must be a lower-case word of at most 12 letters/digits"
# Only private address space (RFC 1918), so the test network can never shadow a real one.
[[ $SUBNET =~ ^(10\.[0-9]{1,3}|192\.168|172\.(1[6-9]|2[0-9]|3[01]))\.[0-9]{1,3}$ ]] \
    || die 2 "--subnet must be the first three numbers of a private /24 (10.x.y, 172.16-31.y, 192.168.y)"
[ -z "$RATE" ] || [[ $RATE =~ ^[0-9.]+([kmgt]?bit|[kmgt]?bps)$ ]] \
    || die 2 "--rate must be a tc rate such as 100mbit or 1gbit"
[ "$(id -u)" = 0 ] || die 1 "needs root (network namespaces, veth, bridge, tc)"
command -v ip >/dev/null || die 1 "needs ip (iproute2)"
if [ "$CMD" != cleanup ]; then
    command -v mpirun >/dev/null || die 1 "needs mpirun (openmpi-bin)"
    [ -x "$DPTRAIN" ] || die 1 "no dptrain binary at $DPTRAIN (build it, or give --dptrain PATH)"
    DPTRAIN=$(readlink -f "$DPTRAIN")
    [[ $AGENT != *" "* ]] || die 1 "the agent path '$AGENT' has a space; Open MPI would split it"
    [ -x "$AGENT" ] || die 1 "the agent $AGENT is missing or not executable"
fi
NP=$((HOSTS * RPH))
NS_SW=$PREFIX-sw
NS_H0=$PREFIX-h0
NET=$SUBNET.0/24
addr_of() { echo "$SUBNET.$(($1 + 1))"; }   # host i -> its address
MAP=""                                        # "ADDR=NS ..." for the agent
for ((i = 0; i < HOSTS; i++)); do MAP+="$(addr_of "$i")=$PREFIX-h$i "; done

# ---- one run per prefix at a time ---------------------------------------------------------
# The lock makes "namespaces of PREFIX exist" mean "an earlier run crashed", so removing them
# at the start cannot break a live run. Children must not hold it: every command that may
# outlive us runs with the descriptor closed.
exec {LOCK_FD}>"/run/lock/dptrain-multihost-$PREFIX.lock"
if ! flock -n "$LOCK_FD"; then
    log "another multihost run with prefix '$PREFIX' is active; waiting for it (up to 10 min)"
    flock -w 600 "$LOCK_FD" || die 1 "gave up waiting for the other run (prefix '$PREFIX'); use --prefix"
fi

# ---- teardown: processes first, then the namespaces (which takes veths and bridge along) ---
ours() {   # the namespaces named like ours: PREFIX-sw, PREFIX-h<i>
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-(sw|h[0-9]+)\$" || true
}
inside() {   # inside NAMESPACE...: the processes in these namespaces, one per line
    local ns
    for ns in "$@"; do ip netns pids "$ns" 2>/dev/null || true; done
}
teardown() {
    local names=() pids=() ns t
    mapfile -t names < <(ours)
    [ ${#names[@]} -gt 0 ] || return 0
    # Whatever still runs inside (mpirun, orted, ranks of a run that failed or was killed):
    # SIGTERM, 2 s, SIGKILL.
    mapfile -t pids < <(inside "${names[@]}")
    if [ ${#pids[@]} -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for t in 1 2 3 4 5 6 7 8 9 10; do
            mapfile -t pids < <(inside "${names[@]}")
            [ ${#pids[@]} -gt 0 ] || break
            sleep 0.2
        done
        if [ ${#pids[@]} -gt 0 ]; then kill -KILL "${pids[@]}" 2>/dev/null || true; fi
    fi
    for ns in "${names[@]}"; do
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
    [ -z "$(ours)" ] || log "warning: namespaces left: $(ours | tr '\n' ' ')"
}
# Open MPI session directories of our hosts' names (TMPDIR/ompi.<address>.<uid>/pid.<mpirun
# pid>) that a killed mpirun could not remove; only those whose mpirun is gone.
clean_session_dirs() {
    local d top
    for d in "${TMPDIR:-/tmp}/ompi.$SUBNET".*".$(id -u)"/pid.*; do
        [ -d "$d" ] || continue
        kill -0 "${d##*/pid.}" 2>/dev/null || rm -rf "$d"
    done
    for top in "${TMPDIR:-/tmp}/ompi.$SUBNET".*".$(id -u)"; do
        if [ -d "$top" ]; then rmdir "$top" 2>/dev/null || true; fi
    done
}

if [ "$CMD" = cleanup ]; then
    left=$(ours)
    teardown
    clean_session_dirs
    log "removed: $(tr '\n' ' ' <<<"${left:-nothing}")"
    exit 0
fi

# ---- scratch directory, exit and signal handling ----------------------------------------------
if [ -n "$WORKDIR" ]; then
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
else
    WORKDIR=$(mktemp -d /tmp/dptrain-multihost.XXXXXX)
fi
CHILD=""          # the mpirun running in the background (so signals reach us at once)
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    clean_session_dirs
    if [ "$KEEP" = 0 ]; then rm -rf "$WORKDIR"; fi
    exit "$rc"
}
# SIGINT/SIGTERM: ask mpirun with SIGUSR1, which it passes to every rank on every host as it
# is: dptrain train stops after the current step, writes a checkpoint and exits 3 (a SIGTERM
# to mpirun would kill its own ranks 1 s later, before the ranks on the other hosts have
# heard of it, and leave no checkpoint). After 10 s, SIGTERM; teardown kills what is left.
on_signal() {
    local t rc=0 target
    if [ -n "$CHILD" ]; then
        # CHILD is mpirun, or `timeout` (--timeout) with mpirun as its child: GNU timeout
        # passes on SIGTERM but dies of SIGUSR1, so that goes to mpirun itself.
        target=$CHILD
        if [ "$(ps -o comm= -p "$CHILD" 2>/dev/null)" = timeout ]; then
            target=$(pgrep -P "$CHILD" | head -1 || true)
        fi
        log "$1: asking the ranks to stop (SIGUSR1 to mpirun)"
        kill -USR1 "${target:-$CHILD}" 2>/dev/null || true
        for t in $(seq 100); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$CHILD" 2>/dev/null; then
            log "$1: mpirun still runs after 10 s: SIGTERM"
            kill -TERM "$CHILD" 2>/dev/null || true
            for t in $(seq 30); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
        fi
        wait "$CHILD" 2>/dev/null || rc=$?
        log "$1: mpirun exited $rc (3: dptrain train stopped with a checkpoint; --resume auto continues)"
    fi
    exit "$2"
}
trap on_exit EXIT
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM

# ---- the network --------------------------------------------------------------------------
# PREFIX-sw holds bridge br0 and one veth end v<i> per host; host PREFIX-h<i> holds the other
# end, named eth0, with address SUBNET.<i+1>/24, and lo.
setup_net() {
    local i ns
    ip netns add "$NS_SW"
    ip -n "$NS_SW" link set lo up
    ip -n "$NS_SW" link add br0 type bridge stp_state 0 forward_delay 0
    ip -n "$NS_SW" link set br0 up
    for ((i = 0; i < HOSTS; i++)); do
        ns=$PREFIX-h$i
        ip netns add "$ns"
        ip -n "$NS_SW" link add "v$i" type veth peer name eth0 netns "$ns"
        ip -n "$NS_SW" link set "v$i" master br0
        ip -n "$NS_SW" link set "v$i" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$(addr_of "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

# burst_for RATE: the tbf bucket: 4 ms worth of RATE, at least 512 KiB. Measured between 2
# hosts (dptrain bench, allreduce of 0.94 MB alone; one bulk TCP stream reached 0.95 of the
# rate with any bucket): at 1gbit a 64 KB bucket gave 0.38 Gbit/s of bus bandwidth, 256 KB
# 0.64, 500 KB to 4 MB 0.92-0.95 (line rate less TCP/IP headers); at 100mbit 50 KB gave
# 0.050 Gbit/s, 256 KB 0.065, 500 KB to 2 MB 0.0955; a longer queue (--latency) did not
# help. Larger buckets never beat the rate with back-to-back allreduces. A bucket refills
# while the link is idle (compute), which a real link cannot do: an allreduce right after
# compute can gain up to min(bucket, idle time x rate) bytes, about 75 KB for the 0.6 ms of
# compute per step of the bench network at 1gbit.
burst_for() {
    awk -v r="$1" 'BEGIN {
        match(r, /^[0-9.]+/); v = substr(r, 1, RLENGTH); u = substr(r, RLENGTH + 1)
        m["bit"] = 1 / 8; m["kbit"] = 1e3 / 8; m["mbit"] = 1e6 / 8; m["gbit"] = 1e9 / 8; m["tbit"] = 1e12 / 8
        m["bps"] = 1; m["kbps"] = 1e3; m["mbps"] = 1e6; m["gbps"] = 1e9; m["tbps"] = 1e12
        b = v * m[u] * 0.004; if (b < 524288) b = 524288
        printf "%db\n", b }'
}

# set_rate RATE|"": a token bucket on both ends of every veth: host -> bridge (eth0) and
# bridge -> host (v<i>), so each host has a full-duplex link of RATE. "" removes it.
set_rate() {
    local rate=$1 i burst=$BURST
    if [ -n "$rate" ] && [ -z "$burst" ]; then burst=$(burst_for "$rate"); fi
    for ((i = 0; i < HOSTS; i++)); do
        if [ -n "$rate" ]; then
            ip netns exec "$PREFIX-h$i" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency "$LATENCY"
            ip netns exec "$NS_SW" tc qdisc replace dev "v$i" root tbf rate "$rate" burst "$burst" latency "$LATENCY"
        else
            ip netns exec "$PREFIX-h$i" tc qdisc del dev eth0 root 2>/dev/null || true
            ip netns exec "$NS_SW" tc qdisc del dev "v$i" root 2>/dev/null || true
        fi
    done
}

# bridge_rx_bytes I: bytes host I has sent into the bridge (v<i> receives what eth0 sends).
# (ip netns exec mounts the namespace's own /sys.)
bridge_rx_bytes() { ip netns exec "$NS_SW" cat "/sys/class/net/v$1/statistics/rx_bytes"; }

# ---- running MPI ---------------------------------------------------------------------------
HOSTFILE=$WORKDIR/hostfile
write_hostfile() {
    local i
    : >"$HOSTFILE"
    for ((i = 0; i < HOSTS; i++)); do echo "$(addr_of "$i") slots=$RPH" >>"$HOSTFILE"; done
}

# in_bg CMD...: runs CMD in the background and waits for it, so that SIGINT/SIGTERM reach our
# trap at once (bash runs traps only between foreground commands); returns CMD's status.
in_bg() {
    local rc=0
    "$@" {LOCK_FD}>&- &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# mh_mpirun PROGRAM_ARGS...: dptrain across the hosts. mpirun runs on host 0 and starts orted
# on the others through the agent. Each host also gets a UTS namespace whose hostname is its
# address (the agent does the same): Open MPI tells nodes apart by hostname. With this
# machine's one name for all of them, 2 hosts x 1 rank worked, but 2 hosts x 2 ranks
# segfaulted in MPI_Comm_split_type (in ob1 over tcp), and with the vader BTL the
# shared-memory segments of the hosts (/dev/shm/vader_segment.<hostname>...) collided.
# --bind-to none: every orted thinks it has the whole machine and would pin its first rank
# to core 0, so all hosts would share one core.
mh_mpirun() {
    local sec=$TIMEOUT limit=()
    if [ "$CMD" != run ] && [ "$sec" = 0 ]; then sec=120; fi
    if [ "$sec" -gt 0 ]; then limit=(timeout -k 5 "$sec"); fi
    in_bg env DPTRAIN_NETNS_MAP="$MAP" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        ip netns exec "$NS_H0" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$(addr_of 0)" \
        "${limit[@]}" mpirun --hostfile "$HOSTFILE" -np "$NP" --bind-to none \
        --mca plm_rsh_agent "$AGENT" --mca plm_rsh_args "" --mca plm_rsh_no_tree_spawn 1 \
        --mca orte_keep_fqdn_hostnames 1 \
        --mca btl "$BTL" --mca btl_tcp_if_include "$NET" --mca oob_tcp_if_include "$NET" \
        --mca mpi_yield_when_idle 1 \
        "$DPTRAIN" "$@"
}
# local_mpirun N PROGRAM_ARGS...: plain mpirun on this machine (shared memory), for reference.
local_mpirun() {
    local n=$1 sec=$TIMEOUT; shift
    if [ "$sec" = 0 ]; then sec=120; fi
    in_bg env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        timeout -k 5 "$sec" mpirun --oversubscribe -np "$n" "$DPTRAIN" "$@"
}

describe() {
    local i hosts=""
    for ((i = 0; i < HOSTS; i++)); do hosts+="$PREFIX-h$i=$(addr_of "$i") "; done
    local rate=${1:-unlimited}
    if [ -n "$1" ]; then rate+=" (tbf burst ${BURST:-$(burst_for "$1")} latency $LATENCY)"; fi
    log "$HOSTS hosts x $RPH rank(s): ${hosts}bridge $NS_SW/br0, rate $rate, btl $BTL"
}

# ---- start: remove leftovers, build the network ----------------------------------------------
left=$(ours)
if [ -n "$left" ]; then
    log "removing leftovers of an earlier run: $(tr '\n' ' ' <<<"$left")"
    teardown
fi
setup_net
write_hostfile

# ---- run ------------------------------------------------------------------------------------
if [ "$CMD" = run ]; then
    set_rate "$RATE"
    describe "$RATE"
    rc=0
    mh_mpirun "${ARGS[@]}" || rc=$?
    exit "$rc"
fi

# ---- check ----------------------------------------------------------------------------------
N_PASS=0
N_FAIL=0
pass() { echo "ok: $*"; N_PASS=$((N_PASS + 1)); }
fail() { echo "FAIL: $*"; N_FAIL=$((N_FAIL + 1)); }

# compare_models A B NAME EXPECT [TOLERANCE...]: dptrain compare A B; EXPECT is match or differ.
compare_models() {
    local a=$1 b=$2 name=$3 expect=$4 out rc=0 worst line
    shift 4
    if [ ! -f "$a" ] || [ ! -f "$b" ]; then
        fail "$name: no model to compare ($( [ -f "$a" ] || echo "$a" ) $( [ -f "$b" ] || echo "$b" ))"
        return 0
    fi
    out=$("$DPTRAIN" compare "$a" "$b" "$@" 2>&1) || rc=$?
    # "differ" must be a real difference (exit 1 and DIFFERENT), not a file that failed to load.
    if [ "$rc" = 1 ] && ! grep -q '^DIFFERENT' <<<"$out"; then rc=2; fi
    worst=$(grep -o 'max |a-b| [0-9.e+-]*' <<<"$out" | sort -k3 -g | tail -1 || true)
    while IFS= read -r line; do echo "    $line"; done <<<"$out"
    if [ "$rc" = 0 ] && [ "$expect" = match ]; then pass "$name (${worst:-?})"
    elif [ "$rc" = 1 ] && [ "$expect" = differ ]; then pass "$name (${worst:-?})"
    elif [ "$rc" = 0 ]; then fail "$name: the models match, they must differ"
    else fail "$name: compare exit $rc (expected $expect)"; fi
}

# train_mh NAME ARGS...: trains across the hosts into WORKDIR/NAME (output in NAME.log);
# checks that every rank was started (dptrain's first line says "NP ranks (RPH on this
# node)") and that every host sent at least one float per parameter per step into the bridge
# (so the gradients did go over it).
train_mh() {
    local name=$1 i before=() sent rc=0 log=$WORKDIR/$1.log
    shift
    for ((i = 0; i < HOSTS; i++)); do before[i]=$(bridge_rx_bytes "$i"); done
    mh_mpirun "$@" --out "$WORKDIR/$name" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        fail "$name: mpirun across $HOSTS hosts exited $rc"; tail -15 "$log" | sed 's/^/    /'
        return 0
    fi
    if grep -q "^dptrain .*: $NP ranks ($RPH on this node)" "$log"; then
        pass "$name: dptrain reports $NP ranks, $RPH on its node"
    else
        fail "$name: dptrain does not report $NP ranks with $RPH on its node"; head -3 "$log" | sed 's/^/    /'
    fi
    for ((i = 0; i < HOSTS; i++)); do
        sent=$(( $(bridge_rx_bytes "$i") - before[i] ))
        if [ "$sent" -ge "$MIN_BYTES" ]; then pass "$name: host $i sent $sent bytes into the bridge (>= $MIN_BYTES)"
        else fail "$name: host $i sent only $sent bytes into the bridge (< $MIN_BYTES: gradients not exchanged)"; fi
    done
}

if [ "$CMD" = check ]; then
    CHECK_RATE=${RATE:-1gbit}
    describe "unlimited, then $CHECK_RATE"
    "$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 610 --n-test 90 --noise 0.5 \
        --seed 3 --out "$WORKDIR/blobs.h5" >/dev/null
    # targs SEED: the training run (as tests/mpi/ranks.sh): 13 steps per epoch (the last one
    # 10 rows), 52 in all; one BLAS thread, so the ranks of all hosts (2 cores in all here)
    # do not oversubscribe the machine.
    targs() {
        TARGS=(train --data "$WORKDIR/blobs.h5" --layers 8,16,16,3 --activation tanh --batch 50
               --epochs 4 --lr 0.1 --momentum 0.9 --seed "$1" --threads 1 --checkpoint-epochs 0)
    }
    N_PARAMS=$((8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3))
    MIN_BYTES=$((52 * N_PARAMS * 4))   # each allreduce sends at least the whole gradient
    TOL=(--atol 1e-5 --rtol 1e-4)      # as tests/mpi/ranks.sh: summation order only

    targs 11
    set_rate ""
    train_mh hosts "${TARGS[@]}"
    set_rate "$CHECK_RATE"
    train_mh hosts_rate "${TARGS[@]}"
    LAST=$PREFIX-h$((HOSTS - 1))
    sent=$(ip netns exec "$LAST" tc -s qdisc show dev eth0 | grep -A1 '^qdisc tbf' | grep -o 'Sent [0-9]*' | grep -o '[0-9]*' || true)
    if [ -n "$sent" ] && [ "$sent" -ge "$MIN_BYTES" ]; then
        pass "hosts_rate: $LAST sent $sent bytes through its $CHECK_RATE token bucket"
    else
        fail "hosts_rate: no tbf qdisc with traffic on $LAST eth0 ('${sent}')"
    fi
    set_rate "$RATE"
    targs 12                            # negative control: another seed
    train_mh hosts_seed12 "${TARGS[@]}"
    targs 11
    local_mpirun "$NP" "${TARGS[@]}" --out "$WORKDIR/local_np$NP" --quiet >/dev/null \
        || fail "plain mpirun -np $NP failed"
    local_mpirun 1 "${TARGS[@]}" --out "$WORKDIR/local_np1" --quiet >/dev/null \
        || fail "plain mpirun -np 1 failed"

    H=$WORKDIR/hosts/model.h5
    if [ "$NP" = 2 ]; then
        # 2 ranks: every element of the allreduce is a + b, and float addition is commutative,
        # so whatever algorithm and transport Open MPI picks the sums are the same bits.
        compare_models "$H" "$WORKDIR/local_np$NP/model.h5" \
            "$HOSTS hosts x $RPH rank == 1 host x $NP ranks, bit for bit" match
    else
        compare_models "$H" "$WORKDIR/local_np$NP/model.h5" \
            "$HOSTS hosts x $RPH ranks == 1 host x $NP ranks (within 1e-5 + 1e-4 rel)" match "${TOL[@]}"
    fi
    compare_models "$H" "$WORKDIR/local_np1/model.h5" \
        "$HOSTS hosts x $RPH ranks == 1 rank (within 1e-5 + 1e-4 rel)" match "${TOL[@]}"
    compare_models "$WORKDIR/hosts_rate/model.h5" "$H" \
        "under --rate $CHECK_RATE == unlimited, bit for bit" match
    compare_models "$WORKDIR/hosts_seed12/model.h5" "$WORKDIR/local_np$NP/model.h5" \
        "negative control: --seed 12 across the hosts differs from --seed 11" differ "${TOL[@]}"
    echo "$N_PASS passed, $N_FAIL failed"
    [ "$N_FAIL" = 0 ] || exit 1
    exit 0
fi

# ---- bench ----------------------------------------------------------------------------------
# csv_show FILE LABEL: for every row of a dptrain bench CSV (header line first; fields may
# be quoted and hold commas, e.g. "784,256,128,10"), prints LABEL and the columns of the
# bench contract, found by name.
csv_show() {
    awk -v label="$2" '
        function split_csv(line, f,    n, i, c, q, cur) {
            n = 0; cur = ""; q = 0
            for (i = 1; i <= length(line); i++) {
                c = substr(line, i, 1)
                if (c == "\"") { q = !q; continue }
                if (c == "," && !q) { f[++n] = cur; cur = ""; continue }
                cur = cur c
            }
            f[++n] = cur
            return n
        }
        function get(f, name) { return (name in col) ? f[col[name]] : "?" }
        {
            n = split_csv($0, f)
            if (f[1] == "label" || !seen) {          # a header line (again after an append)
                if (f[1] == "label") { for (i = 1; i <= n; i++) col[f[i]] = i; seen = 1 }
                next
            }
            printf "%-28s %-10s %14s %12s %14s %9s\n", label, get(f, "allreduce"),
                get(f, "allreduce_ms_alone"), get(f, "allreduce_busbw_gbps"),
                get(f, "samples_per_s"), get(f, "step_ms")
        }' "$1"
}

if [ "$CMD" = bench ]; then
    BENCH_RATE=${RATE:-1gbit}
    if [ ${#ARGS[@]} -eq 0 ]; then
        # All hosts share this machine's cores: each rank gets cores / ranks BLAS threads (each
        # orted would otherwise count the whole machine for its own ranks).
        ARGS=(--layers 784,256,128,10 --batch 128 --steps 50 --warmup 5 --repeats 3
              --threads "$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))")
    fi
    if "$DPTRAIN" bench --help >/dev/null 2>&1; then
        describe "unlimited, then $BENCH_RATE"
        rm -f "$WORKDIR"/bench-*.csv
        set_rate ""
        mh_mpirun bench --label "hosts-${HOSTS}x$RPH-unlimited" "${ARGS[@]}" --csv "$WORKDIR/bench-hosts.csv"
        set_rate "$BENCH_RATE"
        mh_mpirun bench --label "hosts-${HOSTS}x$RPH-$BENCH_RATE" "${ARGS[@]}" --csv "$WORKDIR/bench-hosts-rate.csv"
        set_rate "$RATE"
        local_mpirun "$NP" bench --label "local-$NP" "${ARGS[@]}" --csv "$WORKDIR/bench-local.csv"
        echo
        echo "dptrain bench ${ARGS[*]}"
        printf "%-28s %-10s %14s %12s %14s %9s\n" where allreduce allreduce_ms_alone busbw_gbps samples_per_s step_ms
        csv_show "$WORKDIR/bench-hosts.csv" "${HOSTS}x$RPH hosts, unlimited"
        csv_show "$WORKDIR/bench-hosts-rate.csv" "${HOSTS}x$RPH hosts, $BENCH_RATE"
        csv_show "$WORKDIR/bench-local.csv" "1 host x $NP (shared mem)"
        if [ "$KEEP" = 1 ]; then echo "(CSV files in $WORKDIR)"; fi
        exit 0
    fi

    # No `dptrain bench`: estimate the allreduce from training runs of the same network on
    # synthetic data (784 features, 10 classes, 50 steps per epoch, 3 epochs; the median
    # epoch's samples/s). Across the hosts a step is local compute on B/NP rows plus one
    # allreduce of the gradient; one rank on one host computes all B rows with no allreduce.
    # So allreduce ~ t_step(hosts) - t_step(1 rank)/NP, and bus bandwidth = bytes x
    # 2(NP-1)/NP / time. Compute does not split perfectly, so this is an estimate.
    log "dptrain bench is not available ($DPTRAIN bench --help fails): estimating from training runs"
    describe "unlimited, then $BENCH_RATE"
    "$DPTRAIN" synth blobs --features 784 --classes 10 --n-train 6400 --n-test 128 --noise 1 \
        --seed 5 --out "$WORKDIR/wide.h5" >/dev/null
    PARAMS=$((784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10))
    BYTES=$((PARAMS * 4))
    FARGS=(train --data "$WORKDIR/wide.h5" --layers 784,256,128,10 --activation relu --batch 128
           --epochs 3 --lr 0.01 --seed 1 --threads 1 --checkpoint-epochs 0 --quiet)
    step_ms() {   # step_ms RUNDIR: median epoch's ms per step from metrics.jsonl
        grep -o '"samples_per_s":[0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2 | sort -g \
            | awk '{ v[NR] = $1 } END { printf "%.3f", 128 * 1000 / v[int((NR + 1) / 2)] }'
    }
    local_mpirun 1 "${FARGS[@]}" --out "$WORKDIR/f_np1" >/dev/null
    set_rate ""
    mh_mpirun "${FARGS[@]}" --out "$WORKDIR/f_hosts" >/dev/null
    set_rate "$BENCH_RATE"
    mh_mpirun "${FARGS[@]}" --out "$WORKDIR/f_hosts_rate" >/dev/null
    set_rate "$RATE"
    local_mpirun "$NP" "${FARGS[@]}" --out "$WORKDIR/f_local" >/dev/null
    t1=$(step_ms "$WORKDIR/f_np1")
    echo
    echo "estimate from training (no dptrain bench): 784,256,128,10, batch 128, $PARAMS parameters ($BYTES bytes)"
    printf "%-28s %10s %14s %14s\n" where ms_per_step allreduce_ms busbw_gbps
    printf "%-28s %10s %14s %14s\n" "1 rank (no allreduce)" "$t1" - -
    for r in "f_local:1 host x $NP (shared mem)" "f_hosts:${HOSTS}x$RPH hosts, unlimited" \
             "f_hosts_rate:${HOSTS}x$RPH hosts, $BENCH_RATE"; do
        t=$(step_ms "$WORKDIR/${r%%:*}")
        awk -v t="$t" -v t1="$t1" -v np="$NP" -v b="$BYTES" -v label="${r#*:}" 'BEGIN {
            ar = t - t1 / np; bw = (ar > 0) ? b * 2 * (np - 1) / np * 8 / (ar / 1000) / 1e9 : 0
            printf "%-28s %10.3f %14.3f %14.2f\n", label, t, ar, bw }'
    done
    exit 0
fi
