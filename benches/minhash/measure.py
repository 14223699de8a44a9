#!/usr/bin/env python3
"""Run a command and sample the memory of its whole process tree.

    measure.py --out FILE.json [--interval 0.1] -- CMD [ARG...]

GNU time's "Maximum resident set size" is the peak of the single largest process among those it waited
for, so it misses multi-process tools: datatrove's LocalPipelineExecutor starts its workers from a
forkserver, and text-dedup forks a pool. This samples, every --interval seconds, the sum over the
command and all its descendants of RSS and of PSS (/proc/PID/smaps_rollup: shared pages split between
the processes that map them, so forked copies are not counted twice), and writes the peaks, the wall
time and the exit status as JSON. Exits with the command's status.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list[int]:
    kids = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def mem_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak_rss = peak_pss = peak_procs = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        rss = pss = 0
        for p in pids:
            a, b = mem_kb(p)
            rss += a
            pss += b
        peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, len(pids))
        time.sleep(args.interval)
    wall = time.perf_counter() - t0
    with open(args.out, "w") as fh:
        json.dump(
            {
                "cmd": cmd,
                "exit": proc.returncode,
                "wall_s": wall,
                "peak_tree_rss_mb": peak_rss / 1024,
                "peak_tree_pss_mb": peak_pss / 1024,
                "peak_procs": peak_procs,
                "interval_s": args.interval,
            },
            fh,
            indent=1,
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
