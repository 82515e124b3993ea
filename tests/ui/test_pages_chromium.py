"""The Diagnostics pages in a real headless Chromium against the running aiohttp app.

Each test opens a page the way the UI plugin does (token in the URL fragment), waits for the
server-rendered fragment, and checks what a person would see. Screenshots go to
tests/artifacts/ui/.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest

from .browser import open_page, screenshot, set_viewport, wait_for
from .conftest import ADMIN_TOKEN, ALICE_TOKEN
from .documents import (
    HOST_A,
    PAYLOADS,
    VM_DOWN,
    VM_FILLING,
    VM_HEALTHY,
    VM_HOSTILE,
    VM_NO_AGENT,
    VM_SILENT,
    VM_UNKNOWN,
)

pytestmark = pytest.mark.chromium


def page_url(server, path: str, token: str = ADMIN_TOKEN) -> str:
    return "%s/vmdiag/ui/%s#token=%s" % (server.url, path, quote(token, safe=""))


def text(browser, selector: str) -> str:
    return browser.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector)


def count(browser, selector: str) -> int:
    return browser.execute_script("return document.querySelectorAll(arguments[0]).length;",
                                  selector)


def no_horizontal_overflow(browser) -> bool:
    return browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;")


def test_healthy_vm_page_shows_verdict_sections_and_charts(browser, server, source):
    open_page(browser, page_url(server, "vms/" + VM_HEALTHY))

    assert text(browser, "#vm-name") == "web-01"
    assert browser.execute_script(
        "return document.querySelector('.vmdiag-header [data-health]').dataset.health") == "ok"
    assert "Every check passed" in text(browser, "#health")
    headings = browser.execute_script(
        "return Array.from(document.querySelectorAll('section h2')).map(h => h.textContent)")
    assert headings[0] == "Health: Healthy"  # the verdict comes first
    assert headings[1:] == ["Resources", "Network", "Applications", "Settings", "Checks"]
    # CPU, memory and one chart per filesystem, each drawn from the history with real points.
    assert count(browser, "svg.vmdiag-chart__svg") == 4
    assert count(browser, "polyline.vmdiag-chart__line--observed") == 4
    assert re.search(r"\((3\d|4\d|5\d) s ago\)", text(browser, "#last-report"))  # 38 s + load
    assert count(browser, "#probes tbody tr") == 3
    assert "sshd" in text(browser, "#listening")

    # The token left the address bar, and reached the service as a Bearer header of admin.
    assert "token" not in browser.current_url
    assert ("vm_document", "admin@internal", VM_HEALTHY) in source.calls
    history_calls = [c for c in source.calls if c[0] == "history"]
    assert {c[2][1] for c in history_calls} == {"cpu.percent", "memory.percent", "fs.used:/",
                                                "fs.used:/boot"}
    for _, _, (_, _, since, until) in history_calls:
        assert until - since == pytest.approx(86400)
    assert browser.execute_script("return window.__xssCalls.length + "
                                  "window.__cspViolations.length") == 0
    screenshot(browser, "vm-healthy-1280")


def test_filling_disk_shows_reasons_worst_first_and_forecast(browser, server):
    open_page(browser, page_url(server, "vms/" + VM_FILLING))

    codes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#health-reasons li'))"
        ".map(li => li.dataset.code)")
    assert codes == ["fs.fill", "unit.failed"]  # critical before warning
    row = text(browser, "#forecasts tr[data-metric='fs.used:/var/lib/pgsql']")
    assert "Critical" in row and "full in 2 d" in row
    chart = "[data-chart-mountpoint='/var/lib/pgsql'] "
    assert count(browser, chart + "polyline.vmdiag-chart__line--forecast") == 1
    assert count(browser, chart + "polyline.vmdiag-chart__line--capacity") == 1
    assert count(browser, chart + "line.vmdiag-chart__marker--eta") == 1
    # The forecast line ends where it meets the capacity line (the ETA marker).
    ends = browser.execute_script("""
        var c = document.querySelector(arguments[0]);
        var f = c.querySelector('.vmdiag-chart__line--forecast').points;
        var cap = c.querySelector('.vmdiag-chart__line--capacity').points;
        var eta = c.querySelector('.vmdiag-chart__marker--eta');
        return [f.getItem(f.numberOfItems - 1).x, f.getItem(f.numberOfItems - 1).y,
                cap.getItem(0).y, eta.x1.baseVal.value];""", chart.strip())
    assert ends[0] == pytest.approx(ends[3], abs=0.5)
    assert ends[1] == pytest.approx(ends[2], abs=0.5)
    assert "will be full in 2 d" in text(browser, chart + ".vmdiag-forecast-note")
    assert "pg-backup.service" in text(browser, "#failed-units")
    assert "utmp not readable" in text(browser, "#settings .vmdiag-section-errors")
    screenshot(browser, "vm-filling-disk-1280")

    set_viewport(browser, 500, 800)
    open_page(browser, page_url(server, "vms/" + VM_FILLING))
    assert no_horizontal_overflow(browser)
    # The wide tables turn into labelled rows in a narrow pane.
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('#filesystems thead')).display") == "none"
    screenshot(browser, "vm-filling-disk-500")


@pytest.mark.parametrize("vm_id, state, expected", [
    (VM_SILENT, "silent", "The agent has been silent since"),
    (VM_DOWN, "vm_down", "The VM is down"),
    (VM_NO_AGENT, "not_installed", "The vmdiag agent is not installed in this VM"),
])
def test_agent_states_are_explained(browser, server, vm_id, state, expected):
    open_page(browser, page_url(server, "vms/" + vm_id))

    banner = text(browser, "#agent-banner")
    assert expected in banner
    assert browser.execute_script(
        "return document.querySelector('#agent-banner').dataset.agentState") == state
    if state == "silent":
        assert "(2 h)" in banner and "vmdiag-relay" in banner
        # the last report is still shown
        assert count(browser, "#resources") == 1
    elif state == "vm_down":
        assert "3 d ago" in banner
    else:
        assert "systemctl enable --now vmdiag-agent" in banner
        assert count(browser, "#resources") == 0
        assert text(browser, "#last-report").strip() == "never"
    screenshot(browser, "vm-%s-1280" % state)


def test_guest_strings_with_markup_stay_inert_text(browser, server):
    # Bypass the page's CSP so this proves the escaping itself: any injected handler or
    # script would now really run and be recorded by the hook.
    browser.execute_cdp_cmd("Page.setBypassCSP", {"enabled": True})
    open_page(browser, page_url(server, "vms/" + VM_HOSTILE))
    time.sleep(0.5)  # give an injected onerror/onload the chance to fire

    assert browser.execute_script("return window.__xssCalls") == []
    injected = browser.execute_script("""
        return Array.from(document.querySelectorAll(
            '#vmdiag-root img, #vmdiag-root iframe, #vmdiag-root script, #vmdiag-root b,'
            + ' #vmdiag-root [onerror], #vmdiag-root [onload], #vmdiag-root [data-injected],'
            + ' #vmdiag-root svg[onload], #vmdiag-root a[href^="javascript"]'))
            .map(e => e.outerHTML);""")
    assert injected == []
    page_text = text(browser, "#vmdiag-root")
    for payload in PAYLOADS:
        assert payload in page_text, payload
    assert text(browser, "#vm-name") == "evil-05 " + PAYLOADS[0]
    assert browser.execute_script("return document.title") == "Virtual machine diagnostics"
    screenshot(browser, "vm-hostile-strings-1280")


def test_hostile_strings_also_inert_in_fleet_and_with_csp(browser, server):
    open_page(browser, page_url(server, "fleet"))
    time.sleep(0.3)
    assert browser.execute_script("return window.__xssCalls") == []
    assert browser.execute_script("return window.__cspViolations") == []
    assert count(browser, "#vmdiag-root img, #vmdiag-root [onload], #vmdiag-root svg[onload]") \
        == 0
    assert ("evil-05 " + PAYLOADS[0]) in text(browser, "#vmdiag-root")


def test_vm_the_user_may_not_see_is_a_404_like_a_missing_one(browser, server, source):
    open_page(browser, page_url(server, "vms/" + VM_SILENT, ALICE_TOKEN))
    hidden = text(browser, "#vmdiag-root")
    assert browser.execute_script(
        "return document.querySelector('.vmdiag-message').dataset.status") == "404"
    assert "app-02" not in hidden
    assert ("vm_document", "alice@lab", VM_SILENT) in source.calls

    open_page(browser, page_url(server, "vms/" + VM_UNKNOWN, ALICE_TOKEN))
    assert text(browser, "#vmdiag-root") == hidden  # indistinguishable

    # Alice's fleet view lists only her two VMs, and the counts cover only them.
    open_page(browser, page_url(server, "fleet", ALICE_TOKEN))
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('tbody tr[data-vm-id] .vmdiag-vm-link'))"
        ".map(a => a.textContent).sort()")
    assert names == ["db-01", "web-01"]
    assert "app-02" not in text(browser, "#vmdiag-root")


def test_missing_or_bad_token_explains_what_to_do(browser, server):
    browser.get(server.url + "/vmdiag/ui/vms/" + VM_HEALTHY)
    wait_for(browser, "document.querySelector('#vmdiag-root h1')", what="the no-token message")
    assert "Open Diagnostics from the oVirt web admin" in text(browser, "#vmdiag-root")

    # The plugin hands a new token to an open page as a fragment-only navigation.
    browser.execute_script("window.__loads = 0; document.addEventListener('vmdiag:loaded',"
                           " function (e) { window.__loads = e.detail; });")
    browser.get(page_url(server, "vms/" + VM_HEALTHY, "expired-token"))
    assert wait_for(browser, "window.__loads", what="the reload on a new token") == 401
    assert browser.execute_script(
        "return document.querySelector('.vmdiag-message').dataset.status") == "401"
    assert "Reopen this tab from the oVirt web admin" in text(browser, "#vmdiag-root")
    assert "web-01" not in text(browser, "#vmdiag-root")


def test_fleet_page_counts_filters_and_sorts_by_keyboard(browser, server):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page_url(server, "fleet"))

    def rows():
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('tbody tr[data-vm-id]'))"
            ".map(r => [r.querySelector('.vmdiag-vm-link').textContent, r.dataset.health]);")

    def counts():
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('.vmdiag-count'))"
            ".map(c => c.querySelector('.vmdiag-count__number').textContent);")

    assert counts() == ["1", "1", "3", "1"]  # critical, warning, unknown, ok
    assert [h for _, h in rows()] == ["critical", "warning", "unknown", "unknown", "unknown",
                                      "ok"]
    screenshot(browser, "fleet-1280")

    def reload_after(action):
        browser.execute_script("window.__loads = 0; document.addEventListener('vmdiag:loaded',"
                               " function () { window.__loads++; });")
        action()
        wait_for(browser, "window.__loads > 0", what="the fragment to reload")

    # Sort by name, by keyboard: focus the column's sort button and press Enter.
    reload_after(lambda: browser.find_element("id", "sort-name").send_keys(Keys.ENTER))
    assert [n for n, _ in rows()] == sorted((n for n, _ in rows()), key=str.casefold)
    assert browser.execute_script(
        "return document.activeElement.id") == "sort-name"  # focus survives the swap
    reload_after(lambda: browser.switch_to.active_element.send_keys(Keys.ENTER))
    assert [n for n, _ in rows()][0] == "web-01"  # descending now

    # Filter by verdict through its count button, then clear it again.
    reload_after(lambda: browser.find_element("id", "count-unknown").click())
    assert {h for _, h in rows()} == {"unknown"} and len(rows()) == 3
    assert "health=unknown" in browser.current_url and "token" not in browser.current_url
    reload_after(lambda: browser.find_element("id", "filter-clear").click())
    assert len(rows()) == 6

    # Filter by cluster with the select, and by finding text.
    from selenium.webdriver.support.ui import Select
    reload_after(lambda: Select(browser.find_element("id", "filter-cluster"))
                 .select_by_visible_text("Production"))
    assert sorted(n for n, _ in rows()) == ["db-01", "legacy-04", "web-01"]
    reload_after(lambda: browser.find_element("id", "filter-q").send_keys("fs.fill"))
    assert [n for n, _ in rows()] == ["db-01"]
    assert "Showing 1\u20131 of 1 matching virtual machines (6 in all)" in text(
        browser, "#fleet-shown")
    screenshot(browser, "fleet-filtered-1280")

    set_viewport(browser, 500, 800)
    open_page(browser, page_url(server, "fleet"))
    assert no_horizontal_overflow(browser)
    screenshot(browser, "fleet-500")


def test_every_control_has_a_label_and_is_reachable_by_tab(browser, server):
    from selenium.webdriver.common.keys import Keys

    for path in ("fleet", "vms/" + VM_FILLING, "hosts/" + HOST_A):
        open_page(browser, page_url(server, path))
        unlabeled = browser.execute_script("""
            return Array.from(document.querySelectorAll('input:not([type=hidden]), select,'
                                                         + ' textarea'))
              .filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]'))
                           && !e.getAttribute('aria-label'))
              .map(e => e.outerHTML)
              .concat(Array.from(document.querySelectorAll('button, a[href]'))
                .filter(e => !(e.textContent.trim() || e.getAttribute('aria-label')))
                .map(e => e.outerHTML));""")
        assert unlabeled == [], path
        focusables = browser.execute_script(
            "return document.querySelectorAll('#vmdiag-root a[href], #vmdiag-root button,"
            " #vmdiag-root input:not([type=hidden]), #vmdiag-root select').length")
        body = browser.find_element("tag name", "body")
        body.click()
        reached = set()
        for _ in range(focusables + 3):
            browser.switch_to.active_element.send_keys(Keys.TAB)
            reached.add(browser.execute_script(
                "var e = document.activeElement; return e.id || e.getAttribute('href') ||"
                " e.textContent.trim();"))
        assert len(reached) >= min(focusables, 8), (path, reached)


def test_host_page_lists_its_vms_worst_first(browser, server, source):
    open_page(browser, page_url(server, "hosts/" + HOST_A))
    assert text(browser, "#host-name") == "hv-01.lab.example"
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('tbody tr[data-vm-id]'))"
        ".map(r => [r.querySelector('.vmdiag-vm-link').textContent,"
        " r.querySelector('[data-label=\"Worst finding\"]').textContent.trim(),"
        " r.querySelector('[data-label=\"Last report\"]').textContent.trim()]);")
    assert [r[0] for r in rows] == ["db-01", "web-01"]
    assert "/var/lib/pgsql will be full" in rows[0][1]
    assert rows[0][2].endswith("s ago") and rows[1][1] == "None"
    assert ("host_list", "admin@internal", HOST_A) in source.calls
    screenshot(browser, "host-1280")


def test_page_refreshes_itself_without_reloading(browser, serve, source, fleet):
    server = serve(source, refresh_s=5)
    open_page(browser, page_url(server, "vms/" + VM_HEALTHY))
    browser.execute_script("window.__sameDocument = true;")
    assert text(browser, "#health-title") == "Health: Healthy"

    doc = fleet.docs[VM_HEALTHY]
    doc["health"] = {"status": "critical", "since": time.time(), "reasons": [
        {"code": "net.gateway", "severity": "critical",
         "message": "The default gateway 10.20.30.1 does not answer.", "metric": None}]}
    wait_for(browser, "document.querySelector('#health-title').textContent =="
                      " 'Health: Critical'", timeout=12, what="the live refresh")
    assert browser.execute_script("return window.__sameDocument === true")
    assert "does not answer" in text(browser, "#health-reasons")
