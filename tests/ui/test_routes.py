"""HTTP behaviour of the Diagnostics routes, through aiohttp's test client (no browser).

These pin the security contract the browser tests rely on: no data without a valid token,
404 for what the user may not see, strict headers, no path traversal in static files.
"""

from __future__ import annotations

import gzip
import json
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine_plugin.ui import PLUGIN_DIR
from engine_plugin.ui.routes import CONTENT_SECURITY_POLICY

from .conftest import ADMIN_TOKEN, ALICE_TOKEN
from .documents import HOST_A, HOST_B, VM_FILLING, VM_HEALTHY, VM_SILENT, VM_UNKNOWN
from .server import build_app


@pytest.fixture
async def client(source):
    client = TestClient(TestServer(build_app(source)))
    await client.start_server()
    yield client
    await client.close()


def bearer(token: str) -> dict:
    return {"Authorization": "Bearer " + token}


async def test_shell_holds_no_data_and_needs_no_token(client):
    response = await client.get("/vmdiag/ui/vms/" + VM_FILLING)
    body = await response.text()
    assert response.status == 200
    assert "db-01" not in body and "/var/lib/pgsql" not in body
    assert 'data-fragment-url="/vmdiag/ui/vms/%s/fragment"' % VM_FILLING in body
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["Referrer-Policy"] == "no-referrer"
    # every script and stylesheet is a same-origin file: nothing inline, nothing remote
    assert re.findall(r"<script(?![^>]*\ssrc=\"/vmdiag/ui/static/)", body) == []
    assert "http://" not in body and "https://" not in body


@pytest.mark.parametrize("path", [
    "/vmdiag/ui/vms/%s/fragment" % VM_FILLING,
    "/vmdiag/ui/hosts/%s/fragment" % HOST_A,
    "/vmdiag/ui/fleet/fragment",
])
async def test_fragments_refuse_a_missing_or_wrong_token(client, source, path):
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic " + ADMIN_TOKEN}):
        response = await client.get(path, headers=headers)
        body = await response.text()
        assert response.status == 401
        assert "Reopen this tab from the oVirt web admin" in body
        assert "db-01" not in body and "web-01" not in body
    assert not [c for c in source.calls if c[0] != "authenticate"]


async def test_vm_fragment_for_an_allowed_user(client):
    response = await client.get("/vmdiag/ui/vms/%s/fragment" % VM_FILLING,
                                headers=bearer(ALICE_TOKEN))
    body = await response.text()
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "db-01" in body and "full in 2 d" in body


async def test_invisible_and_unknown_vms_get_the_same_404(client):
    hidden = await client.get("/vmdiag/ui/vms/%s/fragment" % VM_SILENT,
                              headers=bearer(ALICE_TOKEN))
    unknown = await client.get("/vmdiag/ui/vms/%s/fragment" % VM_UNKNOWN,
                               headers=bearer(ALICE_TOKEN))
    malformed = await client.get("/vmdiag/ui/vms/not-a-uuid/fragment",
                                 headers=bearer(ALICE_TOKEN))
    bodies = [await r.text() for r in (hidden, unknown, malformed)]
    assert [r.status for r in (hidden, unknown, malformed)] == [404, 404, 404]
    assert bodies[0] == bodies[1] == bodies[2]
    assert "app-02" not in bodies[0]


async def test_histories_are_asked_with_the_users_identity(client, source):
    await client.get("/vmdiag/ui/vms/%s/fragment" % VM_HEALTHY, headers=bearer(ALICE_TOKEN))
    users = {c[1] for c in source.calls if c[0] in ("vm_document", "history")}
    assert users == {"alice@lab"}


async def test_a_failing_history_costs_one_chart_not_the_page(client, source):
    original = source.history

    async def flaky(user, vm_id, metric, since, until):
        if metric == "cpu.percent":
            raise ConnectionError("database is restarting")
        return await original(user, vm_id, metric, since, until)

    source.history = flaky
    response = await client.get("/vmdiag/ui/vms/%s/fragment" % VM_HEALTHY,
                                headers=bearer(ADMIN_TOKEN))
    body = await response.text()
    assert response.status == 200
    assert body.count("No history recorded for this period yet.") == 1
    assert body.count('class="vmdiag-chart__svg"') == 3


async def test_host_fragment_and_unknown_host(client):
    response = await client.get("/vmdiag/ui/hosts/%s/fragment" % HOST_B,
                                headers=bearer(ADMIN_TOKEN))
    body = await response.text()
    assert response.status == 200 and "hv-02.lab.example" in body
    assert "app-02" in body and "db-01" not in body
    missing = await client.get("/vmdiag/ui/hosts/%s/fragment" % VM_UNKNOWN,
                               headers=bearer(ADMIN_TOKEN))
    assert missing.status == 404


