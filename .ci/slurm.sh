#!/usr/bin/env bash
# A real one-node SLURM for the `slurm` integration tests, from Debian packages, without
# systemd or Docker. Runs as root on a bare Debian 12 (bookworm) machine.
#
#   .ci/slurm.sh [start]   install (once), configure, start munged, mariadbd, slurmdbd,
#                          slurmctld and slurmd; wait until the node is idle. Idempotent:
#                          daemons already running (checked by PID) are left alone.
#   .ci/slurm.sh status    the daemons and their PIDs, then `sinfo`
#   .ci/slurm.sh stop      stop the daemons started here, by PID (never by name)
#
# Environment:
#   FMB_SLURM_DIR          state, logs and the PID file (default /var/tmp/fmb-slurm)
#   FMB_SLURM_ACCOUNTING   slurmdbd (default; sacct works: MariaDB + slurmdbd) or none
#                          (no sacct: the engine then falls back to squeue + result files)
#
# It writes /etc/slurm/slurm.conf (and slurmdbd.conf) with a marker line and refuses to
# overwrite a configuration it did not write: never run it on a real cluster node.
set -euo pipefail

DIR=${FMB_SLURM_DIR:-/var/tmp/fmb-slurm}
ACCOUNTING=${FMB_SLURM_ACCOUNTING:-slurmdbd}
PIDS=$DIR/pids
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
MARKER="# written by fmb .ci/slurm.sh"
CLUSTER=fmbci
DB_PASS=fmbci-local-only   # local socket-only CI database; not a secret
WAIT_S=${FMB_SLURM_WAIT_S:-90}

log() { printf '[slurm.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- PID bookkeeping -------------------------------------------------------------------
# $PIDS holds lines "name pid". A PID counts as ours only if /proc/PID/comm still names
# the daemon (guards against PID reuse).
comm_of() { cat "/proc/$1/comm" 2>/dev/null || true; }
alive() {  # alive NAME PID
  [[ -n "${2:-}" && -d /proc/$2 ]] || return 1
  [[ "$(comm_of "$2")" == "$1" ]]
}
recorded_pid() { [[ -f $PIDS ]] && awk -v n="$1" '$1==n {print $2}' "$PIDS" | tail -1 || true; }
record_pid() {  # record_pid NAME PID
  mkdir -p "$DIR"
  local tmp; tmp=$(mktemp "$DIR/.pids.XXXX")
  { [[ -f $PIDS ]] && awk -v n="$1" '$1!=n' "$PIDS"; echo "$1 $2"; } >"$tmp" || true
  mv "$tmp" "$PIDS"
}
pid_from_file() {  # wait for a daemon's own pidfile
  local f=$1 i
  for ((i = 0; i < 100; i++)); do
    if [[ -s $f ]]; then cat "$f"; return 0; fi
    sleep 0.1
  done
  return 1
}
running() { alive "$1" "$(recorded_pid "$1")"; }

# --- install -----------------------------------------------------------------------------
install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  [[ $ACCOUNTING == slurmdbd ]] && pkgs+=(slurmdbd mariadb-server)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root"
  log "installing ${missing[*]}"
  # Keep package scripts from starting services themselves: we start every daemon below.
  local policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local ok=1
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || ok=0
  if ((policy_added)); then rm -f /usr/sbin/policy-rc.d; fi
  ((ok)) || die "apt-get could not install ${missing[*]}"
  return 0
}

# --- configuration -----------------------------------------------------------------------
guard_conf() {  # refuse to overwrite a config we did not write
  local f=$1
  if [[ -e $f ]] && ! grep -qF "$MARKER" "$f"; then
    die "$f exists and was not written by this script; refusing to overwrite it (move it away first)"
  fi
}

replace_if_changed() {  # keep a running cluster's config file untouched when nothing changed
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then rm -f "$1"; else mv "$1" "$2"; fi
}

