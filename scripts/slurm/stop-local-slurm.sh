#!/usr/bin/env bash
# Stop the cluster started by start-local-slurm.sh (only the daemons whose pid files are
# in STATE_DIR), cancelling its jobs first. Usage: stop-local-slurm.sh [STATE_DIR]
set -uo pipefail

STATE_DIR="${1:-/tmp/eip-al-slurm}"
[ -d "$STATE_DIR" ] || { echo "stop-local-slurm: no state dir $STATE_DIR" >&2; exit 1; }
if [ -f "$STATE_DIR/slurm.conf" ] && command -v scancel >/dev/null 2>&1; then
  SLURM_CONF="$STATE_DIR/slurm.conf" scancel --quiet --full --partition=debug 2>/dev/null || true
fi
for daemon in slurmd slurmctld munged; do
  pidfile="$STATE_DIR/$daemon.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  case "$pid" in ''|*[!0-9]*) continue;; esac
  # Only signal the pid if it still is this daemon (pids get reused).
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$daemon" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
done
echo "local Slurm in $STATE_DIR stopped"
