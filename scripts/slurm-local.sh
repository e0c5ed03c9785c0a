#!/usr/bin/env bash
# A single-node Slurm cluster in a directory, for trying recipes/cluster.mk's array jobs on one
# machine and for its test: munged, slurmctld and slurmd (Debian's slurm-wlm and munge), all
# state, sockets and logs under DIR, on the given ports, as root (slurmd runs jobs as their
# submitter, which needs root).
#
#   bash scripts/slurm-local.sh start DIR [CTLD_PORT SLURMD_PORT]   # prints the SLURM_CONF to export
#   SLURM_CONF=DIR/slurm.conf sbatch ...
#   bash scripts/slurm-local.sh stop DIR
#
# Exit status non-zero, with the reason on stderr, when a daemon cannot start.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR [CTLD_PORT SLURMD_PORT]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

stop() {
  local f
  for f in slurmd slurmctld munged; do
    [ -s "$dir/$f.pid" ] && kill "$(cat "$dir/$f.pid")" 2>/dev/null || true
  done
  sleep 0.5
  for f in slurmd slurmctld munged; do
    [ -s "$dir/$f.pid" ] && kill -9 "$(cat "$dir/$f.pid")" 2>/dev/null || true
    rm -f "$dir/$f.pid"
  done
}

case $cmd in
  stop) stop; exit 0 ;;
  start) ;;
  *) usage ;;
esac

for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "slurm-local: $tool not found (apt-get install slurm-wlm)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm-local: slurmd must run as root" >&2; exit 1; }
ctld_port=${3:-16817}
slurmd_port=${4:-16818}
host=$(hostname -s)
mkdir -p "$dir/state" "$dir/spool" "$dir/log"

# munge: a key of its own, a socket in DIR.
[ -s "$dir/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge.key"; chmod 600 "$dir/munge.key"; }
munged --socket="$dir/munge.sock" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" --force

cat > "$dir/slurm.conf" <<EOF
ClusterName=vidkit
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf

if ! slurmctld -f "$SLURM_CONF" || ! slurmd -f "$SLURM_CONF"; then
  echo "slurm-local: a daemon did not start (see $dir/log/)" >&2
  stop
  exit 1
fi
# Ready when the node is idle.
for _ in $(seq 1 60); do
  if [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; then
    echo "$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "slurm-local: the node did not come up in 30 s: $(sinfo -h -o '%T %E' 2>&1) (see $dir/log/)" >&2
stop
exit 1
