"""TLS ingest: client certificates, validation, idempotence and host identity."""

from __future__ import annotations

import asyncio
import copy
import ssl
import time

import aiohttp
import pytest

from engine_plugin.ovirt.directory import MIN_REFRESH_GAP_S
from tests.engine.conftest import (
    HOST_1_CN,
    HOST_2,
    HOST_2_CN,
    VM_ALICE,
    VM_BOB,
    VM_SHARED,
    relay_ssl,
    upload,
)
from tests.engine.reports import envelope


def outcomes(reply) -> list:  # type: ignore[no-untyped-def]
    assert reply.status == 200, reply.body
    return [(r["outcome"], r.get("reason")) for r in reply.json()["results"]]


STORED = ("stored", None)
DUPLICATE = ("duplicate", None)


async def test_batch_is_stored_once_and_duplicates_are_counted(make_service, pki) -> None:
    service = await make_service()
    ctx = relay_ssl(pki)
    batch = {"envelopes": [envelope(VM_ALICE, HOST_1_CN, seq) for seq in range(3)]}
    first = await upload(service, ctx, batch)
    assert outcomes(first) == [STORED] * 3
    assert {k: first.json()[k] for k in ("stored", "duplicates", "refused", "retry")} == {
        "stored": 3, "duplicates": 0, "refused": 0, "retry": 0}
    again = await upload(service, ctx, batch)
    assert outcomes(again) == [DUPLICATE] * 3 and again.json()["duplicates"] == 3
    latest = service.store.latest(VM_ALICE)
    assert latest.report["seq"] == 2 and latest.host_id == HOST_1_CN


async def test_each_envelope_gets_its_own_outcome_in_order(make_service, pki) -> None:
    service = await make_service()
    good = envelope(VM_ALICE, HOST_1_CN, 0)
    bad_vm = dict(copy.deepcopy(good), vm_id="not-a-uuid")
    bad_report = copy.deepcopy(good)
    bad_report["report"]["seq"] = -1
    reply = await upload(service, relay_ssl(pki), {"envelopes": [bad_vm, good, bad_report, 7]})
    assert outcomes(reply) == [("refused", "invalid"), STORED, ("refused", "out_of_range"),
                               ("refused", "invalid")]
    assert all(r["message"] for r in reply.json()["results"] if r["outcome"] == "refused")
    text = service.metrics.exposition().decode()
    assert 'vmdiag_ingest_envelopes_total{result="refused"} 3.0' in text
    assert 'vmdiag_ingest_rejected_total{reason="invalid"} 2.0' in text


@pytest.mark.parametrize("seq", [2**63, 2**63 - 1, 2**64 - 1])
async def test_a_number_no_column_holds_is_refused_alone_never_503(make_service, pki,
                                                                   seq: int) -> None:
    # Issue 10: a guest's seq = 2**63 passed the relay and the schema, the store failed
    # (SQLite OverflowError, PostgreSQL bigint out of range) and the whole batch got 503.
    service = await make_service()
    hostile = envelope(VM_SHARED, HOST_1_CN, 0)
    hostile["report"]["seq"] = seq
    batch = [envelope(VM_ALICE, HOST_1_CN, 0), hostile, envelope(VM_ALICE, HOST_1_CN, 1)]
    reply = await upload(service, relay_ssl(pki), {"envelopes": batch})
    assert outcomes(reply) == [STORED, ("refused", "out_of_range"), STORED]
    assert service.store.latest(VM_ALICE).report["seq"] == 1
    assert service.store.latest(VM_SHARED) is None


