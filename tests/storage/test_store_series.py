"""Each VM's series (schema 5): the cap on how many one VM may have, and retention dropping
series and metric names nobody reports any more, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from typing import Callable, List, Set

from engine_plugin.storage import Store
from engine_plugin.storage.series import SLACK_S
from lab.store_reports import envelope, vm_uuid

HOUR = 3600.0
DAY = 86400.0
START = 1_700_000_100.0
CAP = 40
CONFIG = {"raw_retention_s": HOUR, "rollup_retention_s": 6 * HOUR, "vm_retention_s": 60 * DAY,
          "max_series_per_vm": CAP}
#: series of a report of lab.store_reports without processes: 9 of cpu, memory, swap and
#: load, 4 of the root file system, 2 of eth0
FIXED = 15
#: when retention drops a series last reported at START
LATER = START + CONFIG["rollup_retention_s"] + SLACK_S + HOUR


def hostile(vm: int, seq: int, t: float, count: int = 10) -> dict:
    """A report with ``count`` process names never seen before (``p<seq>-<i>``)."""
    return envelope(vm, seq, t, processes=[("p%d-%02d" % (seq, i), 1e6) for i in range(count)])


def dictionary(store: Store) -> Set[str]:
    """Every name in the store's metric dictionary."""
    return {r[0] for r in store._read(  # type: ignore[attr-defined]
        lambda tx: tx.fetchall("SELECT name FROM metrics"))}


def series_of(store: Store, vm: int) -> int:
    row = store._read(lambda tx: tx.fetchone(  # type: ignore[attr-defined]
        "SELECT count(*) FROM series s JOIN vms v ON v.vm_key = s.vm_key WHERE v.vm_id = ?",
        (vm_uuid(vm),)))
    return int(row[0])


def test_new_series_beyond_the_cap_are_dropped_and_counted_reports_stored(
        make_store: Callable[..., Store]) -> None:
    store = make_store(**CONFIG)
    results = [store.ingest([hostile(1, seq, START + 60 * seq)], now=START + 60 * seq + 1)
               for seq in range(4)]
    # 25, 35, then 5 of the 10 new names fit under 40, then none
    assert [r.capped_samples for r in results] == [0, 0, 5, 10]
    assert [r.capped_vms for r in results] == [(), (), (vm_uuid(1),), (vm_uuid(1),)]
    assert all(r.outcomes == ("stored",) for r in results)
    assert store.latest(vm_uuid(1)).report["seq"] == 3  # type: ignore[union-attr]
    names = store.metric_names(vm_uuid(1))
    assert len(names) == CAP and series_of(store, 1) == CAP
    # the first ones in name order were taken
    assert [n for n in names if n.startswith("proc.rss:p2-")] == [
        "proc.rss:p2-%02d" % i for i in range(5)]
    assert not dictionary(store) & {"proc.rss:p2-%02d" % i for i in range(5, 10)}
    assert not any(n.startswith("proc.rss:p3-") for n in dictionary(store))
    # its known series go on, in this instance and in another one (no cache there)
    again = envelope(1, 4, START + 240, processes=[("p0-00", 5e6), ("p9-00", 1e6)])
    assert store.ingest([again], now=START + 241).capped_samples == 1
    for reader in (store, make_store(**CONFIG)):
        assert reader.history(vm_uuid(1), "cpu.percent", START, START + 600)[1] == [
            (START + 60 * seq, 12.5) for seq in range(5)]
        assert reader.history(vm_uuid(1), "proc.rss:p0-00", START, START + 600)[1] == [
            (START, 1e6), (START + 240, 5e6)]
    # another VM has a cap of its own
    other = store.ingest([hostile(2, 0, START, count=CAP - FIXED)], now=START + 1)
    assert other.capped_samples == 0 and series_of(store, 2) == CAP


