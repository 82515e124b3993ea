#!/usr/bin/env python3
"""Time the health pass (verdict + every forecast) over a fleet with a week of history.

    python3 benchmarks/health_bench.py            # 10k VMs: cold, and steady state
    python3 benchmarks/health_bench.py --quick
    python3 benchmarks/health_bench.py --store sqlite,postgresql --store-vms 400

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

With ``--store sqlite``, ``--store postgresql`` or both, only this: **steady passes on the
real store**. ``--store-vms`` VMs (default 200, one service batch) get a week of history
with ``Store.import_history`` in the store's shape (14 health series: the 8 forecast ones
and their capacities, 5-minute rollups older than 48 hours, raw 1-minute samples after,
about 60,000 rows a VM; PostgreSQL in its time partitions), then one realistic report each
(ingest) and a first pass with no budget. Then every ``--cadence`` seconds (default 5
minutes) each VM sends one new report (each at its own second of the minute, so the kept
fits' refreshes spread over the fleet as they do in a real one: with one timestamp for all,
every VM's refreshes fell on one pass) and a pass runs over all of them the way the service
does: ``workers.compute`` (the batch's latest reports and states, the history reads,
``evaluate_vm``) and ``HealthPass.apply`` (verdicts and states, one transaction), in batches of
200, for ``2 * --store-hours`` (the first half a warm-up, so refreshes have spread out).
Measured: CPU of this process plus, with PostgreSQL, of the server's processes (from
/proc; the table splits the 10,000-VM figure into this process, ``engine``, the server's
backends, ``queries``, and its background work, ``bg``: autovacuum, WAL, checkpoints, caused
by ingest's writes as much as the passes', falling into the measured windows as it happens;
and gives the costliest pass, ``worst``), per VM, for compute with the reads as today (the
samples since each VM's last pass, series refitted read whole) and as before (every VM's
whole week every pass), alternated batch by batch on the same data; the two reads' results
are compared (they must be equal).
Each store is a throwaway one (a temporary SQLite file; a PostgreSQL server of its own,
``lab.pg_cluster``). Before each pass the store rolls closed hours up as the service's leader
does every minute (``Store.roll_up``: PostgreSQL, ahead of retention; not timed). What the
store run leaves out: the service's worker processes (compute runs in this process), the
hourly retention pass during the run, and the series of the reports that
the health pass does not read (CPU, network: in the live reports, not in the imported week).

The "full refit" column of the steady-state rows is the same passes forced to refit every
series (no state kept between passes): the method before kept fits, as the peer in the same run.
"""

import argparse
import bisect
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_plugin.health import Thresholds, evaluate_vm  # noqa: E402
from engine_plugin.service import workers  # noqa: E402

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

    def histories(self, vm_ids, prefixes, since, names=None, raw_since=None):
        # (the week as built: raw 48 hours, whatever raw_since asks)
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


# -- the same passes on the real store -------------------------------------------------------

STORE_SERIES_FORECAST = ("fs.used:/", "fs.used:/var", "fs.inodes_used:/", "fs.inodes_used:/var",
                         "memory.used", "swap.used", "proc.rss:java", "proc.rss:postgres")


