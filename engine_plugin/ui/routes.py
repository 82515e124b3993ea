"""HTTP routes of the Diagnostics pages, registered on the engine service's aiohttp app.

How the user's oVirt SSO token reaches the server (see docs/ui.md): the UI plugin opens
``/vmdiag/ui/vms/<id>#token=<sso token>`` (``/vmdiag`` is the service's prefix). A fragment is
never sent to the server, so it does not reach access logs, proxies or a Referer header. The
page shell served for that URL holds no data and needs no authentication; its script reads the
token, removes it from the address bar, and fetches ``.../fragment`` with ``Authorization:
Bearer <token>``. The fragment is rendered here, with the service's ``authenticate`` and the
user's own view of the data, and swapped into the page; the same fetch repeats for live
refresh. A VM the user may not see renders the same 404 as a VM that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Tuple

from aiohttp import web

from diag_protocol import is_uuid

from . import rendering
from .fleet_view import build_fleet_view, build_host_view, parse_query
from .vm_view import build_vm_view, history_metrics

log = logging.getLogger("vmdiag.engine.ui")

PREFIX = "/vmdiag"
#: Where "Sign in again" leads: the web admin, in the whole window (the pages are frames in
#: it); oVirt sends a user without a session on to its SSO login.
SIGN_IN_URL = "/ovirt-engine/webadmin/"
DEFAULT_REFRESH_S = 30
DEFAULT_WINDOW_S = 24 * 3600.0

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_TYPES = {
    ".css": "text/css", ".js": "text/javascript", ".woff2": "font/woff2",
    ".svg": "image/svg+xml", ".png": "image/png", ".html": "text/html",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The PatternFly fonts every page uses (body text, bold text, titles): preloaded by the shell,
#: so they are there when the fragment arrives instead of being found (and laid out again) then.
PRELOAD_FONTS = tuple("vendor/patternfly/assets/fonts/%s.woff2" % name for name in (
    "RedHatText/RedHatText-Regular", "RedHatText/RedHatText-Medium",
    "RedHatDisplay/RedHatDisplay-Medium"))
#: An asset asked with the ``?v=`` of its current content never changes at that address.
IMMUTABLE = "public, max-age=31536000, immutable"


class UiPages:
    """The page handlers bound to one data ``source`` (see :func:`setup_ui`)."""

    def __init__(self, source: Any, *, prefix: str, refresh_s: int, window_s: float,
                 clock: Callable[[], float]) -> None:
        self.source = source
        self.ui = prefix.rstrip("/") + "/ui"
        self.refresh_s = refresh_s
        self.window_s = window_s
        self.clock = clock
        self.env = rendering.make_environment()
        self.env.globals["ui_prefix"] = self.ui
        self.env.globals["api_prefix"] = prefix.rstrip("/") + "/api/v1"
        self.versions = rendering.static_versions()

    # -- helpers ---------------------------------------------------------------------------

    def static_url(self, name: str) -> str:
        return "%s/static/%s?v=%s" % (self.ui, name, self.versions.get(name, "0"))

    def _html(self, body: str, status: int = 200, *, cache: bool = False) -> web.Response:
        response = web.Response(text=body, status=status, content_type="text/html",
                                charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache" if cache else "no-store"
        return response

    def _message(self, status: int, title: str, body: str) -> web.Response:
        html = rendering.render(self.env, "message_fragment.html", status=status, title=title,
                                body=body)
        return self._html(html, status)

    def not_found(self, what: str) -> web.Response:
        return self._message(
            404, "%s not found" % what,
            "It does not exist, or your oVirt account may not see it. Select another one in the "
            "web admin, or ask an administrator for a permission on it.")

    def signed_out(self) -> web.Response:
        """The 401 fragment: the page script shows it and stops refreshing until the web admin
        hands the page a new token."""
        html = rendering.render(
            self.env, "message_fragment.html", status=401,
            title="Sign in to oVirt again",
            body="Your oVirt session has ended (it expired, or you were logged out), or this "
                 "page was opened outside the web admin, so vmdiag may not show diagnostics. "
                 "Sign in to the web admin again. Reopen this tab from the oVirt web admin if "
                 "it does not show the diagnostics then.",
            action_url=SIGN_IN_URL, action_text="Sign in again")
        return self._html(html, 401)

    async def _authenticate(self, request: web.Request) -> Tuple[Any, web.Response | None]:
        try:
            return await self.source.authenticate(request), None
        except web.HTTPUnauthorized:
            return None, self.signed_out()
        except web.HTTPForbidden:
            return None, self._message(
                403, "Access denied", "Your oVirt account may not use vmdiag diagnostics.")

    def shell(self, kind: str, title: str, fragment_url: str) -> web.Response:
        html = rendering.render(
            self.env, "shell.html", kind=kind, title=title, fragment_url=fragment_url,
            refresh_s=self.refresh_s, static_url=self.static_url,
            preload_fonts=["%s/static/%s" % (self.ui, f) for f in PRELOAD_FONTS]
            if fragment_url else [])
        return self._html(html, cache=True)

    # -- page shells (no data, no authentication) -------------------------------------------

    async def vm_page(self, request: web.Request) -> web.Response:
        vm_id = request.match_info["vm_id"]
        if not is_uuid(vm_id):
            return self.shell("missing", "Virtual machine", "")
        return self.shell("vm", "Virtual machine", "%s/vms/%s/fragment" % (self.ui, vm_id))

    async def host_page(self, request: web.Request) -> web.Response:
        host_id = request.match_info["host_id"]
        if not is_uuid(host_id):
            return self.shell("missing", "Host", "")
        return self.shell("host", "Host", "%s/hosts/%s/fragment" % (self.ui, host_id))

    async def fleet_page(self, request: web.Request) -> web.Response:
        return self.shell("fleet", "Fleet", "%s/fleet/fragment" % self.ui)

    async def select_page(self, request: web.Request) -> web.Response:
        """What a detail tab shows before the plugin knows the selection (no data, no token)."""
        kind = request.match_info["kind"]
        what = {"vm": "virtual machine", "host": "host"}.get(kind)
        if what is None:
            raise web.HTTPNotFound()
        html = rendering.render(self.env, "select.html", what=what, static_url=self.static_url)
        return self._html(html, cache=True)

    # -- fragments (authenticated) ------------------------------------------------------------

    async def vm_fragment(self, request: web.Request) -> web.Response:
        try:
            return await self._vm_fragment(request)
        except web.HTTPUnauthorized:  # the token stopped working meanwhile
            return self.signed_out()

    async def _vm_fragment(self, request: web.Request) -> web.Response:
        user, denied = await self._authenticate(request)
        if denied is not None:
            return denied
        vm_id = request.match_info["vm_id"]
        if not is_uuid(vm_id):
            return self.not_found("Virtual machine")
        doc = await self.source.vm_document(user, vm_id)
        if not isinstance(doc, dict):
            return self.not_found("Virtual machine")
        now = self.clock()
        histories = await self._histories(user, vm_id, history_metrics(doc), now)
        view = build_vm_view(doc, histories, now, self.window_s)
        html = rendering.render(self.env, "vm_fragment.html", v=view, now=now)
        return self._html(html)

    async def _histories(self, user: Any, vm_id: str, metrics: Any,
                         now: float) -> Dict[str, dict | None]:
        """Fetch the charted series together; one failing series costs one chart, not the page."""
        since = now - self.window_s
        results = await asyncio.gather(
            *(self.source.history(user, vm_id, metric, since, now) for metric in metrics),
            return_exceptions=True)
        histories: Dict[str, dict | None] = {}
        for metric, result in zip(metrics, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.warning("history of %s for VM %s failed: %s", metric, vm_id, result)
                histories[metric] = None
            else:
                histories[metric] = result if isinstance(result, dict) else None
        return histories

    async def host_fragment(self, request: web.Request) -> web.Response:
        try:
            return await self._host_fragment(request)
        except web.HTTPUnauthorized:  # the token stopped working meanwhile
            return self.signed_out()

    async def _host_fragment(self, request: web.Request) -> web.Response:
        user, denied = await self._authenticate(request)
        if denied is not None:
            return denied
        host_id = request.match_info["host_id"]
        if not is_uuid(host_id):
            return self.not_found("Host")
        query = parse_query(request.query)
        summary = await self.source.host_list(user, host_id, query)
        if not isinstance(summary, dict):
            return self.not_found("Host")
        now = self.clock()
        view = build_host_view(summary, host_id, query, now)
        return self._html(rendering.render(self.env, "host_fragment.html", v=view, now=now))

    async def fleet_fragment(self, request: web.Request) -> web.Response:
        try:
            return await self._fleet_fragment(request)
        except web.HTTPUnauthorized:  # the token stopped working meanwhile
            return self.signed_out()

    async def _fleet_fragment(self, request: web.Request) -> web.Response:
        user, denied = await self._authenticate(request)
        if denied is not None:
            return denied
        # The service filters, counts, sorts and pages; the page gets one page of rows.
        query = parse_query(request.query)
        summary = await self.source.fleet_list(user, query)
        now = self.clock()
        view = build_fleet_view(summary if isinstance(summary, dict) else {}, query, now)
        return self._html(rendering.render(self.env, "fleet_fragment.html", v=view, now=now))

    # -- static files ------------------------------------------------------------------------

    async def static(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        root = rendering.STATIC_DIR
        try:
            path = (root / relative).resolve()
        except (OSError, RuntimeError):
            raise web.HTTPNotFound() from None
        if root not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        # The pages ask for their own assets with ?v=<content hash> (static_url) and fonts by
        # the stylesheet's relative URLs: an address that names the current content is cached
        # for good, fonts for a day; anything else is revalidated (ETag, Last-Modified:
        # aiohttp's FileResponse).
        # A precompressed sibling (<name>.gz, made by the vendoring script) is served to a
        # browser that accepts gzip, by FileResponse as well.
        version = request.query.get("v")
        if version is not None and version == self.versions.get(relative):
            cache = IMMUTABLE
        elif path.suffix == ".woff2":
            cache = "public, max-age=86400"  # fonts change with the vendored PatternFly only
        else:
            cache = "no-cache"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": cache,
                   "Content-Type": STATIC_TYPES.get(path.suffix, "application/octet-stream")}
        return web.FileResponse(path, headers=headers)


def setup_ui(
    app: web.Application,
    source: Any,
    *,
    prefix: str = PREFIX,
    refresh_s: int = DEFAULT_REFRESH_S,
    window_s: float = DEFAULT_WINDOW_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Register the Diagnostics pages and their static files on ``app``.

    ``source`` provides ``async authenticate(request) -> user`` (raising
    ``web.HTTPUnauthorized``), ``async vm_document(user, vm_id)``, ``async fleet_list(user,
    query)``, ``async host_list(user, host_id, query)`` (``query`` a ``service.listing.
    ListQuery``; the answer a ``listing.select`` document over what the user may see) and
    ``async history(user, vm_id, metric, since, until)``; the ``*_document``/``host_list``/
    ``history`` calls return None for anything the user may not see. ``prefix`` is the
    service's URL prefix (``[api] prefix``; the pages
    live under ``<prefix>/ui/`` and the UI plugin's ``basePath`` must equal it), ``refresh_s``
    is how often an open page refreshes itself and ``window_s`` how much history the charts
    show.

    Example::

        app = web.Application()
        setup_ui(app, service_source)
    """
    pages = UiPages(source, prefix=prefix, refresh_s=refresh_s, window_s=window_s, clock=clock)
    ui = pages.ui
    router = app.router
    router.add_get(ui + "/vms/{vm_id}", pages.vm_page)
    router.add_get(ui + "/vms/{vm_id}/fragment", pages.vm_fragment)
    router.add_get(ui + "/hosts/{host_id}", pages.host_page)
    router.add_get(ui + "/hosts/{host_id}/fragment", pages.host_fragment)
    router.add_get(ui + "/fleet", pages.fleet_page)
    router.add_get(ui + "/fleet/fragment", pages.fleet_fragment)
    router.add_get(ui + "/select/{kind}", pages.select_page)
    router.add_get(ui + "/static/{path:.+}", pages.static)
