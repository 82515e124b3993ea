"""The UI plugin (vmdiag.json + start.html + plugin.js) in Chromium, inside a web admin stand-in.

``harness/harness.js`` implements the pluginApi calls of ovirt-engine's PluginManager with the same
life cycle rules, loads the plugin from its descriptor exactly as WebAdmin.html does, and records
every call. The tests assert the places the plugin registers, the URLs it sets when the selection
changes, and that those URLs open working, authenticated pages.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from .browser import screenshot, wait_for
from .conftest import ADMIN_TOKEN
from .documents import HOST_A, VM_FILLING, VM_HEALTHY

pytestmark = pytest.mark.chromium

TOKEN_FRAGMENT = "#token=" + quote(ADMIN_TOKEN, safe="")


def open_harness(browser, server, **params: str) -> dict:
    query = "&".join("%s=%s" % (k, quote(v, safe="")) for k, v in
                     dict({"token": ADMIN_TOKEN}, **params).items())
    browser.get("about:blank")
    browser.get(server.url + "/ovirt-engine/webadmin/harness.html?" + query)
    wait_for(browser, "window.harness && window.harness.ready", what="the plugin to call ready()")
    return harness_state(browser)


def harness_state(browser) -> dict:
    return browser.execute_script("return JSON.parse(JSON.stringify(window.harness));")


def fire(browser, event: str, entities: list) -> None:
    browser.execute_script("window.harness.fire(arguments[0], [arguments[1]]);", event, entities)


def content_url(browser, token: str, previous: str) -> str:
    return wait_for(browser, "window.harness.contentUrls[%s] !== %s && "
                             "window.harness.contentUrls[%s]"
                    % (json.dumps(token), json.dumps(previous), json.dumps(token)),
                    what="setPlaceContentUrl(%s)" % token)


def test_plugin_registers_places_and_follows_the_selection(browser, server):
    state = open_harness(browser, server)

    assert state["errors"] == []
    assert state["plugins"]["vmdiag"]["state"] == "IN_USE"
    calls = [c["call"] for c in state["calls"]]
    assert calls[:2] == ["register", "ready"]
    assert set(state["calls"][0]["args"]) >= {"UiInit", "VirtualMachineSelectionChange",
                                              "HostSelectionChange"}
    assert [(p["entityType"], p["label"], p["historyToken"], p["contentUrl"])
            for p in state["detailPlaces"]] == [
        ("VirtualMachine", "Diagnostics", "vmdiag-vm", "/vmdiag/ui/select/vm"),
        ("Host", "Diagnostics", "vmdiag-host", "/vmdiag/ui/select/host"),
    ]
    assert state["menuPlaces"] == [{
        "label": "Diagnostics", "historyToken": "vmdiag-fleet",
        "contentUrl": "/vmdiag/ui/fleet" + TOKEN_FRAGMENT,
        "options": {"priority": 10, "icon": "fa-stethoscope", "defaultPlace": False}}]

    # One VM selected: its Diagnostics page, with the SSO token in the fragment only.
    fire(browser, "VirtualMachineSelectionChange",
         [{"id": VM_FILLING, "name": "db-01", "status": "Up"}])
    url = content_url(browser, "vmdiag-vm", "/vmdiag/ui/select/vm")
    assert url == "/vmdiag/ui/vms/%s%s" % (VM_FILLING, TOKEN_FRAGMENT)

    # Several VMs selected: back to the "select one" page, which needs no token.
    fire(browser, "VirtualMachineSelectionChange",
         [{"id": VM_FILLING, "name": "db-01"}, {"id": VM_HEALTHY, "name": "web-01"}])
    assert content_url(browser, "vmdiag-vm", url) == "/vmdiag/ui/select/vm"

    fire(browser, "HostSelectionChange", [{"id": HOST_A, "name": "hv-01"}])
    assert content_url(browser, "vmdiag-host", "/vmdiag/ui/select/host") == \
        "/vmdiag/ui/hosts/%s%s" % (HOST_A, TOKEN_FRAGMENT)
    assert harness_state(browser)["errors"] == []


def test_place_urls_open_authenticated_pages(browser, server, source):
    open_harness(browser, server)
    fire(browser, "VirtualMachineSelectionChange", [{"id": VM_FILLING, "name": "db-01"}])
    content_url(browser, "vmdiag-vm", "/vmdiag/ui/select/vm")
    browser.execute_script("window.harness.reveal('vmdiag-vm');")
    frame = browser.find_element("id", "place-vmdiag-vm")
    browser.switch_to.frame(frame)
    try:
        wait_for(browser, "document.querySelector('#vm-name')", what="the VM page in the place")
        assert browser.execute_script("return document.querySelector('#vm-name').textContent") \
            == "db-01"
        assert "token" not in browser.execute_script("return location.href")
    finally:
        browser.switch_to.default_content()
    assert ("vm_document", "admin@internal", VM_FILLING) in source.calls
    screenshot(browser, "plugin-harness-vm-place")

    browser.execute_script("window.harness.reveal('vmdiag-fleet');")
    browser.switch_to.frame(browser.find_element("id", "place-vmdiag-fleet"))
    try:
        wait_for(browser, "document.querySelectorAll('tbody tr[data-vm-id]').length === 6",
                 what="the fleet page in the primary menu place")
    finally:
        browser.switch_to.default_content()


def test_plugin_uses_the_configured_base_path(browser, server):
    state = open_harness(browser, server, basePath="/diag/")
    assert [p["contentUrl"] for p in state["detailPlaces"]] == ["/diag/ui/select/vm",
                                                                "/diag/ui/select/host"]
    assert state["menuPlaces"][0]["contentUrl"] == "/diag/ui/fleet" + TOKEN_FRAGMENT
    fire(browser, "VirtualMachineSelectionChange", [{"id": VM_HEALTHY}])
    url = content_url(browser, "vmdiag-vm", "/diag/ui/select/vm")
    assert url.startswith("/diag/ui/vms/" + VM_HEALTHY + "#token=")
    # Older engines passed the selected entities as separate arguments.
    browser.execute_script("window.harness.fire('VirtualMachineSelectionChange', arguments[0]);",
                           [{"id": VM_FILLING}])
    assert content_url(browser, "vmdiag-vm", url).startswith("/diag/ui/vms/" + VM_FILLING)


def test_select_pages_need_no_token(browser, server):
    for kind, what in (("vm", "virtual machine"), ("host", "host")):
        browser.get(server.url + "/vmdiag/ui/select/" + kind)
        heading = browser.execute_script("return document.querySelector('h1').textContent")
        assert heading == "Select one " + what
