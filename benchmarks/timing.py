"""The one timer of the benchmarks: functions run interleaved, in rotating order."""
from __future__ import annotations

import time


def interleaved(fns: dict, repeats: int, sync=lambda: None, warmups: int = 2):
    """Per function: lists of wall seconds and of process CPU seconds, one per round.

    Every round runs every function once, in an order rotated by one each round, so load that
    drifts during the run falls on all of them alike; ``warmups`` untimed calls of each first
    (first-call allocations, lazy imports); ``sync`` waits for a device's queued work."""
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for name in names:
        for _ in range(warmups):
            fns[name]()
    sync()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu
