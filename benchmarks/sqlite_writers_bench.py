#!/usr/bin/env python3
"""Processes writing one SQLite store at once: SQLite's own lock against the store's file lock.

    python3 benchmarks/sqlite_writers_bench.py                  # 2 processes, 6 s a mode, twice
    python3 benchmarks/sqlite_writers_bench.py --processes 3 --seconds 10 --repeat 3

Each process (``[ingest] processes`` of one service write one file so) opens its own
``SqliteStore`` and writes back to back, each transaction inserting and deleting ``--rows``
rows (about the write lock's share of an ingest batch). Mode ``sqlite-lock``: the transaction
only (``BEGIN IMMEDIATE``; a waiting process polls through SQLite's busy handler, sleeping up to
100 ms between tries), as before the file lock. Mode ``file-lock``: ``SqliteStore._write``,
which takes ``<file>-write.lock`` first (``flock``: the kernel wakes a waiting process when it
is released). The modes alternate. Printed per process: transactions, and how long each waited
for the lock (median, p99, max); the machine's load average beside them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine_plugin.storage.config import StorageConfig  # noqa: E402
from engine_plugin.storage.sqlite_store import SqliteStore  # noqa: E402


def writer(path: str, mode: str, seconds: float, rows: int, start: Any, out: Any) -> None:
    store = SqliteStore(StorageConfig(url="sqlite:///" + path))
    data = [(i, float(i)) for i in range(rows)]
    write = store._write if mode == "file-lock" else store._write_locked
    waits: List[float] = []
    start.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        asked = time.monotonic()

        def work(tx: Any, asked: float = asked) -> None:
            waits.append(time.monotonic() - asked)
            tx.executemany("INSERT INTO scratch (k, v) VALUES (?, ?)", data)
            tx.execute("DELETE FROM scratch")
        write(work)
    store.close()
    waits.sort()
    out.put((len(waits), waits[len(waits) // 2], waits[int(len(waits) * 0.99)], waits[-1]))


def run(mode: str, args: argparse.Namespace, folder: str) -> List[Any]:
    path = os.path.join(folder, "%s.db" % mode)
    store = SqliteStore(StorageConfig(url="sqlite:///" + path))
    store._write(lambda tx: tx.execute("CREATE TABLE IF NOT EXISTS scratch (k INTEGER, v REAL)"))
    store.close()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(args.processes), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(path, mode, args.seconds, args.rows, start, out))
             for _ in range(args.processes)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rows", type=int, default=3000, help="rows a transaction writes")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vmdiag-sqlite-writers-") as folder:
        print("%-12s %8s %12s %28s  %s" % ("mode", "process", "transactions",
                                           "wait for the lock p50/p99/max", "load avg"))
        for _ in range(args.repeat):
            for mode in ("sqlite-lock", "file-lock"):
                load = os.getloadavg()[0]
                for index, (count, p50, p99, most) in enumerate(run(mode, args, folder)):
                    print("%-12s %8d %12d %14.1f/%.1f/%.1f ms  %.2f" % (
                        mode, index, count, 1000 * p50, 1000 * p99, 1000 * most, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
