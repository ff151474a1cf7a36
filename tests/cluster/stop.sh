#!/usr/bin/env bash
# Stop exactly the daemons start.sh started (by their pid files) and remove its config.
STATE=$(realpath -m "$1")
MARK="# written by lth tests/cluster/start.sh"
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
done
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    [ -f "$f" ] && grep -q "^$MARK" "$f" && rm -f "$f"
done
exit 0
