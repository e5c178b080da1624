#!/usr/bin/env bash
# A one-node SLURM on this machine, for the `--cluster slurm` tests (tests/test_cluster.py,
# tests/test_cluster_recipes.py, tests/test_grid_study.py) and for trying the grid on SLURM without
# a cluster. Needs root (apt-get, daemons). Idempotent: with SLURM already answering, it only says
# so. Prints one line: what runs, or why it could not be started (exit 1).
#
#   bash bench/slurm_local.sh
#
# What it does when SLURM is not running: installs Debian's slurm-wlm and munge when missing
# (apt-get update first), creates a munge key, writes /etc/slurm/slurm.conf for this host (only
# when absent or written by this script before: a real cluster's file is never touched), and starts
# munged, slurmctld and slurmd. The settings are those that work in a container without systemd
# or cgroups (no process tracking by cgroup, no task binding, no accounting); state, spool, pid and
# log files live in $SLURM_LOCAL_DIR (default /var/tmp/slurm_local).
set -u
say() { echo "slurm_local: $*"; }
fail() { say "not started: $*"; exit 1; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1; }
node_ready() { case "$(node_state)" in idle*|mix*|alloc*) return 0;; *) return 1;; esac; }

if command -v sinfo >/dev/null && node_ready; then
    say "SLURM already running (node $(sinfo -h -N -o %N | head -n1): $(node_state))"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "needs root (apt-get and the SLURM daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed (no network to the Debian mirrors?)"
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || fail "apt-get install slurm-wlm munge failed"
fi

DIR=${SLURM_LOCAL_DIR:-/var/tmp/slurm_local}
HOST=$(hostname)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)   # RealMemory must not exceed what slurmd finds
CONF=/etc/slurm/slurm.conf
MARK="# written by alexnet_np bench/slurm_local.sh"
mkdir -p "$DIR"/{state,spool,log} /etc/slurm /run/munge

# munge: the key must belong to the munge user and be readable by it alone
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key >/dev/null 2>&1 \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none \
        || fail "cannot create /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key /run/munge 2>/dev/null; chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged >/dev/null 2>&1 || munged --force >/dev/null 2>&1 || fail "munged did not start"
fi

if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script; not touching it"
fi
cat > "$CONF" <<EOF
$MARK
ClusterName=localcluster
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld || fail "slurmctld did not start (see $DIR/log/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || fail "slurmd did not start (see $DIR/log/slurmd.log)"

for _ in $(seq 60); do
    node_ready && break
    case "$(node_state)" in down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1;; esac
    sleep 1
done
node_ready || fail "node $HOST is '$(node_state)' after 60 s (see $DIR/log/)"
say "SLURM running on localhost (node $HOST, $CPUS CPUs, $(node_state); files in $DIR)"
