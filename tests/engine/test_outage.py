"""The engine service stops under load and comes back: every report arrives exactly once.

The real relay uploader (``vdsm_hooks.relay.upload``) streams reports over TLS with a host
certificate; the service is stopped in the middle and restarted on the same port and store.
The relay spools meanwhile; afterwards each (vm, seq) must be stored once, in order.
"""

from __future__ import annotations

import asyncio
import time

from tests.engine.conftest import HOST_1, HOST_1_CN, VM_ALICE, VM_BOB, VM_SHARED
from tests.engine.reports import envelope
from vdsm_hooks import config as relay_config
from vdsm_hooks.relay import upload as upload_mod

VMS = (VM_ALICE, VM_BOB, VM_SHARED)
REPORTS_PER_VM = 120


async def test_service_outage_under_load_loses_and_duplicates_nothing(
        make_service, pki, tmp_path, standin) -> None:
    standin.vms[VM_BOB]["host_id"] = HOST_1  # the relay is host1's: all three run there
    first = await make_service()
    port = first.ingest_port
    host = pki.host(HOST_1_CN)
    cfg = relay_config.UploadConfig(
        enabled=True, url="https://localhost:%d/ingest/v1/reports" % port, cert=host.cert,
        key=host.key, ca=pki.ca_file, batch_size=40, batch_interval=0.05, timeout=5.0,
        spool_dir=str(tmp_path / "spool"), retry_max_backoff=0.5)
    uploader = upload_mod.Uploader(cfg, HOST_1_CN)
    runner = asyncio.create_task(uploader.run())
    t0 = time.time() - 3 * REPORTS_PER_VM
    second = None
    try:
        for seq in range(REPORTS_PER_VM):
            for vm_id in VMS:
                assert uploader.submit(envelope(vm_id, HOST_1_CN, seq, now=t0 + seq))
            if seq == REPORTS_PER_VM // 3:
                await first.stop()  # mid-stream, with batches in flight
            if seq == 2 * REPORTS_PER_VM // 3:
                assert uploader.stats()["spool_pending"] > 0  # the relay is spooling
                second = await make_service(ingest={"port": str(port)})
            await asyncio.sleep(0.005)
        assert second is not None
        deadline = time.monotonic() + 60
        while True:
            stats = uploader.stats()
            if stats["queued"] == 0 and stats["spool_pending"] == 0:
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.1)
    finally:
        await uploader.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    store = second.store
    for vm_id in VMS:
        resolution, points = store.history(vm_id, "cpu.percent", t0 - 1, time.time() + 1,
                                           max_points=10 * REPORTS_PER_VM)
        times = [t for t, _ in points]
        assert resolution == "raw"
        assert times == [t0 + seq for seq in range(REPORTS_PER_VM)], vm_id
        assert store.latest(vm_id).report["seq"] == REPORTS_PER_VM - 1
    accepted = sum(s.metrics.registry.get_sample_value(
        "vmdiag_ingest_envelopes_total", {"result": "stored"}) for s in (first, second))
    assert accepted == len(VMS) * REPORTS_PER_VM
    assert uploader.stats()["rejected"] == 0 and uploader.stats()["dropped_oldest"] == 0
