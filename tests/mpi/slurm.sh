#!/usr/bin/env bash
# slurm.sh: launch/slurm.sbatch on a real single-node Slurm cluster, started for this test
# by launch/slurm-cluster.sh (munged, slurmctld and slurmd from Debian's munge and
# slurm-wlm, installed if missing; configuration, state, logs and PIDs in the scratch
# directory; stopped by PID on every exit path, and nothing of it may be left running).
# For each launcher (mpirun, and srun --mpi=pmix): a job submitted with training options
# as arguments, from a directory without runs/, writes its output in the submit directory;
# preempted with SIGUSR1 (scancel --signal=USR1 --batch) while it trains, it stops with a
# checkpoint (exit 3), requeues itself, starts again and resumes; its final weights equal
# an uninterrupted run's bit for bit. Every wait is a polling loop with a deadline.
# Exits 77 (skipped) only when Slurm cannot be installed or its daemons do not come up.
#   bash tests/mpi/slurm.sh DPTRAIN_BINARY SCRATCH_DIR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# A cluster left running in the scratch directory by an earlier, killed run is stopped (by
# its recorded PIDs) before lib.sh empties the directory.
if [ $# -ge 2 ] && compgen -G "$2/cluster/run/*.pid" >/dev/null; then
    "$ROOT/launch/slurm-cluster.sh" stop "$2/cluster" || true
fi
source "$(dirname "$0")/lib.sh"
WORK=$(cd "$WORK" && pwd)
CLUSTER=$WORK/cluster
SBATCH_SCRIPT=$ROOT/launch/slurm.sbatch
cd "$WORK"
T0=$SECONDS

skip() { echo "SKIP: $*"; exit 77; }

# --- the cluster ---------------------------------------------------------------------------
if ! "$ROOT/launch/setup.sh" slurm-wlm munge >setup.log 2>&1; then
    cat setup.log >&2
    skip "slurm-wlm and munge cannot be installed here"
fi

# ours_left: processes this test started that still run: their command line or working
# directory is in the scratch directory (daemons, job step daemons, mpirun, ranks). This
# shell and its subshells (same command line) are not counted; run it from / so that its
# own commands are not either.
ours_left() {
    local d p args cwd self
    self=$(tr '\0' ' ' 2>/dev/null <"/proc/$$/cmdline") || self=
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        args=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
        [ -n "$args" ] && [ "$args" != "$self" ] || continue
        cwd=$(readlink "$d/cwd" 2>/dev/null) || cwd=
        case "$cwd/ $args" in *"$WORK/"*) echo "$p" ;; esac
    done
}
STOPPED=1 # 0 while the cluster may be running
stop_cluster() { # stops the cluster; fails if anything of this test is still running
    local left
    STOPPED=1
    if ! "$ROOT/launch/slurm-cluster.sh" stop "$CLUSTER"; then
        fail "the cluster did not stop cleanly"
    fi
    left=$(cd / && ours_left | tr '\n' ',')
    if [ -n "$left" ]; then
        fail "processes of the test still running after the cluster stopped:"
        ps -o pid,ppid,args -p "${left%,}" >&2 || true
    else
        pass "cluster stopped; ps shows no process of the test left"
    fi
}
on_exit() {
    local rc=$?
    trap - EXIT
    if [ "$STOPPED" = 0 ]; then
        stop_cluster >&2 || true
        [ "$N_FAIL" = 0 ] || [ "$rc" != 0 ] || rc=1
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rc=0
STOPPED=0
"$ROOT/launch/slurm-cluster.sh" start "$CLUSTER" >cluster.log 2>&1 || rc=$?
cat cluster.log
if [ "$rc" = 3 ]; then
    STOPPED=1 # a failed start stops what it started
    skip "the Slurm daemons do not come up here (logs: $CLUSTER/log)"
elif [ "$rc" != 0 ]; then
    fail "launch/slurm-cluster.sh start: exit $rc"
    exit 1
fi
export SLURM_CONF=$CLUSTER/slurm.conf
NODE=$(sinfo -h -o %N | head -1)
pass "single-node cluster up in $((SECONDS - T0)) s: node $NODE, $(sinfo -h -o %c) CPUs"

# --- helpers -------------------------------------------------------------------------------
# job_field JOB FIELD: a field of scontrol show job (JobState, Restarts, ExitCode, ...).
job_field() {
    timeout 10 scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
# wait_until SECONDS WHAT CONDITION...: polls CONDITION every 0.2 s; it succeeds (0), is not
# there yet (1) or can no longer happen (2). Fails the check WHAT at the deadline or on 2.
wait_until() {
    local secs=$1 what=$2 end rc; shift 2
    end=$((SECONDS + secs))
    while [ "$SECONDS" -lt "$end" ]; do
        rc=0
        "$@" || rc=$?
        [ "$rc" = 0 ] && return 0
        if [ "$rc" = 2 ]; then fail "$what: can no longer happen"; return 1; fi
        sleep 0.2
    done
    fail "$what: not within $secs s"
    return 1
}
# job_is JOB STATE...: the job is in one of the STATEs; 2 if it has ended in another state.
job_is() {
    local job=$1 state; shift
    state=$(job_field "$job" JobState)
    for s in "$@"; do [ "$state" = "$s" ] && return 0; done
    case $state in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        echo "job $job: $state (ExitCode $(job_field "$job" ExitCode))" >&2; return 2 ;;
    esac
    return 1
}
has_checkpoint() { # DIR JOB: a checkpoint exists (2 if the job has ended)
    compgen -G "$1/checkpoints/ckpt-*.h5" >/dev/null && return 0
    job_is "$2" RUNNING PENDING CONFIGURING || return 2
    return 1
}
# requeued JOB: pending again after a restart, with no part of its first run still
# completing (job or node).
requeued() {
    local restarts
    job_is "$1" PENDING || return $?
    restarts=$(job_field "$1" Restarts)
    [ "${restarts:-0}" -ge 1 ] || return 1
    ! timeout 10 sinfo -h -n "$NODE" -o %T | grep -q comp
}
show_output() { # FILE: the end of a job's output, for a failure
    echo "--- $1:" >&2
    grep -v '^checkpoint' "$1" | tail -20 >&2 || true
}

# --- data and the uninterrupted reference run ---------------------------------------------
"$DPTRAIN" synth blobs --out blobs.h5 --n-train 50000 --n-test 1000 --features 32 --classes 4 \
    --noise 3 --seed 2 >/dev/null
# 782 steps per epoch, 4692 in all (about 5 s on 2 cores); a checkpoint every 100 steps.
TRAIN=(--data blobs.h5 --layers 32,512,512,4 --lr 0.02 --momentum 0.9 --batch 64 --epochs 6
       --seed 1 --threads 1 --checkpoint-every 100)
if run_np 2 train "${TRAIN[@]}" --quiet --out reference >reference.log 2>&1; then
    pass "uninterrupted reference run: mpirun, 2 ranks"
else
    fail "reference run failed"; tail -5 reference.log >&2
fi

# --- the sbatch script outside Slurm: no binary is a clear error --------------------------
mkdir -p empty nobin
expect_exit 2 "slurm.sbatch without a dptrain binary: a clear message" \
    "no dptrain binary: DPTRAIN is not set, dptrain is not on PATH and $WORK/empty/build/dptrain does not exist" \
    -- env -u DPTRAIN PATH="$WORK/nobin" SLURM_SUBMIT_DIR="$WORK/empty" /bin/bash "$SBATCH_SCRIPT"
expect_exit 2 "slurm.sbatch with DPTRAIN naming no file: a clear message" \
    "DPTRAIN=$WORK/nothing is not an executable file" \
    -- env DPTRAIN="$WORK/nothing" SLURM_SUBMIT_DIR="$WORK/empty" /bin/bash "$SBATCH_SCRIPT"

# The command it builds (outside Slurm: 1 rank under mpirun; a stand-in binary prints its
# arguments): no arguments run the Fashion-MNIST defaults; --resume auto is added unless
# --resume is given.
printf '#!/bin/sh\necho "args: $*"\n' >nobin/echo-args && chmod +x nobin/echo-args
sbatch_args() { # ARGS...: what the stand-in binary was given
    env -u SLURM_NTASKS -u SLURM_JOB_ID DPTRAIN="$WORK/nobin/echo-args" SLURM_SUBMIT_DIR="$WORK" \
        timeout 60 /bin/bash "$SBATCH_SCRIPT" "$@" 2>&1 | sed -n 's/^args: //p'
}
want="train --data datasets/fashion_mnist.h5 --layers 784,256,128,10 --lr 0.05 --momentum 0.9 --batch 128 --epochs 30 --seed 1 --checkpoint-every 500 --out runs/fmnist-slurm --resume auto"
got=$(sbatch_args)
[ "$got" = "$want" ] && pass "slurm.sbatch with no arguments: $got" \
    || fail "slurm.sbatch with no arguments: '$got', expected '$want'"
got=$(sbatch_args --config run.ini --epochs 2)
[ "$got" = "train --config run.ini --epochs 2 --resume auto" ] && pass "slurm.sbatch --config run.ini --epochs 2: $got" \
    || fail "slurm.sbatch --config run.ini --epochs 2: '$got'"
got=$(sbatch_args --config run.ini --resume ck.h5)
[ "$got" = "train --config run.ini --resume ck.h5" ] && pass "slurm.sbatch with --resume given adds none: $got" \
    || fail "slurm.sbatch --config run.ini --resume ck.h5: '$got'"

# --- submit, preempt, requeue, resume ------------------------------------------------------
# preempted_run LAUNCHER: the whole cycle through launch/slurm.sbatch with 2 tasks.
preempted_run() {
    local launcher=$1 out=runs/$1 job file stop_step rc=0 restarts exitcode
    local env=(env DPTRAIN="$DPTRAIN") bin=$DPTRAIN
    if [ "$launcher" = srun ]; then
        # This job finds its binary as build/dptrain in the submit directory.
        mkdir -p build && ln -sf "$DPTRAIN" build/dptrain
        env=(env -u DPTRAIN)
        bin=$(command -v dptrain || echo "$WORK/build/dptrain")
    fi
    job=$("${env[@]}" DPTRAIN_LAUNCHER="$launcher" timeout 30 sbatch --parsable -n 2 -J "dptrain-$launcher" \
        "$SBATCH_SCRIPT" "${TRAIN[@]}" --out "$out" 2>&1) || rc=$?
    if [ "$rc" != 0 ] || ! [[ $job =~ ^[0-9]+$ ]]; then
        fail "$launcher: sbatch: exit $rc: $job"; return 1
    fi
    file=$WORK/dptrain-$launcher-$job.out
    echo "$launcher: submitted job $job: sbatch -n 2 launch/slurm.sbatch ${TRAIN[*]} --out $out"
    wait_until 120 "$launcher: job $job writes a checkpoint" has_checkpoint "$out" "$job" ||
        { show_output "$file"; return 1; }
    if [ -s "$file" ] && grep -qF "slurm.sbatch: job $job (restart 0) on $NODE: ${launcher}" "$file" &&
       grep -qF "$bin train ${TRAIN[*]} --out $out --resume auto" "$file"; then
        pass "$launcher: job $job runs $bin with the given options and --resume auto; output in the submit directory: $(basename "$file")"
    else
        fail "$launcher: job $job: no start line in $file"; show_output "$file"
    fi
    echo "$launcher: checkpoint $(basename "$(compgen -G "$out/checkpoints/ckpt-*.h5" | tail -1)") written; preempting: scancel --signal=USR1 --batch $job"
    if ! timeout 10 scancel --signal=USR1 --batch "$job"; then
        fail "$launcher: scancel --signal=USR1 --batch $job failed"; return 1
    fi
    wait_until 60 "$launcher: job $job stops and is requeued" requeued "$job" ||
        { show_output "$file"; return 1; }
    stop_step=$(sed -nE 's/^stopped by a signal at epoch [0-9]+, step ([0-9]+);.*/\1/p' "$file" | head -1)
    if [ -n "$stop_step" ] && grep -q "^slurm.sbatch: SIGUSR1" "$file" &&
       grep -q "^slurm.sbatch: dptrain exited with status 3$" "$file" &&
       grep -q "^slurm.sbatch: stopped with a checkpoint; requeueing job $job$" "$file"; then
        pass "$launcher: SIGUSR1 forwarded to the ranks: stopped at step $stop_step (of 4692) with a checkpoint, exit 3, requeued"
    else
        fail "$launcher: job $job: no signal stop with exit 3 and requeue in its output"
        show_output "$file"; return 1
    fi
    # A requeued job may start again only after its BeginTime (about 120 s away); move it
    # to the next second (in the second of the requeue, the start would be refused).
    echo "$launcher: job $job pending with BeginTime $(job_field "$job" StartTime); scontrol update JobId=$job StartTime=now+1"
    if ! timeout 10 scontrol update JobId="$job" StartTime=now+1; then
        fail "$launcher: scontrol update JobId=$job StartTime=now+1 failed"; return 1
    fi
    wait_until 120 "$launcher: job $job runs again and completes" job_is "$job" COMPLETED ||
        { show_output "$file"; return 1; }
    restarts=$(job_field "$job" Restarts)
    exitcode=$(job_field "$job" ExitCode)
    if [ "${restarts:-0}" -ge 1 ] && [ "$exitcode" = 0:0 ]; then
        pass "$launcher: job $job COMPLETED, ExitCode $exitcode, Restarts=$restarts (scontrol show job)"
    else
        fail "$launcher: job $job: Restarts=$restarts ExitCode=$exitcode"
    fi
    local resume_line
    resume_line=$(grep -E "^resume: $out/checkpoints/ckpt-0*$stop_step\.h5: " "$file" || true)
    if [ -n "$resume_line" ] && grep -qF "slurm.sbatch: job $job (restart 1)" "$file" &&
       grep -q "^slurm.sbatch: dptrain exited with status 0$" "$file"; then
        pass "$launcher: restart 1 $resume_line; finished with status 0"
    else
        fail "$launcher: job $job: the restart did not resume from step $stop_step"
        show_output "$file"
    fi
    local cmp
    cmp=$("$DPTRAIN" compare reference/model.h5 "$out/model.h5" --atol 0 --rtol 0 2>&1 | tail -1)
    if [ "$cmp" = MATCH ]; then
        pass "$launcher: preempted, requeued and resumed run equals the uninterrupted one bit for bit: $cmp"
    else
        fail "$launcher: final weights differ from the uninterrupted run: $cmp"
    fi
}

for launcher in mpirun srun; do
    t=$SECONDS
    preempted_run "$launcher" || true
    echo "$launcher: $((SECONDS - t)) s"
done

stop_cluster
echo "wall time: $((SECONDS - T0)) s"
finish
