#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for `make slurm-test` and CI (Debian, as root).
#
#   bash scripts/slurm-ci.sh start          install if needed, configure, start munged/slurmctld/slurmd,
#                                           wait until the node is idle
#   bash scripts/slurm-ci.sh stop [--clean] cancel all jobs, stop what `start` started (pid files);
#                                           --clean also removes the state folder (config, logs, spool)
#   bash scripts/slurm-ci.sh env            `export ...` lines for eval: SLURM_CONF, HEARTJOBS_SLURM_DIR
#   bash scripts/slurm-ci.sh run CMD ARGS   start, run CMD with that environment, stop on exit (unless the
#                                           cluster was already running), exit with CMD's status
#   bash scripts/slurm-ci.sh status         which daemons are ours and alive; exit 0 when all are
#
# Everything lives under $HEARTJOBS_SLURM_DIR (default /tmp/heartjobs-slurm): slurm.conf, an empty
# plugstack.conf, pids/ (the daemons' pids as this script started them), log/ (the daemons' logs, and
# their foreground output in *.out), state/ (StateSaveLocation: job ids go on across restarts), spool/
# (SlurmdSpoolDir). Nothing under /etc/slurm is written or read (Debian's daemons don't insist on it):
# the daemons get `-f slurm.conf`, and the client commands (sinfo, sbatch, scontrol, also inside jobs,
# which inherit the submitter's environment) find it through SLURM_CONF
# (`eval "$(bash scripts/slurm-ci.sh env)"`). The daemons run in sessions of their own, so Ctrl-C or a
# signal to the caller's process group does not stop them; `stop` does.
#
# Packages: `apt-get install slurm-wlm munge` only when a binary is missing. A package's postinst may
# start daemons (a machine with an init system and no policy-rc.d) or not (Docker, no init): munged
# started by it is adopted (its pid recorded, so `stop` stops it), slurmctld/slurmd started by it (from
# /etc/slurm, which has no slurm.conf) are stopped. munged is shared state (/run/munge, the key in
# /etc/munge): one already running before `start` is used and left alone.
# Every wait is a poll for a condition with a deadline ($HEARTJOBS_SLURM_TIMEOUT, default 60 s).
set -euo pipefail