class StoreVm:
    """VM number ``n`` of the store runs: its values at any time, as history and as reports
    (lab.store_reports.envelope), so the imported week and the live reports are one series."""

    def __init__(self, n, start):
        self.n = n
        self.start = start
        self.rnd = random.Random(n)
        self.shape = n % 4
        self.fill = self.rnd.uniform(0.1, 5.0) * GIB / DAY

    def values(self, t):
        g = self.rnd.gauss
        if self.shape == 0:
            root = 20 * GIB + self.fill * (t - self.start)
        elif self.shape == 1:
            root = 50 * GIB + 10 * GIB * ((t % DAY) / DAY)
        else:
            root = 40 * GIB
        return {"root": root + g(0, 0.1 * GIB), "var": 10 * GIB + g(0, 0.05 * GIB),
                "mem": 3 * GIB + g(0, 0.2 * GIB),
                "java": GIB + (self.shape == 3) * 0.05 * GIB * (t - self.start) / DAY,
                "postgres": 0.5 * GIB + g(0, 0.01 * GIB)}

    def report_values(self, t):
        v = self.values(t)
        return dict(mem_used=v["mem"], mem_total=8 * GIB, mem_percent=100 * v["mem"] / (8 * GIB),
                    filesystems=(("/", v["root"], 100 * GIB), ("/var", v["var"], 30 * GIB)),
                    processes=(("java", v["java"]), ("postgres", v["postgres"])))

    def samples(self, t):
        """The health series a report at ``t`` stores (what extract_samples takes out)."""
        v = self.values(t)
        return {"fs.used:/": float(int(v["root"])), "fs.total:/": float(int(100 * GIB)),
                "fs.inodes_used:/": 12345.0, "fs.inodes_total:/": 655360.0,
                "fs.used:/var": float(int(v["var"])), "fs.total:/var": float(int(30 * GIB)),
                "fs.inodes_used:/var": 12346.0, "fs.inodes_total:/var": 655360.0,
                "memory.used": v["mem"], "memory.total": 8 * GIB, "swap.used": 1e8,
                "swap.total": 2e9, "proc.rss:java": float(int(v["java"])),
                "proc.rss:postgres": float(int(v["postgres"]))}


def import_week(store, vm, now):
    """A week before ``now`` in the store's shape: 5-minute rollups older than its raw
    retention (48 hours), raw 1-minute samples after, written with ``import_history``."""
    from lab.store_reports import vm_uuid

    raw_from = math.floor((now - RAW_S) / 300) * 300
    rolled, raw = [], []
    b = raw_from - 5 * DAY
    while b < raw_from:
        for name, value in vm.samples(b).items():
            rolled.append((name, b, value, value, value, 5))
        b += 300.0
    t = raw_from
    while t < now:
        for name, value in vm.samples(t).items():
            raw.append((name, t, value))
        t += 60.0
    return store.import_history(vm_uuid(vm.n), samples=raw, rollups=rolled, host_id="host-1")


