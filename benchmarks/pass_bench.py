#!/usr/bin/env python3
"""Does a health pass slow ingest or the API? p50/p99 with and without a pass running.

    python3 benchmarks/pass_bench.py                       # SQLite, 200 VMs with a week
    python3 benchmarks/pass_bench.py --backend postgresql  # a throwaway local PostgreSQL
    python3 benchmarks/pass_bench.py --quick

Runs the real service (``vmdiag-engine serve`` in its own process, TLS ingest, the API
authenticated against the oVirt stand-in) once per ``[evaluation] workers`` setting: ``0``,
the pass computed in the service's own process (threads, as before issue 16), side by side
with ``auto``, worker processes at lower CPU priority, one per core.

Load, the same in every run: a relay sending batches of 10 realistic reports (about 20 KB
each) of ``--light`` VMs every 100 ms (100 reports/s, itself about 6 times what 10,000 VMs
send at one report a minute), and a user opening a VM document (``GET /vmdiag/api/v1/vms/
{id}``) every 100 ms. Each request's latency is measured by this client.

``--vms`` VMs carry a week of history in the store (5-minute rollups of file systems, memory,
swap and a process, 8 series, 2,016 points each), so evaluating one costs what it does in a
fleet after a week. Phases: **quiet** (only the load above, whose own VMs are evaluated as
they report), then **pass**: one new report for every history VM, so the service evaluates
all of them, measured from the first of those reports to the last VM's verdict stored (read
from the store by this script); repeated ``--passes`` times. Latencies are split by phase;
the "in a pass" window starts once the trigger reports are stored (their own ingest is a
burst of 200-report batches, not the pass) and they are not counted as ingest samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from engine_plugin.storage import open_store  # noqa: E402
from lab.engine_process import EngineProcess, free_port  # noqa: E402
from lab.ovirt_standin import StandinEngine, TestPKI  # noqa: E402
from lab.store_reports import envelope, vm_uuid  # noqa: E402

DAY = 86400.0
GIB = float(2**30)
HOST_CN = "host-1.example.test"
LIGHT_BASE = 100_000  # VM numbers of the light VMs (lab.store_reports.vm_uuid)


def week_of_rollups(n: int, now: float) -> List[Tuple[str, float, float, float, float, int]]:
    """A week of 5-minute rollups for VM number ``n``: a slow fill, a daily cycle or flat."""
    rnd = random.Random(n)
    end = math.floor((now - 3600) / 300) * 300
    buckets = [end - i * 300 for i in range(2016)][::-1]
    shape = n % 3
    fill = rnd.uniform(0.1, 2.0) * GIB / DAY
    rows = []
    for b in buckets:
        age = b - buckets[0]
        if shape == 0:
            used = 20 * GIB + fill * age
        elif shape == 1:
            used = 50 * GIB + 10 * GIB * ((b % DAY) / DAY)
        else:
            used = 40 * GIB
        used += rnd.gauss(0, 0.1 * GIB)
        values = {"fs.used:/": used, "fs.total:/": 100 * GIB,
                  "fs.inodes_used:/": 200_000 + 5 * age / 3600, "fs.inodes_total:/": 6e6,
                  "memory.used": 3 * GIB + rnd.gauss(0, 0.2 * GIB), "memory.total": 8 * GIB,
                  "swap.used": 0.1 * GIB, "proc.rss:java": GIB + rnd.gauss(0, 0.01 * GIB)}
        for metric, v in values.items():
            rows.append((metric, b, v, v, v, 5))
    return rows


def build_store(url: str, vms: int, light: int, now: float) -> None:
    store = open_store(url)
    store.migrate()
    try:
        for n in range(vms):
            store.import_history(vm_uuid(n), rollups=week_of_rollups(n, now), host_id=HOST_CN)
        reports = [envelope(n, 0, now - 120, host_id=HOST_CN) for n in range(vms)]
        reports += [envelope(LIGHT_BASE + n, 0, now - 120, host_id=HOST_CN)
                    for n in range(light)]
        for i in range(0, len(reports), 200):
            store.ingest(reports[i:i + 200], now=now - 119)
    finally:
        store.close()


def pct(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_evaluated(reader: Any, vm_ids: set, timeout: float = 600.0) -> float:
    """Seconds until none of ``vm_ids`` has data newer than its verdict."""
    started = time.monotonic()
    while True:
        due = await asyncio.to_thread(reader.vms_with_new_data)
        if not vm_ids.intersection(due):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError("the pass did not finish within %.0f s" % timeout)
        await asyncio.sleep(0.1)


async def measure(run: EngineProcess, args: argparse.Namespace, pki: TestPKI, token: str
                  ) -> Dict[str, Any]:
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    host = pki.host(HOST_CN)
    ctx.load_cert_chain(host.cert, host.key)
    ingest_url = "https://localhost:%d/ingest/v1/reports" % run.ingest_port
    api = "http://127.0.0.1:%d/vmdiag/api/v1/vms/" % run.api_port
    heavy = {vm_uuid(n) for n in range(args.vms)}
    samples: Dict[str, List[Tuple[float, float]]] = {"ingest": [], "api": []}
    phase = {"name": "warmup"}
    windows: List[Tuple[str, float, float]] = []
    reader = open_store(run.url)
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        initial = await wait_evaluated(reader, heavy)
        seq = [1]

        async def post(envelopes: List[Dict[str, Any]]) -> None:
            async with session.post(ingest_url, json={"envelopes": envelopes}) as reply:
                body = await reply.json()
                assert reply.status == 200 and body["stored"] == len(envelopes), body

        async def relay() -> None:
            index = 0
            while not stop.is_set():
                t = time.time()
                batch = [envelope(LIGHT_BASE + (index + i) % args.light, seq[0], t,
                                  host_id=HOST_CN) for i in range(10)]
                index += 10
                if index % args.light == 0:
                    seq[0] += 1
                started = time.perf_counter()
                await post(batch)
                samples["ingest"].append((time.monotonic(), time.perf_counter() - started))
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))

        async def user() -> None:
            index = 0
            headers = {"Authorization": "Bearer %s" % token}
            while not stop.is_set():
                vm_id = vm_uuid(LIGHT_BASE + index % args.light)
                index += 1
                started = time.perf_counter()
                async with session.get(api + vm_id, headers=headers) as reply:
                    await reply.read()
                    assert reply.status == 200, reply.status
                samples["api"].append((time.monotonic(), time.perf_counter() - started))
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))

        tasks = [asyncio.create_task(relay()), asyncio.create_task(user())]
        try:
            await asyncio.sleep(3)  # warm-up: connections, the engine's answers cached
            t0 = time.monotonic()
            await asyncio.sleep(args.quiet)
            windows.append(("quiet", t0, time.monotonic()))
            passes = []
            for k in range(args.passes):
                t = time.time()
                started = time.monotonic()
                phase["name"] = "pass"
                for i in range(0, args.vms, 200):
                    await post([envelope(n, 1 + k, t, host_id=HOST_CN)
                                for n in range(i, min(args.vms, i + 200))])
                posted = time.monotonic()  # the trigger's own ingest is not the pass
                took = await wait_evaluated(reader, heavy)
                end = time.monotonic()
                windows.append(("pass", posted, end))
                passes.append(end - started)
                await asyncio.sleep(3)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            reader.close()
    assert took >= 0
    out: Dict[str, Any] = {"initial_pass_s": initial, "passes_s": passes}
    for kind, points in samples.items():
        for name in ("quiet", "pass"):
            values = [v for when, v in points
                      if any(w == name and a <= when <= b for w, a, b in windows)]
            out["%s_%s" % (kind, name)] = values
    return out


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="vmdiag-pass-bench-"))
    pki = TestPKI(str(work / "pki"))
    engine = StandinEngine(pki.server("standin"), pki.ca_file)
    engine.add_user("admin@internal", "adminpw", admin=True)
    engine.add_cluster("c-bench", "Bench")
    engine.add_host("h-bench", "host-1", "c-bench", address=HOST_CN)
    for n in range(args.light):  # the VMs whose documents the user opens
        engine.add_vm(vm_uuid(LIGHT_BASE + n), "light-%03d" % n, "h-bench", "c-bench")
    engine.start()
    pg = None
    now = time.time()
    try:
        started = time.monotonic()
        if args.backend == "postgresql":
            from lab.pg_cluster import PgCluster

            pg = PgCluster(settings={"shared_buffers": "512MB"}).start()
            template = pg.create_database("template_bench")
            build_store(template, args.vms, args.light, now)
        else:
            template = "sqlite:///%s/template.db" % work
            build_store(template, args.vms, args.light, now)
        print("store: %d VMs with a week of history + %d light VMs, built in %.0f s (%s)"
              % (args.vms, args.light, time.monotonic() - started, args.backend))
        results = {}
        for workers in args.workers:
            name = "workers-%s" % workers
            if pg is not None:
                import psycopg

                with psycopg.connect(pg.url(), autocommit=True) as conn:
                    conn.execute('CREATE DATABASE "%s" TEMPLATE template_bench'
                                 % name.replace("-", "_"))
                url = pg.url(name.replace("-", "_"))
            else:
                shutil.copy(work / "template.db", work / ("%s.db" % name))
                url = "sqlite:///%s/%s.db" % (work, name)
            # [evaluation] workers is what the runs compare; [ovirt] lets the API authenticate
            # the user against the stand-in
            run = await asyncio.to_thread(
                EngineProcess, str(work), name, pki, url, free_port(), False,
                ingest="ownership = any\n",
                sections="[evaluation]\nworkers = %s\n[ovirt]\nurl = %s\nca_file = %s\n"
                         "timeout = 30\n" % (workers, engine.url, pki.ca_file))
            token = engine.issue_token("admin@internal")
            try:
                results[workers] = await measure(run, args, pki, token)
            finally:
                run.stop()
    finally:
        engine.stop()
        if pg is not None:
            pg.stop()
    cores = len(os.sched_getaffinity(0))
    print("machine: %d cores, load average %.1f at the end" % (cores, os.getloadavg()[0]))
    print("load: 100 reports/s in batches of 10 + 10 VM documents/s; pass over %d VMs with a "
          "week of history, %d times" % (args.vms, args.passes))
    print()
    head = "%-34s" % "[evaluation] workers"
    print(head + "".join("%18s" % w for w in args.workers))

    def row(label: str, fn: Any) -> None:
        print("%-34s" % label + "".join("%18s" % fn(results[w]) for w in args.workers))

    row("pass over all, s (median)", lambda r: "%.1f" % statistics.median(r["passes_s"]))
    row("VMs evaluated per s", lambda r: "%.0f" % (args.vms / statistics.median(r["passes_s"])))
    for kind, label in (("ingest", "ingest batch of 10"), ("api", "API VM document")):
        for name in ("quiet", "pass"):
            row("%s, %s: p50/p99 ms" % (label, "no pass" if name == "quiet" else "in a pass"),
                lambda r, k="%s_%s" % (kind, name): "%.0f / %.0f" % (
                    1000 * pct(r[k], 0.5), 1000 * pct(r[k], 0.99)))
        row("  samples (no pass / in a pass)",
            lambda r, k=kind: "%d / %d" % (len(r[k + "_quiet"]), len(r[k + "_pass"])))
    for w in args.workers:
        r = results[w]
        for kind in ("ingest", "api"):
            quiet, busy = pct(r[kind + "_quiet"], 0.99), pct(r[kind + "_pass"], 0.99)
            print("workers=%s: %s p99 in a pass / without: %.2f" % (w, kind, busy / quiet))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--vms", type=int, default=200, help="VMs with a week of history")
    ap.add_argument("--light", type=int, default=100, help="VMs of the steady load")
    ap.add_argument("--quiet", type=float, default=20.0, help="seconds without a pass")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--workers", nargs="+", default=["0", "auto"])
    ap.add_argument("--json", help="write the raw latencies here")
    ap.add_argument("--quick", action="store_true", help="a small run to check the script")
    args = ap.parse_args()
    if args.quick:
        args.vms, args.light, args.quiet, args.passes = 30, 20, 5.0, 1
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
