"""Paging, search and sort of the fleet lists over thousands of VMs, with oVirt's permissions.

The stand-in engine holds 2,000 VMs on 20 hosts; the real service lists them with ovirtsdk4
for each user's token, reads the SQLite store and pages. A VM a user may not see is never
listed and never counted, whatever the filters, pages or sort.
"""

from __future__ import annotations

import asyncio
import time

import ovirtsdk4
import pytest

from engine_plugin import sdk
from lab.big_fleet import FINDINGS, BigFleet
from lab.ovirt_standin import StandinEngine
from tests.engine.conftest import api_get

N_VMS = 2000
N_HOSTS = 20
FLEET = BigFleet(N_VMS, hosts=N_HOSTS)
# carol may see every VM of hosts 0-2 but every seventh, and every 50th VM anywhere else.
CAROL_HOSTS = set(FLEET.host_ids[:3])
CAROL_VMS = [v for v in FLEET.vm_ids
             if (FLEET.host_of[v] in CAROL_HOSTS and FLEET.number[v] % 7)
             or FLEET.number[v] % 50 == 0]


@pytest.fixture
def standin(pki) -> StandinEngine:  # noqa: F811 (replaces the small fleet of conftest)
    engine = StandinEngine(pki.server("standin"), pki.ca_file)
    FLEET.add_to_standin(engine)
    engine.add_user("admin@internal", "adminpw", admin=True)
    engine.add_user("carol@internal", "carolpw", vms=CAROL_VMS, hosts=[FLEET.host_ids[0]])
    engine.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def store_url(tmp_path) -> str:
    return "sqlite:///%s/vmdiag.db" % tmp_path


@pytest.fixture
async def service(make_service):
    service = await make_service(events={"enabled": "no"})
    await asyncio.to_thread(FLEET.fill_store, service.store, time.time())
    return service


async def get(service, path, token, **params):
    reply = await api_get(service, path, token, **params)
    assert reply.status == 200, reply.body
    return reply.json()


async def walk(service, token, path="/api/v1/vms", **params):
    """Every page by cursor; returns the pages."""
    pages, cursor = [], None
    while True:
        extra = dict(params, cursor=cursor) if cursor else params
        doc = await get(service, path, token, **extra)
        pages.append(doc)
        cursor = doc["page"]["next_cursor"]
        if cursor is None:
            return pages


async def test_pages_cover_every_visible_vm_once_and_counts_agree(service, standin):
    admin = standin.issue_token("admin@internal")
    # Without a paging parameter: API 1's answer, the whole list by name, plus the totals.
    whole = await get(service, "/api/v1/vms", admin)
    assert [v["id"] for v in whole["vms"]] == sorted(
        FLEET.vm_ids, key=lambda v: (FLEET.names[v].casefold(), v))
    assert "page" not in whole
    assert whole["total"] == whole["matched"] == N_VMS
    assert whole["counts"] == FLEET.expected_counts(FLEET.vm_ids)

    pages = await walk(service, admin, per_page=300, sort="health")
    seen = [v["id"] for doc in pages for v in doc["vms"]]
    assert len(pages) == 7 and len(seen) == len(set(seen)) == N_VMS
    ranks = {"critical": 0, "warning": 1, "unknown": 2, "ok": 3}
    assert [ranks[v["health"]] for doc in pages for v in doc["vms"]] == sorted(
        ranks[FLEET.status[v]] for v in FLEET.vm_ids)  # worst first across pages
    assert [(d["page"]["first"], d["page"]["last"]) for d in pages][-2:] == [
        (1501, 1800), (1801, 2000)]

    # Page numbers reach the same rows as the cursor walk.
    third = await get(service, "/api/v1/vms", admin, per_page=300, page=3, sort="health")
    assert [v["id"] for v in third["vms"]] == [v["id"] for v in pages[2]["vms"]]
    assert third["page"]["pages"] == 7

    # Filters narrow matched and the pages; counts cover the other filters, not health.
    critical = await walk(service, admin, per_page=50, health="critical", sort="name",
                          dir="desc")
    names = [v["name"] for doc in critical for v in doc["vms"]]
    expected = [FLEET.names[v] for v in FLEET.vm_ids if FLEET.status[v] == "critical"]
    assert names == sorted(expected, reverse=True)
    assert critical[0]["matched"] == len(expected)
    assert critical[0]["counts"] == whole["counts"]
    host = FLEET.host_ids[5]
    on_host = await get(service, "/api/v1/vms", admin, host="hv-005", per_page=500)
    ids = {v["id"] for v in on_host["vms"]}
    assert ids == {v for v in FLEET.vm_ids if FLEET.host_of[v] == host}
    assert on_host["counts"] == FLEET.expected_counts(sorted(ids))
    assert sum(on_host["counts"].values()) == on_host["matched"] == len(ids)


