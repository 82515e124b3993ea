"""Schema 6 (issue 16, cheaper ingest): a store at schema 5 with data migrates, keeps every
answer, and loses only the indexes no query needs (docs/storage.md, "Schema")."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Set

from engine_plugin.storage import Store
from engine_plugin.storage.postgres_store import PostgresStore
from engine_plugin.storage.schema import apply_migrations, load_migrations
from engine_plugin.storage.sqlstore import SqlStore, Tx
from lab.store_reports import batch, envelope, vm_uuid

HOUR = 3600.0


def at_schema_5(store: Store) -> None:
    """The database as vmdiag before schema 6 left it (partitions made, on PostgreSQL)."""
    assert isinstance(store, SqlStore)

    def work(tx: Tx) -> None:
        apply_migrations(tx, load_migrations(store.backend)[:5], "the test database")
        if isinstance(store, PostgresStore):
            store._adopt_unpartitioned(tx, time.time())
        store._backfill_series(tx, time.time())
    store._write(work)


def indexes(store: Store) -> Set[str]:
    assert isinstance(store, SqlStore)
    if isinstance(store, PostgresStore):
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    return {r[0] for r in store._read(lambda tx: tx.fetchall(sql))}


def answers(store: Store, now: float) -> Dict[str, Any]:
    """Everything a reader asks of the store about VMs 1 to 3."""
    vms = [vm_uuid(n) for n in (1, 2, 3)]
    out: Dict[str, Any] = {
        "summaries": store.summaries(), "vm_ids": store.vm_ids(),
        "host": store.vm_ids(host_id="host-2"),
        "new_data": store.vms_with_new_data(), "new_since": store.vms_with_new_data(now - 90),
        "latests": {k: (v.report, v.received_at, v.ingested_at)
                    for k, v in store.latests(vms).items()},
        "histories": store.histories(vms, ["cpu.percent", "fs.used:"], now - 3 * HOUR)}
    for vm in vms:
        out["history " + vm] = store.history(vm, "cpu.percent", now - 3 * HOUR, now + HOUR)
        out["names " + vm] = store.metric_names(vm)
    return out


def test_schema_6_keeps_every_answer(make_store: Callable[..., Store]) -> None:
    old = make_store(migrate=False)
    at_schema_5(old)
    assert {"vms_received", "vms_ingested", "samples_t"} <= indexes(old)
    now = time.time()
    sent: List[Dict[str, Any]] = []
    for seq in range(6):
        t = now - 3000 + 600 * seq
        sent += batch([1, 2], seq, t, cpu=float(seq))
        sent.append(envelope(3, seq, t, host_id="host-2", cpu=50.0 + seq))
    for env in sent:
        old.ingest([env], now=env["received_at"])
    old.set_verdict(vm_uuid(1), {"status": "ok"}, now - 100, data_through=now - 100)
    before = answers(old, now)
    old.close()

    store = make_store()  # migrates to the newest schema
    assert store.migrate() == len(load_migrations(store.backend)) >= 6
    after = indexes(store)
    assert not {"vms_received", "vms_ingested"} & after
    if store.backend == "postgresql":
        # time index only on the default partition: retention reads only it by time
        assert "samples_t" not in after and "samples_default_t" in after
        assert not any(name.endswith("_t_idx") or name.endswith("t_idx1")
                       for name in after if name.startswith("samples_p"))
    else:
        assert "samples_t" in after  # SQLite's retention reads samples by time
    assert answers(store, now) == before

    # ingest goes on as before: newer reports replace, older ones and duplicates do not
    assert store.ingest([envelope(1, 6, now + 600, cpu=99.0)], now=now + 601).accepted == 1
    assert store.ingest([envelope(1, 2, now - 1800)], now=now + 602).accepted == 0
    assert store.ingest([envelope(2, 1, now - 2400, run_id="run-1")],
                        now=now + 603).accepted == 0
    latest = store.latest(vm_uuid(1))
    assert latest is not None and latest.report["seq"] == 6
    assert store.vms_with_new_data(now + 500) == [vm_uuid(1)]
    assert store.history(vm_uuid(1), "cpu.percent", now - 3 * HOUR,
                         now + HOUR)[1][-1] == (now + 600, 99.0)