write_configs() {
  mkdir -p /etc/slurm "$DIR"/{ctld,d,log}
  guard_conf "$CONF"
  local host cpus mem node
  host=$(hostname -s)
  # slurmd -C reports the hardware as slurm sees it; keep a margin on memory so the
  # node is never drained for "Low RealMemory".
  node=$(slurmd -C 2>/dev/null | head -1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  cpus=${cpus:-$(nproc)}
  mem=${mem:-2048}
  mem=$((mem * 9 / 10))
  local acct=""
  if [[ $ACCOUNTING == slurmdbd ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cat >"$CONF.tmp" <<EOF
$MARKER — a one-node CI cluster; do not use on a real cluster.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
KillWait=5
MinJobAge=300
JobCompType=jobcomp/none
$acct
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  replace_if_changed "$CONF.tmp" "$CONF"
  chmod 644 "$CONF"
  if [[ $ACCOUNTING == slurmdbd ]]; then
    guard_conf "$DBDCONF"
    cat >"$DBDCONF.tmp" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBDCONF.tmp"
    replace_if_changed "$DBDCONF.tmp" "$DBDCONF"
  fi
}

# --- daemons -----------------------------------------------------------------------------
start_munge() {
  running munged && return 0
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force
  record_pid munged "$(pid_from_file /run/munge/munged.pid)"
  munge -n | unmunge >/dev/null || die "munge round trip failed"
}

start_mariadb() {
  running mariadbd && return 0
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    log "initialising the MariaDB data folder"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  rm -f /run/mysqld/fmb-ci.pid
  setsid mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=127.0.0.1 \
    --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/fmb-ci.pid \
    >>"$DIR/log/mariadbd.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 300; i++)); do
    mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 || die "mariadbd did not start (see $DIR/log/mariadbd.log)"
  record_pid mariadbd "$(pid_from_file /run/mysqld/fmb-ci.pid)"
  mariadb --socket=/run/mysqld/mysqld.sock -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  if ! running slurmdbd; then
    rm -f "$DIR/slurmdbd.pid"
    slurmdbd
    record_pid slurmdbd "$(pid_from_file "$DIR/slurmdbd.pid")"
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurm() {
  if ! running slurmctld; then
    rm -f "$DIR/slurmctld.pid"
    slurmctld -i
    record_pid slurmctld "$(pid_from_file "$DIR/slurmctld.pid")"
  fi
  if ! running slurmd; then
    rm -f "$DIR/slurmd.pid"
    slurmd
    record_pid slurmd "$(pid_from_file "$DIR/slurmd.pid")"
  fi
}

wait_idle() {
  local host state i
  host=$(hostname -s)
  for ((i = 0; i < WAIT_S * 2; i++)); do
    state=$(sinfo -h -N -n "$host" -o '%t' 2>/dev/null | head -1 || true)
    case $state in
      idle | mix | alloc) log "node $host is $state"; return 0 ;;
      down* | drain* | drng*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  sinfo -R >&2 || true
  die "node $host not idle after ${WAIT_S}s (state: ${state:-no answer}); logs in $DIR/log"
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts system daemons)"
  case $ACCOUNTING in slurmdbd | none) ;; *) die "FMB_SLURM_ACCOUNTING must be slurmdbd or none" ;; esac
  local t0=$SECONDS
  install_packages
  write_configs
  start_munge
  if [[ $ACCOUNTING == slurmdbd ]]; then
    start_mariadb
    start_slurmdbd
  fi
  start_slurm
  wait_idle
  log "ready in $((SECONDS - t0))s; PIDs in $PIDS"
  cat "$PIDS" >&2
}

stop() {
  [[ -f $PIDS ]] || { log "nothing to stop ($PIDS missing)"; return 0; }
  local name pid i
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=$(recorded_pid "$name")
    [[ -n $pid ]] || continue
    if alive "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do alive "$name" "$pid" || break; sleep 0.1; done
      if alive "$name" "$pid"; then
        log "$name ($pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      log "stopped $name ($pid)"
    fi
  done
  rm -f "$PIDS"
}

status() {
  local name pid
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pid=$(recorded_pid "$name")
    if alive "$name" "$pid"; then echo "$name $pid running"; else echo "$name ${pid:--} not running"; fi
  done
  sinfo 2>&1 || true
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