def test_two_instances_registering_at_once_stay_within_the_cap_times_writers(
        make_store: Callable[..., Store]) -> None:
    stores = [make_store(**CONFIG), make_store(**CONFIG)]
    store = stores[0]
    store.ingest([envelope(1, 0, START, processes=[])], now=START)
    start = threading.Barrier(2)
    errors: List[BaseException] = []

    def deliver(index: int, seq: int) -> None:
        try:
            start.wait()
            stores[index].ingest([envelope(1, seq, START + seq, run_id="run-%d" % index,
                                           processes=[("i%d-s%d-%02d" % (index, seq, i), 1e6)
                                                      for i in range(20)])],
                                 now=START + seq)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    counts = []
    for seq in (1, 2):
        threads = [threading.Thread(target=deliver, args=(index, seq)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        counts.append(series_of(store, 1))
    # each writer may add the room it saw (25): never more than cap + that, and once over
    # the cap nothing more; SQLite has one writer at a time, so exactly the cap there
    assert CAP <= counts[0] <= CAP + (CAP - FIXED)
    assert counts[1] == counts[0]
    if store.backend == "sqlite":
        assert counts[0] == CAP


def test_retention_drops_series_nobody_reports_and_names_no_series_uses(
        make_store: Callable[..., Store]) -> None:
    ingesting, retention = make_store(**CONFIG), make_store(**CONFIG)  # two processes
    ingesting.ingest([envelope(1, 0, START, processes=[("old", 1e6), ("shared", 2e6)]),
                      envelope(2, 0, START, processes=[("shared", 3e6)]),
                      # a guest clock a month ahead: its samples outlive every retention
                      envelope(3, 0, START + 30 * DAY, processes=[("ahead", 1e6)])],
                     now=START + 1)
    assert {"proc.rss:old", "proc.rss:shared", "proc.rss:ahead"} <= dictionary(ingesting)
    # VM 1 goes on reporting (without "old"), VMs 2 and 3 fall silent
    ingesting.ingest([envelope(1, 1, LATER - 60, processes=[("shared", 2e6), ("new", 1e6)])],
                     now=LATER - 59)
    before = len(dictionary(ingesting))
    stats = retention.apply_retention(LATER)
    assert stats["vms_removed"] == 0  # vm retention is 60 days
    # VM 2's and VM 3's series, and VM 1's "old"
    assert stats["series_pruned"] == 2 * (FIXED + 1) + 1
    assert stats["metrics_pruned"] == 2  # "old" and "ahead"; the rest is VM 1's
    assert len(dictionary(ingesting)) == before - 2
    assert {"proc.rss:old", "proc.rss:ahead"}.isdisjoint(dictionary(ingesting))
    assert {"proc.rss:shared", "proc.rss:new", "cpu.percent"} <= dictionary(ingesting)
    assert series_of(ingesting, 2) == series_of(ingesting, 3) == 0
    assert ingesting.history(vm_uuid(3), "cpu.percent", 0, 2e9)[1] == []  # with its data
    assert ingesting.metric_names(vm_uuid(3)) == []
    assert ingesting.history(vm_uuid(1), "proc.rss:shared", LATER - 600, LATER)[1] == [
        (LATER - 60, 2e6)]
    # a name that comes back is a new series like any other, in the instance that remembered
    # the old one too
    ingesting.ingest([envelope(1, 2, LATER + 60, processes=[("old", 7e6)]),
                      envelope(3, 1, LATER + 60, processes=[("ahead", 8e6)])], now=LATER + 61)
    for reader in (ingesting, retention):
        assert reader.history(vm_uuid(1), "proc.rss:old", LATER, LATER + 600)[1] == [
            (LATER + 60, 7e6)]
        assert reader.history(vm_uuid(3), "proc.rss:ahead", LATER, LATER + 600)[1] == [
            (LATER + 60, 8e6)]
    assert series_of(ingesting, 3) == FIXED + 1
    again = retention.apply_retention(LATER + 120)
    assert (again["series_pruned"], again["metrics_pruned"]) == (0, 0)


def test_removed_vms_take_their_series_along(make_store: Callable[..., Store]) -> None:
    store = make_store(**dict(CONFIG, vm_retention_s=12 * HOUR))
    store.ingest([envelope(1, 0, START, processes=[("only-here", 1e6)])], now=START)
    stats = store.apply_retention(START + DAY)
    assert stats["vms_removed"] == 1 and series_of(store, 1) == 0
    # the newest name is kept (SQLite would hand its id out again), the others go
    assert len(dictionary(store)) == 1
    assert stats["metrics_pruned"] == FIXED
