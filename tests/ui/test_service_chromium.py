"""The Diagnostics pages served by the real vmdiag-engine service, in Chromium.

The service runs for real (TLS ingest, SQLite store, health pass, permission checks against the
stand-in oVirt engine with ovirtsdk4); a report is uploaded the way the relay does it, and the
browser opens the pages with an SSO token the stand-in issued. Selenium blocks, so the browser
part runs in a worker thread while the service keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import quote

import pytest

from tests.engine import conftest as engine
from tests.engine.conftest import HOST_1, HOST_1_CN, VM_ALICE, VM_BOB, VM_SHARED, relay_ssl, upload
from tests.engine.reports import critical_checks, envelope

from .browser import open_page, screenshot

pytestmark = pytest.mark.chromium

# The engine tests' fixtures: test PKI, the stand-in oVirt engine, and the real service.
pki = engine.pki
standin = engine.standin
make_service = engine.make_service


@pytest.fixture
def store_url(tmp_path) -> str:
    return "sqlite:///%s/vmdiag.db" % tmp_path


async def test_real_service_pages_show_the_users_own_view(browser, make_service, pki,
                                                           standin):
    service = await make_service()
    now = time.time()
    batch = [envelope(VM_ALICE, HOST_1_CN, 0, now=now, hostname="alice-web.example.test"),
             envelope(VM_SHARED, HOST_1_CN, 0, now=now, hostname="shared.example.test",
                      root_used=39 << 30, checks=critical_checks())]
    assert (await upload(service, relay_ssl(pki), {"envelopes": batch})).status == 200
    await service.health.drain()
    token = standin.issue_token("alice@internal")
    base = "http://127.0.0.1:%d/vmdiag/ui/" % service.api_port
    fragment = "#token=" + quote(token, safe="")

    def in_browser() -> dict:
        seen = {}
        open_page(browser, base + "vms/" + VM_ALICE + fragment)
        seen["vm_name"] = browser.execute_script(
            "return document.querySelector('#vm-name').textContent")
        seen["settings"] = browser.execute_script(
            "return document.querySelector('#settings-facts').textContent")
        seen["state"] = browser.execute_script(
            "return document.querySelector('.vmdiag-page').dataset.agentState")
        seen["charts"] = browser.execute_script(
            "return document.querySelectorAll('svg.vmdiag-chart__svg').length")
        screenshot(browser, "service-vm-1280")
        open_page(browser, base + "vms/" + VM_SHARED + fragment)
        seen["shared_health"] = browser.execute_script(
            "return document.querySelector('.vmdiag-header [data-health]').dataset.health")
        open_page(browser, base + "vms/" + VM_BOB + fragment)
        seen["bob"] = browser.execute_script(
            "return [document.querySelector('.vmdiag-message').dataset.status,"
            " document.body.textContent.indexOf('bob-db') < 0]")
        open_page(browser, base + "fleet" + fragment)
        seen["fleet"] = browser.execute_script(
            "return Array.from(document.querySelectorAll('tbody tr[data-vm-id]'))"
            ".map(r => r.querySelector('.vmdiag-vm-link').textContent).sort()")
        open_page(browser, base + "hosts/" + HOST_1 + fragment)
        seen["host"] = browser.execute_script(
            "return document.querySelector('#host-name').textContent")
        seen["xss"] = browser.execute_script(
            "return window.__xssCalls.concat(window.__cspViolations)")
        return seen

    seen = await asyncio.to_thread(in_browser)
    assert seen["vm_name"] == "alice-web"  # the name comes from oVirt
    assert "alice-web.example.test" in seen["settings"]  # the hostname from the report
    assert seen["state"] == "reporting"
    assert seen["charts"] >= 3
    assert seen["shared_health"] == "critical"
    assert seen["bob"] == ["404", True]
    assert seen["fleet"] == ["alice-web", "shared-app"]
    assert seen["host"] == "host1"
    assert seen["xss"] == []


async def test_a_revoked_session_asks_to_sign_in_again(browser, make_service, pki, standin):
    # Issue 10: the page said "the vmdiag service answered 502" when the engine stopped
    # accepting the token while vmdiag still had its identity cached.
    service = await make_service()
    assert (await upload(service, relay_ssl(pki), {"envelopes": [
        envelope(VM_ALICE, HOST_1_CN, 0)]})).status == 200
    await service.health.drain()
    token = standin.issue_token("alice@internal")
    base = "http://127.0.0.1:%d/vmdiag/ui/" % service.api_port

    def open_vm() -> str:
        open_page(browser, base + "vms/" + VM_ALICE + "#token=" + quote(token, safe=""))
        return browser.execute_script("return document.querySelector('#vm-name').textContent")

    assert await asyncio.to_thread(open_vm) == "alice-web"
    standin.revoke(token)  # logged out of the web admin, or the token expired

    def after_revocation() -> dict:
        # the fleet page of the same tab: vmdiag knows the token (cached), oVirt refuses it
        open_page(browser, base + "fleet")
        seen = browser.execute_script(
            "var m = document.querySelector('.vmdiag-message');"
            "var a = document.querySelector('a.vmdiag-sign-in');"
            "return {status: m && m.dataset.status, title: m && m.querySelector('h1')"
            ".textContent, link: a && [a.getAttribute('href'), a.target],"
            " alert: document.getElementById('vmdiag-alert').textContent,"
            " refreshHidden: getComputedStyle(document.getElementById('vmdiag-refresh'))"
            ".display === 'none',"
            " text: document.body.textContent}")
        screenshot(browser, "service-signed-out")
        return seen

    seen = await asyncio.to_thread(after_revocation)
    assert seen["status"] == "401" and seen["title"] == "Sign in to oVirt again"
    assert seen["link"] == ["/ovirt-engine/webadmin/", "_top"]
    assert seen["alert"] == "" and "answered" not in seen["text"]
    assert seen["refreshHidden"] is True


STATE = """
var alert = document.querySelector('[data-vmdiag-reading]');
var counts = Array.from(document.querySelectorAll('.vmdiag-count__number'))
    .map(function (n) { return parseInt(n.textContent, 10); });
