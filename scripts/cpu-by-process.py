#!/usr/bin/env python3
"""CPU used by each kind of process over a window, in cores, from /proc.

Usage: scripts/cpu-by-process.py SECONDS [SERVER_PID]

Prints Markdown table rows (| process | cores |): the server (SERVER_PID,
else any process named orderflow), loadgen, nats-server, PostgreSQL's
backends serving TCP clients, its WAL writer, its other processes,
everything else, and the idle time of all cores. Used by
scripts/pg-ingest-breakdown.sh; run it by hand beside any load, e.g.
`(sleep 3; scripts/cpu-by-process.py 8) & loadgen ...`.
"""
import os
import sys
import time

window = float(sys.argv[1])
server = sys.argv[2] if len(sys.argv) > 2 else None
tick = os.sysconf("SC_CLK_TCK")


def snapshot():
    """Each process: its kind and the CPU ticks it has used."""
    seen = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        used = int(fields[11]) + int(fields[12])
        if pid == server or (server is None and comm == "orderflow"):
            group = "orderflow (the server)"
        elif comm == "loadgen":
            group = "loadgen"
        elif comm == "nats-server":
            group = "nats-server"
        elif cmd.startswith("postgres: ") and "walwriter" in cmd:
            group = "PostgreSQL WAL writer"
        elif cmd.startswith("postgres: ") and "127.0.0.1" in cmd:
            group = "PostgreSQL backends (the server's connections)"
        elif cmd.startswith("postgres: ") or comm == "postgres":
            group = "PostgreSQL, other processes"
        else:
            group = "everything else"
        seen[pid] = (group, used)
    return seen


def idle():
    """Ticks all cores have spent idle."""
    return int(open("/proc/stat").readline().split()[4])


a, ia = snapshot(), idle()
time.sleep(window)
b, ib = snapshot(), idle()
groups = {}
for pid, (group, used) in b.items():
    groups[group] = groups.get(group, 0) + used - a.get(pid, (group, used))[1]
for group, used in sorted(groups.items(), key=lambda g: -g[1]):
    print(f"| {group} | {used / tick / window:.2f} |")
print(f"| idle (of {os.cpu_count()} cores) | {(ib - ia) / tick / window:.2f} |")
