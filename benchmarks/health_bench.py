#!/usr/bin/env python3
"""Time a full health pass (verdict + every forecast) over a fleet with a week of history.

    python3 benchmarks/health_bench.py            # 1k, 5k and 10k VMs; 1, 3 and 7 days
    python3 benchmarks/health_bench.py --quick

Each VM has 8 series (two filesystems in bytes and inodes, memory, swap, two processes) in
the shape the store hands the health pass: a week of samples as 5-minute rollups (2,016
points a series), or raw 1-minute samples for the history-length rows. Histories are built
once for a pool of distinct VMs (fills, sawtooth, flat, leaks, noise) and reused round-robin,
so the figure is the evaluation alone, not the synthesis.
"""

import argparse
import random
import statistics
import time

from engine_plugin.health import Thresholds, evaluate_vm

DAY = 86400.0
GIB = float(2**30)
NOW = 1_800_000_000.0


def make_vm(seed, days, step):
    rnd = random.Random(seed)
    n = int(days * DAY / step)
    ts = [NOW - (n - i) * step for i in range(n)]
    shape = seed % 4
    fill = rnd.uniform(0.1, 5.0) * GIB / DAY

    def fs(t):
        age = t - ts[0]
        if shape == 0:
            return 20 * GIB + fill * age
        if shape == 1:
            return 50 * GIB + 10 * GIB * ((t % DAY) / DAY)
        return 40 * GIB
    hist = {
        "fs.used:/": [(t, fs(t) + rnd.gauss(0, 0.1 * GIB)) for t in ts],
        "fs.total:/": [(ts[-1], 100 * GIB)],
        "fs.inodes_used:/": [(t, 200000 + 5 * (t - ts[0]) / 3600) for t in ts],
        "fs.inodes_total:/": [(ts[-1], 6_000_000)],
        "fs.used:/var": [(t, 10 * GIB + rnd.gauss(0, 0.05 * GIB)) for t in ts],
        "fs.total:/var": [(ts[-1], 30 * GIB)],
        "memory.used": [(t, 3 * GIB + rnd.gauss(0, 0.2 * GIB)) for t in ts],
        "memory.total": [(ts[-1], 8 * GIB)],
        "swap.used": [(t, 0.1 * GIB) for t in ts],
        "swap.total": [(ts[-1], 2 * GIB)],
        "proc.rss:java": [(t, GIB + (shape == 3) * 0.05 * GIB * (t - ts[0]) / DAY) for t in ts],
        "proc.rss:postgres": [(t, 0.5 * GIB + rnd.gauss(0, 0.01 * GIB)) for t in ts],
    }
    report = {"sections": {"checks": {"data": {"results": [
        {"id": "units.failed", "status": "critical" if seed % 10 == 0 else "ok",
         "message": "1 unit failed"}]}},
        "resources": {"data": {"memory": {"percent": 40.0}, "cpu": {"steal": 1.0}}}}}
    return report, hist


def run(vms, days, step, pool_size, reuse=False):
    """``reuse``: the VMs have no data newer than their last forecast (the service then
    passes no history and keeps the forecasts, as for the silence sweep's VMs)."""
    pool = [make_vm(i, days, step) for i in range(pool_size)]
    thresholds = Thresholds()
    states = [evaluate_vm(r, h, thresholds, None, NOW - 60, NOW - 90)[1] for r, h in pool]
    per_vm = []
    start = time.process_time()
    for i in range(vms):
        report, hist = pool[i % pool_size]
        t0 = time.process_time()
        if reuse:
            evaluate_vm(report, None, thresholds, states[i % pool_size], NOW, NOW - 30)
        else:
            evaluate_vm(report, hist, thresholds, None, NOW, NOW - 30)
        per_vm.append(time.process_time() - t0)
    total = time.process_time() - start
    return total, statistics.median(per_vm) * 1000, sorted(per_vm)[int(len(per_vm) * 0.99)] * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run to check the script")
    args = ap.parse_args()
    pool = 8 if args.quick else 40
    fleet = [200, 500] if args.quick else [1000, 5000, 10000]
    print("Health pass: verdict + forecasts of 8 series per VM (CPU seconds of one core)")
    print("%-34s %10s %12s %12s" % ("case", "pass (s)", "median ms/VM", "p99 ms/VM"))
    for vms in fleet:
        total, med, p99 = run(vms, 7, 300, pool)
        print("%-34s %10.2f %12.2f %12.2f" % ("%d VMs, 7 d of 5-min rollups" % vms, total, med,
                                            p99))
    total, med, p99 = run(fleet[-1], 7, 300, pool, reuse=True)
    print("%-34s %10.2f %12.2f %12.2f" % ("%d VMs, no new data (kept)" % fleet[-1], total, med,
                                        p99))
    vms = fleet[0]
    for days in ([1, 3] if args.quick else [1, 3, 7]):
        total, med, p99 = run(vms, days, 60, pool)
        print("%-34s %10.2f %12.2f %12.2f" % ("%d VMs, %d d of raw 1-min samples" % (vms, days),
                                            total, med, p99))


if __name__ == "__main__":
    main()
