"""Leases (one holder at a time, expiry on the database's clock), verdicts' data_through and
the event states written together, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

from tests.storage.test_store_ingest import vm_uuid


def test_a_lease_has_one_holder_until_it_expires_or_is_released(make_store) -> None:
    a, b = make_store(), make_store()  # two instances on one database
    assert a.acquire_lease("duties", "a", 0.6)
    assert not b.acquire_lease("duties", "b", 0.6)  # held by a
    assert a.acquire_lease("duties", "a", 0.6)      # a renews
    held = b.leases()["duties"]
    assert held["holder"] == "a" and 0 < held["expires_in"] <= 0.6 and held["held_for"] >= 0
    time.sleep(0.8)                                 # a stopped renewing
    assert b.acquire_lease("duties", "b", 30)
    assert not a.acquire_lease("duties", "a", 30)   # a came back too late
    a.release_lease("duties", "a")                  # not a's to release: nothing happens
    assert a.leases()["duties"]["holder"] == "b"
    b.release_lease("duties", "b")
    assert a.acquire_lease("duties", "a", 30)       # released: taken at once


def test_racing_instances_get_one_lease(make_store) -> None:
    stores = [make_store() for _ in range(4)]
    winners = []
    start = threading.Barrier(len(stores))

    def race(index: int) -> None:
        start.wait()
        if stores[index].acquire_lease("duties", "i%d" % index, 30):
            winners.append(index)
    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert stores[0].leases()["duties"]["holder"] == "i%d" % winners[0]


def test_vms_with_new_data_compares_the_latest_report_with_the_verdict(store) -> None:
    from tests.engine.reports import envelope

    store.ingest([envelope(vm_uuid(1), "h", 0, now=1000.0),
                  envelope(vm_uuid(2), "h", 0, now=1000.0)], now=1000.0)
    assert store.vms_with_new_data() == [vm_uuid(1), vm_uuid(2)]  # no verdicts yet
    seen = store.latest(vm_uuid(1)).ingested_at
    store.set_verdict(vm_uuid(1), {"status": "ok"}, 1001.0, seen)
    store.set_verdict(vm_uuid(2), {"status": "ok"}, 1001.0)  # without data_through: due
    assert store.vms_with_new_data() == [vm_uuid(2)]
    store.ingest([envelope(vm_uuid(1), "h", 1, now=1060.0)], now=1060.0)
    assert store.vms_with_new_data() == [vm_uuid(1), vm_uuid(2)]
    assert store.vms_with_new_data(since=1050.0) == [vm_uuid(1)]  # received since then


def test_event_states_are_written_together(store) -> None:
    store.set_event_states({"events:outbox": {"items": [1]}, "events:vm:x": {"status": "ok"}},
                           now=5.0)
    assert store.event_state("events:outbox") == {"items": [1]}
    assert store.event_state("events:vm:x") == {"status": "ok"}
