"""SDK helpers through a real ovirtsdk4.Connection, via the engine's /vmdiag/ proxy."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import ovirtsdk4
import pytest

from engine_plugin import sdk
from tests.engine.conftest import HOST_1_CN, VM_ALICE, VM_BOB, VM_SHARED, relay_ssl, upload
from tests.engine.reports import critical_checks, envelope


@pytest.fixture
async def proxied(make_service, standin, pki):
    service = await make_service()
    standin.proxy_vmdiag("http://127.0.0.1:%d" % service.api_port)
    now = time.time()
    batch = [envelope(VM_ALICE, HOST_1_CN, 0, now=now - 120),
             envelope(VM_ALICE, HOST_1_CN, 1, now=now - 60),
             envelope(VM_SHARED, HOST_1_CN, 0, now=now, checks=critical_checks())]
    assert (await upload(service, relay_ssl(pki), {"envelopes": batch})).status == 200
    await service.health.drain()
    return service


def connect(standin, user: str, password: str) -> ovirtsdk4.Connection:
    return ovirtsdk4.Connection(url=standin.url, username=user, password=password,
                                ca_file=standin.ca_file)


async def test_vm_diagnostics_is_typed_and_reuses_the_connection_token(proxied,
                                                                       standin) -> None:
    conn = connect(standin, "alice@internal", "alicepw")
    try:
        diag = await asyncio.to_thread(sdk.vm_diagnostics, conn, VM_SHARED)
        assert isinstance(diag, sdk.VmDiagnostics)
        assert diag.vm.name == "shared-app" and diag.vm.cluster == "Production"
        assert diag.health.status == "critical"
        assert diag.health.findings[0].code == "check:fs.fill:/"
        assert diag.health.reasons == diag.health.findings  # old name kept
        assert diag.agent.state == "reporting" and diag.report["seq"] == 0
        proxied_calls = standin.requests_to("/vmdiag/api/v1/vms/")
        assert proxied_calls, "the helper must go through https://<engine>/vmdiag/"
        assert len([t for t, u in standin.tokens.items() if u == "alice@internal"]) == 1
        with pytest.raises(sdk.NotFound):
            await asyncio.to_thread(sdk.vm_diagnostics, conn, VM_BOB)
    finally:
        conn.close()


async def test_fleet_summary_and_history(proxied, standin) -> None:
    conn = connect(standin, "admin@internal", "adminpw")
    try:
        fleet = await asyncio.to_thread(sdk.fleet_summary, conn, health="critical")
        assert [vm.id for vm in fleet.vms] == [VM_SHARED]
        assert fleet.counts["critical"] == 1 and fleet.counts["unknown"] == 1  # bob's VM
        assert fleet.vms[0].findings[0].status == "critical"
        assert fleet.vms[0].worst_findings[0].severity == "critical"  # old names kept
        now = time.time()
        series = await asyncio.to_thread(sdk.history, conn, VM_ALICE, "memory.percent",
                                         now - 3600, now + 1)
        assert series.resolution == "raw" and [v for _, v in series.points] == [40.0, 40.0]
        assert series.unit == "percent"
    finally:
        conn.close()


async def test_expired_token_is_renewed_and_bad_credentials_fail_clearly(proxied,
                                                                          standin) -> None:
    conn = connect(standin, "alice@internal", "alicepw")
    try:
        await asyncio.to_thread(sdk.vm_diagnostics, conn, VM_ALICE)
        standin.revoke(conn.authenticate())  # the engine expires the SSO session
        proxied.visibility.forget()
        diag = await asyncio.to_thread(sdk.vm_diagnostics, conn, VM_ALICE)
        assert diag.vm.id == VM_ALICE
    finally:
        conn.close()
    token_only = ovirtsdk4.Connection(url=standin.url, token="stale", ca_file=standin.ca_file)
    with pytest.raises((sdk.NotAuthorized, ovirtsdk4.AuthError)):
        await asyncio.to_thread(sdk.fleet_summary, token_only)


async def test_wait_for_report_returns_on_a_new_report_or_times_out(proxied, standin,
                                                                     pki) -> None:
    conn = connect(standin, "alice@internal", "alicepw")
    try:
        with pytest.raises(sdk.DeadlineExceeded, match="deadline"):
            await asyncio.to_thread(sdk.wait_for_report, conn, VM_ALICE, time.time() + 0.5,
                                    None, 0.1)
        started = time.time()
        loop = asyncio.get_running_loop()
        done = threading.Event()

        def later() -> None:
            asyncio.run_coroutine_threadsafe(upload(proxied, relay_ssl(pki), {"envelopes": [
                envelope(VM_ALICE, HOST_1_CN, 9)]}), loop).result(10)
            done.set()

        threading.Timer(0.5, later).start()
        diag = await asyncio.to_thread(sdk.wait_for_report, conn, VM_ALICE,
                                       time.time() + 20, started, 0.2)
        assert done.is_set() and diag.report["seq"] == 9 and diag.received_at > started
    finally:
        conn.close()


async def test_service_down_behind_the_proxy_is_service_unavailable(proxied, standin) -> None:
    conn = connect(standin, "alice@internal", "alicepw")
    await proxied.stop()
    try:
        with pytest.raises(sdk.ServiceUnavailable, match="retry later"):
            await asyncio.to_thread(sdk.vm_diagnostics, conn, VM_ALICE)
    finally:
        conn.close()


async def test_the_example_runs_for_a_reader(proxied, standin) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OVIRT_PASSWORD="adminpw", PYTHONPATH=root)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(root, "examples", "sdk_example.py"), standin.url,
        "admin@internal", standin.ca_file, "--vm", VM_SHARED, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "critical 1" in text and "shared-app on host1: critical" in text
    assert "grow the disk" in text