async def test_fleet_fragment_asks_the_source_for_one_page(client, source):
    response = await client.get("/vmdiag/ui/fleet/fragment?health=critical&sort=bogus",
                                headers=bearer(ADMIN_TOKEN))
    body = await response.text()
    assert response.status == 200
    (query,) = [c[2] for c in source.calls if c[0] == "fleet_list"]
    # a bad sort falls back to the page's default; the page always asks for one page
    assert (query.health, query.sort, query.per_page, query.page) == (("critical",), "health",
                                                                      50, 1)
    assert re.findall(r'data-vm-id="([^"]+)"', body) == [VM_FILLING]


async def test_static_files_and_traversal(client):
    css = await client.get("/vmdiag/ui/static/vmdiag.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    font = await client.get(
        "/vmdiag/ui/static/vendor/patternfly/assets/fonts/RedHatText/RedHatTextVF.woff2")
    assert font.status == 200 and font.headers["Content-Type"] == "font/woff2"
    for path in ("/vmdiag/ui/static/../routes.py", "/vmdiag/ui/static/%2e%2e/routes.py",
                 "/vmdiag/ui/static/vendor", "/vmdiag/ui/static/nope.js"):
        response = await client.get(path)
        assert response.status == 404, path


async def test_versioned_assets_are_cached_for_good_and_the_css_goes_gzipped(client):
    shell = await (await client.get("/vmdiag/ui/fleet")).text()
    assets = re.findall(r'(?:src|href)="(/vmdiag/ui/static/[^"?]+\?v=[0-9a-f]+)"', shell)
    assert len(assets) == 3, assets  # the script and both stylesheets, by content hash
    for url in assets:
        response = await client.get(url)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # the same file asked without (or with another) version: revalidated, never kept for good
    for url in ("/vmdiag/ui/static/vmdiag.js", "/vmdiag/ui/static/vmdiag.js?v=000000000000"):
        response = await client.get(url)
        assert response.headers["Cache-Control"] == "no-cache" and "ETag" in response.headers
    css_url = next(u for u in assets if "patternfly" in u)
    plain = await client.get(css_url, headers={"Accept-Encoding": "identity"})
    packed = await client.get(css_url, headers={"Accept-Encoding": "gzip, deflate"},
                              auto_decompress=False)
    assert packed.headers.get("Content-Encoding") == "gzip"
    assert packed.headers["Content-Type"].startswith("text/css")
    raw = await packed.read()
    assert len(raw) * 5 < len(await plain.read())
    assert gzip.decompress(raw) == await plain.read()  # the .gz is the stylesheet's own
    # the fonts the shell preloads are the stylesheet's own URLs (else fetched twice)
    css = await plain.text()
    preloads = re.findall(r'<link rel="preload" href="/vmdiag/ui/static/vendor/patternfly/'
                          r'([^"]+)" as="font" type="font/woff2" crossorigin>', shell)
    assert len(preloads) == 3
    for font in preloads:
        assert 'url("./%s")' % font in css
        assert (await client.get("/vmdiag/ui/static/vendor/patternfly/" + font)).status == 200


async def test_every_url_in_the_vendored_css_resolves(client):
    css = await client.get("/vmdiag/ui/static/vendor/patternfly/patternfly-vmdiag.css")
    text = await css.text()
    urls = set(re.findall(r'url\("\./([^"]+)"\)', text))
    assert urls, "the vendored CSS should reference its fonts"
    missing = []
    for url in urls:
        if "pficon" in url or "webfonts" in url:
            continue  # icon fonts are never used by the pages, so never fetched
        response = await client.get("/vmdiag/ui/static/vendor/patternfly/" + url)
        if response.status != 200:
            missing.append(url)
    assert missing == []


def test_descriptor_names_the_plugin_and_its_resources():
    descriptor = json.loads((PLUGIN_DIR / "vmdiag.json").read_text())
    assert descriptor["name"] == "vmdiag"
    assert descriptor["url"] == "plugin/vmdiag/start.html"
    assert descriptor["resourcePath"] == "vmdiag-resources"
    assert descriptor["config"] == {"basePath": "/vmdiag"}
    resources = PLUGIN_DIR / descriptor["resourcePath"]
    assert (resources / "start.html").is_file() and (resources / "plugin.js").is_file()


async def test_custom_prefix_moves_every_route_and_link(source):
    client = TestClient(TestServer(build_app(source, prefix="/diag/")))
    await client.start_server()
    try:
        shell = await client.get("/diag/ui/fleet")
        body = await shell.text()
        assert shell.status == 200
        assert 'data-fragment-url="/diag/ui/fleet/fragment"' in body
        assert 'href="/diag/ui/static/vmdiag.css?v=' in body
        fragment = await client.get("/diag/ui/fleet/fragment", headers=bearer(ADMIN_TOKEN))
        assert 'href="/diag/ui/vms/%s"' % VM_FILLING in await fragment.text()
        assert (await client.get("/diag/ui/static/vmdiag.js")).status == 200
        assert (await client.get("/vmdiag/ui/fleet")).status == 404
    finally:
        await client.close()
