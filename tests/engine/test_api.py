"""The JSON API end to end: TLS ingest -> store -> health -> API, with oVirt's permissions."""

from __future__ import annotations

import time

import aiohttp

from engine_plugin.service.metrics import NetworkAllowList
from tests.engine.conftest import (
    CLUSTER,
    HOST_1,
    HOST_1_CN,
    HOST_2,
    HOST_2_CN,
    VM_ALICE,
    VM_BOB,
    VM_SHARED,
    api_get,
    relay_ssl,
    upload,
)
from tests.engine.reports import GiB, critical_checks, envelope


async def api_get_headers(service, path: str, headers) -> int:
    url = "http://127.0.0.1:%d/vmdiag%s" % (service.api_port, path)
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status


async def ingest_fleet(service, pki) -> None:
    now = time.time()
    batch1 = [envelope(VM_ALICE, HOST_1_CN, 0, now=now - 60, hostname="alice-web"),
              envelope(VM_ALICE, HOST_1_CN, 1, now=now, hostname="alice-web"),
              envelope(VM_SHARED, HOST_1_CN, 0, now=now, checks=critical_checks())]
    batch2 = [envelope(VM_BOB, HOST_2_CN, 0, now=now, mem_percent=98.0)]
    assert (await upload(service, relay_ssl(pki, HOST_1_CN), {"envelopes": batch1})).status == 200
    assert (await upload(service, relay_ssl(pki, HOST_2_CN), {"envelopes": batch2})).status == 200
    await service.health.drain()


