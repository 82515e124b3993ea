#!/usr/bin/env python3
"""What the per-VM series registry costs ``Store.ingest`` (docs/storage.md, "How many series a
VM may have"): a VM's first report, its later ones, and its first one after a restart.

    python3 benchmarks/series_bench.py                       # SQLite and PostgreSQL
    python3 benchmarks/series_bench.py --backends sqlite --vms 2000

Per backend, on a fresh store (a SQLite file; a throwaway PostgreSQL cluster, ``lab.pg_cluster``):
``--rounds`` rounds of one report from each of ``--vms`` VMs (59 series each: 8 file systems,
4 interfaces, 10 processes) in batches of ``--batch``, then the store is closed and opened again
(a restarted service: nothing cached) and one more round goes in. Printed per round kind: wall
time and this process's CPU per report (ms; with PostgreSQL the server's work is in the wall
time only). The first round registers every series, the later ones find them in the cache, the
one after the restart confirms them. To compare with the code before, copy this file into a
checkout of that code (it uses only ``Store`` and ``lab.store_reports``), run both alternately
and compare medians (the machine's load is printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine_plugin.storage import open_store  # noqa: E402
from lab.store_reports import envelope  # noqa: E402

FILESYSTEMS = [("/mnt/d%d" % i, 1e9, 1e10) for i in range(8)]
INTERFACES = [("eth%d" % i, 1.0, 2.0) for i in range(4)]
PROCESSES = [("proc%d" % i, 1e6) for i in range(10)]


def one_round(store: Any, vms: int, batch: int, seq: int, base: float) -> Tuple[float, float]:
    """(wall ms, CPU ms) per report of one report from each VM."""
    envs = [envelope(vm, seq, base + 60 * seq, filesystems=FILESYSTEMS, interfaces=INTERFACES,
                     processes=PROCESSES) for vm in range(vms)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, vms, batch):
        result = store.ingest(envs[start:start + batch], now=base + 60 * seq + 1)
        assert result.accepted == len(envs[start:start + batch]), result
    return (1000 * (time.perf_counter() - wall) / vms,
            1000 * (time.process_time() - cpu) / vms)


def run(url: str, args: argparse.Namespace) -> List[Tuple[str, float, float]]:
    base = time.time() - 3600
    store = open_store(url)
    store.migrate()
    rounds = [one_round(store, args.vms, args.batch, seq, base) for seq in range(args.rounds)]
    store.close()
    store = open_store(url)
    restart = one_round(store, args.vms, args.batch, args.rounds, base)
    store.close()
    later = rounds[1:]
    return [("first report", *rounds[0]),
            ("later reports (median)", statistics.median(w for w, _ in later),
             statistics.median(c for _, c in later)),
            ("first after a restart", *restart)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="rounds before the restart")
    args = parser.parse_args()
    print("load average %s; %d VMs x 59 series, batches of %d"
          % (" ".join(str(round(v, 2)) for v in os.getloadavg()), args.vms, args.batch))
    for backend in args.backends.split(","):
        if backend == "sqlite":
            folder = tempfile.mkdtemp(prefix="vmdiag-series-bench-")
            try:
                rows = run("sqlite:///%s/vmdiag.db" % folder, args)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            from lab.pg_cluster import PgCluster
            with PgCluster() as pg:
                rows = run(pg.create_database(), args)
        for what, wall, cpu in rows:
            print("%-10s %-24s wall %6.3f ms  cpu %6.3f ms a report" % (backend, what, wall, cpu))


if __name__ == "__main__":
    main()
