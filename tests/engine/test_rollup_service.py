"""The service's leader rolls closed hours up ahead of retention: a real ``vmdiag-engine
serve`` process on a real PostgreSQL, its minute-by-minute maintenance, nothing called by
hand."""

from __future__ import annotations

import math
import time

import pytest

from engine_plugin.storage import StorageConfig, open_store
from lab.engine_process import EngineProcess, free_port
from lab.store_reports import envelope, vm_uuid

pytestmark = pytest.mark.postgres
HOUR = 3600.0


def test_the_leader_rolls_closed_hours_up_within_its_minutes(pg_cluster, pki, tmp_path):
    url = pg_cluster.create_database()
    # short retention: few empty hours before the data, so the first minutes reach it
    config = StorageConfig(url=url, raw_retention_s=6 * HOUR)
    store = open_store(config)
    store.migrate()
    start = math.floor(time.time() / HOUR) * HOUR - 2 * HOUR  # two closed hours
    for vm in range(3):
        store.import_history(vm_uuid(vm), samples=[
            ("cpu.percent", start + 60 * i, float(i)) for i in range(120)])
    # and a report now: a VM with history but no report counts as silent, and the first
    # retention pass (in the same minute as the first roll-up) would remove it with its rollups
    now = time.time()
    store.ingest([envelope(vm, 0, now) for vm in range(3)], now=now)
    engine = EngineProcess(str(tmp_path), "rollup", pki, url, free_port(), False,
                           storage="raw_retention = 6h\n")
    try:
        deadline = time.monotonic() + 240
        total = 0
        while time.monotonic() < deadline:
            total = store._read(lambda tx: tx.fetchone(
                "SELECT coalesce(sum(n), 0) FROM rollups"))[0]
            if total >= 360:
                break
            time.sleep(2)
        assert total == 360, engine.tail()  # both hours, every sample once
        # queries still show the raw samples of those hours, not these rollups
        assert store.rollups(vm_uuid(0), "cpu.percent", 0, time.time()) == []
        kind, points = store.history(vm_uuid(0), "cpu.percent", start, start + 2 * HOUR)
        assert kind == "raw" and len(points) == 120
    finally:
        engine.stop()
        store.close()
