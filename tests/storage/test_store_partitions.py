"""PostgreSQL schema 4: time series partitioned by time; the migration from schema 3 keeps
every row, retention drops whole partitions, rows outside every partition are kept too."""

from __future__ import annotations

import time

import psycopg
import pytest

from engine_plugin.storage import StorageConfig, open_store
from engine_plugin.storage.postgres_store import PostgresStore, partition_widths
from engine_plugin.storage.schema import CREATE_VERSIONS_TABLE, load_migrations
from lab.store_reports import envelope, ingest_as_received, vm_uuid

pytestmark = pytest.mark.postgres
HOUR = 3600.0
DAY = 86400.0


def relkind(url: str, table: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                           (table,)).fetchone()
    return row[0] if row else ""


def at_schema_3(url: str) -> None:
    """The database as vmdiag before issue 16 left it; plus, for this code's ingest to fill
    it, the series registry of schema 5 (``without_series`` takes it away again)."""
    with psycopg.connect(url) as conn:
        conn.execute(CREATE_VERSIONS_TABLE)
        for migration in load_migrations("postgresql")[:3]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                         (migration.version, migration.name, time.time()))
        conn.execute("CREATE TABLE series (vm_key integer, metric_id integer,"
                     " seen_at float8, PRIMARY KEY (vm_key, metric_id))")


def without_series(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE series")


def test_migration_keeps_every_row_and_retention_drops_partitions(pg_cluster) -> None:
    url = pg_cluster.create_database()
    at_schema_3(url)
    config = StorageConfig(url=url)  # default retention: 48 h raw, 30 days of rollups
    now = time.time()
    old = open_store(config)
    assert relkind(url, "samples") == "r"
    start = now - 50 * HOUR
    ingest_as_received(old, [envelope(1, i, start + 600 * i, cpu=float(i))
                             for i in range(int(50 * HOUR / 600))])
    week = [("memory.used", now - 3 * DAY - 300 * k, 1.0 + k, 1.0, 2.0 + k, 5)
            for k in range(2016)]
    old.import_history(vm_uuid(2), rollups=week)
    ahead = [("cpu.percent", now + 30 * DAY, 42.0)]  # a guest clock a month ahead
    old.import_history(vm_uuid(3), samples=ahead)
    before = {(vm, m): old.history(vm_uuid(vm), m, 0, now + 40 * DAY, max_points=10**6)
              for vm, m in ((1, "cpu.percent"), (1, "fs.used:/"), (2, "memory.used"),
                            (3, "cpu.percent"))}
    old.close()
    without_series(url)

    store = open_store(config)
    assert store.migrate() == len(load_migrations("postgresql"))
    # schema 5 registered the series of the data it found (migration 5, its backfill)
    assert sorted(store._read(lambda tx: tx.fetchall(
        "SELECT v.vm_id, m.name FROM series s JOIN vms v ON v.vm_key = s.vm_key"
        " JOIN metrics m ON m.metric_id = s.metric_id WHERE m.name IN"
        " ('cpu.percent', 'memory.used')"))) == [
        (vm_uuid(1), "cpu.percent"), (vm_uuid(1), "memory.used"), (vm_uuid(2), "memory.used"),
        (vm_uuid(3), "cpu.percent")]
    assert relkind(url, "samples") == "p" and relkind(url, "rollups") == "p"
    assert relkind(url, "samples_unpartitioned") == ""
    for (vm, metric), series in before.items():
        assert store.history(vm_uuid(vm), metric, 0, now + 40 * DAY,
                             max_points=10**6) == series, (vm, metric)
    assert isinstance(store, PostgresStore)
    widths = partition_widths(config)
    assert (widths["samples"], widths["rollups"]) == (HOUR, DAY)
    parts = store._read(lambda tx: store._partitions(tx, "samples"))
    assert parts[-1][2] >= now + 3 * HOUR  # created ahead of time
    # rows no partition covers (older than retention needs, or far ahead) are in the default
    ahead_sql = "SELECT count(*) FROM samples_default WHERE t > %s" % (now + 29 * DAY)
    assert store._read(lambda tx: tx.fetchone(ahead_sql))[0] == 1
    for vm in (2, 3):  # VMs with only imported history count as silent without a verdict
        store.set_verdict(vm_uuid(vm), {"status": "ok"}, now + 40 * DAY)

    stats = store.apply_retention(now)
    assert stats["partitions_dropped"] >= 1 and stats["raw_rolled"] > 0
    assert stats["lock_timeouts"] == 0
    # raw samples remain from the partition the 48 h cutoff falls in; older ones are rollups
    cutoff = (now - 48 * HOUR) // HOUR * HOUR
    raw_from = store._read(lambda tx: tx.fetchone(
        "SELECT min(t) FROM samples WHERE t < %s" % (now + DAY)))[0]
    assert cutoff <= raw_from < cutoff + 600
    rolled = store.rollups(vm_uuid(1), "cpu.percent", 0, now)
    assert rolled and rolled[-1][0] < raw_from
    raw_left = store._read(lambda tx: tx.fetchone(
        "SELECT count(*) FROM samples s JOIN metrics m ON m.metric_id = s.metric_id"
        " WHERE m.name = 'cpu.percent' AND t < %s" % (now + DAY)))[0]
    assert sum(n for *_, n in rolled) + raw_left == len(before[(1, "cpu.percent")][1])
    # a month later: the week of rollups has expired with its daily partitions
    later = store.apply_retention(now + 31 * DAY)
    assert later["rollups_deleted"] >= 2016
    assert store.rollups(vm_uuid(2), "memory.used", 0, now + DAY) == []
    store.close()


def test_a_partition_created_later_takes_its_rows_from_the_default_one(pg_cluster) -> None:
    url = pg_cluster.create_database()
    store = open_store(StorageConfig(url=url))
    store.migrate()
    now = time.time()
    store.import_history(vm_uuid(1), samples=[("cpu.percent", now + 10 * HOUR, 7.0)])
    store.set_verdict(vm_uuid(1), {"status": "ok"}, now + 10 * HOUR)  # not a silent VM
    count = "SELECT count(*) FROM samples_default"
    assert store._read(lambda tx: tx.fetchone(count))[0] == 1
    # ten hours later the hourly pass creates that hour's partition
    stats = store.apply_retention(now + 10 * HOUR)
    assert stats["partitions_created"] >= 1
    assert store._read(lambda tx: tx.fetchone(count))[0] == 0
    assert store.history(vm_uuid(1), "cpu.percent", now, now + 11 * HOUR)[1] == [
        (now + 10 * HOUR, 7.0)]
    store.close()
