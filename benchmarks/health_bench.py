#!/usr/bin/env python3
"""Time the health pass (verdict + every forecast) over a fleet with a week of history.

    python3 benchmarks/health_bench.py            # 10k VMs: cold, and steady state
    python3 benchmarks/health_bench.py --quick

Each VM has 8 series (two filesystems in bytes and inodes, memory, swap, two processes) in
the shape the store hands the health pass: 5-minute rollups older than 48 hours and raw
1-minute samples after, a week deep (about 4,300 points a series). Histories are built once
for a pool of distinct VMs (fills, a daily sawtooth, flat, a leak, noise) and reused
round-robin, so the figure is the evaluation alone, not the synthesis or the store's query.

Rows:

* **cold**: no state kept from an earlier pass (the service's first pass after a start):
  every series is fitted on its whole week.
* **steady state**: passes every ``--cadence`` seconds for ``--hours`` with the state of the
  previous pass and the samples that arrived since (the service's normal case: every VM
  reports every minute); the figure is the mean cost of one VM's pass over that period,
  so it includes the refits that fall due (``[health] forecast_refresh_s``) and those that
  new data forces, and the 10,000-VM pass is that mean times 10,000.
* **no new data**: a silent VM swept again; its forecasts are kept and no history is read.
* **cold pass, budgeted**: the service's pass over ``--vms`` VMs never forecast (the first
  pass of a new installation), through ``workers.compute`` in batches of 200 as the service
  runs it, with ``[health] forecast_cold_budget_ms`` (default 1 ms a VM): its CPU, how many
  VMs got their first forecasts, and how many passes the whole fleet needs at that rate. The
  store is an in-memory stand-in over the same histories (the real store's read is not
  timed here; benchmarks/pass_bench.py times it).

The "full refit" column of the steady-state rows is the same passes forced to refit every
series (no state kept between passes): the method before kept fits, as the peer in the same run.
"""

import argparse
import bisect
import os
import random
import statistics
import time
from types import SimpleNamespace

from engine_plugin.health import Thresholds, evaluate_vm
from engine_plugin.service import workers

DAY = 86400.0
HOUR = 3600.0
GIB = float(2**30)
NOW = 1_800_000_000.0
RAW_S = 2 * DAY           # raw 1-minute samples this far back, 5-minute rollups before


def make_vm(seed, days, extra_s):
    """A VM's report and histories from ``NOW - days`` to ``NOW + extra_s``."""
    rnd = random.Random(seed)
    start = NOW - days * DAY
    ts = [start + i * 300.0 for i in range(int((days * DAY - RAW_S) / 300))]
    t = ts[-1] + 300.0 if ts else start
    while t <= NOW + extra_s:
        ts.append(t)
        t += 60.0
    shape = seed % 4
    fill = rnd.uniform(0.1, 5.0) * GIB / DAY

    def fs(t):
        if shape == 0:
            return 20 * GIB + fill * (t - start)
        if shape == 1:
            return 50 * GIB + 10 * GIB * ((t % DAY) / DAY)
        return 40 * GIB
    hist = {
        "fs.used:/": [(t, fs(t) + rnd.gauss(0, 0.1 * GIB)) for t in ts],
        "fs.total:/": [(ts[-1], 100 * GIB)],
        "fs.inodes_used:/": [(t, 200000 + 5 * (t - start) / 3600) for t in ts],
        "fs.inodes_total:/": [(ts[-1], 6_000_000)],
        "fs.used:/var": [(t, 10 * GIB + rnd.gauss(0, 0.05 * GIB)) for t in ts],
        "fs.total:/var": [(ts[-1], 30 * GIB)],
        "memory.used": [(t, 3 * GIB + rnd.gauss(0, 0.2 * GIB)) for t in ts],
        "memory.total": [(ts[-1], 8 * GIB)],
        "swap.used": [(t, 0.1 * GIB) for t in ts],
        "swap.total": [(ts[-1], 2 * GIB)],
        "proc.rss:java": [(t, GIB + (shape == 3) * 0.05 * GIB * (t - start) / DAY) for t in ts],
        "proc.rss:postgres": [(t, 0.5 * GIB + rnd.gauss(0, 0.01 * GIB)) for t in ts],
    }
    report = {"sections": {"checks": {"data": {"results": [
        {"id": "units.failed", "status": "critical" if seed % 10 == 0 else "ok",
         "message": "1 unit failed"}]}},
        "resources": {"data": {"memory": {"percent": 40.0}, "cpu": {"steal": 1.0}}}}}
    return report, hist


def view(hist, now, days):
    """The histories as the store returns them at ``now``: a week deep, nothing later."""
    out = {}
    for name, pts in hist.items():
        if len(pts) == 1:
            out[name] = pts
            continue
        lo = bisect.bisect_left(pts, (now - days * DAY,))
        out[name] = pts[lo:bisect.bisect_right(pts, (now, float("inf")))]
    return out


