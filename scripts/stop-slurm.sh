#!/usr/bin/env bash
# Stop the Slurm daemons scripts/ensure-slurm.sh started, by their pid files (never by name).
# munge is left running (other users of the machine may need it).
BASE=${LEADERBOARD_SLURM_BASE:-/tmp/leaderboard-slurm}
export SLURM_CONF="$BASE/slurm.conf"
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }
stop() { # $1 = pid file: TERM, wait up to 10 s, then KILL
  [ -f "$1" ] || return 0
  local p
  p=$(cat "$1")
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || { rm -f "$1"; return 0; }
  for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
  alive "$p" && kill -9 "$p" 2>/dev/null
  rm -f "$1"
  echo "stopped $(basename "$1" .pid) (pid $p)"
}
if [ -f "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scancel --user="$(id -un)" 2>/dev/null && sleep 1
fi
stop "$BASE/slurmd.pid"
stop "$BASE/slurmctld.pid"
stop "$BASE/slurmdbd.pid"
