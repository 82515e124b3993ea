"""Which VMs a user may see, kept per user: administrators answered from the shared VM
directory, everybody else from their own filtered list, refreshed in the background.

Real service, real ovirtsdk4 over TLS to the stand-in engine, which records every request
(so a test sees which user asked for what, with or without ``Filter: true``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any, List

from engine_plugin.ovirt.visibility import pages

from .conftest import CLUSTER, HOST_1, VM_ALICE, VM_BOB, VM_SHARED, api_get


def asked(standin: Any, user: str, path: str) -> List[dict]:
    return [r for r in list(standin.requests) if r["user"] == user and r["path"] == path]


async def names(service: Any, token: str) -> List[str]:
    reply = await api_get(service, "/api/v1/vms", token)
    assert reply.status == 200, reply.body
    return sorted(vm["name"] for vm in reply.json()["vms"])


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within %.0f s" % timeout
        await asyncio.sleep(0.05)


async def test_an_administrator_is_answered_from_the_shared_directory(make_service,
                                                                      standin) -> None:
    service = await make_service()
    token = standin.issue_token("admin@internal")
    assert await names(service, token) == ["alice-web", "bob-db", "shared-app"]
    # one cheap question, asked unfiltered as oVirt's VM portal does; no VM list of its own
    # (only the first filtered page, asked at the same time as the question, then dropped)
    probe = asked(standin, "admin@internal", "/ovirt-engine/api/permissions")
    assert len(probe) == 1 and probe[0]["filter"] == "false"
    assert [(r["query"]["max"], r["filter"]) for r in
            asked(standin, "admin@internal", "/ovirt-engine/api/vms")] == [("250", "true")]
    # another token of the same user: only the token itself is checked
    before = len(standin.requests)
    second = standin.issue_token("admin@internal")
    assert await names(service, second) == ["alice-web", "bob-db", "shared-app"]
    assert [r["path"] for r in standin.requests[before:]] == ["/ovirt-engine/api"]
    # a VM page: asked unfiltered, as the list is, with no further question about the user
    before = len(standin.requests)
    assert (await api_get(service, "/api/v1/vms/%s" % VM_ALICE, token)).status == 200
    vm_asked = [r for r in standin.requests[before:] if r["path"].startswith("/ovirt-engine")]
    assert [(r["path"], r["filter"]) for r in vm_asked] == [
        ("/ovirt-engine/api/vms/%s" % VM_ALICE, "false")]
    # a VM added to oVirt shows once the directory is read again (in the background)
    new_vm = "44444444-4444-4444-8444-444444444444"
    standin.add_vm(new_vm, "carol-app", HOST_1, CLUSTER)
    await service.refresh_directory()
    assert "carol-app" in await names(service, token)


async def test_a_user_is_listed_once_with_filter_and_sees_only_their_vms(make_service,
                                                                        standin) -> None:
    service = await make_service()
    first, second = standin.issue_token("alice@internal"), standin.issue_token("alice@internal")
    assert await names(service, first) == ["alice-web", "shared-app"]
    probe = asked(standin, "alice@internal", "/ovirt-engine/api/permissions")
    assert [p["filter"] for p in probe] == ["false"]  # refused: not an administrator
    listed = asked(standin, "alice@internal", "/ovirt-engine/api/vms")
    assert len(listed) == 1 and listed[0]["filter"] == "true"
    assert await names(service, second) == ["alice-web", "shared-app"]
    assert len(asked(standin, "alice@internal", "/ovirt-engine/api/vms")) == 1
    assert await names(service, standin.issue_token("bob@internal")) == ["bob-db", "shared-app"]
    # a VM page is asked with Filter: true; a VM the user may not see is 404
    assert (await api_get(service, "/api/v1/vms/%s" % VM_BOB, first)).status == 404
    assert asked(standin, "alice@internal", "/ovirt-engine/api/vms/%s" % VM_BOB)[0][
        "filter"] == "true"
    # the host list of a user is cut from the same list
    reply = await api_get(service, "/api/v1/hosts/%s/vms" % HOST_1, first)
    assert sorted(vm["name"] for vm in reply.json()["vms"]) == ["alice-web", "shared-app"]


async def test_a_removed_permission_goes_after_a_background_refresh(make_service,
                                                                   standin) -> None:
    service = await make_service(ovirt={"visibility_cache_ttl": "1",
                                        "visibility_max_age": "600"})
    token = standin.issue_token("alice@internal")
    assert await names(service, token) == ["alice-web", "shared-app"]
    standin.users["alice@internal"].vms.discard(VM_SHARED)
    await asyncio.sleep(1.2)
    # past the ttl: the kept list answers at once, and is read again meanwhile
    assert await names(service, token) == ["alice-web", "shared-app"]
    await eventually(lambda: len(asked(standin, "alice@internal", "/ovirt-engine/api/vms")) == 2)
    await eventually(lambda: service.visibility._refreshing == {})
    assert await names(service, token) == ["alice-web"]
    vm_page = await api_get(service, "/api/v1/vms/%s" % VM_SHARED, token)
    assert vm_page.status == 404


async def test_an_administrator_who_loses_the_role_is_listed_like_a_user(make_service,
                                                                         standin) -> None:
    service = await make_service(ovirt={"visibility_cache_ttl": "1"})
    standin.add_user("ops@internal", "opspw", admin=True)
    token = standin.issue_token("ops@internal")
    assert await names(service, token) == ["alice-web", "bob-db", "shared-app"]
    ops = standin.users["ops@internal"]
    ops.admin, ops.vms = False, {VM_ALICE}
    await asyncio.sleep(1.2)
    await names(service, token)  # starts the background read
    # (the first: the filtered page asked with the question, while ops was an administrator)
    await eventually(lambda: len(asked(standin, "ops@internal", "/ovirt-engine/api/vms")) == 2)
    await eventually(lambda: service.visibility._refreshing == {})
    assert await names(service, token) == ["alice-web"]


async def test_past_max_age_a_list_is_read_again_before_it_is_shown(make_service,
                                                                    standin) -> None:
    service = await make_service(ovirt={"visibility_cache_ttl": "1",
                                        "visibility_max_age": "1"})
    token = standin.issue_token("alice@internal")
    assert await names(service, token) == ["alice-web", "shared-app"]
    standin.users["alice@internal"].vms.discard(VM_SHARED)
    await asyncio.sleep(1.2)
    assert await names(service, token) == ["alice-web"]


async def test_a_revoked_token_of_a_kept_user_is_401(make_service, standin) -> None:
    service = await make_service(ovirt={"visibility_cache_ttl": "1"})
    for user in ("admin@internal", "alice@internal"):
        token = standin.issue_token(user)
        assert (await api_get(service, "/api/v1/vms", token)).status == 200
        standin.revoke(token)
        await asyncio.sleep(1.2)  # the token's identity is checked again after the ttl
        for path in ("/api/v1/vms", "/api/v1/hosts/%s/vms" % HOST_1):
            reply = await api_get(service, path, token)
            assert reply.status == 401, (user, path, reply.body)
        # the user's next token works, from the kept list
        assert (await api_get(service, "/api/v1/vms", standin.issue_token(user))).status == 200


async def test_without_a_directory_an_administrator_is_listed_unfiltered(make_service,
                                                                         standin) -> None:
    # An events-only service account may not list VMs: nothing shared to answer from.
    standin.users["vmdiag@internal"].admin = False
    service = await make_service(ingest={"ownership": "any"})
    assert service.directory is not None and service.directory.refreshed_at is None
    token = standin.issue_token("admin@internal")
    assert await names(service, token) == ["alice-web", "bob-db", "shared-app"]
    listed = asked(standin, "admin@internal", "/ovirt-engine/api/vms")
    # the first filtered page (asked with the question whether they are an administrator),
    # then their list unfiltered
    assert [r["filter"] for r in listed] == ["true", "false"]


async def test_an_engine_that_names_no_user_keeps_one_view_per_token(make_service, standin,
                                                                    monkeypatch) -> None:
    service = await make_service()
    monkeypatch.setattr(service.visibility, "_identity", lambda token: "")
    alice, bob = standin.issue_token("alice@internal"), standin.issue_token("bob@internal")
    assert await names(service, alice) == ["alice-web", "shared-app"]
    assert await names(service, bob) == ["bob-db", "shared-app"]


def test_the_pages_of_a_list_are_consecutive_slices_of_one_order() -> None:
    for first, most in ((250, 2000), (1, 8), (3, 3), (5, 40)):
        plan = pages(first, most)
        start = 0
        for _ in range(40):
            page, size = next(plan)
            # page P of size N is the slice [(P-1)*N, P*N): it must start where the last ended
            assert (page - 1) * size == start, (first, most, page, size, start)
            assert first <= size <= most
            start += size
    assert list(itertools.islice(pages(250, 2000), 7)) == [
        (1, 250), (2, 250), (2, 500), (2, 1000), (2, 2000), (3, 2000), (4, 2000)]


def many_vms(standin: Any, count: int, prefix: str) -> List[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for n, vm_id in enumerate(ids):
        standin.add_vm(vm_id, "%s-%04d" % (prefix, n), HOST_1, CLUSTER)
    return ids


async def test_a_users_first_page_comes_before_the_whole_list_and_holds_only_theirs(
        make_service, standin) -> None:
    # 1,200 VMs of carol's interleaved (by name) with 600 she may not see
    mine = many_vms(standin, 1200, "vm")
    theirs = many_vms(standin, 600, "vm-x")
    standin.add_user("carol@internal", "pw", vms=mine)
    service = await make_service()
    standin.vm_cost_s = 0.002  # 250 VMs: 0.5 s a page; the whole list: ~2.4 s
    try:
        token = standin.issue_token("carol@internal")
        allowed = set(mine)
        answers = []
        deadline = time.monotonic() + 30
        while True:
            reply = await api_get(service, "/api/v1/vms", token, partial="yes", per_page="500")
            assert reply.status == 200, reply.body
            doc = reply.json()
            shown = {vm["id"] for vm in doc["vms"]}
            assert shown <= allowed and not shown & set(theirs)
            # the counts, the total and the pages describe exactly the VMs read so far
            assert doc["total"] == doc["visible"]["read"] == sum(doc["counts"].values())
            assert doc["matched"] == doc["total"] and len(shown) == min(500, doc["total"])
            answers.append(doc["visible"])
            if doc["visible"]["complete"]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        standin.vm_cost_s = 0.0
    assert answers[0] == {"complete": False, "read": 250}
    assert answers[-1] == {"complete": True, "read": 1200}
    reads = [r["read"] for r in answers]
    assert reads == sorted(reads) and len(set(reads)) >= 3  # it grew while the user looked
    listed = asked(standin, "carol@internal", "/ovirt-engine/api/vms")
    assert [(r["query"]["max"], r["query"]["search"], r["filter"]) for r in listed] == [
        ("250", "sortby name asc page 1", "true"), ("250", "sortby name asc page 2", "true"),
        ("500", "sortby name asc page 2", "true"), ("1000", "sortby name asc page 2", "true")]
    # the default answer (scripts, the SDK) covers everything: with the list read, at once
    doc = (await api_get(service, "/api/v1/vms", token, per_page="1")).json()
    assert doc["total"] == 1200 and doc["visible"] == {"complete": True, "read": 1200}


async def test_the_default_answer_waits_for_the_whole_list(make_service, standin) -> None:
    mine = many_vms(standin, 700, "vm")
    standin.add_user("dave@internal", "pw", vms=mine)
    service = await make_service()
    token = standin.issue_token("dave@internal")
    doc = (await api_get(service, "/api/v1/vms", token, per_page="10")).json()
    assert doc["total"] == 700 and doc["visible"]["complete"] is True
    reply = await api_get(service, "/api/v1/vms.csv", standin.issue_token("dave@internal"))
    assert reply.body.decode().count("\r\n") == 701


async def test_a_refresh_replaces_the_list_whole_and_drops_a_removed_vm(make_service,
                                                                        standin) -> None:
    mine = many_vms(standin, 600, "vm")
    standin.add_user("erin@internal", "pw", vms=mine)
    service = await make_service(ovirt={"visibility_cache_ttl": "1"})
    token = standin.issue_token("erin@internal")
    assert (await api_get(service, "/api/v1/vms", token)).json()["total"] == 600
    standin.users["erin@internal"].vms.discard(mine[0])
    await asyncio.sleep(1.2)
    standin.vm_cost_s = 0.002
    try:
        # past the ttl: the kept (complete) list answers while every page is read again
        doc = (await api_get(service, "/api/v1/vms", token, partial="yes")).json()
        assert doc["visible"] == {"complete": True, "read": 600}
        await eventually(lambda: service.visibility._refreshing == {})
    finally:
        standin.vm_cost_s = 0.0
    doc = (await api_get(service, "/api/v1/vms", token, partial="yes", per_page="500")).json()
    assert doc["visible"] == {"complete": True, "read": 599}
    assert mine[0] not in {vm["id"] for vm in doc["vms"]}
