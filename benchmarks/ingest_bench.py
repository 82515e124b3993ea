#!/usr/bin/env python3
"""Ingest end to end: relays upload to real ``vmdiag-engine serve`` processes over TLS.

    python3 benchmarks/ingest_bench.py                  # SQLite, PostgreSQL, PostgreSQL x 2
    python3 benchmarks/ingest_bench.py --quick          # 2,000 VMs, 3 rounds (a smoke run)
    python3 benchmarks/ingest_bench.py --setups sqlite --rounds 5 --json out.json
    python3 benchmarks/ingest_bench.py --ingest-processes 1,2 --repeat 2  # p1 p2 p1 p2 a setup

What runs (all real, on this machine): a test engine CA (``lab.ovirt_standin.TestPKI``) signs
the ingest listener's certificate and one client certificate per simulated host, CN = the host's
address, as oVirt issues VDSM certificates. ``vmdiag-engine serve`` runs as its own process with
its own engine.conf, standalone (no oVirt service account, so every certified host may report
every VM, docs/engine.md), on a fresh store: a SQLite file, or a throwaway PostgreSQL cluster
(``lab.pg_cluster``, durable settings). In the ``postgresql-x2`` setup two service processes
share the database and one ingest address (``[ingest] reuse_port = yes``: the kernel hands each
new connection to one of them). ``--ingest-processes`` runs each setup with each ``[ingest]
processes`` value in turn (1: the service's own process only, as before that option; ``auto``
one per core), so old and new are measured minutes apart; ``--repeat`` alternates them again.

The relays are ``--hosts`` clients in ``--clients`` processes, each one TLS connection with its
host's certificate, uploading ``{"envelopes": [...]}`` batches of ``--batch`` envelopes, one at
a time, as the relay's uploader does (it sends the next batch when the answer came). Reports are
the agent's shape (``lab.fake_guest.sample_report``, about 20 KB: 50 processes, 80 units,
every section) with a VM's own vm_id, run, seq and times swapped in per envelope; the engine
validates, checks and stores every one. A round is one report of each of ``--vms`` VMs; its
figure is reports/s from the first request sent to the last answer read. Every answer is read
and counted: a round in which the engine did not store every report fails the run.

Printed per setup: the first round (it creates every VM's rows), the median and range of the
later rounds, the engine processes' CPU (% of one core) and the machine's load average while
measured (the machine is shared; the load is part of the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from diag_protocol import validate_envelope  # noqa: E402
from engine_plugin import fastjson  # noqa: E402
from lab.engine_process import EngineProcess, free_port  # noqa: E402
from lab.fake_guest import sample_report  # noqa: E402
from lab.ovirt_standin import TestPKI  # noqa: E402
from lab.pg_cluster import PgCluster  # noqa: E402

VM_MARK = "00000000-0000-4000-8000-00000000beef"
RUN_MARK = "run-xxxxxxxxxxxx"
SEQ_MARK = 987654321
TIME_MARK = 1234567890.5
RECEIVED_MARK = 1234567891.25
TEMPLATES = 8
ROUTE = "/ingest/v1/reports"
# Durable PostgreSQL settings sized for a small engine machine (as benchmarks/storage_bench.py).
PG_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB", "checkpoint_timeout": "15min",
               "work_mem": "32MB", "maintenance_work_mem": "256MB", "wal_compression": "on"}


def vm_id(n: int) -> str:
    return "00000000-0000-4000-8000-%012d" % n


def host_cn(h: int) -> str:
    return "hv-%03d.bench.test" % h


def templates(processes: int, units: int) -> List[bytes]:
    """Encoded envelopes (validated once) with markers swapped per report."""
    out = []
    for i in range(TEMPLATES):
        report = sample_report(seq=SEQ_MARK, run_id=RUN_MARK, processes=processes, units=units,
                               rng=random.Random(i), now=TIME_MARK)
        envelope = validate_envelope({"host_id": "template", "vm_id": VM_MARK,
                                      "received_at": RECEIVED_MARK, "report": report})
        line = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        for mark in (VM_MARK.encode(), RUN_MARK.encode(), b'"seq":%d' % SEQ_MARK,
                     repr(TIME_MARK).encode(), repr(RECEIVED_MARK).encode()):
            assert mark in line, mark
        out.append(line)
    return out


def envelope_line(template: bytes, host: str, vm: int, run: str, seq: int, t: float) -> bytes:
    return (template.replace(b'"host_id":"template"', b'"host_id":"%s"' % host.encode())
            .replace(VM_MARK.encode(), vm_id(vm).encode())
            .replace(RUN_MARK.encode(), run.encode())
            .replace(b'"seq":%d' % SEQ_MARK, b'"seq":%d' % seq)
            .replace(repr(TIME_MARK).encode(), repr(t).encode())
            .replace(repr(RECEIVED_MARK).encode(), repr(t + 0.4).encode()))


# -- the relays (client processes) ---------------------------------------------------------

async def relay(url: str, session: Any, bodies: List[bytes], counts: Dict[str, int],
                latencies: List[float]) -> None:
    """One relay's uploader: the next batch once the answer to the last one was read."""
    for body in bodies:
        began = time.monotonic()
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.read()
        latencies.append(time.monotonic() - began)
        if resp.status != 200:
            key = "http_%d" % resp.status
            counts[key] = counts.get(key, 0) + 1
            continue
        for result in json.loads(answer)["results"]:
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1