async def test_malformed_bodies_are_400_and_oversized_batches_413(make_service, pki) -> None:
    service = await make_service(ingest={"max_envelopes": "2", "max_body_bytes": "2000000"})
    ctx = relay_ssl(pki)
    assert (await upload(service, ctx, [1, 2])).status == 400
    too_many = {"envelopes": [envelope(VM_ALICE, HOST_1_CN, s) for s in range(3)]}
    reply = await upload(service, ctx, too_many)
    assert reply.status == 413 and "split" in reply.json()["error"]["message"]
    huge = {"envelopes": [], "padding": "x" * 3000000}
    assert (await upload(service, ctx, huge)).status == 413
    # a number beyond 64 bits (a relay that let a guest's 400-digit integer through)
    env = envelope(VM_ALICE, HOST_1_CN, 0)
    env["report"]["seq"] = 10**400
    reply = await upload(service, ctx, {"envelopes": [env]})
    assert reply.status == 400 and "beyond 64 bits" in reply.json()["error"]["message"]
    # nested 100,000 levels deep: was a 500 and a traceback
    url = "https://localhost:%d/ingest/v1/reports" % service.ingest_port
    for body in (b'{"envelopes": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                 b"[" * 100000, b'{"envelopes": [' + b'{"a":' * 50000 + b"1" + b"}" * 50000
                 + b"]}"):
        async with aiohttp.ClientSession() as session, session.post(
                url, data=body, ssl=ctx, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]["code"] in ("too_deep", "bad_json")
    # still serving
    assert outcomes(await upload(service, ctx, {"envelopes": [
        envelope(VM_ALICE, HOST_1_CN, 5)]})) == [STORED]


async def test_host_is_the_certificate_cn_not_the_claim(make_service, pki) -> None:
    service = await make_service()
    spoofed = envelope(VM_ALICE, HOST_2_CN, 0)  # host1's relay claims to be host2
    reply = await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": [spoofed]})
    assert outcomes(reply) == [STORED]
    assert service.store.latest(VM_ALICE).host_id == HOST_1_CN
    assert "vmdiag_ingest_host_id_mismatch_total 1.0" in service.metrics.exposition().decode()


async def test_claimed_host_ids_never_grow_memory(make_service, pki) -> None:
    # Every distinct false claim used to be remembered for good (to log it once).
    service = await make_service()
    batch = [envelope(VM_ALICE, "claim-%d.example.test" % i, i) for i in range(400)]
    for start in range(0, 400, 100):
        await upload(service, relay_ssl(pki), {"envelopes": batch[start:start + 100]})
    handler = service.ingest_handler
    handler.log_once.size = 50  # the real bound is 1024; a small one shows it holds
    await upload(service, relay_ssl(pki), {"envelopes": [
        envelope(VM_ALICE, "more-%d.example.test" % i, 500 + i) for i in range(100)]})
    assert len(handler.log_once) <= 50


async def test_strict_host_identity_rejects_mismatches(make_service, pki) -> None:
    service = await make_service(ingest={"host_identity": "strict"})
    batch = {"envelopes": [envelope(VM_SHARED, HOST_2_CN, 0), envelope(VM_ALICE, HOST_1_CN, 0)]}
    reply = await upload(service, relay_ssl(pki, HOST_1_CN), batch)
    assert outcomes(reply) == [("refused", "host_mismatch"), STORED]
    assert service.store.latest(VM_SHARED) is None


async def wait_for_placement(service, host_cn: str, vm_id: str, ctx, env) -> None:  # type: ignore[no-untyped-def]
    """Send ``env`` until the service accepts it from ``host_cn`` (each try asks for a
    directory refresh, at most every MIN_REFRESH_GAP_S)."""
    deadline = time.monotonic() + 3 * MIN_REFRESH_GAP_S
    while time.monotonic() < deadline:
        reply = await upload(service, ctx, {"envelopes": [env]})
        if outcomes(reply) != [("retry", "placement_pending")]:
            assert outcomes(reply) == [STORED], reply.body
            return
        await asyncio.sleep(0.2)
    raise AssertionError("%s never became %s's host for the service" % (host_cn, vm_id))


async def test_a_host_reports_only_the_vms_ovirt_runs_on_it(make_service, pki) -> None:
    service = await make_service()
    host1 = relay_ssl(pki, HOST_1_CN)
    now = time.time()
    # bob runs on host2; host1's relay received this two minutes ago (it spooled it), the
    # service read oVirt's placement since: refused for good, counted for host1
    spooled = envelope(VM_BOB, HOST_1_CN, 0, now=now - 120)
    reply = await upload(service, host1, {"envelopes": [spooled,
                                                        envelope(VM_ALICE, HOST_1_CN, 0)]})
    assert outcomes(reply) == [("refused", "not_this_host"), STORED]
    assert service.store.latest(VM_BOB) is None
    text = service.metrics.exposition().decode()
    assert 'vmdiag_ingest_not_this_host_total{host="%s"} 1.0' % HOST_1_CN in text
    # a report received just now may come from a VM that migrated since the last read of
    # oVirt: it waits (retry) and the service reads oVirt again, which still says host2
    fresh = envelope(VM_BOB, HOST_1_CN, 1)
    assert outcomes(await upload(service, host1, {"envelopes": [fresh]})) == [
        ("retry", "placement_pending")]
    assert service.store.latest(VM_BOB) is None
    # an unknown VM id is no host's
    stranger = envelope("44444444-4444-4444-8444-444444444444", HOST_1_CN, 0, now=now - 120)
    assert outcomes(await upload(service, host1, {"envelopes": [stranger]})) == [
        ("refused", "not_this_host")]


async def test_a_vm_migrating_between_hosts_keeps_one_ordered_history(make_service, pki,
                                                                      standin) -> None:
    service = await make_service()
    host1, host2 = relay_ssl(pki, HOST_1_CN), relay_ssl(pki, HOST_2_CN)
    t0 = time.time() - 10
    assert outcomes(await upload(service, host1, {"envelopes": [
        envelope(VM_ALICE, HOST_1_CN, 0, now=t0)]})) == [STORED]
    standin.vms[VM_ALICE]["host_id"] = HOST_2  # oVirt migrates alice to host2
    await wait_for_placement(service, HOST_2_CN, VM_ALICE, host2,
                             envelope(VM_ALICE, HOST_2_CN, 2, now=t0 + 2))
    assert outcomes(await upload(service, host2, {"envelopes": [
        envelope(VM_ALICE, HOST_2_CN, 3, now=t0 + 3)]})) == [STORED]
    # host1's relay delivers late what it spooled before the migration: inside the window
    assert outcomes(await upload(service, host1, {"envelopes": [
        envelope(VM_ALICE, HOST_1_CN, 1, now=t0 + 1)]})) == [STORED]
    latest = service.store.latest(VM_ALICE)
    assert (latest.report["seq"], latest.host_id) == (3, HOST_2_CN)
    _, points = service.store.history(VM_ALICE, "cpu.percent", t0 - 1, t0 + 10)
    assert [t for t, _ in points] == [t0, t0 + 1, t0 + 2, t0 + 3]


async def test_past_the_migration_window_the_old_host_is_refused(make_service, pki,
                                                                 standin) -> None:
    service = await make_service(ingest={"migration_window": "1"})
    host1, host2 = relay_ssl(pki, HOST_1_CN), relay_ssl(pki, HOST_2_CN)
    standin.vms[VM_ALICE]["host_id"] = HOST_2
    await wait_for_placement(service, HOST_2_CN, VM_ALICE, host2,
                             envelope(VM_ALICE, HOST_2_CN, 1))
    await asyncio.sleep(1.2)
    late = envelope(VM_ALICE, HOST_1_CN, 0, now=time.time() - 120)
    assert outcomes(await upload(service, host1, {"envelopes": [late]})) == [
        ("refused", "not_this_host")]


async def test_reports_wait_while_ovirt_was_never_reachable(make_service, pki,
                                                            standin) -> None:
    standin.stop()
    try:
        service = await make_service()
        reply = await upload(service, relay_ssl(pki), {"envelopes": [
            envelope(VM_ALICE, HOST_1_CN, 0)]})
        assert outcomes(reply) == [("retry", "placement_pending")]
    finally:
        standin.start()
    await wait_for_placement(service, HOST_1_CN, VM_ALICE, relay_ssl(pki),
                             envelope(VM_ALICE, HOST_1_CN, 0))


async def test_standalone_and_ownership_any_accept_every_host(make_service, pki) -> None:
    service = await make_service(ingest={"ownership": "any"})
    reply = await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": [
        envelope(VM_BOB, HOST_1_CN, 0)]})
    assert outcomes(reply) == [STORED]
    assert service.store.latest(VM_BOB).host_id == HOST_1_CN


