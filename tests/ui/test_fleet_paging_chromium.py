"""Pagination, search and export of the fleet page in Chromium, against the real service.

The stand-in oVirt engine holds 1,200 VMs (some named with markup), the real service lists
them with ovirtsdk4 and pages them; the browser clicks through the PatternFly pagination the
way a person would and checks that what it shows and what it counts are the same VMs.
"""

from __future__ import annotations

import asyncio
import csv
import time
from urllib.parse import quote

import pytest

from lab.big_fleet import BigFleet
from lab.ovirt_standin import StandinEngine
from tests.engine import conftest as engine

from .browser import open_page, screenshot, wait_for

pytestmark = pytest.mark.chromium

pki = engine.pki
make_service = engine.make_service
FLEET = BigFleet(1200, hosts=12, hostile_every=97)
HERS = [v for v in FLEET.vm_ids if FLEET.number[v] % 4 == 0]


@pytest.fixture
def standin(pki) -> StandinEngine:
    eng = StandinEngine(pki.server("standin"), pki.ca_file)
    FLEET.add_to_standin(eng)
    eng.add_user("admin@internal", "adminpw", admin=True)
    eng.add_user("dora@internal", "dorapw", vms=HERS)
    eng.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture
def store_url(tmp_path) -> str:
    return "sqlite:///%s/vmdiag.db" % tmp_path


def shown(browser) -> str:
    return browser.execute_script("return document.querySelector('#fleet-shown').textContent")


def names(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('tbody tr[data-vm-id] .vmdiag-vm-link'))"
        ".map(a => a.textContent);")


def reload_after(browser, action):
    # Web fonts arriving after the first paint move the controls; click where they settle.
    wait_for(browser, "document.fonts.status === 'loaded'", what="the page's fonts")
    browser.execute_script("window.__loads = 0; document.addEventListener('vmdiag:loaded',"
                           " function () { window.__loads++; });")
    action()
    wait_for(browser, "window.__loads > 0", what="the fragment to reload")


async def test_pages_of_a_large_fleet_in_chromium(browser, make_service, standin, tmp_path):
    from selenium.webdriver.support.ui import Select

    service = await make_service(events={"enabled": "no"})
    await asyncio.to_thread(FLEET.fill_store, service.store, time.time())
    base = "http://127.0.0.1:%d/vmdiag/ui/" % service.api_port
    admin = "#token=" + quote(standin.issue_token("admin@internal"), safe="")
    dora = "#token=" + quote(standin.issue_token("dora@internal"), safe="")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    by_health = sorted(FLEET.vm_ids, key=lambda v: (
        {"critical": 0, "warning": 1, "unknown": 2, "ok": 3}[FLEET.status[v]],
        FLEET.names[v].casefold(), v))

    def in_browser() -> dict:
        seen = {}
        open_page(browser, base + "fleet" + admin)
        seen["first"] = (shown(browser), names(browser))
        seen["counts"] = browser.execute_script(
            "return Array.from(document.querySelectorAll('.vmdiag-count__number'))"
            ".map(n => parseInt(n.textContent, 10));")
        seen["range"] = browser.execute_script(
            "return document.querySelector('#pager-top .vmdiag-pager__range').textContent")
        reload_after(browser, lambda: browser.find_element("id", "page-next-top").click())
        seen["second"] = (shown(browser), names(browser), browser.current_url)
        reload_after(browser, lambda: browser.find_element("id", "page-last-bottom").click())
        seen["last"] = (shown(browser), len(names(browser)), browser.execute_script(
            "return document.querySelector('#page-next-top').disabled"))
        reload_after(browser, lambda: Select(browser.find_element("id", "per-page-top"))
                     .select_by_value("200"))
        seen["per_page"] = (shown(browser), len(names(browser)))

        def type_page():
            from selenium.webdriver.common.keys import Keys
            box = browser.find_element("id", "page-input-top")
            box.send_keys(Keys.CONTROL, "a")  # not clear(): WebDriver's clear fires change
            box.send_keys("3", Keys.ENTER)
        reload_after(browser, type_page)
        seen["typed"] = shown(browser)
        reload_after(browser, lambda: browser.find_element("id", "filter-q").send_keys("vm-0001"))
        seen["search"] = (shown(browser), names(browser))
        screenshot(browser, "fleet-paged-search-1280")  # last: it resizes the page meanwhile
        browser.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(downloads)})
        browser.execute_script("window.__exported = null; document.addEventListener("
                               "'vmdiag:exported', function (e) { window.__exported ="
                               " e.detail; });")
        browser.find_element("id", "fleet-export").click()
        seen["export"] = wait_for(browser, "window.__exported", what="the CSV download")
        seen["xss"] = browser.execute_script(
            "return window.__xssCalls.concat(window.__cspViolations)")
        open_page(browser, base + "fleet" + dora)
        # her list is read from the engine a page at a time: the page completes by itself
        wait_for(browser, "!document.querySelector('[data-vmdiag-reading]')",
                 what="the rest of her list")
        seen["dora"] = shown(browser)
        return seen

    seen = await asyncio.to_thread(in_browser)
    assert seen["first"][0] == "Showing 1\u201350 of 1,200 virtual machines."
    assert seen["first"][1] == [FLEET.names[v] for v in by_health[:50]]
    assert seen["range"].split() == ["1", "\u2013", "50", "of", "1,200"]
    counts = FLEET.expected_counts(FLEET.vm_ids)
    assert seen["counts"] == [counts[s] for s in ("critical", "warning", "unknown", "ok")]
    assert seen["second"][0] == "Showing 51\u2013100 of 1,200 virtual machines."
    assert seen["second"][1] == [FLEET.names[v] for v in by_health[50:100]]
    assert "page=2" in seen["second"][2] and "token" not in seen["second"][2]
    assert seen["last"] == ("Showing 1,151\u20131,200 of 1,200 virtual machines.", 50, True)
    assert seen["per_page"] == ("Showing 1\u2013200 of 1,200 virtual machines.", 200)
    assert seen["typed"] == "Showing 401\u2013600 of 1,200 virtual machines."
    expected = sorted((FLEET.names[v] for v in FLEET.vm_ids if "vm-0001" in FLEET.names[v]),
                      key=lambda n: n)
    assert seen["search"][0] == ("Showing 1\u2013%d of %d matching virtual machines "
                                 "(1,200 in all)." % (len(expected), len(expected)))
    assert sorted(seen["search"][1]) == expected
    assert seen["xss"] == []
    # The export is the searched view: every match, whatever the page, hostile names inert.
    path = downloads / seen["export"]
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    assert sorted(r[1] for r in rows) == expected
    assert seen["dora"] == "Showing 1\u201350 of 300 virtual machines."
