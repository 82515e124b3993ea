#!/usr/bin/env python3
"""Retention on PostgreSQL: dropping time partitions (schema 4) against deleting rows (schema
3), on the same data.

    python3 benchmarks/retention_bench.py                  # 500 VMs x 20 series
    python3 benchmarks/retention_bench.py --vms 1000 --series 59
    python3 benchmarks/retention_bench.py --quick

One throwaway PostgreSQL server (durable settings: fsync and synchronous commit on). The
data is what one hourly pass meets in a store with default retention (48 h raw, 30 days of
rollups) at a steady state: the hour of raw 1-minute samples that just expired, the next hour
(which must stay), and the day of 5-minute rollups that just expired. It is loaded once at
schema 3 (tables not partitioned), copied (``CREATE DATABASE ... TEMPLATE``) and the copy
migrated to schema 4 (the migration's time is printed too). Then one retention pass runs on
each, at the same instant: the row way rolls the expired hour in 5-minute
``DELETE ... RETURNING`` steps and deletes the expired rollups; the partition way rolls the
expired hour with one aggregate over its partition and drops it, and drops the day of
rollups.

A third copy is rolled up ahead (``PostgresStore.roll_up``, what the leader does minute by
minute once each hour has closed), timed with the PostgreSQL server's CPU, and then gets its
retention pass, which only drops partitions.

The fleet of the issue (10,000 VMs, 59 series each, one report a minute) makes 35 million raw
samples an hour and 170 million rollups a day; the script scales its measured rates to it
(rolling is linear in rows; a DROP TABLE is not).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from engine_plugin.storage import StorageConfig, open_store, postgres_store  # noqa: E402
from engine_plugin.storage.schema import CREATE_VERSIONS_TABLE, load_migrations  # noqa: E402
from lab.pg_cluster import PgCluster  # noqa: E402
from lab.store_reports import vm_uuid  # noqa: E402

HOUR = 3600.0
DAY = 86400.0
FLEET_VMS, FLEET_SERIES = 10_000, 59


def at_schema_3(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(CREATE_VERSIONS_TABLE)
        for migration in load_migrations("postgresql")[:3]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                         (migration.version, migration.name, time.time()))


def load(url: str, vms: int, series: int, now: float) -> Dict[str, int]:
    """Generated in the server (``generate_series``), which loads millions of rows in
    seconds where a client would take minutes."""
    expired_hour = math.floor((now - 48 * HOUR) / HOUR) * HOUR - HOUR
    expired_day = math.floor((now - 31 * DAY) / DAY) * DAY
    names = ["cpu.percent", "memory.used"] + ["fs.used:/m%02d" % i for i in range(series - 2)]
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO vms (vm_id) SELECT unnest(%s::text[])",
                     ([vm_uuid(vm) for vm in range(vms)],))
        conn.execute("INSERT INTO metrics (name) SELECT unnest(%s::text[])", (names,))
        conn.execute("INSERT INTO verdicts (vm_key, verdict, updated_at) SELECT vm_key,"
                     " '{\"status\":\"ok\"}', %s FROM vms", (now,))  # not silent VMs
        conn.execute("INSERT INTO samples SELECT v.vm_key, m.metric_id, %s + 60 * i,"
                     " (i %% 97) + v.vm_key FROM vms v, metrics m, generate_series(0, 119) i",
                     (expired_hour,))
        conn.execute("INSERT INTO rollups SELECT v.vm_key, m.metric_id, %s + 300 * k,"
                     " 5, 1, 9, 5 FROM vms v, metrics m, generate_series(0, 287) k",
                     (expired_day,))
    series_total = vms * len(names)
    return {"raw_expired": 60 * series_total, "raw_kept": 60 * series_total,
            "rollups_expired": 288 * series_total}


def server_cpu_s(pg: PgCluster) -> float:
    """CPU seconds the PostgreSQL server has used: the postmaster, its live backends and
    those that exited."""
    with open(os.path.join(pg.base, "data", "postmaster.pid"), encoding="utf-8") as f:
        postmaster = psutil.Process(int(f.readline()))
    own = postmaster.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in postmaster.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def timed_roll_up(url: str, now: float, pg: PgCluster) -> Dict[str, Any]:
    """The continuous roll-up of every closed hour, as the leader runs it minute by minute."""
    store = open_store(StorageConfig(url=url))
    try:
        cpu0, started = server_cpu_s(pg), time.perf_counter()
        stats: Dict[str, Any] = dict(store.roll_up(now, budget_s=10 * 3600.0))
        stats["seconds"] = time.perf_counter() - started
        stats["server_cpu_s"] = server_cpu_s(pg) - cpu0
    finally:
        store.close()
    return stats


def timed_pass(url: str, now: float) -> Dict[str, Any]:
    store = open_store(StorageConfig(url=url))
    try:
        started = time.perf_counter()
        stats: Dict[str, Any] = dict(store.apply_retention(now))
        stats["seconds"] = time.perf_counter() - started
    finally:
        store.close()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=500)
    ap.add_argument("--series", type=int, default=20, help="metric series per VM")
    ap.add_argument("--quick", action="store_true", help="a small run to check the script")
    args = ap.parse_args()
    if args.quick:
        args.vms, args.series = 50, 10
    # an instant just after an hour: the expired hour is whole for both ways
    now = math.ceil(time.time() / HOUR) * HOUR + 1.0
    with PgCluster(settings={"shared_buffers": "512MB", "max_wal_size": "4GB"}) as pg:
        rows_url = pg.create_database("by_rows")
        at_schema_3(rows_url)
        started = time.perf_counter()
        counts = load(rows_url, args.vms, args.series, now)
        print("data: %d VMs x %d series: %d raw samples expired, %d kept, %d rollups expired; "
              "loaded in %.0f s" % (args.vms, args.series, counts["raw_expired"],
                                   counts["raw_kept"], counts["rollups_expired"],
                                   time.perf_counter() - started))
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE by_partitions TEMPLATE by_rows")
            conn.execute("CREATE DATABASE rolled_ahead TEMPLATE by_rows")
        parts_url = pg.url("by_partitions")
        ahead_url = pg.url("rolled_ahead")
        store = open_store(StorageConfig(url=parts_url))
        started = time.perf_counter()
        store.migrate()
        migration_s = time.perf_counter() - started
        store.close()
        store = open_store(StorageConfig(url=ahead_url))
        store.migrate()
        store.close()
        load1 = os.getloadavg()[0]
        rows = timed_pass(rows_url, now)
        parts = timed_pass(parts_url, now)
        rolled = timed_roll_up(ahead_url, now, pg)
        ahead = timed_pass(ahead_url, now)
        load2 = os.getloadavg()[0]
    print("migration 3 -> 4 (moves %d rows into partitions): %.1f s"
          % (counts["raw_expired"] + counts["raw_kept"] + counts["rollups_expired"],
             migration_s))
    print()
    print("%-44s %14s %14s" % ("one retention pass", "deleting rows", "partitions"))
    for key, label in (("raw_rolled", "raw samples rolled"),
                       ("rollups_written", "rollups written"),
                       ("rollups_deleted", "rollups deleted (dropped)"),
                       ("partitions_dropped", "partitions dropped")):
        print("%-44s %14s %14s" % (label, rows.get(key, "-"), parts.get(key, "-")))
    print("%-44s %14.2f %14.2f" % ("pass, s", rows["seconds"], parts["seconds"]))
    for key, label in (("roll_ms", "  rolling the expired hour, s"),
                       ("drop_ms", "  dropping expired rollups, s"),
                       ("create_ms", "  creating upcoming partitions, s"),
                       ("prune_ms", "  ledger, event states, silent VMs, s")):
        print("%-44s %14s %14.2f" % (label, "", parts[key] / 1000.0))
    print("%-44s %14.1f" % ("ratio (rows / partitions)", rows["seconds"] / parts["seconds"]))
    # Scaled to the fleet: an hourly pass meets one expired hour of raw samples. Rolling it
    # scales with its rows; dropping partitions and the rest do not.
    roll_s = parts["roll_ms"] / 1000.0
    rate = counts["raw_expired"] / roll_s if roll_s > 0 else float("inf")
    fleet_hour = FLEET_VMS * FLEET_SERIES * 60
    print("%-44s %14s %14.0f" % ("rolling rate, raw samples/s", "", rate))
    print("%-44s %14s %14.0f" % ("hourly pass at 10,000 VMs x 59 series, s", "",
                                 fleet_hour / rate + parts["seconds"] - roll_s))
    print("(the fleet's expired hour: %d raw samples, rolled at the rate measured here; the "
          "rest of the pass as measured)" % fleet_hour)
    print()
    # Continuous roll-up (the leader rolls each closed hour minutes after it closes): the
    # retention pass then only drops partitions. Its steady cost scales with rows per hour.
    print("continuous roll-up of the closed hours (here %d raw samples, %d steps of %d VMs): "
          "%.2f s, PostgreSQL CPU %.2f s" % (rolled["rolled"], rolled["steps"],
                                            postgres_store.ROLLUP_CHUNK_VMS,
                                            rolled["seconds"], rolled["server_cpu_s"]))
    per_row = rolled["seconds"] / max(1, rolled["rolled"])
    cpu_per_row = rolled["server_cpu_s"] / max(1, rolled["rolled"])
    print("  scaled to 10,000 VMs x 59 series (%d samples an hour): %.0f s an hour of roll-up "
          "(%.1f %% of the hour), %.0f s of PostgreSQL CPU" % (
              fleet_hour, fleet_hour * per_row, 100 * fleet_hour * per_row / HOUR,
              fleet_hour * cpu_per_row))
    print("retention pass after it: %.2f s (raw rolled %d, partitions dropped %d, of them "
          "rolled before %d); before: %.2f s" % (
              ahead["seconds"], ahead["raw_rolled"], ahead["partitions_dropped"],
              ahead["partitions_rolled_before"], parts["seconds"]))
    print("load average (1 min) %.2f -> %.2f" % (load1, load2))

if __name__ == "__main__":
    main()
