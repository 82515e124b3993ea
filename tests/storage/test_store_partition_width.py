"""Changing the retentions, and so the partition widths, of an existing PostgreSQL database.

A raw retention under 12 hours or a rollup retention under 12 days makes narrower partitions
(``postgres_store.partition_widths``); the partitions already there keep their width. The
store must go on: start (``migrate``), ingest, roll up and apply retention with partitions of
both widths side by side, every sample counted once, after shrinking and after widening again.
"""

from __future__ import annotations

import math
import time

import pytest

from engine_plugin.storage import StorageConfig, open_store
from engine_plugin.storage.postgres_store import PostgresStore, partition_widths
from tests.storage.test_store_default_partition import Fleet, check

pytestmark = pytest.mark.postgres
HOUR = 3600.0
DAY = 86400.0
VMS = (1, 2, 3)


def partitions(store: PostgresStore, table: str) -> list:
    return store._read(lambda tx: store._partitions(tx, table))


def test_retention_widths_change_on_an_existing_database(pg_cluster) -> None:
    url = pg_cluster.create_database()
    configs = [StorageConfig(url=url),  # partitions of 1 h and 1 day
               StorageConfig(url=url, raw_retention_s=6 * HOUR,  # 30 minutes and 12 hours
                             rollup_retention_s=6 * DAY),
               StorageConfig(url=url)]  # back
    assert [tuple(partition_widths(c).values()) for c in configs] == [
        (HOUR, DAY), (HOUR / 2, DAY / 2), (HOUR, DAY)]
    now = math.floor(time.time() / HOUR) * HOUR + 1200  # mid-hour, so halves differ
    fleet = None
    widths = set()
    for phase, config in enumerate(configs):
        store = open_store(config)
        assert isinstance(store, PostgresStore)
        store.migrate()  # creates the partitions of the new width around the clock
        if fleet is None:
            fleet = Fleet(store)
        fleet.store = store
        fleet.span(VMS, now - 8 * HOUR, now, now=now)
        store.roll_up(now, budget_s=600)
        stats = store.apply_retention(now)
        assert stats["lock_timeouts"] == 0 and stats["skipped"] == 0, phase
        store.roll_up(now, budget_s=600)
        for table in ("samples", "rollups"):
            parts = partitions(store, table)
            assert [(a, b) for a, b in zip(parts, parts[1:]) if a[2] > b[1]] == [], phase
            widths |= {(table, end - start) for _, start, end in parts}
        check(store, fleet)
        assert store.history(fleet.accepted[0][0], "cpu.percent", now - 4 * HOUR, now)[1]
        store.close()
        now += 8 * HOUR
    # hour and half-hour partitions were there side by side (the day partitions of rollups
    # made first cover every range the 12-hour width asked for: no gap to fill)
    assert {("samples", HOUR), ("samples", HOUR / 2), ("rollups", DAY)} <= widths