async def test_a_relay_clock_far_ahead_cannot_pin_a_vm(make_service, pki) -> None:
    service = await make_service()
    host1 = relay_ssl(pki, HOST_1_CN)
    ahead = envelope(VM_ALICE, HOST_1_CN, 0, run_id="fast-clock", now=time.time() + 10 * 86400)
    before = time.time()
    assert outcomes(await upload(service, host1, {"envelopes": [ahead]})) == [STORED]
    latest = service.store.latest(VM_ALICE)
    assert before <= latest.received_at <= time.time()  # the engine's time, not the relay's
    assert latest.received_at == latest.ingested_at
    assert "vmdiag_ingest_clock_ahead_total 1.0" in service.metrics.exposition().decode()
    # the next run's first report replaces it: nothing is pinned
    assert outcomes(await upload(service, host1, {"envelopes": [
        envelope(VM_ALICE, HOST_1_CN, 0, run_id="next")]})) == [STORED]
    assert service.store.latest(VM_ALICE).report["run_id"] == "next"


@pytest.mark.parametrize("kind", ["no certificate", "foreign CA"])
async def test_relay_without_engine_signed_certificate_is_refused_by_tls(make_service, pki,
                                                                         kind: str) -> None:
    service = await make_service()
    ctx = (relay_ssl(pki, with_cert=False) if kind == "no certificate"
           else relay_ssl(pki, "intruder.example.test", foreign=True))
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await upload(service, ctx, {"envelopes": [envelope(VM_ALICE, HOST_1_CN, 0)]})
    assert service.store.latest(VM_ALICE) is None