def store_run(kind, url, server_cpu, args, in_memory_ms):
    """Build ``--store-vms`` VMs with a week each in the real store, a first pass at
    ``now`` (not timed), then passes every ``--cadence`` seconds, each after one new report
    per VM, for ``2 * --store-hours`` (the first half a warm-up): the per-VM CPU of each
    pass's compute (reads + evaluation) and apply (the verdicts' and states' write), client
    plus server."""
    import concurrent.futures

    from engine_plugin.service.evaluation import BATCH, HealthPass
    from engine_plugin.service.metrics import ServiceMetrics
    from engine_plugin.storage import open_store
    from lab.store_reports import envelope, vm_uuid

    store = open_store(url)
    store.migrate()
    hours = args.store_hours
    real_now = math.floor(time.time() / 300) * 300
    now = real_now - 2 * hours * HOUR - 600
    vms = [StoreVm(n, now - 7 * DAY) for n in range(args.store_vms)]
    ids = [vm_uuid(vm.n) for vm in vms]
    began = time.perf_counter()
    rows = 0
    for vm in vms:
        rows += import_week(store, vm, now)
    print("  %s: %d VMs, %d rows imported in %.0f s" % (kind, len(vms), rows,
                                                        time.perf_counter() - began), flush=True)
    if kind == "postgresql" and not args.unvacuumed:
        # a week written over seven days has been vacuumed and analysed by autovacuum as it
        # went (its partitions' visibility maps set, their statistics taken); one imported a
        # minute ago has not: every index-only scan of it would visit the heap, and the
        # planner would guess from no statistics (a refit's read of the rollups, 3 to 9
        # times the server's CPU). The hours written during the run are left to autovacuum,
        # as on a live site (its work is the ``bg`` column).
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    seq = [0]
    executor = concurrent.futures.ThreadPoolExecutor(1)
    clock = [now]
    th = {"v": Thresholds()}
    health = HealthPass(store, lambda vm_id=None: th["v"], executor, ServiceMetrics(),
                        clock=lambda: clock[0])

    def report_all(t):
        # each VM at its own second of the minute, as agents report: the refreshes of kept
        # fits, spread by the time of a fit's last sample, spread over the fleet
        envs = [envelope(vm.n, seq[0], t - vm.n * 7 % 60, host_id="host-1",
                         received_at=t - vm.n * 7 % 60, **vm.report_values(t - vm.n * 7 % 60))
                for vm in vms]
        seq[0] += 1
        for k in range(0, len(envs), 200):
            store.ingest(envs[k:k + 200], now=t)

    report_all(now)
    store.roll_up(now)    # (the leader's minute: PostgreSQL rolls closed hours ahead)
    th["v"] = Thresholds(forecast_cold_budget_ms=0)
    clock[0] = now + 5
    for k in range(0, len(ids), BATCH):
        health.evaluate(ids[k:k + BATCH])
    th["v"] = Thresholds()
    cpu = server_cpu or (lambda: (0.0, 0.0))
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # this process's CPU, not waits
    modes = [m for m in ("full", "unbudgeted", "incremental") if m in args.store_modes]
    spent = {m: [] for m in modes}
    #: the database server's share of each measured batch's compute and apply (per VM)
    server = {m: [] for m in modes}
    server_applied = []
    applied = []
    deferred = 0
    mismatched = 0
    passes = int(2 * hours * HOUR / args.cadence)
    t = now
    for p in range(passes):
        t += args.cadence
        report_all(t - 30)
        store.roll_up(t)
        clock[0] = t
        measured = p >= passes // 2
        for k in range(0, len(ids), BATCH):
            batch = ids[k:k + BATCH]
            ths = {v: th["v"] for v in batch}
            open_ths = {v: Thresholds(forecast_cold_budget_ms=0) for v in batch}
            results = {}
            order = modes if (p + k // BATCH) % 2 == 0 else modes[::-1]
            if not measured or (p - passes // 2) % args.full_every:
                order = modes[-1:]
            for mode in order:
                if profiler is not None and measured:
                    profiler.enable()
                s0 = cpu()
                c0 = time.process_time()
                results[mode] = workers.compute(
                    store, batch, open_ths if mode == "unbudgeted" else ths, t,
                    **({"full_reads": True} if mode == "full" else {}))
                c1 = time.process_time()
                if profiler is not None:
                    profiler.disable()
                if measured:
                    s1 = cpu()
                    spent[mode].append((c1 - c0 + s1[0] - s0[0]) / len(batch))
                    server[mode].append(((s1[0] - s0[0]) / len(batch),
                                         (s1[1] - s0[1]) / len(batch)))
            final = results[modes[-1]]
            deferred += sum(r.deferred for r in final)
            if "full" in results and not any(r.deferred for r in final):
                for other in ("unbudgeted", "incremental"):
                    mismatched += sum(a.verdict != b.verdict or a.state != b.state
                                      for a, b in zip(results["full"],
                                                      results.get(other, results["full"])))
            s0 = cpu()
            c0 = time.process_time()
            health.apply(final, t)
            c1 = time.process_time()
            if measured:
                s1 = cpu()
                applied.append((c1 - c0 + s1[0] - s0[0]) / len(batch))
                server_applied.append(((s1[0] - s0[0]) / len(batch),
                                       (s1[1] - s0[1]) / len(batch)))
    executor.shutdown()
    store.close()
    if profiler is not None:
        profiler.dump_stats("%s.%s" % (args.profile, kind))
    out = {"mode": {}, "server": server, "apply": applied, "server_apply": server_applied,
           "deferred": deferred, "mismatched": mismatched, "passes": passes - passes // 2}
    for mode in modes:
        out["mode"][mode] = spent[mode]
    return out


def store_table(args, results, in_memory_ms):
    """Per-VM CPU of a steady pass (ms: median and mean of the measured batches' per-VM
    cost) and the 10,000-VM figure (the mean: a pass's total), per store and read mode,
    beside the in-memory figure of this run (a mean, like the steady rows above)."""
    print("\nSteady passes through workers.compute + HealthPass.apply on the real store, a "
          "pass every %d min, one new report per VM per pass, %d VMs with a week each "
          "(CPU of this process plus the database server's; per-VM cost of %d-VM batches)"
          % (args.cadence / 60, args.store_vms, min(200, args.store_vms)))
    print("%-40s %11s %11s %11s %11s %16s %11s %11s %11s %11s" % (
        "store, read", "compute ms", "apply ms", "median ms", "mean ms", "%d VMs (s)" % args.vms,
        "engine (s)", "queries (s)", "bg (s)", "worst (s)"))
    print("%-40s %11s %11s %11s %11.2f %16.1f" % ("in memory (no read timed), this run",
                                                  "-", "-", "-", in_memory_ms,
                                                  in_memory_ms * args.vms / 1000))
    for kind, res in results.items():
        apply_ms = 1000 * statistics.median(res["apply"]) if res["apply"] else float("nan")
        for mode, per in res["mode"].items():
            ms = 1000 * statistics.median(per)
            mean = 1000 * statistics.fmean(per)
            label = {"full": "a week per VM per pass (before)",
                     "unbudgeted": "since the last pass, no budget",
                     "incremental": "since the last pass, budget"}[mode]
            apply_mean = 1000 * statistics.fmean(res["apply"])
            # the pass's total (mean) split: this process (the engine's worker and apply),
            # the database server's backends (the pass's queries) and its background work
            server = [1000 * (statistics.fmean(x[i] for x in res["server"][mode])
                              + statistics.fmean(x[i] for x in res["server_apply"]))
                      for i in (0, 1)]
            total = mean + apply_mean
            worst = 1000 * max(per) + apply_ms
            scale = args.vms / 1000
            print("%-40s %11.2f %11.2f %11.2f %11.2f %16.1f %11.1f %11.1f %11.1f %11.1f"
                  % ("%s, %s" % (kind, label), ms, apply_ms, ms + apply_ms, total,
                     total * scale, (total - server[0]) * scale, server[1] * scale,
                     (server[0] - server[1]) * scale, worst * scale))
        print("  %s: %d measured passes, %d VM evaluations put off by the budget, %d results "
              "differing between the two reads" % (kind, res["passes"], res["deferred"],
                                                  res["mismatched"]))
    print("load average %.1f %.1f %.1f" % os.getloadavg())


def run_stores(args, in_memory_ms):
    import tempfile

    results = {}
    for kind in args.store:
        with tempfile.TemporaryDirectory(prefix="vmdiag-hb-") as work:
            if kind == "sqlite":
                results[kind] = store_run(kind, "sqlite:///%s/vmdiag.db" % work, None, args,
                                          in_memory_ms)
            else:
                from lab.pg_cluster import PgCluster

                pg = PgCluster(settings={"shared_buffers": "512MB"}).start()
                try:
                    url = pg.create_database("bench")
                    results[kind] = store_run(kind, url, pg.server_cpu, args, in_memory_ms)
                finally:
                    pg.stop()
    store_table(args, results, in_memory_ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run to check the script")
    ap.add_argument("--vms", type=int, default=10000, help="fleet size the figures scale to")
    ap.add_argument("--store", default="", help="also measure steady passes on the real "
                    "store: sqlite, postgresql or both (comma-separated); only that")
    ap.add_argument("--store-vms", type=int, default=200, help="VMs built in the store")
    ap.add_argument("--store-hours", type=float, default=2.0,
                    help="hours of warm-up, then as many measured")
    ap.add_argument("--cadence", type=float, default=300.0, help="seconds between passes")
    ap.add_argument("--full-every", type=int, default=1,
                    help="the read as before on every n-th measured pass only (it is slow)")
    ap.add_argument("--store-modes", default="full,unbudgeted,incremental",
                    help="reads compared: full (a week each pass, before), unbudgeted (since "
                    "the last pass, refits never put off), incremental (the service's, with "
                    "[health] forecast_cold_budget_ms)")
    ap.add_argument("--unvacuumed", action="store_true",
                    help="PostgreSQL: measure on the imported week as it is, not vacuumed "
                         "and analysed as autovacuum leaves a week written over seven days")
    ap.add_argument("--profile", metavar="PATH", help="cProfile the measured compute calls of "
                    "the store runs (this process only) into PATH.<store>")
    args = ap.parse_args()
    if args.store:
        args.store = [s for s in args.store.split(",") if s]
        args.store_modes = args.store_modes.split(",")
        pool = [make_vm(i, 7, args.store_hours * HOUR + 60) for i in range(8)]
        in_memory = 1000 * statistics.fmean(steady(pool, args.cadence, args.store_hours))
        run_stores(args, in_memory)
        return
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