async def test_vm_document_for_a_permitted_user(make_service, pki, standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    token = standin.issue_token("alice@internal")
    reply = await api_get(service, "/api/v1/vms/%s" % VM_ALICE, token)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert set(doc) == {"vm", "agent", "health", "forecasts", "report", "received_at",
                        "patterns"}
    assert doc["patterns"] == []  # no fleet pattern among three VMs
    assert doc["vm"] == {"id": VM_ALICE, "name": "alice-web", "host_id": HOST_1,
                         "host_name": "host1", "cluster": "Production", "status": "up"}
    assert doc["agent"]["state"] == "reporting" and doc["agent"]["silent_for_s"] < 60
    assert doc["health"]["status"] == "ok" and doc["health"]["findings"] == []
    assert doc["health"]["reasons"] == []  # API 1's old name, kept alongside
    assert doc["report"]["seq"] == 1
    assert doc["report"]["sections"]["settings"]["data"]["hostname"] == "alice-web"


async def test_critical_check_makes_the_vm_critical_with_its_reason(make_service, pki,
                                                                     standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    doc = (await api_get(service, "/api/v1/vms/%s" % VM_SHARED,
                         standin.issue_token("bob@internal"))).json()
    assert doc["health"]["status"] == "critical"
    [first, *_] = doc["health"]["findings"]
    assert first["code"] == "check:fs.fill:/" and first["status"] == "critical"
    assert "grow the disk" in first["message"]
    # API 1's old names stay alongside (docs/design.md, "Vocabulary")
    assert doc["health"]["reasons"] == doc["health"]["findings"]
    assert first["severity"] == first["status"]
    assert doc["vm"]["host_name"] is None  # bob has no permission on host1: oVirt hides it


async def test_invisible_vm_is_404_exactly_like_a_missing_one(make_service, pki,
                                                               standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    alice = standin.issue_token("alice@internal")
    hidden = await api_get(service, "/api/v1/vms/%s" % VM_BOB, alice)
    missing = await api_get(service, "/api/v1/vms/%s" % "44444444-4444-4444-8444-444444444444",
                            alice)
    assert hidden.status == missing.status == 404
    assert hidden.json() == missing.json()
    history = await api_get(service, "/api/v1/vms/%s/history" % VM_BOB, alice,
                            metric="memory.percent")
    assert history.status == 404
    assert (await api_get(service, "/api/v1/vms/%s" % VM_BOB,
                          standin.issue_token("bob@internal"))).status == 200


async def test_fleet_is_filtered_per_user_and_by_query(make_service, pki, standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    alice = (await api_get(service, "/api/v1/vms", standin.issue_token("alice@internal"))).json()
    assert [vm["id"] for vm in alice["vms"]] == [VM_ALICE, VM_SHARED]
    assert alice["counts"] == {"ok": 1, "warning": 0, "critical": 1, "unknown": 0}
    shared = alice["vms"][1]
    assert shared["name"] == "shared-app" and shared["health"] == "critical"
    assert shared["findings"][0]["code"] == "check:fs.fill:/"
    assert shared["findings"][0]["status"] == "critical"
    assert shared["worst_findings"] == shared["findings"]  # API 1's old name, kept

    admin = standin.issue_token("admin@internal")
    everything = (await api_get(service, "/api/v1/vms", admin)).json()
    assert {vm["id"] for vm in everything["vms"]} == {VM_ALICE, VM_BOB, VM_SHARED}
    bad = (await api_get(service, "/api/v1/vms", admin, health="critical")).json()
    assert {vm["id"] for vm in bad["vms"]} == {VM_BOB, VM_SHARED}
    assert bad["counts"]["critical"] == 2  # counts describe the whole visible fleet
    on_host2 = (await api_get(service, "/api/v1/vms", admin, host="host2")).json()
    assert [vm["id"] for vm in on_host2["vms"]] == [VM_BOB]
    by_cluster = (await api_get(service, "/api/v1/vms", admin, cluster=CLUSTER)).json()
    assert len(by_cluster["vms"]) == 3
    assert (await api_get(service, "/api/v1/vms", admin, health="sick")).status == 400


async def test_host_view(make_service, pki, standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    alice = standin.issue_token("alice@internal")
    doc = (await api_get(service, "/api/v1/hosts/%s/vms" % HOST_1, alice)).json()
    assert [vm["id"] for vm in doc["vms"]] == [VM_ALICE, VM_SHARED]
    # alice sees neither host2 nor any VM on it: 404 like a host that does not exist
    assert (await api_get(service, "/api/v1/hosts/%s/vms" % HOST_2, alice)).status == 404


async def test_history_and_its_validation(make_service, pki, standin) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    token = standin.issue_token("alice@internal")
    now = time.time()
    reply = await api_get(service, "/api/v1/vms/%s/history" % VM_ALICE, token,
                          metric="fs.used:/", since=now - 3600, until=now + 1)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["vm_id"] == VM_ALICE and doc["metric"] == "fs.used:/"
    assert doc["resolution"] == "raw"
    assert [v for _, v in doc["points"]] == [10 * GiB, 10 * GiB]
    assert doc["unit"] == "bytes"  # diag_protocol.units, so a client need not guess
    assert set(doc) == {"vm_id", "metric", "unit", "resolution", "points", "forecast"}
    assert (await api_get(service, "/api/v1/vms/%s/history" % VM_ALICE, token)).status == 400
    assert (await api_get(service, "/api/v1/vms/%s/history" % VM_ALICE, token, metric="x",
                          since="yesterday")).status == 400


async def test_missing_or_bad_token_is_401(make_service, pki, standin) -> None:
    service = await make_service()
    for path in ("/api/v1/vms", "/api/v1/vms/%s" % VM_ALICE, "/api/v1/hosts/%s/vms" % HOST_1):
        none = await api_get(service, path)
        assert none.status == 401 and none.json()["error"]["code"] == "unauthorized"
        assert none.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await api_get(service, path, "forged-token")).status == 401
    token = standin.issue_token("alice@internal")
    standin.revoke(token)
    assert (await api_get(service, "/api/v1/vms", token)).status == 401
    # a refused token is remembered briefly: retries do not each cost an engine request
    asked = len(standin.requests_to("/ovirt-engine/api"))
    for _ in range(5):
        assert (await api_get(service, "/api/v1/vms", "forged-token")).status == 401
    assert len(standin.requests_to("/ovirt-engine/api")) == asked


async def test_a_token_revoked_while_cached_is_401_on_every_route(make_service, pki,
                                                                  standin) -> None:
    # Issue 10: the identity of a token stays cached for the ttl; a request that then reached
    # the engine with the revoked token got 502 ("engine_error") until the cache expired.
    service = await make_service()
    await ingest_fleet(service, pki)
    token = standin.issue_token("alice@internal")
    vm_path = "/api/v1/vms/%s" % VM_ALICE
    assert (await api_get(service, vm_path, token)).status == 200  # identity and VM cached
    standin.revoke(token)
    routes = ("/api/v1/vms", "/api/v1/hosts/%s/vms" % HOST_1, vm_path,
              vm_path + "/history", "/api/v1/vms/%s" % VM_SHARED)
    for path in routes:
        reply = await api_get(service, path, token)
        assert reply.status == 401, (path, reply.body)
        assert reply.json()["error"]["code"] == "unauthorized"
        assert "log in to the engine again" in reply.json()["error"]["message"]
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    # the pages' fragments too, as HTML asking to sign in again
    url = "http://127.0.0.1:%d/vmdiag/ui/fleet/fragment" % service.api_port
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Authorization": "Bearer " + token}) as resp:
        assert resp.status == 401 and 'data-status="401"' in await resp.text()
        assert "Sign in again" in await resp.text()


async def test_answers_are_cached_for_the_ttl_and_tokens_are_not_revoked(
        make_service, pki, standin) -> None:
    service = await make_service()
    token = standin.issue_token("alice@internal")
    for _ in range(3):
        assert (await api_get(service, "/api/v1/vms/%s" % VM_ALICE, token)).status == 200
    vm_requests = standin.requests_to("/ovirt-engine/api/vms/%s" % VM_ALICE)
    assert len(vm_requests) == 1 and vm_requests[0]["filter"] == "true"
    assert token in standin.tokens and token not in standin.revoked


async def test_engine_down_is_503_not_a_crash(make_service, pki, standin) -> None:
    service = await make_service()
    token = standin.issue_token("alice@internal")
    standin.stop()
    try:
        reply = await api_get(service, "/api/v1/vms", token)
        assert reply.status == 503
        assert reply.json()["error"]["code"] == "engine_unavailable"
    finally:
        standin.start()
    assert (await api_get(service, "/api/v1/vms", token)).status == 200


async def test_healthz_and_metrics_access(make_service, pki) -> None:
    service = await make_service()
    await ingest_fleet(service, pki)
    health = await api_get(service, "/healthz")
    assert health.status == 200 and health.json()["store"] == "ok"
    # the lone instance holds the once-only duties, and says so
    assert health.json()["leader"] == service.leadership.holder
    metrics = await api_get(service, "/metrics")
    assert metrics.status == 200
    text = metrics.body.decode()
    assert 'vmdiag_vms{health="critical"} 2.0' in text
    assert 'vmdiag_ingest_envelopes_total{result="stored"} 4.0' in text
    assert "vmdiag_http_request_duration_seconds_bucket" in text
    await service.stop()  # a SQLite store serves one instance at a time
    closed = await make_service(metrics={"allow": "10.0.0.0/8"})
    assert (await api_get(closed, "/metrics")).status == 403


def test_metrics_allow_list_judges_the_real_client() -> None:
    allow = NetworkAllowList(["127.0.0.1/32", "::1/128", "10.0.0.0/8"])
    assert allow.allows("127.0.0.1") and allow.allows("::1") and allow.allows("10.2.3.4")
    assert allow.allows("::ffff:10.2.3.4")  # IPv4-mapped, as dual-stack sockets report it
    assert not allow.allows("192.0.2.1") and not allow.allows("") and not allow.allows("junk")
    assert not allow.allows(None)


async def test_metrics_through_the_proxy_are_refused(make_service, standin) -> None:
    service = await make_service()
    forwarded = await api_get_headers(service, "/metrics", {"X-Forwarded-For": "192.0.2.7"})
    assert forwarded == 403


async def test_unusual_http_methods_share_one_metric_label(make_service) -> None:
    # The method is the client's word; aiohttp's C parser knows ~35 of them, its pure-Python
    # parser (no C extension) takes any token: only the usual ones become label values.
    service = await make_service()
    url = "http://127.0.0.1:%d/vmdiag/healthz" % service.api_port
    async with aiohttp.ClientSession() as session:
        for method in ("PROPFIND", "MKCOL", "LINK", "UNLINK", "PUT"):
            async with session.request(method, url) as reply:
                assert reply.status == 405
    text = (await api_get(service, "/metrics")).body.decode()
    assert "PROPFIND" not in text and "MKCOL" not in text
    assert ('vmdiag_http_request_duration_seconds_count{method="other",route="unmatched",'
            'status="405"} 4.0') in text
    assert 'method="PUT",route="unmatched",status="405"' in text
