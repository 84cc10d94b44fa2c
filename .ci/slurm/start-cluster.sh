#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the sweep tests (`--executor slurm`) and for trying
# a sweep locally. Needs root and Debian's packages:
#
#   apt-get install -y --no-install-recommends slurm-wlm munge
#   .ci/slurm/start-cluster.sh           # start munged, slurmctld and slurmd; wait for the node
#   .ci/slurm/start-cluster.sh --stop    # stop them again
#
# No systemd: the daemons are started directly. The node is this host with all its CPUs and one
# default partition; process tracking by process group, no cgroup plugins, no accounting (so
# `sacct` has nothing; medbridge follows jobs with `squeue` and the cells' own status files).
# It writes /etc/slurm/slurm.conf, and refuses to replace one it did not write itself.
set -euo pipefail

conf=/etc/slurm/slurm.conf
marker="# written by medbridge .ci/slurm/start-cluster.sh"
state=/var/spool/slurmctld
spool=/var/spool/slurmd
logs=/var/log/slurm

die() { echo "start-cluster: $*" >&2; exit 1; }

stop() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
        [[ -s $pidfile ]] || continue
        pid=$(cat "$pidfile")
        kill -0 "$pid" 2>/dev/null || continue
        kill "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "stopped $(basename "$pidfile" .pid)"
    done
}

if [[ ${1:-} == --stop ]]; then
    stop
    exit 0
fi
[[ $(id -u) == 0 ]] || die "run as root (the daemons and /etc/slurm need it)"
for tool in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
    command -v "$tool" >/dev/null ||
        die "$tool not found; install Debian's packages: apt-get install -y --no-install-recommends slurm-wlm munge"
done

host=$(hostname -s)
cpus=$(nproc)

# munge: a key only munge can read, then the daemon as the munge user.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
fi

if [[ -e $conf ]] && ! grep -qF "$marker" "$conf"; then
    die "$conf exists and was not written by this script; move it away to use this test cluster"
fi
install -d -m 0755 "$state" "$spool" "$logs"
cat >"$conf" <<CONF
$marker
ClusterName=medbridge
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$state
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

if ! scontrol ping 2>/dev/null | grep -q UP; then
    slurmctld
fi
if ! { [[ -s /run/slurmd.pid ]] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; }; then
    slurmd
fi

# The node is usable once it is idle (or already running jobs).
for _ in $(seq 60); do
    node=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case $node in
    idle* | mixed* | allocated*) echo "slurm: node $host $node ($cpus CPUs), partition debug; logs in $logs"; exit 0 ;;
    down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "start-cluster: node $host did not become idle (state: ${node:-none})" >&2
tail -n 30 "$logs/slurmctld.log" "$logs/slurmd.log" >&2 || true
exit 1