async def test_a_user_never_sees_nor_counts_vms_beyond_her_permissions(service, standin):
    carol = standin.issue_token("carol@internal")
    pages = await walk(service, carol, per_page=100, sort="last_report")
    seen = [v["id"] for doc in pages for v in doc["vms"]]
    assert sorted(seen) == sorted(CAROL_VMS)
    assert pages[0]["total"] == pages[0]["matched"] == len(CAROL_VMS)
    assert pages[0]["counts"] == FLEET.expected_counts(CAROL_VMS)
    assert {h["id"] for h in pages[0]["hosts"]} == {FLEET.host_of[v] for v in CAROL_VMS}
    # oVirt names only the host she has a permission on; the others are ids to her
    assert sorted(h["name"] for h in pages[0]["hosts"])[0] == "6b1f0002-0000-0000-0000-0000000" \
        "00001" and "hv-000" in {h["name"] for h in pages[0]["hosts"]}
    assert sum(h["vms"] for h in pages[0]["hosts"]) == len(CAROL_VMS)

    # A search for a VM she may not see finds nothing, and counts nothing.
    hidden = next(v for v in FLEET.vm_ids if v not in set(CAROL_VMS))
    none = await get(service, "/api/v1/vms", carol, q=FLEET.names[hidden], per_page=10)
    assert none["vms"] == [] and none["matched"] == 0
    assert set(none["counts"].values()) == {0}

    # Search looks into findings: her critical VMs, and no one else's.
    found = await walk(service, carol, per_page=20, q="97% FULL")
    assert sorted(v["id"] for doc in found for v in doc["vms"]) == sorted(
        v for v in CAROL_VMS if FLEET.status[v] == "critical")
    assert found[0]["counts"]["critical"] == found[0]["matched"]

    # The host list: only her VMs on that host, paged; a host she sees nothing of is a 404.
    host = FLEET.host_ids[1]
    host_pages = await walk(service, carol, "/api/v1/hosts/%s/vms" % host, per_page=25)
    assert sorted(v["id"] for d in host_pages for v in d["vms"]) == sorted(
        v for v in CAROL_VMS if FLEET.host_of[v] == host)
    nothing_there = next(h for h in FLEET.host_ids if h not in CAROL_HOSTS and not any(
        FLEET.host_of[v] == h for v in CAROL_VMS))
    reply = await api_get(service, "/api/v1/hosts/%s/vms" % nothing_there, carol)
    assert reply.status == 404


async def test_bad_list_parameters_are_400_naming_them(service, standin):
    admin = standin.issue_token("admin@internal")
    for params, word in (({"per_page": "0"}, "per_page"), ({"per_page": "100000"}, "per_page"),
                         ({"sort": "evil"}, "sort"), ({"dir": "up"}, "dir"),
                         ({"page": "x"}, "page"), ({"health": "fine"}, "health"),
                         ({"cursor": "bm90IG91cnM"}, "cursor"), ({"q": "x" * 201}, "q")):
        reply = await api_get(service, "/api/v1/vms", admin, **params)
        assert reply.status == 400, params
        assert word in reply.json()["error"]["message"], (params, reply.body)
    # A cursor of another sort is refused rather than silently misread.
    first = await get(service, "/api/v1/vms", admin, per_page=10, sort="name")
    reply = await api_get(service, "/api/v1/vms", admin, per_page=10, sort="health",
                          cursor=first["page"]["next_cursor"])
    assert reply.status == 400 and "sort=name" in reply.json()["error"]["message"]