def cold(vms, pool):
    thresholds = Thresholds()
    per_vm = []
    views = [(r, view(h, NOW, 7)) for r, h in pool]
    for i in range(vms):
        report, hist = views[i % len(views)]
        t0 = time.process_time()
        evaluate_vm(report, hist, thresholds, None, NOW, NOW - 30)
        per_vm.append(time.process_time() - t0)
    return per_vm


def steady(pool, cadence, hours, keep=True):
    """Per-VM CPU seconds of each pass at ``cadence`` over ``hours``, after a warm-up of the
    same length (so refits have spread out); ``keep=False`` refits everything every pass."""
    thresholds = Thresholds()
    per_vm = []
    for report, hist in pool:
        state = None
        now = NOW - hours * HOUR
        while now <= NOW + hours * HOUR:
            h = view(hist, now, 7)
            t0 = time.process_time()
            _, new_state = evaluate_vm(report, h, thresholds, state if keep else None, now,
                                       now - 30)
            spent = time.process_time() - t0
            state = new_state
            if now > NOW:
                per_vm.append(spent)
            now += cadence
    return per_vm


class PoolStore:
    """What ``workers.compute`` reads, over the pool's histories (VM i is pool[i % size])."""

    def __init__(self, pool, days):
        self.views = [(r, view(h, NOW, days)) for r, h in pool]
        self.states = {}

    def _vm(self, vm_id):
        return self.views[int(vm_id) % len(self.views)]

    def latest(self, vm_id):
        return SimpleNamespace(report=self._vm(vm_id)[0], ingested_at=NOW - 30,
                               received_at=NOW - 30)

    def event_state(self, key):
        return self.states.get(key)

    def histories(self, vm_ids, prefixes, since):
        return {v: self._vm(v)[1] for v in vm_ids}


def cold_pass(pool, vms, budget_ms):
    """CPU seconds of one pass over ``vms`` never-forecast VMs, and how many got forecasts."""
    store = PoolStore(pool, 7)
    th = Thresholds(forecast_cold_budget_ms=budget_ms)
    ids = [str(i) for i in range(vms)]
    t0 = time.process_time()
    forecast = 0
    for k in range(0, vms, 200):           # the service's batches (evaluation.BATCH)
        batch = ids[k:k + 200]
        for r in workers.compute(store, batch, {v: th for v in batch}, NOW):
            forecast += not r.deferred
    return time.process_time() - t0, forecast


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run to check the script")
    ap.add_argument("--vms", type=int, default=10000, help="fleet size the figures scale to")
    args = ap.parse_args()
    pool_size = 8 if args.quick else 40
    hours = 1.0 if args.quick else 3.0
    pool = [make_vm(i, 7, hours * HOUR + 60) for i in range(pool_size)]
    cold_vms = 200 if args.quick else 1000
    print("Health pass: verdict + forecasts of 8 series per VM, a week of history "
          "(CPU seconds of one core; %d distinct VMs reused)" % pool_size)
    print("%-44s %9s %9s %9s %15s" % ("case", "median ms", "mean ms", "p99 ms",
                                      "%d VMs (s)" % args.vms))

    def row(name, per_vm):
        ms = sorted(x * 1000 for x in per_vm)
        mean = statistics.fmean(ms)
        print("%-44s %9.2f %9.2f %9.2f %15.1f" % (name, statistics.median(ms), mean,
                                                 ms[int(len(ms) * 0.99)], mean * args.vms / 1000))
    row("cold (no state), %d VMs" % cold_vms, cold(cold_vms, pool))
    for cadence in ((60.0, 900.0) if not args.quick else (300.0,)):
        row("steady, a pass every %d min, fits kept" % (cadence / 60),
            steady(pool, cadence, hours))
        row("steady, a pass every %d min, full refit" % (cadence / 60),
            steady(pool[:max(4, pool_size // 4)], cadence, min(hours, 1.0), keep=False))
    thresholds = Thresholds()
    states = [evaluate_vm(r, view(h, NOW - 60, 7), thresholds, None, NOW - 60, NOW - 90)[1]
              for r, h in pool]
    per_vm = []
    for i in range(args.vms):
        report, _ = pool[i % pool_size]
        t0 = time.process_time()
        evaluate_vm(report, None, thresholds, states[i % pool_size], NOW, NOW - 30)
        per_vm.append(time.process_time() - t0)
    row("no new data (forecasts kept, no history read)", per_vm)
    spent, forecast = cold_pass(pool, args.vms, Thresholds().forecast_cold_budget_ms)
    print("cold pass over %d never-forecast VMs, budget %.1f ms a VM: %.1f s CPU, %d VMs got "
          "first forecasts (%.1f ms each), the fleet in %d passes; load average %.1f"
          % (args.vms, Thresholds().forecast_cold_budget_ms, spent, forecast,
             1000 * spent / max(1, forecast), -(-args.vms // max(1, forecast)),
             os.getloadavg()[0]))


if __name__ == "__main__":
    main()
