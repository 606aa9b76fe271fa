#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (localhost, 2 CPUs) for tests/test_slurm.py, built from
# Debian's slurm-wlm and munge (`apt-get install slurm-wlm munge`; needs root, as CI has).
#
#   tests/slurm_cluster.sh start DIR   write DIR/slurm.conf, start munged, slurmctld and slurmd, wait
#                                      until the node is idle; then `export SLURM_CONF=DIR/slurm.conf`
#                                      makes sbatch / squeue / sacct / scontrol use this cluster
#   tests/slurm_cluster.sh stop DIR    stop the three daemons started in DIR (by their pid files)
#
# Everything (config, munge socket and key, state, logs, pid files) lives in DIR. The one exception:
# /etc/slurm/slurm.conf becomes a link to DIR/slurm.conf, because the Snakemake jobstep plugin drops
# SLURM_CONF from the environment of the `srun` it runs inside each job, so srun only finds the config
# at its default path. If that file exists already (a real SLURM installation), `start` refuses rather
# than replace it; `stop` removes the link only if it is ours. Ports: $SLURM_TEST_PORT (default 16817)
# for slurmctld and the next one for slurmd. There is no slurmdbd: accounting storage is off (sacct
# answers "accounting storage is disabled"), so the Snakemake plugin must read job states with squeue
# (--slurm-status-command squeue); MinJobAge keeps finished jobs visible to squeue for 10 minutes.
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop DIR}")
port=${SLURM_TEST_PORT:-16817}
ETC_CONF=/etc/slurm/slurm.conf

stop() {
    for name in slurmd slurmctld munged; do
        pidfile="$dir/$name.pid"
        if [[ -s $pidfile ]]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$dir/slurm.conf" ]]; then rm -f "$ETC_CONF"; fi
}

fail() {
    echo "slurm_cluster: $*" >&2
    for log in "$dir"/*.log; do [[ -f $log ]] && { echo "--- $log" >&2; tail -5 "$log" >&2; }; done
    stop
    exit 1
}

start() {
    for bin in munged slurmctld slurmd sbatch squeue scontrol; do
        command -v "$bin" >/dev/null || { echo "slurm_cluster: $bin not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
    done
    [[ $(id -u) == 0 ]] || { echo "slurm_cluster: must run as root (slurmd starts jobs as their user)" >&2; exit 1; }
    mkdir -p "$dir/state" "$dir/spool"
    host=$(hostname -s)
    cpus=2
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    # munge: a key of our own and a private socket
    [[ -s $dir/munge.key ]] || { head -c 1024 /dev/urandom > "$dir/munge.key"; chmod 600 "$dir/munge.key"; }
    cat > "$dir/slurm.conf" <<EOF
ClusterName=diffmemtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    stop  # leftovers of an earlier run in the same folder
    if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
        echo "slurm_cluster: $ETC_CONF exists (another SLURM configuration); not replacing it" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$dir/slurm.conf" "$ETC_CONF"
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munge.seed" || fail "munged did not start"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -c -f "$SLURM_CONF" || fail "slurmctld did not start"
    slurmd -f "$SLURM_CONF" -N "$host" || fail "slurmd did not start"
    for _ in $(seq 60); do
        state=$(sinfo -h -N -o %t 2>/dev/null || true)
        [[ $state == idle* ]] && { echo "export SLURM_CONF=$SLURM_CONF"; return 0; }
        sleep 0.5
    done
    fail "the node did not become idle (state: '${state:-none}')"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
