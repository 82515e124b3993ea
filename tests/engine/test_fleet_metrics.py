"""/vmdiag/metrics with [metrics] fleet: per VM health and forecast time left, bounded, valid
for promtool; off by default."""

from __future__ import annotations

import shutil
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.engine.conftest import (
    HOST_1_CN,
    HOST_2_CN,
    VM_ALICE,
    VM_BOB,
    VM_SHARED,
    api_get,
    relay_ssl,
    upload,
)
from tests.engine.reports import GiB, critical_checks, envelope
from tests.engine.test_api import ingest_fleet
from tests.real import unavailable


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def fill_up(service, pki) -> None:
    """VM_ALICE's / grows 2 GiB an hour for 12 hours: the forecast sees it reach 40 GiB."""
    now = time.time()
    batch = [envelope(VM_ALICE, HOST_1_CN, seq, run_id="run-fill", now=now - (12 - seq) * 3600,
                      root_used=(10 + 2 * seq) * GiB, hostname="alice-web")
             for seq in range(13)]
    assert (await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": batch})).status == 200
    await service.health.drain()


async def test_fleet_metrics_are_off_by_default(make_service, pki) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    text = (await api_get(service, "/metrics")).body.decode()
    assert "vmdiag_fleet_vm_health" not in text and VM_ALICE not in text


async def test_fleet_health_and_time_left_bounded_and_valid(make_service, pki) -> None:
    # the fill arrives as 12 h of history at once: its forecast held over the data's last
    # hours, so it is raised at the first pass (persistence counts in the data's time)
    service = await make_service(metrics={"fleet": "yes", "max_vms": "2"})
    await fill_up(service, pki)
    now = time.time()
    shared = [envelope(VM_SHARED, HOST_1_CN, 0, now=now, checks=critical_checks())]
    bob = [envelope(VM_BOB, HOST_2_CN, 0, now=now)]
    assert (await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": shared})).status == 200
    assert (await upload(service, relay_ssl(pki, HOST_2_CN), {"envelopes": bob})).status == 200
    await service.health.drain()
    text = (await api_get(service, "/metrics")).body.decode()
    got = samples(text)
    shown = sorted([VM_ALICE, VM_BOB, VM_SHARED])[:2]
    health = {k[1] for k, v in got.items() if k[0] == "vmdiag_fleet_vm_health" and v == 1}
    assert {dict(labels)["vm_id"] for labels in health} == set(shown)
    assert got[("vmdiag_fleet_metrics_omitted", (("what", "vms"),))] == 1
    assert shown == [VM_ALICE, VM_BOB] and VM_SHARED not in text  # the cap: by id
    assert got[("vmdiag_fleet_vm_health", (("status", "critical"), ("vm_id", VM_ALICE)))] == 1
    assert got[("vmdiag_fleet_vm_health", (("status", "ok"), ("vm_id", VM_BOB)))] == 1
    left = {k: v for k, v in got.items()
            if k[0] == "vmdiag_fleet_vm_forecast_time_left_seconds"}
    mine = [v for k, v in left.items() if ("vm_id", VM_ALICE) in k[1]]
    # 34 GiB used of 40 GiB, growing 2 GiB/h: full in about 3 h
    assert mine and any(2 * 3600 < v < 8 * 3600 for v in mine), left
    assert 'vmdiag_vms{health="critical"}' in text  # the service's own metrics still there
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed: scripts/setup-deps installs prometheus")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