def client_main(conn: Any, port: int, ca: str, hosts: List[Tuple[str, str, str, List[int]]],
                lines: List[bytes], batch: int) -> None:
    """Serve rounds asked for on ``conn``: each host uploads one report of each of its VMs."""
    import aiohttp

    async def main() -> None:
        sessions = []
        for cn, cert, key, vms in hosts:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(cert, key)
            sessions.append((cn, vms, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=1),
                timeout=aiohttp.ClientTimeout(total=600))))
        url = "https://localhost:%d%s" % (port, ROUTE)
        loop = asyncio.get_running_loop()
        try:
            while True:
                order = await loop.run_in_executor(None, conn.recv)
                if order is None:
                    break
                seq = int(order)
                # bodies are built before the clock starts: the relay has them ready too
                bodies = []
                for cn, vms, _ in sessions:
                    t = time.time()
                    env = [envelope_line(lines[vm % len(lines)], cn, vm, "run-%012d" % vm, seq,
                                         t) for vm in vms]
                    bodies.append([b'{"envelopes":[' + b",".join(env[i:i + batch]) + b"]}"
                                   for i in range(0, len(env), batch)])
                counts: Dict[str, int] = {}
                latencies: List[float] = []
                began, cpu = time.monotonic(), time.process_time()
                await asyncio.gather(*(relay(url, s[2], b, counts, latencies)
                                       for s, b in zip(sessions, bodies)))
                conn.send({"began": began, "ended": time.monotonic(), "counts": counts,
                           "latencies": latencies, "cpu": time.process_time() - cpu})
        finally:
            for _, _, session in sessions:
                await session.close()

    asyncio.run(main())


# -- the engine ----------------------------------------------------------------------------

# -- one setup -----------------------------------------------------------------------------

