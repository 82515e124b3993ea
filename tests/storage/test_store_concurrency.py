"""Several threads and several store instances on one database, as the service runs them."""

from __future__ import annotations

import multiprocessing
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List

import pytest

from engine_plugin.storage import Store, StoreClosed, open_store
from lab.store_reports import envelope, vm_uuid

START = 1_700_000_100.0


def test_concurrent_duplicate_ingests_store_each_report_once(
        make_store: Callable[..., Store]) -> None:
    stores = [make_store(), make_store()]      # two service instances sharing the database
    vms, reports = range(1, 21), range(6)
    envs = [envelope(vm, seq, START + 60 * seq, cpu=float(vm * 100 + seq))
            for vm in vms for seq in reports]
    # Every worker sends every report, in its own order and batch sizes, like relays retrying.
    plans = []
    for worker in range(8):
        rng = random.Random(worker)
        shuffled = envs[:]
        rng.shuffle(shuffled)
        size = rng.randint(5, 40)
        plans.append([shuffled[i:i + size] for i in range(0, len(shuffled), size)])
    barrier = threading.Barrier(len(plans))

    def run(worker: int) -> int:
        store = stores[worker % 2]
        barrier.wait()
        return sum(store.ingest(b).accepted for b in plans[worker])

    with ThreadPoolExecutor(len(plans)) as pool:
        accepted = sum(pool.map(run, range(len(plans))))
    assert accepted == len(envs)
    for vm in vms:
        _, points = stores[0].history(vm_uuid(vm), "cpu.percent", START, START + 3600)
        assert points == [(START + 60 * seq, float(vm * 100 + seq)) for seq in reports]
        assert stores[1].latest(vm_uuid(vm)).report["seq"] == reports[-1]
    assert len(stores[1].summaries()) == len(vms)


