#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster on localhost (munged + slurmctld + slurmd).
#
# For tests and for trying the `slurm` labeling backend on one machine. Needs root and
# Debian's packages:  apt-get install -y --no-install-recommends slurm-wlm munge
#
# Usage: start-local-slurm.sh [STATE_DIR]
#   STATE_DIR (default /tmp/eip-al-slurm) receives slurm.conf, a fresh munge key, the
#   daemons' sockets, pid files, logs and spool directories, and `env.sh`. Nothing under
#   /etc is touched: point clients at the cluster with
#       source STATE_DIR/env.sh        # exports SLURM_CONF=STATE_DIR/slurm.conf
#   Stop it with scripts/slurm/stop-local-slurm.sh STATE_DIR.
# Environment:
#   EIP_SLURM_CTLD_PORT (default 6817), EIP_SLURM_D_PORT (default 6818): TCP ports, bound
#   to all addresses by Slurm; the node and controller are addressed as 127.0.0.1.
#   EIP_SLURM_WAIT_S (default 60): how long to wait for the node to become idle.
#
# The node is named after `hostname -s` and declared with the CPUs, sockets, cores,
# threads and memory that `slurmd -C` detects. There is no slurmdbd: accounting storage
# is off, finished jobs are recorded by jobcomp/filetxt (read them with `sacct -c`) and
# stay visible to `squeue`/`scontrol show job` for MinJobAge=3600 s.
set -euo pipefail

STATE_DIR="${1:-/tmp/eip-al-slurm}"
CTLD_PORT="${EIP_SLURM_CTLD_PORT:-6817}"
D_PORT="${EIP_SLURM_D_PORT:-6818}"
WAIT_S="${EIP_SLURM_WAIT_S:-60}"

die() { echo "start-local-slurm: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as the submitting user)"
for exe in munged slurmctld slurmd sinfo scontrol; do
  command -v "$exe" >/dev/null 2>&1 \
    || die "'$exe' not found; install it: apt-get install -y --no-install-recommends slurm-wlm munge"
done
case "$CTLD_PORT$D_PORT" in *[!0-9]*) die "ports must be numbers (got '$CTLD_PORT', '$D_PORT')";; esac
if [ -f "$STATE_DIR/slurmctld.pid" ] && kill -0 "$(cat "$STATE_DIR/slurmctld.pid")" 2>/dev/null; then
  die "a cluster from $STATE_DIR is already running (stop it first: stop-local-slurm.sh $STATE_DIR)"
fi

mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd -P)"
chmod 0700 "$STATE_DIR"
mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/munge"
chmod 0700 "$STATE_DIR/munge"
# Unix socket paths are limited to 107 bytes.
[ "${#STATE_DIR}" -le 80 ] || die "state dir path too long for Unix sockets (${#STATE_DIR} > 80 chars): $STATE_DIR"

NODE="$(hostname -s)"
[ -n "$NODE" ] || die "hostname -s is empty"
# What slurmd itself detects, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24105": a declared node larger than this would be drained.
HW="$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')"
case "$HW" in CPUs=*RealMemory=*) ;; *) die "unexpected 'slurmd -C' output: $HW";; esac

# --- munge: own key and socket, so a system munged (if any) is left alone -------------
MUNGE_SOCKET="$STATE_DIR/munge/munge.socket"
if [ ! -s "$STATE_DIR/munge/munge.key" ]; then
  (umask 077; dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none)
fi
chmod 0400 "$STATE_DIR/munge/munge.key"
munged --force \
  --socket="$MUNGE_SOCKET" \
  --key-file="$STATE_DIR/munge/munge.key" \
  --pid-file="$STATE_DIR/munged.pid" \
  --log-file="$STATE_DIR/munged.log" \
  --seed-file="$STATE_DIR/munge/munged.seed" \
  || die "munged failed to start; see $STATE_DIR/munged.log"

# --- slurm.conf -------------------------------------------------------------------------
cat > "$STATE_DIR/slurm.conf" <<CONF
# Written by scripts/slurm/start-local-slurm.sh: a single-node test cluster on localhost.
ClusterName=eipal
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${D_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${MUNGE_SOCKET}
CredType=cred/munge
StateSaveLocation=${STATE_DIR}/ctld
SlurmdSpoolDir=${STATE_DIR}/spool
SlurmctldPidFile=${STATE_DIR}/slurmctld.pid
SlurmdPidFile=${STATE_DIR}/slurmd.pid
SlurmctldLogFile=${STATE_DIR}/slurmctld.log
SlurmdLogFile=${STATE_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${STATE_DIR}/jobcomp.txt
MinJobAge=3600
MaxArraySize=10001
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${NODE} NodeAddr=127.0.0.1 ${HW} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
printf 'export SLURM_CONF=%q\n' "$STATE_DIR/slurm.conf" > "$STATE_DIR/env.sh"
export SLURM_CONF="$STATE_DIR/slurm.conf"

# --- daemons (each forks into the background and writes its pid file) -----------------
slurmctld -i -f "$SLURM_CONF" || die "slurmctld failed to start; see $STATE_DIR/slurmctld.log"
slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd failed to start; see $STATE_DIR/slurmd.log"

deadline=$(( $(date +%s) + WAIT_S ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  state="$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -n 1 || true)"
  case "$state" in idle|mix|alloc) break;; esac
  sleep 1
done
case "$state" in
  idle|mix|alloc) ;;
  *)
    echo "start-local-slurm: node $NODE not idle after ${WAIT_S} s (state '${state:-none}'); last log lines:" >&2
    tail -n 20 "$STATE_DIR/slurmctld.log" "$STATE_DIR/slurmd.log" >&2 || true
    exit 1;;
esac
echo "local Slurm up: node $NODE ($HW), controller 127.0.0.1:$CTLD_PORT"
echo "use it with:  source $STATE_DIR/env.sh"