async def test_sdk_iterates_the_pages(service, standin):
    standin.proxy_vmdiag("http://127.0.0.1:%d" % service.api_port)

    def run():
        conn = ovirtsdk4.Connection(url=standin.url, username="carol@internal",
                                    password="carolpw", ca_file=standin.ca_file)
        try:
            every = list(sdk.iter_fleet(conn, per_page=37, sort="host"))
            warnings = list(sdk.iter_fleet(conn, health="warning", q=FINDINGS["warning"][1]))
            first = sdk.fleet_page(conn, per_page=5)
            return every, warnings, first
        finally:
            conn.close()

    every, warnings, first = await asyncio.to_thread(run)
    assert sorted(vm.id for vm in every) == sorted(CAROL_VMS)
    hosts = [vm.host_name or "" for vm in every]  # unnamed (not hers) sort as ""
    assert hosts == sorted(hosts) and hosts[-1] == "hv-000"
    assert sorted(vm.id for vm in warnings) == sorted(
        v for v in CAROL_VMS if FLEET.status[v] == "warning")
    assert first.total == len(CAROL_VMS) and len(first.vms) == 5 and first.next_cursor
    proxied = [r for r in standin.requests_to("/vmdiag/api/v1/vms")]
    assert len(proxied) >= -(-len(CAROL_VMS) // 37)


QUERIES = [
    {}, {"per_page": "50"}, {"per_page": "50", "page": "7", "sort": "health", "dir": "desc"},
    {"health": "critical,warning", "per_page": "20", "sort": "host"},
    {"q": "fs.fill", "per_page": "10", "sort": "last_report"},
    {"host": FLEET.host_ids[1], "per_page": "100"},
    {"cluster": "cluster-01", "sort": "finding", "per_page": "25", "page": "2"},
]


async def test_prepared_lists_answer_as_lists_built_per_request(service, standin,
                                                                monkeypatch):
    # Above IN_LIST_LIMIT VMs, lists are answered from rows prepared once per list of
    # visible VMs; the answers must be the very ones built per request.
    from engine_plugin.service import documents
    tokens = [standin.issue_token("admin@internal"), standin.issue_token("carol@internal")]
    answers = {}
    for limit in (10 ** 9, 10):
        monkeypatch.setattr(documents, "IN_LIST_LIMIT", limit)
        answers[limit] = [[await get(service, "/api/v1/vms", token, **query)
                           for query in QUERIES] for token in tokens]
        answers[limit].append([page["vms"] for page in
                               await walk(service, tokens[1], per_page="77", sort="health")])
    assert answers[10] == answers[10 ** 9]
    # one prepared list per list of visible VMs: the administrators' (the directory's) and
    # carol's; another administrator's token uses the same
    await get(service, "/api/v1/vms", standin.issue_token("admin@internal"), per_page="5")
    assert len(service.source._prepared) == 2
    assert sum(len(p["vms"]) for p in answers[10][1][:1]) == len(CAROL_VMS)


async def test_a_prepared_list_follows_the_store(service, standin, monkeypatch):
    from engine_plugin.service import documents
    monkeypatch.setattr(documents, "IN_LIST_LIMIT", 10)
    admin = standin.issue_token("admin@internal")
    before = (await get(service, "/api/v1/vms", admin, per_page="5"))["counts"]
    ok_vms = [v for v in FLEET.vm_ids if FLEET.status[v] == "ok"]
    now = time.time()
    verdict = {"status": "critical", "since": now, "forecasts": [], "findings": [
        {"code": "fs.fill:/", "status": "critical", "message": "/ is full"}]}
    await asyncio.to_thread(service.store.set_verdict, ok_vms[0], verdict, now)
    # past LIST_MAX_AGE_S the list is prepared again before it answers
    monkeypatch.setattr(documents, "LIST_MAX_AGE_S", 0.0)
    after = (await get(service, "/api/v1/vms", admin, per_page="5"))["counts"]
    assert after["critical"] == before["critical"] + 1 and after["ok"] == before["ok"] - 1
    # past LIST_FRESH_S the kept list answers and is prepared again in the background
    monkeypatch.setattr(documents, "LIST_MAX_AGE_S", 3600.0)
    monkeypatch.setattr(documents, "LIST_FRESH_S", 0.0)
    await asyncio.to_thread(service.store.set_verdict, ok_vms[1], verdict, now)
    deadline = time.monotonic() + 20
    while True:
        counts = (await get(service, "/api/v1/vms", admin, per_page="5"))["counts"]
        assert counts["critical"] in (after["critical"], after["critical"] + 1)
        if counts["critical"] == after["critical"] + 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_the_directory_list_is_prepared_when_read_and_served_meanwhile(
        service, standin, monkeypatch):
    from engine_plugin.service import documents
    monkeypatch.setattr(documents, "IN_LIST_LIMIT", 10)
    monkeypatch.setattr(documents, "LIST_MAX_AGE_S", 3600.0)  # however slow this machine is
    admin = standin.issue_token("admin@internal")
    assert (await get(service, "/api/v1/vms", admin, per_page="5"))["total"] == N_VMS
    # a refresh of the directory prepares the administrators' rows before anyone asks
    standin.add_vm("77777777-7777-4777-8777-000000000001", "zz-new-1", FLEET.host_ids[0],
                   FLEET.cluster_of_host[FLEET.host_ids[0]])
    await service.refresh_directory()
    assert service.source._shared.vms is service.directory.vms()
    assert (await get(service, "/api/v1/vms", admin, per_page="5"))["total"] == N_VMS + 1
    # read without preparing: the last prepared rows answer while the new ones are prepared
    standin.add_vm("77777777-7777-4777-8777-000000000002", "zz-new-2", FLEET.host_ids[0],
                   FLEET.cluster_of_host[FLEET.host_ids[0]])
    await asyncio.to_thread(service.directory.refresh)
    assert (await get(service, "/api/v1/vms", admin, per_page="5"))["total"] == N_VMS + 1
    deadline = time.monotonic() + 20
    while (await get(service, "/api/v1/vms", admin, per_page="5"))["total"] != N_VMS + 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    # a user's list is never served from rows of another list
    carol = await get(service, "/api/v1/vms", standin.issue_token("carol@internal"))
    assert sorted(v["id"] for v in carol["vms"]) == sorted(CAROL_VMS)
