#!/usr/bin/env bash
# slurm_local.sh start|stop|status DIR — a private one-node Slurm for the tests (Debian 12, root,
# no systemd): munged, slurmctld and slurmd with their config, state, spool, logs and pid files
# in DIR, on ports of their own (16817/16818), so a site's Slurm on the same machine is neither
# used nor touched. Clients find it through SLURM_CONF=DIR/slurm.conf (`start` prints the line).
#
#   start: installs slurm-wlm and munge when missing, writes DIR/slurm.conf, starts munged
#          (unless one already answers) and both Slurm daemons, waits until the node is idle.
#   stop:  cancels DIR's jobs, stops the daemons it started (by their pid files), munged only
#          if this script started it. Safe to run twice, or after a failed start.
# Process tracking is proctrack/linuxproc with task/none (no cgroups: works in any container);
# MpiDefault=pmix (Open MPI 4.1 in Debian works with srun --mpi=pmix only); KillWait=10.
set -euo pipefail
ACTION=${1:-}
DIR=${2:-}
if [ -z "$ACTION" ] || [ -z "$DIR" ]; then echo "usage: $0 start|stop|status DIR" >&2; exit 2; fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
NODE=$(hostname -s)

alive() { [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

install_pkgs() {
  local need=() p
  for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "slurm_local: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # RealMemory above what slurmd detects puts the node in INVAL/DRAIN
  mem=$(awk '/MemTotal/ {print int($2/1024) - 512}' /proc/meminfo)
  install -d -m 0755 "$DIR/ctld" "$DIR/spool" "$DIR/log"
  cat > "$CONF" <<EOF
# written by smallmind tests/slurm_local.sh: a private one-node cluster
ClusterName=smallmindtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=pmix
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=10
InactiveLimit=0
MinJobAge=600
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install_pkgs
  write_conf
  if ! munge_ok; then
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.ours"
    local i
    for i in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { echo "slurm_local: munged does not answer" >&2; return 1; }
  fi
  alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
  local st="" i
  for i in $(seq 120); do
    st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case "$st" in
      idle*|mixed*|allocated*) echo "slurm_local: node $NODE $st; export SLURM_CONF=$CONF"; return 0 ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  echo "slurm_local: node not idle (state '$st'); logs in $DIR/log" >&2
  return 1
}

stop_pid() {   # stop_pid FILE: TERM, then KILL after 5 s
  local f=$1 i
  alive "$f" || return 0
  kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true
  for i in $(seq 50); do alive "$f" || return 0; sleep 0.1; done
  kill -9 "$(cat "$f" 2>/dev/null)" 2>/dev/null || true
}

stop() {
  local i
  if alive "$DIR/slurmctld.pid"; then
    # this cluster's jobs only (SLURM_CONF): cancel them and let them end before the daemons go
    scancel --full --quiet --user=root 2>/dev/null || true
    for i in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  if [ -e "$DIR/munged.ours" ]; then
    stop_pid /run/munge/munged.pid
    rm -f "$DIR/munged.ours"
  fi
  echo "slurm_local: stopped"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) for f in slurmctld slurmd; do alive "$DIR/$f.pid" && echo "$f running" || echo "$f not running"; done
          sinfo 2>/dev/null || true ;;
  *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
