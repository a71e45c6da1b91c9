#!/usr/bin/env bash
# slurm-cluster.sh: a private single-node Slurm cluster on this machine, for tests and for
# trying launch/slurm.sbatch without a real cluster. Everything lives in one directory:
#   launch/slurm-cluster.sh start DIR   writes DIR/slurm.conf (one node: this host as
#                                       slurmd -C sees it; one partition, "work"), a
#                                       private MUNGE key, and starts munged, slurmctld and
#                                       slurmd as root with state, spool, logs and PID files
#                                       in DIR, on free ports (not Slurm's 6817/6818)
#   launch/slurm-cluster.sh stop DIR    cancels the cluster's jobs, waits for them to end,
#                                       stops the three daemons by the PIDs recorded in DIR
#                                       and checks that none of its processes is left
#   launch/slurm-cluster.sh status DIR  the daemons' PIDs and sinfo
# Then use the cluster with its configuration:  export SLURM_CONF=DIR/slurm.conf
# Needs root and the Debian packages slurm-wlm and munge (launch/setup.sh slurm-wlm munge).
# Exit status: 0 done, 2 usage error, 3 the cluster could not be started (the reason and the
# end of the daemon's log are printed; whatever was started is stopped again), 1 stop left
# something running.
set -euo pipefail

usage() {
    echo "usage: launch/slurm-cluster.sh start|stop|status DIR" >&2
    exit 2
}
[ $# = 2 ] || usage
CMD=$1
DIR=$2
case $CMD in start | stop | status) ;; *) usage ;; esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
MUNGE_SOCKET=$DIR/munge/munge.socket
DAEMONS=(slurmd slurmctld munged) # in stopping order

say() { echo "slurm-cluster: $*"; }
err() { echo "slurm-cluster: error: $*" >&2; }
STARTED=0 # set once this invocation starts a daemon: a failed start then stops it again

# alive NAME: the PID recorded for daemon NAME, if that process still runs it (the PID file
# is ours; the command line must still name this cluster, so a reused PID is never touched).
alive() {
    local f=$DIR/run/$1.pid pid args
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    args=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $args == *"$DIR/"* ]] || return 1
    echo "$pid"
}

# stop_daemon NAME: SIGTERM to its PID, then SIGKILL after 15 s; waits until it is gone.
stop_daemon() {
    local name=$1 pid i
    pid=$(alive "$name") || { rm -f "$DIR/run/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (PID $pid) still running 15 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$DIR/run/$name.pid"
}

# leftovers: PIDs of processes that belong to this cluster: their command line or working
# directory is inside DIR (the daemons, job step daemons, and jobs submitted from DIR).
# This script and its subshells (same command line) do not count.
leftovers() {
    local p args cwd self
    self=$(tr '\0' ' ' 2>/dev/null <"/proc/$$/cmdline") || self=
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        args=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
        [ -n "$args" ] || continue # kernel threads
        [ "$args" != "$self" ] || continue
        cwd=$(readlink "/proc/$p/cwd" 2>/dev/null) || cwd=
        if [[ $args == *"$DIR/"* ]] || [[ $cwd == "$DIR" ]] || [[ $cwd == "$DIR/"* ]]; then
            echo "$p"
        fi
    done
}

stop_cluster() {
    local jobs i left
    cd / # this script is no process of DIR
    if alive slurmctld >/dev/null; then
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ') || jobs=
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
        fi
        # Wait until no job is left and the node is no longer completing (job steps ended).
        for ((i = 0; i < 300; i++)); do
            jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) || break
            if [ -z "$jobs" ] && ! timeout 10 sinfo -h -o %T 2>/dev/null | grep -q 'comp\|alloc\|mix'; then
                break
            fi
            sleep 0.1
        done
        [ "$i" -lt 300 ] || say "jobs still running after 30 s: $jobs"
    fi
    for d in "${DAEMONS[@]}"; do stop_daemon "$d"; done
    left=$(leftovers | tr '\n' ' ')
    if [ -n "${left// /}" ]; then
        err "processes of the cluster are still running:"
        # shellcheck disable=SC2086
        ps -o pid,ppid,etime,args -p ${left// /,} >&2 || true
        return 1
    fi
    say "stopped; no process of $DIR is left"
}

# port_free PORT: nothing listens on TCP PORT (IPv4 or IPv6).
port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! awk -v h="$hex" '$4 == "0A" { split($2, a, ":"); if (a[2] == h) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
    local secs=$1 what=$2 i; shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    err "$what: not within $secs s"
    return 1
}

