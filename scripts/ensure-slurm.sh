#!/usr/bin/env bash
# A real single-node Slurm on this machine for the Slurm tests: Debian's slurm-wlm and munge, no systemd.
# Idempotent and fast when it is already up. Prints `export SLURM_CONF=...` last.
#   LEADERBOARD_SLURM_BASE  where its config, state, logs and pid files live (default /tmp/leaderboard-slurm)
#   FAKE_GPUS               GPU GRES the node advertises (character devices aliasing /dev/null; default 2)
# Accounting (slurmdbd, so sacct works) is added when a MariaDB server answers on 127.0.0.1:3306 as root;
# the backend does not need it (it reads job states from squeue, then from its own files).
# Daemons are stopped with scripts/stop-slurm.sh, by pid file.
set -euo pipefail
BASE=${LEADERBOARD_SLURM_BASE:-/tmp/leaderboard-slurm}
FAKE_GPUS=${FAKE_GPUS:-2}
CONF="$BASE/slurm.conf"
export SLURM_CONF="$CONF"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_up() { sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

if alive "$BASE/slurmctld.pid" && alive "$BASE/slurmd.pid" && node_up; then
  echo "export SLURM_CONF=$CONF"
  exit 0
fi

# 1. packages (the image's policy keeps them from starting daemons: they are started below)
PKGS="slurm-wlm munge"
MARIADB=0
if command -v mariadb >/dev/null 2>&1 && mariadb -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1; then
  MARIADB=1
  PKGS="$PKGS slurmdbd"
fi
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-slurm: $missing not installed and not root: install them with apt-get" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. munge: a key, its socket folder, the daemon
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge | grep -q 'STATUS:.*Success'

# 3. stop leftovers of an earlier bring-up (by pid file), then write the configuration
bash "$(dirname "$0")/stop-slurm.sh" >/dev/null 2>&1 || true
mkdir -p "$BASE"/{ctld,d,log,fakedev}

ACCOUNTING="AccountingStorageType=accounting_storage/none"
if [ "$MARIADB" = 1 ]; then
  mariadb -h127.0.0.1 -P3306 -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS leaderboard_slurm_acct;
CREATE USER IF NOT EXISTS 'leaderboard_slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
CREATE USER IF NOT EXISTS 'leaderboard_slurm'@'localhost' IDENTIFIED BY 'slurmpw';
GRANT ALL ON leaderboard_slurm_acct.* TO 'leaderboard_slurm'@'127.0.0.1';
GRANT ALL ON leaderboard_slurm_acct.* TO 'leaderboard_slurm'@'localhost';
SQL
  cat >"$BASE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=leaderboard_slurm
StoragePass=slurmpw
StorageLoc=leaderboard_slurm_acct
EOF
  chmod 600 "$BASE/slurmdbd.conf"
  /usr/sbin/slurmdbd  # finds slurmdbd.conf next to $SLURM_CONF
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.1; done
  ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
fi

GRES_TYPES=""
GRES_NODE=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  GRES_TYPES="GresTypes=gpu
AccountingStorageTRES=gres/gpu"
  GRES_NODE="Gres=gpu:$FAKE_GPUS"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c "$BASE/fakedev/gpu$i" ] || mknod "$BASE/fakedev/gpu$i" c 1 3
  done
  echo "NodeName=localhost Name=gpu File=$BASE/fakedev/gpu[0-$((FAKE_GPUS - 1))]" >"$BASE/gres.conf"
fi
MEM=$(($(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 1024))
cat >"$CONF" <<EOF
ClusterName=leaderboard
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCOUNTING
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/d
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MinJobAge=600
KillWait=5
InactiveLimit=0
$GRES_TYPES
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

# 4. controller and node daemon (both daemonize and write pid files)
/usr/sbin/slurmctld -f "$CONF"
/usr/sbin/slurmd -f "$CONF" -N localhost
for _ in $(seq 150); do node_up && break; sleep 0.2; done
if ! node_up; then
  echo "ensure-slurm: the node did not come up; see $BASE/log/slurmctld.log and slurmd.log" >&2
  sinfo >&2 || true
  exit 1
fi
echo "export SLURM_CONF=$CONF"
