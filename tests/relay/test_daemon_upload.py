"""Guest channel to engine: reports go from a fake guest through the daemon and the real
Uploader, over mutual TLS, to a stand-in ingest server (the upload tests' own)."""

from __future__ import annotations

import asyncio

import pytest

from lab.fake_guest import FakeGuest, hello, sample_report
from tests.relay.test_session import until
from tests.relay_upload.conftest import pki, server  # noqa: F401 - fixtures
from tests.relay_upload.support import HOST_CN, upload_cfg
from vdsm_hooks.relay.control import call
from vdsm_hooks.relay.daemon import DaemonSettings, RelayDaemon
from vdsm_hooks.relay.discovery import DomainInfo
from vdsm_hooks.relay.session import SessionConfig
from vdsm_hooks.relay.upload import Uploader

pytestmark = pytest.mark.libvirt  # discovery runs on libvirt's test driver


@pytest.mark.parametrize("batch_size", [1, 500])
async def test_reports_reach_the_engine_in_order_exactly_once(tmp_path, pki, server,  # noqa: F811
                                                              batch_size):
    await server.start()
    uploader = Uploader(upload_cfg(tmp_path, server.url, pki, batch_size=batch_size), HOST_CN)
    settings = DaemonSettings(host_id=HOST_CN, libvirt_uri="test:///default",
                              control_socket=str(tmp_path / "relay.sock"))
    daemon = RelayDaemon(settings, uploader=uploader,
                         session_config=SessionConfig(reconnect_min_backoff=0.05))
    guest = await FakeGuest(str(tmp_path / "g.sock")).start()
    await daemon.start()
    try:
        await daemon.discovery.wait_listed(1, timeout=10)  # else its listing closes our VM
        daemon.domain_up(DomainInfo(guest.vm_id, "vmdiag-t-up", guest.path))
        await guest.send(hello(), *(sample_report(seq=i) for i in range(5)))
        await guest.send(sample_report(seq=3))  # a replay is never uploaded again
        entry = daemon.cache.get(guest.vm_id)
        await until(lambda: entry.counters.drops["stale_seq"] == 1, what="all reports read")
        await until(lambda: len(server.unique) == 5, timeout=10,
                    what="5 envelopes at ingest: %s, upload %s"
                    % (entry.counters.as_dict(), uploader.stats()))
        assert server.keys() == [(guest.vm_id, "run-1", i) for i in range(5)]
        assert all(e["host_id"] == HOST_CN for e in server.unique)
        assert all(e["agent_version"] == "1.0.0" for e in server.unique)
        assert sum(len(batch) for batch in server.requests) == 5
        status = await asyncio.to_thread(call, settings.control_socket, {"cmd": "status"})
        assert status["upload"]["sent"] == 5
        assert status["vms"][0]["dropped"] == 1  # the replay, counted as stale_seq
    finally:
        await daemon.stop()
        await guest.close()
