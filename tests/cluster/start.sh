#!/usr/bin/env bash
# Start a single-node SLURM on loopback for the tests: munged (private socket), slurmctld,
# slurmd, two fake GPUs (char devices). Status checks use squeue (no slurmdbd/MariaDB).
# Usage: start.sh STATE_DIR. Exit 3 = cannot run here (not root / no apt / a foreign
# /etc/slurm/slurm.conf), with the reason on stderr. stop.sh STATE_DIR undoes it all.
set -euo pipefail
STATE=$(realpath -m "$1")
MARK="# written by lth tests/cluster/start.sh"
skip() { echo "cannot start a test SLURM: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || skip "needs root"
if [ -f /etc/slurm/slurm.conf ] && ! grep -q "^$MARK" /etc/slurm/slurm.conf; then
    skip "/etc/slurm/slurm.conf exists and is not ours"
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || skip "slurm-wlm and munge are not installed and apt-get is missing"
    # Debian's package scripts would start the daemons system-wide: forbid it while installing.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
        || skip "apt-get install slurm-wlm munge failed"
fi

if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    skip "a SLURM daemon is already running on this machine"
fi

mkdir -p "$STATE"/{munge,ctld,spool,log,dev}
chmod 755 "$STATE" "$STATE/munge"   # munged refuses a socket dir that is not executable by all
[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null;
                                 chown munge:munge /etc/munge/munge.key 2>/dev/null || true; chmod 400 /etc/munge/munge.key; }
SOCKET="$STATE/munge/munge.socket"
munged --socket="$SOCKET" --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" \
       --seed-file="$STATE/munge/seed" --force

HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | awk '/NodeName/ {for (i=1;i<=NF;i++) {split($i,kv,"="); v[kv[1]]=kv[2]} print v["CPUs"], int(v["RealMemory"]*0.9)}')
COMM=""
if [ "$(getent ahostsv4 "$HOST" | awk 'NR==1 {print $1}')" = "127.0.0.1" ]; then
    COMM="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"   # only when the host is 127.0.0.1
fi
for i in 0 1; do [ -e "$STATE/dev/nvidia$i" ] || mknod "$STATE/dev/nvidia$i" c 1 3; done

mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
$MARK (state in $STATE)
ClusterName=lthtest
SlurmctldHost=$HOST(127.0.0.1)
$COMM
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=lthtest Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
$MARK
Name=gpu File=$STATE/dev/nvidia[0-1]
CONF

slurmctld
slurmd
for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then echo "SLURM up: $HOST, $CPUS CPUs, 2 fake GPUs"; exit 0; fi
    sleep 0.5
done
echo "SLURM did not come up; see $STATE/log" >&2
exit 1
