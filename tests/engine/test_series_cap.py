"""``[storage] max_series_per_vm`` through the real service (real TLS, SQLite and a real
PostgreSQL): a guest that reports a new process name in every report has its reports stored,
the samples of its series beyond the cap dropped and counted in /metrics."""

from __future__ import annotations

from engine_plugin.storage.extract import extract_samples
from tests.engine.conftest import HOST_1_CN, VM_ALICE, VM_SHARED, relay_ssl, upload
from tests.engine.reports import envelope


def with_processes(env: dict, names: list) -> dict:
    env["report"]["sections"]["resources"]["data"]["top_memory"] = [
        {"pid": 100 + i, "name": name, "rss": 1 << 20} for i, name in enumerate(names)]
    return env


async def test_series_beyond_the_cap_are_dropped_counted_and_reports_stored(
        make_service, pki) -> None:
    fixed = len(extract_samples(with_processes(envelope(VM_ALICE, HOST_1_CN, 0), [])["report"]))
    cap = fixed + 4
    service = await make_service(storage={"max_series_per_vm": str(cap)})
    ctx = relay_ssl(pki)
    batches = [[with_processes(envelope(VM_ALICE, HOST_1_CN, seq),
                               ["guest-%d-%d" % (seq, i) for i in range(3)])]
               for seq in range(3)]
    batches[2].append(with_processes(envelope(VM_SHARED, HOST_1_CN, 0), ["other"]))
    for body in batches:
        reply = await upload(service, ctx, {"envelopes": body})
        assert reply.status == 200 and reply.json()["stored"] == len(body), reply.body
    assert service.store.latest(VM_ALICE).report["seq"] == 2
    assert len(service.store.metric_names(VM_ALICE)) == cap
    assert len(service.store.metric_names(VM_SHARED)) == fixed + 1
    text = service.metrics.exposition().decode()
    # 3 new names, then 1 of 3, then none of 3 fit
    assert 'vmdiag_ingest_samples_dropped_total{reason="series_cap"} 5.0' in text
    assert 'vmdiag_ingest_samples_dropped_total{reason="stale"} 0.0' in text
