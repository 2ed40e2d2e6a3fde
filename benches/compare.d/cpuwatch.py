#!/usr/bin/env python3
"""CPU used by other people's processes while a scenario runs.

    cpuwatch.py snap FILE ROOT     record the machine's and every process's CPU time
    cpuwatch.py foreign FILE ROOT  print "<cores> <top consumers>" since FILE

On a shared machine another user's build or benchmark can take the broker's
or the generator's core in the middle of a run; the figures of that run are
then worth little. ROOT is the compare script's pid: it and everything under
it (brokers, generator) are ours.

The total is the machine's user + system time (from /proc/stat) less ours
and less kernel threads', which do our own network work among other things:
exact, short-lived processes included. The names of the top consumers are
only indicative: they count the processes alive at the end of the window.
"""

import json
import os
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def machine_ticks():
    """user + nice + system of all CPUs; interrupt time is nobody's."""
    with open("/proc/stat", encoding="utf-8") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


def processes():
    """pid -> [ppid, own CPU ticks, reaped children's ticks, command name]."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        # Fields from 3 (state): ppid is 4, utime, stime, cutime, cstime are 14..17.
        procs[int(entry)] = [
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]),
            comm,
        ]
    return procs


def descendants(procs, root):
    children = {}
    for pid, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def snap(path, root):
    procs = processes()
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"time": time.monotonic(), "machine": machine_ticks(), "procs": procs}, f)


def foreign(path, root):
    with open(path, encoding="utf-8") as f:
        before = json.load(f)
    elapsed = max(time.monotonic() - before["time"], 1e-3)
    machine = machine_ticks() - before["machine"]
    old = {int(pid): v for pid, v in before["procs"].items()}
    now = processes()
    ours = descendants(now, root)
    kernel = descendants(now, 2)

    def grew(pid, with_children):
        """CPU ticks of pid since the snapshot (all of them if it is new)."""
        _, own, children, comm = now[pid]
        total = own + children if with_children else own
        prev = old.get(pid)
        if prev is None or prev[3] != comm and pid not in ours:
            return total
        return max(total - (prev[1] + prev[2] if with_children else prev[1]), 0)

    # Our processes that ended were reaped inside our tree, so the
    # children's time of the survivors covers them.
    mine = sum(grew(pid, True) for pid in ours)
    kthreads = sum(grew(pid, False) for pid in kernel)
    total = max(machine - mine - kthreads, 0) / TICKS / elapsed

    by_name = {}
    for pid in now:
        if pid not in ours and pid not in kernel:
            ticks = grew(pid, False)
            if ticks:
                by_name[now[pid][3]] = by_name.get(now[pid][3], 0) + ticks
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:3]
    names = ",".join(f"{comm}:{ticks / TICKS / elapsed:.2f}" for comm, ticks in top)
    print(f"{total:.3f} {names or '-'}")


def main(argv):
    if len(argv) == 3 and argv[0] == "snap":
        snap(argv[1], int(argv[2]))
    elif len(argv) == 3 and argv[0] == "foreign":
        foreign(argv[1], int(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