DIR=${HEARTJOBS_SLURM_DIR:-/tmp/heartjobs-slurm}
TIMEOUT=${HEARTJOBS_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
PIDS=$DIR/pids
LOGS=$DIR/log
export PATH=$PATH:/usr/sbin:/sbin
export SLURM_CONF=$CONF

say() { echo "slurm-ci: $*"; }
die() {
    echo "slurm-ci: error: $*" >&2
    exit 1
}
now() { date +%s.%N; }
# elapsed START: seconds since START, one decimal
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# past DEADLINE: whether the epoch-seconds DEADLINE has passed
past() { [ "$(date +%s)" -ge "$1" ]; }

# alive NAME: the pid in pids/NAME.pid when that process is alive and is NAME (not a reused pid)
alive() {
    local pid comm
    [ -f "$PIDS/$1.pid" ] || return 1
    pid=$(cat "$PIDS/$1.pid")
    [ -n "$pid" ] && comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$1" ] || return 1
    echo "$pid"
}

# others NAME: pids of processes named exactly NAME that are not ours (pids/NAME.pid)
others() {
    local ours pid
    ours=$(alive "$1" || true)
    for pid in $(pgrep -x "$1" || true); do
        [ "$pid" = "$ours" ] || echo "$pid"
    done
}

# wait_gone PID SECONDS: poll until PID has exited; 1 when it is still there at the deadline
wait_gone() {
    local deadline=$(($(date +%s) + $2))
    while kill -0 "$1" 2>/dev/null; do
        past "$deadline" && return 1
        sleep 0.2
    done
}

# terminate NAME PID: SIGTERM, wait up to 30 s, then SIGKILL (and wait for that too)
terminate() {
    kill -TERM "$2" 2>/dev/null || return 0
    if ! wait_gone "$2" 30; then
        say "$1 (pid $2) ignored SIGTERM for 30 s; SIGKILL"
        kill -KILL "$2" 2>/dev/null || true
        wait_gone "$2" 10 || die "$1 (pid $2) survives SIGKILL"
    fi
}

show_logs() {
    local f
    for f in "$LOGS"/*; do
        [ -s "$f" ] || continue
        echo "----- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v munged >/dev/null && command -v munge >/dev/null && command -v unmunge >/dev/null
}

install_packages() {
    [ "$(id -u)" -eq 0 ] || die "Slurm is not installed; installing it needs root (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get: install slurm-wlm, munge"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(slurm-wlm munge) log=$LOGS/apt.log
    # Package lists may be absent on a fresh machine: update only when the first try fails.
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
        apt-get update -q >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed (log: $log)"; }
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "apt-get install ${pkgs[*]} failed (log: $log)"; }
    fi
    installed || die "apt-get installed ${pkgs[*]} but slurmctld/slurmd/sbatch/munged are still missing"
}

# The daemons a package's postinst started: munged is adopted, slurm daemons are stopped.
after_install() {
    local before_munged=$1 pid name
    if [ -z "$before_munged" ]; then
        for pid in $(others munged); do
            echo "$pid" >"$PIDS/munged.pid"
            started+=("munged (adopted from the package's postinst, pid $pid)")
            break
        done
    fi
    for name in slurmctld slurmd; do
        for pid in $(others "$name"); do
            say "stopping $name (pid $pid) that the package's postinst started"
            terminate "$name" "$pid"
        done
    done
}

ensure_munge_key() {
    local key=/etc/munge/munge.key
    getent passwd munge >/dev/null || die "no munge user (the munge package creates it)"
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s "$key" ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force
        elif command -v create-munge-key >/dev/null; then
            create-munge-key -f
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
        say "created $key"
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    local pid deadline
    if pid=$(alive munged); then
        :
    elif [ -n "$(others munged)" ]; then
        rm -f "$PIDS/munged.pid"
        say "using the munged that is already running (pid $(others munged | head -n 1)); stop leaves it"
    else
        ensure_munge_key
        # setsid and setpriv exec munged, so $! is munged itself, as the munge user, in the foreground.
        setsid setpriv --reuid=munge --regid=munge --init-groups -- munged --foreground \
            </dev/null >>"$LOGS/munged.log" 2>&1 &
        echo $! >"$PIDS/munged.pid"
        started+=(munged)
    fi
    deadline=$(($(date +%s) + TIMEOUT))
    until munge_works; do
        # kill -0, not alive: until setsid and setpriv have exec'd it, the process is not yet named munged
        if [ -f "$PIDS/munged.pid" ] && ! kill -0 "$(cat "$PIDS/munged.pid")" 2>/dev/null; then
            show_logs
            die "munged exited (log: $LOGS/munged.log)"
        fi
        past "$deadline" && { show_logs; die "munge -n | unmunge still fails after ${TIMEOUT} s"; }
        sleep 0.2
    done
}

write_config() {
    local host cpus mem_mb real_mb def_mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    # A bit under the machine's memory (slurmd drains a node that has less than RealMemory), in 1000s.
    real_mb=$((mem_mb * 5 / 6 / 1000 * 1000))
    [ "$real_mb" -ge 1000 ] || real_mb=$((mem_mb * 5 / 6))
    def_mem=$((real_mb / cpus < 2000 ? real_mb / cpus : 2000))
    cat >"$CONF" <<EOF
# Written by scripts/slurm-ci.sh: a single-node test cluster; state under $DIR.
ClusterName=heartjobs
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=20
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true
# Not Debian's /etc/slurm/plugstack.conf (SPANK plugins installed there would load into every job)
PlugStackConfig=$DIR/plugstack.conf
# Quick reactions: finished jobs are forgotten soon, the scheduler and backfill loops run every second.
# KillWait is Slurm's default: a requeued or cancelled job's processes get SIGKILL 30 s after SIGTERM, time
# for a run to write its checkpoint and for its task to say so, as on a production cluster.
MinJobAge=30
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=30
MessageTimeout=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd.%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$DIR/plugstack.conf"
    # No cgroup.conf: slurmd 22.05 reads none with proctrack/linuxproc and task/none (tried: idle, jobs run).
}

# start_daemon NAME: NAME -D -f slurm.conf in the background, output appended to log/NAME.out. In a
# session of its own (setsid execs it: $! is the daemon), so that a signal to the caller's process group
# (Ctrl-C, `timeout`, a CI step's end) does not reach it: `stop` stops it, after cancelling the jobs.
start_daemon() {
    local name=$1
    setsid "$name" -D -f "$CONF" </dev/null >>"$LOGS/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
    started+=("$name")
}

# node_state: the node's state as sinfo says it; sinfo waits up to MessageTimeout for a controller that
# is not listening, so at most 3 s here, for the deadline's sake
node_state() { timeout 3 sinfo -h -o %T 2>/dev/null | head -n 1; }

cmd_start() {
    local t0 state deadline summary before_munged n name installed_note=""
    t0=$(now)
    started=()
    # slurmd's spool folder up front: slurmd logs errors (socket folder, hwloc cache) when it is missing
    mkdir -p "$DIR" "$PIDS" "$LOGS" "$DIR/state" "$DIR/spool/slurmd.$(hostname -s)" "$DIR/run"
    if ! installed; then
        before_munged=$(pgrep -x munged || true)
        install_packages
        after_install "$before_munged"
        installed_note="installed slurm-wlm munge ($(dpkg-query -W -f='${Version}' slurmctld)); "
    fi
    for name in slurmctld slurmd; do
        if ! alive "$name" >/dev/null && [ -n "$(others "$name")" ]; then
            die "a $name that is not ours is running (pid $(others "$name" | tr '\n' ' ')); stop it first"
        fi
    done
    start_munged
    # A running cluster keeps the config it was started with.
    if ! alive slurmctld >/dev/null || ! alive slurmd >/dev/null; then
        write_config
    fi
    alive slurmctld >/dev/null || start_daemon slurmctld
    alive slurmd >/dev/null || start_daemon slurmd

    deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        for name in slurmctld slurmd; do
            if ! kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
                show_logs
                die "$name exited during start (logs: $LOGS/$name.log, $LOGS/$name.out)"
            fi
        done
        state=$(node_state || true)
        # idle on a fresh start; a running cluster's node may be busy. Not "idle*": slurmd not responding.
        case $state in idle | mixed | allocated | completing) break ;; esac
        if past "$deadline"; then
            show_logs
            scontrol show node >&2 || true
            die "the node is not idle after ${TIMEOUT} s (sinfo: '${state:-no answer}')"
        fi
        sleep 0.25
    done
    # A controller that was killed (not stopped) left its jobs in state/: a fresh cluster has no jobs.
    if [[ " ${started[*]} " == *" slurmctld "* ]]; then
        n=$(cancel_all)
        if [ "$n" -gt 0 ]; then
            started+=("(cancelled $n job(s) left from before)")
            state=$(node_state || true)
        fi
    fi
    if [ ${#started[@]} -eq 0 ]; then
        summary="already running"
    else
        summary="started ${started[*]}"
    fi
    say "${installed_note}${summary}; node $(hostname -s) $state after $(elapsed "$t0") s; SLURM_CONF=$CONF"
}

# The pids of slurmstepd processes of this cluster: those listening on a socket in our spool folder.
our_stepds() {
    local inodes pid fd link
    inodes=$(awk -v d="$DIR/spool/" 'index($8, d) == 1 { print "socket:[" $7 "]" }' /proc/net/unix)
    [ -n "$inodes" ] || return 0
    for pid in $(pgrep -x slurmstepd || true); do
        for fd in /proc/"$pid"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            if grep -qxF "$link" <<<"$inodes"; then
                echo "$pid"
                break
            fi
        done
    done
}

# cancel_all: scancel every job in the queue, wait (at most 30 s) until the queue is empty; prints how
# many jobs (array tasks not yet started count as one) it cancelled
cancel_all() {
    local ids deadline
    ids=$(squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086 # one job id a word
        scancel $ids 2>/dev/null || true
        deadline=$(($(date +%s) + 30))
        while [ -n "$(squeue -h -o %A 2>/dev/null || true)" ] && ! past "$deadline"; do
            sleep 0.25
        done
    fi
    wc -w <<<"$ids"
}

# descendants PID...: the pids of all processes under PID..., children before their parents' siblings
descendants() {
    local pid child
    for pid in "$@"; do
        for child in $(pgrep -P "$pid" || true); do
            echo "$child"
            descendants "$child"
        done
    done
}

cmd_stop() {
    local clean=${1:-} pid n name stopped=() t0
    t0=$(now)
    if alive slurmctld >/dev/null; then
        n=$(cancel_all)
        [ "$n" -eq 0 ] || stopped+=("cancelled $n job(s)")
    fi
    # Stray slurmstepds of ours (jobs that outlived scancel, or a controller that was gone): slurmstepd
    # ignores SIGTERM, so SIGKILL, first to the job's processes under it, then to it.
    local stray=() under=()
    mapfile -t stray < <(our_stepds)
    if [ ${#stray[@]} -gt 0 ]; then
        mapfile -t under < <(descendants "${stray[@]}")
        kill -KILL "${under[@]}" "${stray[@]}" 2>/dev/null || true
        stopped+=("killed slurmstepd ${stray[*]} with the jobs under them")
    fi
    # All at once (each takes 1-2 s to exit): slurmd, slurmctld, our munged.
    local names=() pids=() i
    for name in slurmd slurmctld munged; do
        if pid=$(alive "$name"); then
            names+=("$name")
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in "${!pids[@]}"; do
        terminate "${names[i]}" "${pids[i]}"
        stopped+=("${names[i]}")
    done
    rm -f "$PIDS/slurmd.pid" "$PIDS/slurmctld.pid"
    rm -f "$PIDS/munged.pid"
    if [ "$clean" = --clean ] && [ -d "$DIR" ]; then
        # only a folder this script made (HEARTJOBS_SLURM_DIR could name anything)
        if [ -d "$PIDS" ] && [ -d "$LOGS" ] &&
            { [ ! -e "$CONF" ] || grep -q '^# Written by scripts/slurm-ci.sh' "$CONF"; }; then
            rm -rf "$DIR"
            stopped+=("removed $DIR")
        else
            say "warning: $DIR does not look like this script's state folder: not removed"
        fi
    fi
    if [ ${#stopped[@]} -eq 0 ]; then
        say "nothing of ours was running"
    else
        local list
        list=$(printf '%s, ' "${stopped[@]}")
        say "stopped: ${list%, } ($(elapsed "$t0") s)"
    fi
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export HEARTJOBS_SLURM_DIR=%q\n' "$DIR"
}

cmd_status() {
    local rc=0 name pid
    for name in munged slurmctld slurmd; do
        if pid=$(alive "$name"); then
            echo "$name: running (pid $pid)"
        elif [ "$name" = munged ] && [ -n "$(others munged)" ]; then
            echo "munged: running, not ours (pid $(others munged | head -n 1))"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    return $rc
}

cmd_run() {
    [ $# -gt 0 ] || die "usage: slurm-ci.sh run CMD [ARGS...]"
    local was_running=0 rc
    alive slurmctld >/dev/null && alive slurmd >/dev/null && was_running=1
    if [ $was_running = 0 ]; then
        # Stop on any exit, a failed start or a signal included (signals become exits, so the trap runs).
        trap 'cmd_stop || say "warning: stop failed"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    cmd_start
    export HEARTJOBS_SLURM_DIR=$DIR
    set +e
    "$@"
    rc=$?
    set -e
    [ $was_running = 1 ] && say "the cluster was running before 'run': left running"
    exit $rc
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
env) cmd_env ;;
status) cmd_status ;;
run)
    shift
    cmd_run "$@"
    ;;
*)
    echo "usage: $0 start | stop [--clean] | env | status | run CMD [ARGS...]" >&2
    exit 2
    ;;
esac