def test_reads_run_while_ingest_writes(make_store: Callable[..., Store]) -> None:
    store = make_store()
    store.ingest([envelope(vm, 0, START) for vm in range(1, 6)])
    stop = threading.Event()
    errors: List[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                rows = store.summaries()
                assert len(rows) >= 5
                for row in rows:
                    assert store.latest(row.vm_id) is not None
                store.history(vm_uuid(1), "cpu.percent", 0, 2e9)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for seq in range(1, 40):
            store.ingest([envelope(vm, seq, START + 60 * seq) for vm in range(1, 11)])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(store.history(vm_uuid(1), "cpu.percent", START, START + 3600)[1]) == 40


def test_instances_migrating_at_once_agree(make_store: Callable[..., Store]) -> None:
    stores = [make_store(migrate=False) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def migrate(store: Store) -> int:
        barrier.wait()
        return store.migrate()

    with ThreadPoolExecutor(len(stores)) as pool:
        versions = list(pool.map(migrate, stores))
    assert len(set(versions)) == 1 and versions[0] >= 1
    stores[0].ingest([envelope(1, 0, START)])
    assert stores[3].vm_ids() == [vm_uuid(1)]


def test_retention_racing_itself_and_ingest_rolls_every_sample_once(
        make_store: Callable[..., Store]) -> None:
    config = {"raw_retention_s": 3600.0, "rollup_retention_s": 86400.0}
    stores = [make_store(**config), make_store(**config)]
    stores[0].ingest([envelope(1, i, START + 60 * i, cpu=float(i)) for i in range(120)])
    now = START + 120 * 60
    barrier = threading.Barrier(3)

    def retention(store: Store) -> dict:
        barrier.wait()
        return store.apply_retention(now)

    def ingest() -> int:
        barrier.wait()
        return sum(stores[1].ingest([envelope(2, i, START + 60 * i)]).accepted
                   for i in range(60, 120))

    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(retention, s) for s in stores]
        fed = pool.submit(ingest)
        stats = [r.result() for r in runs]
        assert fed.result() == 60
    metrics = len(stores[0].metric_names(vm_uuid(1)))
    assert sum(s["raw_rolled"] for s in stats) == 60 * metrics
    rolled = stores[0].rollups(vm_uuid(1), "cpu.percent", 0, 2e9)
    assert rolled == [(START + 300 * k, 5 * k + 2.0, 5 * k + 0.0, 5 * k + 4.0, 5)
                      for k in range(12)]
    _, raw = stores[1].history(vm_uuid(1), "cpu.percent", START + 3600, now)
    assert raw == [(START + 60 * i, float(i)) for i in range(60, 120)]


def test_closing_waits_for_reads_in_flight_then_refuses_new_ones(tmp_path) -> None:
    # A health pass in the service's store executor can still be reading when the service
    # stops; closing the SQLite connection under it crashed the whole process (SIGSEGV).
    store = open_store("sqlite:///%s/closing.db" % tmp_path)
    store.migrate()
    store.ingest([envelope(1, 0, START)])
    reading, release = threading.Event(), threading.Event()

    def slow_read(tx) -> int:
        reading.set()
        release.wait(10)
        return len(tx.fetchall("SELECT * FROM vms"))

    with ThreadPoolExecutor(2) as pool:
        read = pool.submit(store._read, slow_read)
        assert reading.wait(10)
        closed = pool.submit(store.close)
        assert not closed.done()
        release.set()
        assert read.result(10) == 1  # the read in flight finished on an open connection
        closed.result(10)
    with pytest.raises(StoreClosed):
        store.latest(vm_uuid(1))


def _ingest_rounds(url: str, worker: int, rounds: int, vms: List[int], barrier: Any,
                   results: Any) -> None:
    """One process of a service ([ingest] processes): its own store on the shared database,
    every round new VMs, new metric names and the same reports as the other process."""
    store = open_store(url)  # the service migrated it; its caches are this process's own
    accepted = 0
    try:
        for rnd in range(rounds):
            batch = [envelope(vm, rnd, START + 60 * rnd, cpu=float(vm + rnd),
                              filesystems=(("/mnt-%d" % rnd, 1e9 + vm, 1e10),),
                              processes=(("job-%d" % rnd, 1e8 + vm),))
                     for vm in vms + fresh_vms(vms, rnd)]
            if worker % 2:
                batch.reverse()
            barrier.wait(60)
            accepted += store.ingest(batch).accepted
    finally:
        store.close()
        results.put(accepted)


def fresh_vms(vms: List[int], rnd: int) -> List[int]:
    return [vm + 100 * (rnd + 1) for vm in vms]


def test_processes_creating_vms_and_metric_names_at_once_agree(
        make_store: Callable[..., Store], store_url: str) -> None:
    # Several ingest processes of one service (and several instances) each keep their own
    # metric-name and VM caches; every round here brings VMs and metric names that neither
    # process has seen, sent by both at once.
    store = make_store()
    vms, rounds, workers = list(range(1, 21)), 6, 2
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_ingest_rounds, args=(store_url, w, rounds, vms, barrier,
                                                      results)) for w in range(workers)]
    for proc in procs:
        proc.start()
    accepted = sum(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    # each report once: round r holds the 20 VMs and 20 new ones, each sent by both processes
    assert accepted == rounds * 2 * len(vms)
    for rnd in range(rounds):
        t = START + 60 * rnd
        for vm in vms + fresh_vms(vms, rnd):
            assert store.history(vm_uuid(vm), "fs.used:/mnt-%d" % rnd, t, t)[1] == [
                (t, 1e9 + vm)]
            assert store.history(vm_uuid(vm), "proc.rss:job-%d" % rnd, t, t)[1] == [
                (t, 1e8 + vm)]
            assert store.history(vm_uuid(vm), "cpu.percent", t, t)[1] == [(t, float(vm + rnd))]
    assert len(store.vm_ids()) == len(vms) * (rounds + 1)
    assert {"fs.used:/mnt-%d" % rnd for rnd in range(rounds)} <= set(
        store.metric_names(vm_uuid(1)))
