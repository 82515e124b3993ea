"""The service wires the Diagnostics pages to its DocumentSource (same permissions as the API)."""

from __future__ import annotations

import time

from tests.engine.conftest import HOST_1_CN, VM_ALICE, VM_BOB, api_get, relay_ssl, upload
from tests.engine.reports import envelope


async def test_pages_use_the_users_own_view(make_service, pki, standin) -> None:
    service = await make_service()
    batch = [envelope(VM_ALICE, HOST_1_CN, 0, now=time.time(), hostname="alice-web")]
    assert (await upload(service, relay_ssl(pki), {"envelopes": batch})).status == 200
    await service.health.drain()
    token = standin.issue_token("alice@internal")
    shell = await api_get(service, "/ui/vms/%s" % VM_ALICE)
    assert shell.status == 200  # the shell carries no data and needs no token
    page = await api_get(service, "/ui/vms/%s/fragment" % VM_ALICE, token)
    assert page.status == 200, page.body[:500]
    assert b"alice-web" in page.body
    assert (await api_get(service, "/ui/vms/%s/fragment" % VM_ALICE)).status == 401
    assert (await api_get(service, "/ui/vms/%s/fragment" % VM_BOB, token)).status == 404
    fleet = await api_get(service, "/ui/fleet/fragment", token)
    assert fleet.status == 200 and b"alice-web" in fleet.body and b"bob-db" not in fleet.body