return {reading: alert ? parseInt(alert.dataset.vmdiagReading, 10) : null,
        alert: alert ? alert.textContent : '',
        rows: Array.from(document.querySelectorAll('tbody tr[data-vm-id]'))
            .map(function (r) { return r.dataset.vmId; }),
        counted: counts.reduce(function (a, b) { return a + b; }, 0),
        shown: document.querySelector('#fleet-shown').textContent,
        last: document.querySelector('[data-pages]') ?
            parseInt(document.querySelector('[data-pages]').dataset.pages, 10) : 1};
"""


async def test_a_users_first_page_shows_before_their_whole_list_is_read(browser, make_service,
                                                                         standin):
    # 1,200 VMs of carol's, by name interleaved with 600 she may not see, at a cost per VM
    # listed that makes her whole list take ~6 s to read from the stand-in
    mine = [str(uuid.uuid4()) for _ in range(1200)]
    theirs = [str(uuid.uuid4()) for _ in range(600)]
    for n, vm_id in enumerate(mine):
        standin.add_vm(vm_id, "vm-%04d" % n, HOST_1, engine.CLUSTER)
    for n, vm_id in enumerate(theirs):
        standin.add_vm(vm_id, "vm-%04d-x" % n, HOST_1, engine.CLUSTER)
    standin.add_user("carol@internal", "pw", vms=mine)
    service = await make_service()
    token = standin.issue_token("carol@internal")
    url = "http://127.0.0.1:%d/vmdiag/ui/fleet?per_page=200&sort=name#token=%s" % (
        service.api_port, quote(token, safe=""))

    def in_browser() -> list:
        open_page(browser, url)
        states = [browser.execute_script(STATE)]
        screenshot(browser, "service-fleet-reading")
        deadline = time.monotonic() + 30
        while states[-1]["reading"] is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            state = browser.execute_script(STATE)
            if state != states[-1]:
                states.append(state)
        return states

    standin.vm_cost_s = 0.005  # the pages after the first take ~5 s: several refreshes
    try:
        states = await asyncio.to_thread(in_browser)
    finally:
        standin.vm_cost_s = 0.0
    first, final = states[0], states[-1]
    assert first["reading"] == 250, first  # the first page, before the whole list was read
    assert "250 so far" in first["alert"] and "read so far" in first["shown"]
    assert final["reading"] is None and final["counted"] == 1200, final
    assert "of 1,200 virtual machines." in final["shown"]
    allowed = set(mine)
    for state in states:
        # never a VM outside her filtered list, and the counts are the rows' own
        assert set(state["rows"]) <= allowed
        total = state["reading"] if state["reading"] is not None else 1200
        assert state["counted"] == total, state
        assert len(state["rows"]) == min(200, total)
        assert state["last"] == -(-total // 200)
    # the page refreshed itself while reading: it grew through at least one middle state
    assert len({s["reading"] for s in states}) >= 3, [s["reading"] for s in states]
