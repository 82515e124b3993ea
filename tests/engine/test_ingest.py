"""TLS ingest: client certificates, validation, idempotence and host identity."""

from __future__ import annotations

import copy
import ssl

import aiohttp
import pytest

from tests.engine.conftest import (
    HOST_1_CN,
    HOST_2_CN,
    VM_ALICE,
    VM_BOB,
    relay_ssl,
    upload,
)
from tests.engine.reports import envelope


async def test_batch_is_stored_once_and_duplicates_are_counted(make_service, pki) -> None:
    service = await make_service()
    ctx = relay_ssl(pki)
    batch = {"envelopes": [envelope(VM_ALICE, HOST_1_CN, seq) for seq in range(3)]}
    first = await upload(service, ctx, batch)
    assert first.status == 200, first.body
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": 0}
    again = await upload(service, ctx, batch)
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": 0}
    latest = service.store.latest(VM_ALICE)
    assert latest.report["seq"] == 2 and latest.host_id == HOST_1_CN


async def test_invalid_envelopes_are_dropped_and_counted_valid_ones_kept(make_service,
                                                                         pki) -> None:
    service = await make_service()
    good = envelope(VM_ALICE, HOST_1_CN, 0)
    bad_vm = dict(copy.deepcopy(good), vm_id="not-a-uuid")
    bad_report = copy.deepcopy(good)
    bad_report["report"]["seq"] = -1
    reply = await upload(service, relay_ssl(pki), {"envelopes": [good, bad_vm, bad_report, 7]})
    assert reply.json() == {"accepted": 1, "duplicates": 0, "rejected": 3}
    text = service.metrics.exposition().decode()
    assert 'vmdiag_ingest_envelopes_total{result="rejected"} 3.0' in text
    assert 'vmdiag_ingest_rejected_total{reason="not_object"} 1.0' in text


async def test_malformed_bodies_are_400_and_oversized_batches_413(make_service, pki) -> None:
    service = await make_service(ingest={"max_envelopes": "2", "max_body_bytes": "200000"})
    ctx = relay_ssl(pki)
    assert (await upload(service, ctx, [1, 2])).status == 400
    too_many = {"envelopes": [envelope(VM_ALICE, HOST_1_CN, s) for s in range(3)]}
    reply = await upload(service, ctx, too_many)
    assert reply.status == 413 and "split" in reply.json()["error"]["message"]
    huge = {"envelopes": [], "padding": "x" * 300000}
    assert (await upload(service, ctx, huge)).status == 413
    # a number no column can hold (a relay that let a guest's 400-digit integer through)
    env = envelope(VM_ALICE, HOST_1_CN, 0)
    env["report"]["seq"] = 10**400
    reply = await upload(service, ctx, {"envelopes": [env]})
    assert reply.status == 400 and "beyond 64 bits" in reply.json()["error"]["message"]


async def test_host_is_the_certificate_cn_not_the_claim(make_service, pki) -> None:
    service = await make_service()
    spoofed = envelope(VM_BOB, HOST_2_CN, 0)  # host1's relay claims to be host2
    reply = await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": [spoofed]})
    assert reply.json()["accepted"] == 1
    assert service.store.latest(VM_BOB).host_id == HOST_1_CN
    assert "vmdiag_ingest_host_id_mismatch_total 1.0" in service.metrics.exposition().decode()


async def test_strict_host_identity_rejects_mismatches(make_service, pki) -> None:
    service = await make_service(ingest={"host_identity": "strict"})
    batch = {"envelopes": [envelope(VM_BOB, HOST_2_CN, 0), envelope(VM_ALICE, HOST_1_CN, 0)]}
    reply = await upload(service, relay_ssl(pki, HOST_1_CN), batch)
    assert reply.json() == {"accepted": 1, "duplicates": 0, "rejected": 1}
    assert service.store.latest(VM_BOB) is None


@pytest.mark.parametrize("kind", ["no certificate", "foreign CA"])
async def test_relay_without_engine_signed_certificate_is_refused_by_tls(make_service, pki,
                                                                         kind: str) -> None:
    service = await make_service()
    ctx = (relay_ssl(pki, with_cert=False) if kind == "no certificate"
           else relay_ssl(pki, "intruder.example.test", foreign=True))
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await upload(service, ctx, {"envelopes": [envelope(VM_ALICE, HOST_1_CN, 0)]})
    assert service.store.latest(VM_ALICE) is None