def run_setup(name: str, url: str, instances: int, pki: TestPKI, folder: str,
              certs: List[Tuple[str, str, str]], lines: List[bytes],
              args: argparse.Namespace, cluster: PgCluster | None = None,
              processes: str = "1") -> Dict[str, Any]:
    print("\n== %s: %d instance(s) of %s ingest process(es), %d VMs on %d hosts, batches of %d"
          % (name, instances, processes, args.vms, args.hosts, args.batch), flush=True)
    port = free_port()
    engines = [EngineProcess(folder, "%s-%d" % (name.replace(" ", "-"), i), pki, url, port,
                             instances > 1, processes=processes)
               for i in range(instances)]
    running = 1 + len(engines[0].ingest_children())
    ctx = multiprocessing.get_context("fork")
    clients = []
    try:
        per_host: List[List[int]] = [list(range(h, args.vms, args.hosts))
                                     for h in range(args.hosts)]
        for c in range(args.clients):
            mine = [(cn, cert, key, per_host[h]) for h, (cn, cert, key) in enumerate(certs)
                    if h % args.clients == c]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child, port, pki.ca_file, mine,
                                                         lines, args.batch), daemon=True)
            proc.start()
            clients.append((proc, parent))
        rounds = []
        for rnd in range(1, args.rounds + 1):
            load0 = os.getloadavg()[0]
            cpu0 = [e.cpu_seconds() for e in engines]
            server0 = cluster.server_cpu_seconds() if cluster is not None else 0.0
            for _, pipe in clients:
                pipe.send(rnd)
            answers = [pipe.recv() for _, pipe in clients]
            cpu1 = [e.cpu_seconds() for e in engines]
            server_cpu = (cluster.server_cpu_seconds() - server0) if cluster is not None else 0.0
            client_cpu = sum(a["cpu"] for a in answers)
            counts: Dict[str, int] = {}
            for answer in answers:
                for key, value in answer["counts"].items():
                    counts[key] = counts.get(key, 0) + value
            seconds = max(a["ended"] for a in answers) - min(a["began"] for a in answers)
            lat = sorted(x for a in answers for x in a["latencies"])
            stored = counts.get("stored", 0)
            row = {"round": rnd, "reports": stored, "seconds": round(seconds, 2),
                   "reports_per_s": round(stored / seconds, 1),
                   "engine_cpu_percent": [round(100 * (b - a) / seconds, 1)
                                          for a, b in zip(cpu0, cpu1)],
                   "relays_cpu_percent": round(100 * client_cpu / seconds, 1),
                   "relays_cpu_ms_per_report": round(1000 * client_cpu / max(1, stored), 3),
                   "engine_cpu_ms_per_report": round(1000 * (sum(cpu1) - sum(cpu0)) / stored, 3),
                   "server_cpu_ms_per_report": round(1000 * server_cpu / max(1, stored), 3),
                   "batch_p50_ms": round(1000 * lat[len(lat) // 2], 1),
                   "batch_max_ms": round(1000 * lat[-1], 1),
                   "loadavg_1m": "%.2f -> %.2f" % (load0, os.getloadavg()[0]),
                   "counts": counts}
            print("  round %d: %d reports in %.2f s = %.0f reports/s, engine CPU %s %% of a "
                  "core (%.2f ms a report), PostgreSQL server %.2f ms a report, relays %.0f %% "
                  "(%.3f ms a report), batch p50 %.0f ms, load %s"
                  % (rnd, stored, seconds, stored / seconds,
                     "+".join("%.0f" % c for c in row["engine_cpu_percent"]),
                     row["engine_cpu_ms_per_report"], row["server_cpu_ms_per_report"],
                     row["relays_cpu_percent"], row["relays_cpu_ms_per_report"],
                     row["batch_p50_ms"], row["loadavg_1m"]), flush=True)
            if stored != args.vms:
                raise SystemExit("round %d: the engine stored %d of %d reports: %s\n%s"
                                 % (rnd, stored, args.vms, counts, engines[0].tail()))
            rounds.append(row)
        later = [r["reports_per_s"] for r in rounds[1:]] or [rounds[0]["reports_per_s"]]
        return {"instances": instances, "processes": running, "rounds": rounds,
                "first_round_reports_per_s": rounds[0]["reports_per_s"],
                "median_reports_per_s": statistics.median(later),
                "min_reports_per_s": min(later), "max_reports_per_s": max(later),
                "engine_cpu_percent": [statistics.median(r["engine_cpu_percent"][i]
                                                         for r in rounds[1:] or rounds)
                                       for i in range(instances)],
                "engine_cpu_ms_per_report": statistics.median(
                    r["engine_cpu_ms_per_report"] for r in rounds[1:] or rounds),
                "relays_cpu_ms_per_report": statistics.median(
                    r["relays_cpu_ms_per_report"] for r in rounds[1:] or rounds),
                "server_cpu_ms_per_report": statistics.median(
                    r["server_cpu_ms_per_report"] for r in rounds[1:] or rounds)}
    finally:
        for proc, pipe in clients:
            try:
                pipe.send(None)
            except OSError:
                pass
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        for engine in engines:
            engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default="sqlite,postgresql,postgresql-x2",
                        help="comma-separated: sqlite, postgresql, postgresql-x2")
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--hosts", type=int, default=50, help="relays (client certificates)")
    parser.add_argument("--batch", type=int, default=200, help="envelopes per request")
    parser.add_argument("--rounds", type=int, default=4,
                        help="reports per VM; the first round creates the VMs")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--processes", type=int, default=50, help="processes per report")
    parser.add_argument("--units", type=int, default=80, help="units per report")
    parser.add_argument("--ingest-processes", default="1,auto",
                        help="comma-separated [ingest] processes per instance, each setup run "
                             "with each in turn (1: the service's own process only; auto)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the --ingest-processes list this many times, alternating")
    parser.add_argument("--quick", action="store_true", help="2,000 VMs, 3 rounds")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.vms, args.rounds = 2000, 3
    lines = templates(args.processes, args.units)
    folder = tempfile.mkdtemp(prefix="vmdiag-ingest-bench-")
    results: Dict[str, Dict[str, Any]] = {}
    try:
        pki = TestPKI(os.path.join(folder, "pki"))
        certs = []
        for h in range(args.hosts):
            files = pki.host(host_cn(h))
            certs.append((host_cn(h), files.cert, files.key))
        counts = [p.strip() for p in args.ingest_processes.split(",") if p.strip()]
        for setup in [s.strip() for s in args.setups.split(",") if s.strip()]:
            if setup not in ("sqlite", "postgresql", "postgresql-x2"):
                parser.error("unknown setup %r" % setup)
            for turn in range(args.repeat):
                for processes in counts:
                    name = "%s p%s%s" % (setup, processes,
                                         " #%d" % (turn + 1) if args.repeat > 1 else "")
                    if setup == "sqlite":
                        results[name] = run_setup(
                            name, "sqlite:///%s/bench-%d-%s.db" % (folder, turn, processes), 1,
                            pki, folder, certs, lines, args, processes=processes)
                        continue
                    cluster = PgCluster(settings=PG_SETTINGS).start()
                    try:
                        results[name] = run_setup(
                            name, cluster.create_database("vmdiag_ingest"),
                            2 if setup.endswith("x2") else 1, pki, folder, certs, lines, args,
                            cluster, processes=processes)
                    finally:
                        cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n== ingest end to end: %d VMs, %d hosts, batches of %d, ~%d KB reports, %d rounds; "
          "%d CPUs" % (args.vms, args.hosts, args.batch, len(lines[0]) // 1024, args.rounds,
                       os.cpu_count() or 0))
    print("reports/s: first round (creates the VMs), median and range of the later rounds; "
          "engine CPU: % of one core per instance, and CPU ms per report (all instances)")
    print("%-22s%6s%8s%8s%12s%12s%10s%10s%12s  %-15s %s" % (
        "setup", "procs", "first", "median", "range", "engine CPU%", "ms/report", "PG ms/r",
        "relays ms/r", "native", "load avg"))
    for setup, res in results.items():
        loads = [r["loadavg_1m"] for r in res["rounds"]]
        print("%-22s%6d%8.0f%8.0f%12s%12s%10.2f%10.2f%12.3f  %-15s %s" % (
            setup, res["processes"], res["first_round_reports_per_s"],
            res["median_reports_per_s"],
            "%.0f-%.0f" % (res["min_reports_per_s"], res["max_reports_per_s"]),
            "+".join("%.0f" % c for c in res["engine_cpu_percent"]),
            res["engine_cpu_ms_per_report"], res["server_cpu_ms_per_report"],
            res["relays_cpu_ms_per_report"],
            "+".join(n for n, on in (("orjson", fastjson.FAST),
                                     ("msgspec", getattr(fastjson, "GATE", False))) if on)
            or "none",
            "%s .. %s" % (loads[0].split()[0], loads[-1].split()[-1])))
    print("reports/s is a throughput figure only at a load average below 2 (a shared machine); "
          "CPU ms per report (engine processes' CPU seconds / reports stored) holds at any load; "
          "engine CPU%: the service and its ingest processes, per instance")
    for base in [n for n in results if " p1" in n]:
        for other in [n for n in results if n.split(" ")[0] == base.split(" ")[0]
                      and " p1" not in n and n.split("#")[-1] == base.split("#")[-1]]:
            print("%s / %s: reports/s %.2f, engine CPU a report %.2f" % (
                other, base, results[other]["median_reports_per_s"]
                / results[base]["median_reports_per_s"],
                results[other]["engine_cpu_ms_per_report"]
                / results[base]["engine_cpu_ms_per_report"]))
    for single, double in [(n, n.replace("postgresql ", "postgresql-x2 ", 1)) for n in results
                           if n.startswith("postgresql ")]:
        if double in results:
            print("two instances / one (%s): %.2f" % (
                single.split(" ", 1)[1], results[double]["median_reports_per_s"]
                / results[single]["median_reports_per_s"]))
    print("target: >= 2000 reports/s on each setup")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