# cannot_start MESSAGE [LOG]: show the end of LOG, stop what this invocation started, exit 3.
cannot_start() {
    err "$1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        echo "--- end of $2:" >&2
        tail -15 "$2" >&2
    fi
    if [ "$STARTED" = 1 ]; then stop_cluster >&2 || true; fi
    exit 3
}

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }
ctld_up() { scontrol ping | grep -q 'is UP'; }
node_idle() { [ "$(sinfo -h -n "$NODE" -o %T | sort -u)" = idle ]; }

start_cluster() {
    local cmd missing=() p port1 port2 nodeline
    if [ "$(id -u)" != 0 ]; then cannot_start "must run as root (the daemons run as root here)"; fi
    for cmd in munged mungekey munge unmunge slurmctld slurmd scontrol sinfo squeue sbatch; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        cannot_start "missing ${missing[*]}; install with: launch/setup.sh slurm-wlm munge"
    fi
    if alive slurmctld >/dev/null || alive slurmd >/dev/null || alive munged >/dev/null; then
        cannot_start "a cluster is already running in $DIR (launch/slurm-cluster.sh stop $DIR)"
    fi
    id munge >/dev/null 2>&1 || cannot_start "no user 'munge' (is the munge package installed?)"
    # The daemons (and the job step daemons slurmd starts) work in DIR, not in the caller's
    # directory: no directory elsewhere is kept busy, and stop finds them all there.
    cd "$DIR"
    rm -rf "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log" "$DIR/munge"
    # munged refuses directories that others may write; it runs as user munge.
    chown munge: "$DIR/munge"
    chmod 755 "$DIR/munge"

    # Two free ports next to each other, away from Slurm's defaults.
    port1=
    for ((p = 20000 + RANDOM % 20000; p < 65000; p += 2)); do
        if port_free "$p" && port_free $((p + 1)); then port1=$p; break; fi
    done
    [ -n "$port1" ] || cannot_start "no free pair of TCP ports found"
    port2=$((port1 + 1))

    # This node as slurmd sees it (name, CPUs, sockets, cores, threads, memory).
    nodeline=$(slurmd -C | head -1)
    [[ $nodeline == NodeName=* ]] || cannot_start "slurmd -C did not describe this node: $nodeline"
    NODE=${nodeline%% *}
    NODE=${NODE#NodeName=}
    cat >"$CONF" <<EOF
# A private single-node cluster written by launch/slurm-cluster.sh; everything under $DIR.
ClusterName=dptrain
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$port1
SlurmdPort=$port2
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.slurm.pid
SlurmdPidFile=$DIR/run/slurmd.slurm.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
$nodeline NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=work Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    setpriv --reuid=munge --regid=munge --init-groups -- mungekey --create --bits=1024 \
        --keyfile="$DIR/munge/munge.key" >"$DIR/log/mungekey.log" 2>&1 ||
        cannot_start "mungekey could not create a key" "$DIR/log/mungekey.log"
    # Each daemon runs in the foreground (-F, -D) as a background child, so $! is its PID.
    STARTED=1
    setpriv --reuid=munge --regid=munge --init-groups -- munged -F --socket="$MUNGE_SOCKET" \
        --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        </dev/null >>"$DIR/log/munged.out" 2>&1 &
    echo $! >"$DIR/run/munged.pid"
    wait_for 10 "munged answering on $MUNGE_SOCKET" munge_works ||
        cannot_start "munged did not start" "$DIR/log/munged.out"

    slurmctld -D -c -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
    echo $! >"$DIR/run/slurmctld.pid"
    wait_for 20 "slurmctld answering scontrol ping" ctld_up ||
        cannot_start "slurmctld did not start" "$DIR/log/slurmctld.log"

    slurmd -D -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
    echo $! >"$DIR/run/slurmd.pid"
    wait_for 30 "node $NODE idle" node_idle ||
        cannot_start "slurmd did not register node $NODE" "$DIR/log/slurmd.log"
    say "up: node $NODE ($(sinfo -h -n "$NODE" -o '%c CPUs'), partition work;" \
        "munged $(alive munged), slurmctld $(alive slurmctld), slurmd $(alive slurmd))"
    say "use it with: export SLURM_CONF=$CONF"
}

case $CMD in
start) start_cluster ;;
stop) stop_cluster ;;
status)
    for d in munged slurmctld slurmd; do
        if pid=$(alive "$d"); then echo "$d: PID $pid"; else echo "$d: not running"; fi
    done
    if alive slurmctld >/dev/null; then sinfo; fi
    ;;
esac
