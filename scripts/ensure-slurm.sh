#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for `hydra/launcher=slurm` and the `slurm` tests.
# Idempotent: installs slurm-wlm and munge when missing, starts munged, slurmctld and the slurmd of
# nodes n1 and n2 when they are not running, and waits until `sinfo` shows both nodes idle.
# It stops nothing: daemons already running are left as they are. Needs root.
set -euo pipefail
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
LOGDIR=/var/log/slurm

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  echo "setup: installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || create-munge-key -f
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "setup: starting munged"
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi

want=$(cat <<EOF
# Written by scripts/ensure-slurm.sh: two nodes (n1, n2) on this machine, one core each.
ClusterName=runner
SlurmctldHost=${HOST}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2000
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdSpoolDir=/var/spool/slurmd/%n
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd-%n.log
SlurmctldPort=6817
NodeName=n[1-2] NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=17001-17002 CPUs=1 RealMemory=4000
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd/n1 /var/spool/slurmd/n2 "$LOGDIR"
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" >"$CONF"
  changed=1
fi

if ! pgrep -x slurmctld >/dev/null; then
  echo "setup: starting slurmctld"
  slurmctld
elif [ "$changed" = 1 ]; then
  scontrol reconfigure
fi
for n in n1 n2; do
  if ! pgrep -f "slurmd -N $n\$" >/dev/null; then
    echo "setup: starting slurmd -N $n"
    slurmd -N "$n"
  fi
done

for _ in $(seq 1 60); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(idle|mix|alloc)$/' | wc -l)
  if [ "$idle" -ge 2 ]; then exit 0; fi
  # nodes left down or drained by an earlier start come back once their slurmd answers
  scontrol update nodename=n[1-2] state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "setup: Slurm nodes did not come up; see $LOGDIR" >&2
sinfo -N >&2 || true
tail -5 "$LOGDIR"/slurmctld.log >&2 || true
exit 1
