#!/usr/bin/env python3
"""Storage benchmark: ingest throughput and query latency on SQLite and PostgreSQL, side by side.

    python3 benchmarks/storage_bench.py            # full run: 10,000 VMs, a week of history
    python3 benchmarks/storage_bench.py --quick    # small run for a smoke test (~1 min)
    python3 benchmarks/storage_bench.py --backends sqlite --json out.json

What it does, per backend, on a fresh database (SQLite file in a temporary folder; a throwaway
local PostgreSQL cluster started for the run, Unix socket only, durable settings: fsync on,
synchronous_commit on):

1. Ingest: ``--rounds`` reports from each of ``--vms`` VMs, in batches of ``--batch`` through
   ``Store.ingest``, as the service does. Reports are realistic (~19 KB of JSON, 59 metric
   samples: 8 filesystems, 4 interfaces, 10 top-memory processes, 60 units and sockets).
   Only the time spent inside ``ingest`` is counted; building the reports is not. Then a
   spool catch-up: batches of 50 VMs x 10 consecutive reports, as relays send after the
   engine was unreachable.
2. History: a week of history for ``--history-vms`` VMs, loaded in bulk with
   ``Store.import_history``: for each of 4 metrics (cpu.percent, memory.percent, fs.used:/,
   net.rx_bps:eth0) the last 48 hours raw at 60 s (2,880 points) and the 5 days before as
   5-minute rollups (1,440 buckets), i.e. exactly what the store holds a week after
   install with default retention. A verdict is stored for every VM.
3. Queries: p50/p99 of ``latest(vm)``, ``history(vm, "cpu.percent", now - 7 d, now)``,
   the VM page (latest + verdict + week of cpu history) on random VMs, and ``summaries()`` of
   the whole fleet; then the duration of one hourly ``apply_retention`` pass.

The figures depend on the machine; the run prints its parameters with them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine_plugin.storage import ROLLUP_STEP, StorageConfig, Store, open_store  # noqa: E402
from engine_plugin.storage.extract import extract_samples  # noqa: E402
from lab.pg_cluster import PgCluster, PgUnavailable  # noqa: E402
from lab.store_reports import envelope, vm_uuid  # noqa: E402

DAY = 86400.0
HISTORY_METRICS = ("cpu.percent", "memory.percent", "fs.used:/", "net.rx_bps:eth0")
FILESYSTEMS = ("/", "/boot", "/var", "/var/log", "/home", "/opt", "/srv", "/tmp")
INTERFACES = ("eth0", "eth1", "eth2", "lo")
PROCESSES = ("postgres", "java", "httpd", "sshd", "systemd", "chronyd", "rsyslogd", "tuned",
             "NetworkManager", "qemu-ga")
# Durable PostgreSQL settings sized for a small engine machine.
PG_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB", "checkpoint_timeout": "15min",
               "work_mem": "32MB", "maintenance_work_mem": "256MB", "wal_compression": "on"}


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100.0 * len(ordered)) - 1))
    return ordered[index]


class Reports:
    """Realistic reports without paying schema validation for each: one validated template,
    then per report only the numbers and identifiers change (shared, read-only sub-trees)."""

    def __init__(self) -> None:
        self.template = envelope(
            0, 0, 1.0, extra=60,
            filesystems=[(mp, 2e9 + i * 1e8, 2e10) for i, mp in enumerate(FILESYSTEMS)],
            interfaces=[(name, 1000.0, 500.0) for name in INTERFACES],
            processes=[(name, 1e8 + i * 1e7) for i, name in enumerate(PROCESSES)])
        self.size = len(json.dumps(self.template))
        self.samples = len(extract_samples(self.template["report"]))

    def make(self, vm: int, seq: int, t: float, rng: random.Random) -> Dict[str, Any]:
        tpl = self.template
        report = dict(tpl["report"], boot_id="boot-%d" % vm, run_id="run-%d" % vm, seq=seq,
                      time=t)
        sections = dict(report["sections"])
        res = copy.deepcopy(sections["resources"])
        res["collected_at"] = t
        data = res["data"]
        data["cpu"]["percent"] = rng.uniform(0, 100)
        data["cpu"]["steal"] = rng.uniform(0, 5)
        data["memory"]["percent"] = rng.uniform(20, 95)
        for fs in data["filesystems"]:
            fs["used"] = int(fs["used"] * rng.uniform(0.9, 1.1))
        for proc in data["top_memory"]:
            proc["rss"] = int(proc["rss"] * rng.uniform(0.8, 1.2))
        net = dict(sections["network"], collected_at=t)
        net_data = dict(net["data"])
        net_data["interfaces"] = [dict(i, rx_bps=rng.uniform(0, 1e7), tx_bps=rng.uniform(0, 1e7))
                                  for i in net["data"]["interfaces"]]
        net["data"] = net_data
        sections.update(resources=res, network=net)
        report["sections"] = sections
        return {"host_id": "host-%d" % (vm % 50), "vm_id": vm_uuid(vm), "received_at": t + 0.5,
                "report": report}


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000.0


def bench_ingest(store: Store, reports: Reports, vms: int, rounds: int, batch: int,
                 threads: int, start: float) -> Dict[str, Any]:
    """Each round: build every VM's next report first, then time ``threads`` uploaders
    (the service's executor threads serving several relays) ingesting the batches."""
    rng = random.Random(1)
    spent = 0.0
    latencies: List[float] = []
    count = 0
    for rnd in range(rounds):
        t = start + 60 * rnd
        batches = [[reports.make(vm, rnd, t + (vm % 60), rng)
                    for vm in range(first, min(first + batch, vms))]
                   for first in range(0, vms, batch)]

        def upload(envs: List[Dict[str, Any]]) -> int:
            began = time.perf_counter()
            # the engine receives the batch in simulated time, as retention sees it
            accepted = store.ingest(envs, now=envs[-1]["received_at"]).accepted
            latencies.append((time.perf_counter() - began) * 1000.0)
            return accepted

        began = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            count += sum(pool.map(upload, batches))
        spent += time.perf_counter() - began
        del batches
        print("  ingest round %d/%d: %d reports, %.0f reports/s so far"
              % (rnd + 1, rounds, count, count / spent), flush=True)
    return {"reports": count, "seconds": spent, "reports_per_s": count / spent,
            "samples_per_s": count * reports.samples / spent, "threads": threads,
            "batch_p50_ms": percentile(latencies, 50), "batch_p99_ms": percentile(latencies, 99)}


def bench_catch_up(store: Store, reports: Reports, vms: int, per_vm: int, batch: int,
                   threads: int, start: float) -> Dict[str, Any]:
    """Relays flushing their spools after the engine was away: each batch holds ``per_vm``
    consecutive reports of ``batch // per_vm`` VMs, so only the newest of each VM becomes
    its latest report."""
    rng = random.Random(4)
    group = max(1, batch // per_vm)
    batches = []
    for first in range(0, vms, group):
        batches.append([reports.make(vm, 1000 + k, start + 60 * k + (vm % 60), rng)
                        for vm in range(first, min(first + group, vms)) for k in range(per_vm)])
    count = sum(len(b) for b in batches)
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        accepted = sum(pool.map(
            lambda envs: store.ingest(envs, now=max(e["received_at"] for e in envs)).accepted,
            batches))
    spent = time.perf_counter() - began
    assert accepted == count, "catch-up accepted %d of %d reports" % (accepted, count)
    print("  catch-up: %d reports, %.0f reports/s" % (count, count / spent), flush=True)
    return {"reports": count, "seconds": spent, "reports_per_s": count / spent,
            "reports_per_vm_per_batch": per_vm}


def week_of_history(now: float, rng: random.Random) -> Tuple[List[Tuple[str, float, float]],
                                                           List[Tuple[str, float, float, float,
                                                                      float, int]]]:
    raw_from = math.floor((now - 2 * DAY) / ROLLUP_STEP) * ROLLUP_STEP
    raw = []
    rolled = []
    for metric in HISTORY_METRICS:
        base = rng.uniform(10, 80)
        t = raw_from
        while t < now:
            raw.append((metric, t, base + 10 * math.sin(t / 3600.0)))
            t += 60.0
        bucket = raw_from - 5 * DAY
        while bucket < raw_from:
            avg = base + 10 * math.sin(bucket / 3600.0)
            rolled.append((metric, bucket, avg, avg - 2, avg + 2, 5))
            bucket += ROLLUP_STEP
    return raw, rolled


def bench_history_load(store: Store, vms: int, history_vms: int, now: float,
                       workers: int) -> Dict[str, Any]:
    chosen = random.Random(2).sample(range(vms), history_vms)
    rows = [0]

    def load(vm: int) -> int:
        raw, rolled = week_of_history(now, random.Random(vm))
        return store.import_history(vm_uuid(vm), samples=raw, rollups=rolled,
                                    host_id="host-%d" % (vm % 50))

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for i, written in enumerate(pool.map(load, chosen), start=1):
            rows[0] += written
            if i % max(1, history_vms // 5) == 0:
                print("  history: %d/%d VMs, %d rows" % (i, history_vms, rows[0]), flush=True)
    took = time.perf_counter() - started

    verdicts_started = time.perf_counter()

    def verdict(vm: int) -> None:
        status = "critical" if vm % 97 == 0 else "warning" if vm % 13 == 0 else "ok"
        store.set_verdict(vm_uuid(vm), {"status": status, "reasons": [
            {"id": "fs.fill:/", "message": "/ will be full in 3 days"}] if status != "ok"
            else [], "forecasts": []}, now)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(verdict, range(vms)))
    return {"vms": history_vms, "rows": rows[0], "seconds": took, "rows_per_s": rows[0] / took,
            "verdicts_seconds": time.perf_counter() - verdicts_started, "vm_sample": chosen}


def latency(fn: Callable[[], Any], runs: int) -> Dict[str, float]:
    fn()  # warm caches and prepared statements once
    times = [timed(fn) for _ in range(runs)]
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "max_ms": max(times), "runs": runs}


def bench_queries(store: Store, vms: int, history_sample: List[int], now: float,
                  runs: int, fleet_runs: int) -> Dict[str, Any]:
    rng = random.Random(3)
    out: Dict[str, Any] = {}
    out["latest"] = latency(lambda: store.latest(vm_uuid(rng.randrange(vms))), runs)
    out["history_week"] = latency(lambda: store.history(
        vm_uuid(rng.choice(history_sample)), "cpu.percent", now - 7 * DAY, now), runs)

    def vm_page() -> None:
        vm = vm_uuid(rng.choice(history_sample))
        store.latest(vm)
        store.verdicts([vm])
        store.history(vm, "cpu.percent", now - 7 * DAY, now)
    out["vm_page"] = latency(vm_page, runs)
    rows = store.summaries()
    assert len(rows) >= vms, "fleet summary lists %d VMs, expected %d" % (len(rows), vms)
    out["summaries_fleet"] = latency(store.summaries, fleet_runs)
    out["summaries_host"] = latency(lambda: store.summaries(host_id="host-7"), runs)
    return out


def bench_retention(store: Store, now: float) -> Dict[str, Any]:
    started = time.perf_counter()
    stats = store.apply_retention(now + 3600)
    return {"seconds": time.perf_counter() - started, **stats}


def run_backend(name: str, url: str, args: argparse.Namespace) -> Dict[str, Any]:
    print("\n== %s" % name, flush=True)
    store = open_store(StorageConfig(url=url,
                                     pool_size=max(args.workers, args.ingest_threads) + 1))
    try:
        store.migrate()
        now = math.floor(time.time() / ROLLUP_STEP) * ROLLUP_STEP
        reports = Reports()
        result: Dict[str, Any] = {"report_bytes": reports.size}
        result["ingest"] = bench_ingest(store, reports, args.vms, args.rounds, args.batch,
                                        args.ingest_threads, now + 60)
        result["catch_up"] = bench_catch_up(store, reports, min(args.vms, 2000), 10,
                                            args.batch, args.ingest_threads,
                                            now + 60 * args.rounds + 60)
        history = bench_history_load(store, args.vms, args.history_vms, now, args.workers)
        sample = history.pop("vm_sample")
        result["history_load"] = history
        result["queries"] = bench_queries(store, args.vms, sample, now, args.runs,
                                          args.fleet_runs)
        result["retention"] = bench_retention(store, now)
        return result
    finally:
        store.close()


def sqlite_url(folder: str) -> str:
    return "sqlite:///%s" % os.path.join(folder, "vmdiag.db")


def fmt_row(label: str, results: Dict[str, Dict[str, Any]], get: Callable[[Dict[str, Any]],
                                                                          Any]) -> str:
    cells = []
    for res in results.values():
        try:
            value = get(res)
        except (KeyError, TypeError):
            value = None
        cells.append("%14s" % ("-" if value is None else
                                ("%.1f" % value if isinstance(value, float) else str(value))))
    return "%-44s%s" % (label, "".join(cells))


def print_table(results: Dict[str, Dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n== results: %d VMs x %d rounds ingested in batches of %d by %d threads; a week of "
          "history for %d VMs x %d metrics" % (args.vms, args.rounds, args.batch,
                                               args.ingest_threads, args.history_vms,
                                               len(HISTORY_METRICS)))
    print("%-44s%s" % ("", "".join("%14s" % name for name in results)))
    rows = [
        ("report size (bytes of JSON)", lambda r: r["report_bytes"]),
        ("ingest: reports/s (target >= 2000)", lambda r: r["ingest"]["reports_per_s"]),
        ("ingest: metric samples/s", lambda r: r["ingest"]["samples_per_s"]),
        ("ingest, spool catch-up (10 per VM): reports/s",
         lambda r: r["catch_up"]["reports_per_s"]),
        ("ingest: batch of %d p50 ms" % args.batch, lambda r: r["ingest"]["batch_p50_ms"]),
        ("ingest: batch of %d p99 ms" % args.batch, lambda r: r["ingest"]["batch_p99_ms"]),
        ("history load: rows/s (bulk import)", lambda r: r["history_load"]["rows_per_s"]),
        ("latest(vm) p50 ms", lambda r: r["queries"]["latest"]["p50_ms"]),
        ("latest(vm) p99 ms (target <= 50)", lambda r: r["queries"]["latest"]["p99_ms"]),
        ("history(vm, week) p50 ms", lambda r: r["queries"]["history_week"]["p50_ms"]),
        ("history(vm, week) p99 ms", lambda r: r["queries"]["history_week"]["p99_ms"]),
        ("VM page (latest+verdict+week) p50 ms", lambda r: r["queries"]["vm_page"]["p50_ms"]),
        ("VM page p99 ms (target <= 50)", lambda r: r["queries"]["vm_page"]["p99_ms"]),
        ("summaries(fleet) p50 ms", lambda r: r["queries"]["summaries_fleet"]["p50_ms"]),
        ("summaries(fleet) p99 ms (target <= 200)",
         lambda r: r["queries"]["summaries_fleet"]["p99_ms"]),
        ("summaries(one host) p99 ms", lambda r: r["queries"]["summaries_host"]["p99_ms"]),
        ("retention pass (1 h of raw) s", lambda r: r["retention"]["seconds"]),
        ("retention: raw samples rolled", lambda r: r["retention"]["raw_rolled"]),
    ]
    for label, get in rows:
        print(fmt_row(label, results, get))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run: 1,000 VMs, history for 100 VMs, fewer queries")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="reports per VM to ingest")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--history-vms", type=int, default=500)
    parser.add_argument("--runs", type=int, default=300, help="samples per latency figure")
    parser.add_argument("--fleet-runs", type=int, default=30)
    parser.add_argument("--ingest-threads", type=int, default=2,
                        help="concurrent ingest calls (service executor threads)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads for bulk history load and verdicts")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.vms, args.rounds, args.history_vms = 1000, 2, 100
        args.runs, args.fleet_runs = 100, 10
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: Dict[str, Dict[str, Any]] = {}
    folder = tempfile.mkdtemp(prefix="vmdiag-bench-")
    try:
        for backend in backends:
            if backend == "sqlite":
                results["sqlite"] = run_backend("sqlite", sqlite_url(folder), args)
            elif backend == "postgresql":
                try:
                    cluster = PgCluster(settings=PG_SETTINGS).start()
                except PgUnavailable as err:
                    print("postgresql: skipped: %s" % err)
                    continue
                try:
                    results["postgresql"] = run_backend(
                        "postgresql", cluster.create_database("vmdiag_bench"), args)
                finally:
                    cluster.stop()
            else:
                parser.error("unknown backend %r" % backend)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(results, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
