"""The real relay uploader against the real engine service: an ingest URL that answers 404
(a wrong path, say) keeps every report spooled and says so; once the URL is right, all of them
arrive, each once."""

from __future__ import annotations

import asyncio
import time

from tests.engine.conftest import HOST_1_CN, VM_ALICE, VM_SHARED
from tests.engine.reports import envelope
from vdsm_hooks.config import UploadConfig
from vdsm_hooks.relay.upload import Uploader


async def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        await asyncio.sleep(0.05)


async def test_a_404_keeps_everything_spooled_until_the_url_is_right(
        make_service, pki, tmp_path) -> None:
    service = await make_service()
    host = pki.host(HOST_1_CN)

    def config(path: str) -> UploadConfig:
        return UploadConfig(
            enabled=True, url="https://localhost:%d%s" % (service.ingest_port, path),
            cert=host.cert, key=host.key, ca=pki.ca_file, batch_size=20,
            batch_interval=0.05, timeout=5.0, spool_dir=str(tmp_path / "spool"),
            retry_max_backoff=0.3)

    t0 = time.time() - 100
    # both VMs run on host1 in the stand-in: ingest accepts a host's own VMs only
    sent = [envelope(vm, HOST_1_CN, seq, now=t0 + seq) for seq in range(30)
            for vm in (VM_ALICE, VM_SHARED)]
    wrong = Uploader(config("/ingest/v1/report"), HOST_1_CN)  # the path misses its "s"
    runner = asyncio.create_task(wrong.run())
    for env in sent:
        assert wrong.submit(env)
    await _until(lambda: wrong.stats()["blocked"] is not None, "the 404 noticed")
    stats = wrong.stats()
    assert "HTTP 404" in stats["blocked"] and "[upload] url" in stats["blocked"]
    await wrong.close()
    await asyncio.gather(runner)
    assert wrong.stats()["spool_pending"] == len(sent) and wrong.stats()["rejected"] == 0

    right = Uploader(config("/ingest/v1/reports"), HOST_1_CN)  # the operator fixed the url
    runner = asyncio.create_task(right.run())
    try:
        await _until(lambda: right.stats()["spool_pending"] == 0, "the spool delivered")
    finally:
        await right.close()
        await asyncio.gather(runner)
    assert right.stats()["rejected"] == 0 and right.stats()["sent"] == len(sent)
    for vm in (VM_ALICE, VM_SHARED):
        assert service.store.latest(vm).report["seq"] == 29
