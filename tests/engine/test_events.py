"""oVirt events: planned on change only, delivered once, retried after an engine outage."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from engine_plugin.ovirt import events
from tests.engine.conftest import HOST_1_CN, VM_ALICE, VM_SHARED, relay_ssl, upload
from tests.engine.reports import critical_checks, envelope


def verdict(status: str, forecasts=(), reasons=()):
    return {"status": status, "since": 1.0, "reasons": list(reasons),
            "forecasts": list(forecasts)}


def test_plan_raises_on_change_only() -> None:
    crit = verdict("critical", reasons=[{"code": "check:x", "severity": "critical",
                                         "message": "/ is full.", "metric": None}])
    planned, state = events.plan("vm", "web1", crit, None)
    assert [(e.status, e.description) for e in planned] == [
        ("critical", "VM web1 is critical (vmdiag): / is full.")]
    again, state = events.plan("vm", "web1", crit, state)
    assert again == []
    healed, state = events.plan("vm", "web1", verdict("ok"), state)
    assert [e.status for e in healed] == ["ok"]
    assert events.plan("vm", "web1", verdict("ok"), state)[0] == []


def test_first_ok_and_unknown_raise_nothing() -> None:
    planned, state = events.plan("vm", "web1", verdict("ok"), None)
    assert planned == [] and state["status"] == "ok"
    silent, state = events.plan("vm", "web1", verdict("unknown"), state)
    assert silent == [] and state["status"] == "ok"
    back, _ = events.plan("vm", "web1", verdict("ok"), state)
    assert back == []  # silence and return do not flap events


def test_min_status_critical_ignores_warnings_both_ways() -> None:
    planned, state = events.plan("vm", "v", verdict("warning"), {"status": "ok"}, "critical")
    assert planned == []
    assert events.plan("vm", "v", verdict("ok"), state, "critical")[0] == []
    planned, state = events.plan("vm", "v", verdict("critical"), state, "critical")
    assert [e.status for e in planned] == ["critical"]
    assert [e.status for e in events.plan("vm", "v", verdict("warning"), state,
                                          "critical")[0]] == ["warning"]


def test_forecast_crossing_a_horizon_raises_while_status_is_steady() -> None:
    fc = {"metric": "fs.used:/var", "label": "/var", "status": "warning"}
    reason = {"code": "forecast:fs.used:/var", "severity": "warning", "metric": "fs.used:/var",
              "message": "/var will be full in about 5 days."}
    _, state = events.plan("vm", "v", verdict("warning", [], [reason]), {"status": "ok"})
    planned, state = events.plan("vm", "v", verdict("warning", [fc], [reason]), state)
    assert [e.description for e in planned] == ["VM v: /var will be full in about 5 days."]
    assert events.plan("vm", "v", verdict("warning", [fc], [reason]), state)[0] == []
    worse = dict(fc, status="critical")
    # a worse forecast that still holds its minimum duration is not raised: no event yet
    assert events.plan("vm", "v", verdict("warning", [worse], [reason]), state)[0] == []
    raised = dict(reason, severity="critical", message="/var will be full in about 5 h.")
    assert len(events.plan("vm", "v", verdict("warning", [worse], [raised]),
                           state)[0]) == 1


def test_custom_ids_are_unique_int32_and_survive_a_counter_loss() -> None:
    now = 1_800_000_000.0
    ids, counter = events.next_custom_ids(None, 3, now)
    more, counter = events.next_custom_ids(counter, 2, now)
    assert len(set(ids + more)) == 5 and max(ids + more) < 2**31
    # a re-created store one minute later still issues higher ids
    fresh, _ = events.next_custom_ids(None, 1, now + 60)
    assert fresh[0] > max(ids + more)


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.0f s" % timeout)
        await asyncio.sleep(0.05)


def failed_deliveries(service) -> float:
    value = service.metrics.registry.get_sample_value("vmdiag_events_total",
                                                      {"outcome": "failed"})
    return value or 0.0


async def send(service, pki, vm_id: str, seq: int, **kw) -> None:
    reply = await upload(service, relay_ssl(pki), {"envelopes": [
        envelope(vm_id, HOST_1_CN, seq, **kw)]})
    assert reply.status == 200 and reply.json()["accepted"] == 1
    await service.health.drain()


async def test_event_once_on_change_none_on_steady_state(make_service, pki, standin) -> None:
    service = await make_service()
    await send(service, pki, VM_ALICE, 0)  # healthy from the start: no event
    await send(service, pki, VM_ALICE, 1, checks=critical_checks())
    await wait_for(lambda: len(standin.events) == 1)
    event = standin.events[0]
    assert event["origin"] == "vmdiag" and event["severity"] == "error"
    assert event["vm_id"] == VM_ALICE and event["user"] == "vmdiag@internal"
    assert "grow the disk" in event["description"]
    for seq in (2, 3, 4):  # still critical
        await send(service, pki, VM_ALICE, seq, checks=critical_checks())
    await send(service, pki, VM_ALICE, 5)  # recovered
    await wait_for(lambda: len(standin.events) == 2)
    await asyncio.sleep(0.3)
    assert [e["severity"] for e in standin.events] == ["error", "normal"]
    assert len({e["custom_id"] for e in standin.events}) == 2
    assert standin.rejected_events == []


async def test_events_wait_out_an_engine_outage_without_blocking_ingest(
        make_service, pki, standin) -> None:
    service = await make_service()
    await send(service, pki, VM_SHARED, 0)
    standin.stop()
    try:
        started = time.monotonic()
        await send(service, pki, VM_SHARED, 1, checks=critical_checks())
        assert time.monotonic() - started < 5  # ingest did not wait for the engine
        await wait_for(lambda: failed_deliveries(service) >= 1)
        assert len(service.outbox.pending()) == 1
    finally:
        standin.start()
    counts = await service.dispatcher.deliver()
    assert counts["sent"] == 1
    assert [e["vm_id"] for e in standin.events] == [VM_SHARED]
    assert service.outbox.pending() == []


async def test_outbox_survives_a_service_restart(make_service, pki, standin) -> None:
    standin.stop()
    try:
        # oVirt is down from the start, so ingest cannot know where VMs run: without
        # ownership = any it would answer "retry" (tests/engine/test_ingest.py)
        first = await make_service(ingest={"ownership": "any"})
        await send(first, pki, VM_ALICE, 0, checks=critical_checks())
        await wait_for(lambda: failed_deliveries(first) >= 1)
        await first.stop()
    finally:
        standin.start()
    second = await make_service()
    await wait_for(lambda: len(standin.events) == 1)  # delivered at start-up
    assert standin.events[0]["vm_id"] == VM_ALICE
    # the dispatcher records the delivery just after the engine answered
    await wait_for(lambda: second.outbox.pending() == [])
    assert len(standin.events) == 1


async def test_a_lost_answer_is_not_raised_twice(make_service, pki, standin) -> None:
    service = await make_service(events={"enabled": "no"})
    assert service.dispatcher is None
    account = events.ServiceAccount(service.endpoint, "vmdiag@internal", "svcpw")
    item = {"custom_id": 1234, "vm_id": VM_ALICE, "status": "warning", "description": "x"}
    try:
        assert account.add_event(item) == "sent"
        assert account.add_event(item) == "duplicate"  # retry after a lost reply
    finally:
        account.close()
    assert len(standin.events) == 1


async def test_cluster_thresholds_and_vm_names_come_from_the_service_account(
        make_service, pki, standin) -> None:
    service = await make_service(**{"health:cluster:Production": {
        "memory_warning_percent": "30", "memory_critical_percent": "35"}})
    assert len(service.directory) == 3
    await send(service, pki, VM_ALICE, 0, mem_percent=40.0)
    assert service.store.verdicts([VM_ALICE])[VM_ALICE]["status"] == "critical"
    await wait_for(lambda: len(standin.events) == 1)
    assert standin.events[0]["description"].startswith("VM alice-web is critical")


async def test_service_account_that_may_not_list_vms_falls_back(make_service, pki,
                                                                  standin) -> None:
    standin.add_user("events-only@internal", "pw", can_add_events=True)
    service = await make_service(
        ovirt={"user": "events-only@internal", "password": "pw"},
        **{"health:cluster:Production": {"memory_warning_percent": "30",
                                         "memory_critical_percent": "35"}})
    assert len(service.directory) == 0 and "403" in service.directory.last_error
    await send(service, pki, VM_ALICE, 0, mem_percent=40.0)  # cluster unknown: defaults
    assert service.store.verdicts([VM_ALICE])[VM_ALICE]["status"] == "ok"
    await send(service, pki, VM_ALICE, 1, checks=critical_checks(), hostname="alice-web")
    await wait_for(lambda: len(standin.events) == 1)
    assert standin.events[0]["description"].startswith(
        "VM %s (guest alice-web) is critical" % VM_ALICE)
