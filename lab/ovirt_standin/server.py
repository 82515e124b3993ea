"""The stand-in engine: an aiohttp HTTPS server on loopback, run in its own thread.

It runs in a thread with its own event loop so tests may call blocking clients (ovirtsdk4 uses
pycurl) from anywhere, including from a test's own event loop through an executor.

Contracts followed (checked against oVirt's sources):

* SSO: ``POST /ovirt-engine/sso/oauth/token`` (form: grant_type=password, scope=ovirt-app-api,
  username, password) answers JSON ``{"access_token", "scope", "exp", "token_type"}``, or
  ``{"error_code", "error"}`` with status 400; ``POST /ovirt-engine/services/sso-logout``
  (form: scope, token) revokes a token.
* REST: ``Authorization: Bearer <token>``; 401 without a valid token. ``Filter: true`` makes
  the engine answer only with objects the user has permissions on; a user who is not an
  administrator gets 403 without it. A VM that is not visible is 404 ("Entity not found").
* ``follow=host,cluster`` inlines the linked entities the user may see.
* ``GET /vms`` pages as the engine does: ``max`` (at most that many VMs) and, in ``search``,
  ``sortby name [asc|desc]`` and ``page N`` (the N-th ``max`` of the sorted matches).
* ``GET /permissions`` (the system's permissions) needs an unfiltered query, so it answers an
  administrator and refuses anybody else with 403: oVirt's VM portal asks exactly this to tell
  an administrator (who is shown every VM) from a user.
* Speed: ``request_cost_s`` per request and ``vm_cost_s`` per VM an answer carries, slept on
  the stand-in's own loop (so concurrent requests overlap, as on the engine's thread pool).
  Both 0 by default (tests); ``REAL_ENGINE_SPEED`` holds the figures of a real engine and
  docs/engine.md where they come from.
* ``POST /ovirt-engine/api/events``: origin, severity, custom_id and description are required
  (``BackendEventsResource.add`` -> 400 "Incomplete parameters"); origin "oVirt" is illegal and a
  repeated (origin, custom_id) pair is refused (``AddExternalEventCommand.validate`` -> 409).
  custom_id is the engine's ``int`` audit-log column, so it must fit in 32 signed bits.
* ``/vmdiag/`` is proxied to the vmdiag service, as the engine's Apache does in production.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import itertools
import secrets
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, List, Set

import aiohttp
from aiohttp import web

from . import xmldocs as xml

SEVERITIES = ("normal", "warning", "error", "alert")
INT32_MAX = 2**31 - 1
#: A real engine's cost of an API request and of each VM a VM list carries (docs/engine.md,
#: "The stand-in engine's speed", for the sources): StandinEngine(..., **REAL_ENGINE_SPEED).
REAL_ENGINE_SPEED = {"request_cost_s": 0.05, "vm_cost_s": 0.0005}
SUPERUSER_ROLE = "00000000-0000-0000-0000-000000000001"  # the engine's SuperUser role id


@dataclass
class StandinUser:
    name: str
    password: str
    user_id: str
    admin: bool = False
    can_add_events: bool = False
    vms: Set[str] = field(default_factory=set)
    hosts: Set[str] = field(default_factory=set)


class StandinEngine:
    """A configurable stand-in for the oVirt engine.

    Fixture API (thread-safe enough for tests: plain dict updates under the GIL)::

        engine = StandinEngine(pki.server(), pki.ca_file); engine.start()
        engine.add_cluster("c1", "Default"); engine.add_host("h1", "host1", "c1")
        engine.add_vm(vm_id, "web1", host_id="h1", cluster_id="c1")
        alice = engine.add_user("alice@internal", "pw", vms=[vm_id])
        token = engine.issue_token("alice@internal")
        engine.url          # https://127.0.0.1:<port>/ovirt-engine/api
        engine.events       # events accepted, in order
        engine.stop(); engine.start()   # an outage, same port
    """

    def __init__(self, server_cert: Any, ca_file: str, host: str = "127.0.0.1",
                 request_cost_s: float = 0.0, vm_cost_s: float = 0.0) -> None:
        self.server_cert = server_cert
        self.ca_file = ca_file
        self.host = host
        self.request_cost_s = request_cost_s
        self.vm_cost_s = vm_cost_s
        self.port = 0
        self.users: Dict[str, StandinUser] = {}
        self.tokens: Dict[str, str] = {}
        self.revoked: List[str] = []
        self.vms: Dict[str, Dict[str, Any]] = {}
        self.hosts: Dict[str, Dict[str, Any]] = {}
        self.clusters: Dict[str, Dict[str, Any]] = {}
        self.events: List[Dict[str, Any]] = []
        self.rejected_events: List[Dict[str, Any]] = []
        self.requests: List[Dict[str, Any]] = []
        self.vmdiag_upstream: str | None = None
        self._vm_bytes_cache: Dict[Any, Any] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- fixture API ------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return "https://%s:%d" % (self.host, self.port)

    @property
    def url(self) -> str:
        return self.base + "/ovirt-engine/api"

    def add_cluster(self, cluster_id: str, name: str) -> None:
        self.clusters[cluster_id] = {"id": cluster_id, "name": name}

    def add_host(self, host_id: str, name: str, cluster_id: str,
                 address: str | None = None) -> None:
        self.hosts[host_id] = {"id": host_id, "name": name, "cluster_id": cluster_id,
                               "address": address or name}

    def add_vm(self, vm_id: str, name: str, host_id: str | None, cluster_id: str,
               status: str = "up") -> None:
        self.vms[vm_id] = {"id": vm_id, "name": name, "host_id": host_id,
                           "cluster_id": cluster_id, "status": status}

    def add_user(self, name: str, password: str, admin: bool = False,
                 can_add_events: bool = False, vms: Any = (), hosts: Any = ()) -> StandinUser:
        user = StandinUser(name, password, "u%04d" % next(self._ids), admin, can_add_events,
                           set(vms), set(hosts))
        self.users[name] = user
        return user

    def issue_token(self, username: str) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = username
        return token

    def revoke(self, token: str) -> None:
        if self.tokens.pop(token, None) is not None:
            self.revoked.append(token)

    def proxy_vmdiag(self, upstream: str) -> None:
        """Forward ``/vmdiag/...`` to ``upstream`` (e.g. http://127.0.0.1:8790), like Apache."""
        self.vmdiag_upstream = upstream.rstrip("/")

    def requests_to(self, prefix: str) -> List[Dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"].startswith(prefix)]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving (again, on the same port after ``stop``)."""
        ready = threading.Event()
        errors: List[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as err:  # reported to the caller of start()
                errors.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="ovirt-standin", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("the stand-in engine did not start within 15 s")
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop = None
        self._thread = None

    async def _start(self) -> None:
        app = web.Application(client_max_size=4 << 20)
        app.router.add_post("/ovirt-engine/sso/oauth/token", self._sso_token)
        app.router.add_post("/ovirt-engine/services/sso-logout", self._sso_logout)
        app.router.add_get("/ovirt-engine/api", self._api_root)
        app.router.add_get("/ovirt-engine/api/vms", self._vms)
        app.router.add_get("/ovirt-engine/api/vms/{id}", self._vm)
        app.router.add_get("/ovirt-engine/api/hosts/{id}", self._host)
        app.router.add_get("/ovirt-engine/api/clusters/{id}", self._cluster)
        app.router.add_get("/ovirt-engine/api/permissions", self._permissions)
        app.router.add_post("/ovirt-engine/api/events", self._add_event)
        app.router.add_route("*", "/vmdiag/{tail:.*}", self._proxy)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert.cert, self.server_cert.key)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx,
                           reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        # Let TLS transports finish their close_notify before the loop is closed.
        await asyncio.sleep(0.25)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _xml(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/xml")

    def _fault(self, status: int, reason: str, detail: str) -> web.Response:
        return self._xml(xml.fault(reason, detail), status)

    async def _cost(self, vms: int = 0) -> None:
        """What the real engine would spend on this answer (``REAL_ENGINE_SPEED``)."""
        delay = self.request_cost_s + self.vm_cost_s * vms
        if delay > 0:
            await asyncio.sleep(delay)

    def _record(self, request: web.Request, user: StandinUser | None) -> None:
        self.requests.append({"method": request.method, "path": request.path,
                              "query": dict(request.query), "user": user and user.name,
                              "filter": request.headers.get("Filter"), "time": time.time()})

    def _authenticate(self, request: web.Request) -> StandinUser:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        username = self.tokens.get(token or "")
        user = self.users.get(username or "")
        self._record(request, user)
        if user is None:
            # The engine answers an unauthenticated API request with 401 and an HTML page.
            raise web.HTTPUnauthorized(text="<html><body>Unauthorized</body></html>",
                                       content_type="text/html")
        return user

    @staticmethod
    def _check_filter(request: web.Request, user: StandinUser) -> None:
        """Only administrators may query without ``Filter: true``; users get 403."""
        filtered = request.headers.get("Filter", "false").lower() == "true"
        if not filtered and not user.admin:
            raise web.HTTPForbidden(
                text=xml.fault_text("Operation Failed",
                               "[User is not authorized to perform this action.]"),
                content_type="application/xml")

    @staticmethod
    def _sees_vm(user: StandinUser, vm_id: str) -> bool:
        # An administrator's System-wide permission covers every VM, filtered or not.
        return user.admin or vm_id in user.vms

    @staticmethod
    def _sees_host(user: StandinUser, host_id: str) -> bool:
        return user.admin or host_id in user.hosts

    def _follow(self, request: web.Request) -> Set[str]:
        follow = {f.strip() for f in request.query.get("follow", "").split(",") if f.strip()}
        unknown = follow - {"host", "cluster"}
        if unknown:
            raise web.HTTPBadRequest(
                text=xml.fault_text("Operation Failed",
                               "The follow parameter %s is not supported by this stand-in"
                               % ",".join(sorted(unknown))),
                content_type="application/xml")
        return follow

    def _vm_xml(self, vm: Dict[str, Any], user: StandinUser, follow: Set[str]) -> ET.Element:
        inline: Dict[str, ET.Element] = {}
        if "cluster" in follow and vm["cluster_id"] in self.clusters:
            inline["cluster"] = xml.cluster_element("cluster", self.clusters[vm["cluster_id"]])
        host_id = vm.get("host_id")
        if ("host" in follow and host_id in self.hosts
                and self._sees_host(user, host_id)):
            inline["host"] = xml.host_element("host", self.hosts[host_id])
        return xml.vm_element(vm, inline)

    def _search(self, query: str) -> Any:
        """(match, sort, page) of a search: the terms, ``sortby name [asc|desc]`` (None:
        unsorted) and ``page N`` (1 when not given)."""
        terms = []
        sort: str | None = None
        page = 1
        words = query.split()
        lowered = [w.lower() for w in words]
        if "page" in lowered:
            at = lowered.index("page")
            try:
                page = int(words[at + 1])
            except (IndexError, ValueError):
                raise web.HTTPBadRequest(
                    text=xml.fault_text("Operation Failed", "page needs a number"),
                    content_type="application/xml") from None
            if page < 1:
                raise web.HTTPBadRequest(
                    text=xml.fault_text("Operation Failed", "page must be at least 1"),
                    content_type="application/xml")
            del words[at:at + 2], lowered[at:at + 2]
        if "sortby" in lowered:
            at = lowered.index("sortby")
            key = lowered[at + 1] if at + 1 < len(lowered) else ""
            if key != "name":
                raise web.HTTPBadRequest(
                    text=xml.fault_text("Operation Failed",
                                        "the stand-in sorts by name only, not %r" % key),
                    content_type="application/xml")
            end = at + 2
            sort = "asc"
            if end < len(lowered) and lowered[end] in ("asc", "desc"):
                sort = lowered[end]
                end += 1
            del words[at:end], lowered[at:end]
        query = " ".join(words)
        for term in [t.strip() for t in query.replace(" AND ", " and ").split(" and ")]:
            if not term:
                continue
            key, sep, value = term.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("name", "host", "cluster", "id", "status"):
                raise web.HTTPBadRequest(
                    text=xml.fault_text("Operation Failed",
                                   "Cannot search: the stand-in does not understand %r" % term),
                    content_type="application/xml")
            terms.append((key, value.strip().strip('"')))

        def match(vm: Dict[str, Any]) -> bool:
            host = self.hosts.get(vm.get("host_id") or "", {})
            cluster = self.clusters.get(vm["cluster_id"], {})
            fields = {"name": vm["name"], "host": host.get("name", ""), "id": vm["id"],
                      "cluster": cluster.get("name", ""), "status": vm["status"]}
            return all(fnmatch.fnmatchcase(fields[k].lower(), v.lower()) for k, v in terms)

        return match, sort, page

    # -- handlers ---------------------------------------------------------------------------

    async def _sso_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._record(request, None)
        if form.get("grant_type") != "password" or form.get("scope") != "ovirt-app-api":
            return web.json_response({"error_code": "invalid_request",
                                      "error": "grant_type=password and scope=ovirt-app-api "
                                               "are required"}, status=400)
        user = self.users.get(str(form.get("username")))
        if user is None or user.password != form.get("password"):
            return web.json_response({"error_code": "access_denied",
                                      "error": "Cannot authenticate user '%s': The username or "
                                               "password is incorrect.." % form.get("username")},
                                     status=400)
        token = self.issue_token(user.name)
        return web.json_response({"access_token": token, "scope": "ovirt-app-api",
                                  "exp": str(int((time.time() + 36000) * 1000)),
                                  "token_type": "bearer"})

    async def _sso_logout(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._record(request, None)
        self.revoke(str(form.get("token", "")))
        return web.json_response({})

    async def _api_root(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        await self._cost()
        return self._xml(xml.api_root(user.user_id))

    async def _permissions(self, request: web.Request) -> web.Response:
        """The system's permissions: only an unfiltered query may read them (403 to users)."""
        user = self._authenticate(request)
        self._check_filter(request, user)
        await self._cost()
        filtered = request.headers.get("Filter", "false").lower() == "true"
        holders = [u for u in self.users.values() if u.admin and (u is user or not filtered)]
        return self._xml(xml.collection("permissions", [
            xml.permission_element(str(n), SUPERUSER_ROLE, u.user_id)
            for n, u in enumerate(holders, 1)]))

    async def _vms(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        self._check_filter(request, user)
        follow = self._follow(request)
        match, sort, page = self._search(request.query.get("search", ""))
        vms = [vm for vm in self.vms.values() if self._sees_vm(user, vm["id"]) and match(vm)]
        if sort is not None:
            vms.sort(key=lambda vm: (vm["name"].lower(), vm["id"]), reverse=sort == "desc")
        raw_max = request.query.get("max")
        if raw_max is not None:
            try:
                most = int(raw_max)
            except ValueError:
                return self._fault(400, "Operation Failed", "max must be a number")
            if most >= 0:
                vms = vms[(page - 1) * most:page * most]
        await self._cost(len(vms))
        return self._xml(xml.collection_bytes("vms", [self._vm_bytes(vm, user, follow)
                                                     for vm in vms]))

    def _vm_bytes(self, vm: Dict[str, Any], user: StandinUser, follow: Set[str]) -> bytes:
        """``<vm>`` serialized, kept while nothing it shows changed: building 10,000 of them
        anew cost the stand-in ~1 s of CPU a list, in the process (and under the GIL) of the
        service it answers in tests and benchmarks; a real engine's cost is ``_cost``'s."""
        host = self.hosts.get(vm.get("host_id") or "")
        cluster = self.clusters.get(vm["cluster_id"])
        sees_host = host is not None and self._sees_host(user, host["id"])
        key = (vm["id"], tuple(sorted(follow)), sees_host)
        shown = (tuple(sorted(vm.items())), tuple(sorted(host.items())) if host else None,
                 tuple(sorted(cluster.items())) if cluster else None)
        kept = self._vm_bytes_cache.get(key)
        if kept is not None and kept[0] == shown:
            return kept[1]
        data = ET.tostring(self._vm_xml(vm, user, follow))
        self._vm_bytes_cache[key] = (shown, data)
        return data

    async def _vm(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        self._check_filter(request, user)
        follow = self._follow(request)
        await self._cost(1)
        vm = self.vms.get(request.match_info["id"])
        if vm is None or not self._sees_vm(user, vm["id"]):
            return self._fault(404, "Operation Failed",
                               "Entity not found: %s" % request.match_info["id"])
        return self._xml(xml.to_bytes(self._vm_xml(vm, user, follow)))

    async def _host(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        self._check_filter(request, user)
        await self._cost()
        host = self.hosts.get(request.match_info["id"])
        if host is None or not self._sees_host(user, host["id"]):
            return self._fault(404, "Operation Failed",
                               "Entity not found: %s" % request.match_info["id"])
        return self._xml(xml.to_bytes(xml.host_element("host", host)))

    async def _cluster(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        self._check_filter(request, user)
        cluster = self.clusters.get(request.match_info["id"])
        if cluster is None:
            return self._fault(404, "Operation Failed",
                               "Entity not found: %s" % request.match_info["id"])
        return self._xml(xml.to_bytes(xml.cluster_element("cluster", cluster)))

    async def _add_event(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        body = await request.read()
        try:
            root = ET.fromstring(body)
        except ET.ParseError as err:
            return self._fault(400, "Operation Failed", "Request syntactically incorrect: %s"
                               % err)
        if root.tag != "event":
            return self._fault(400, "Operation Failed", "expected <event>, got <%s>" % root.tag)
        fields = {tag: root.findtext(tag) for tag in
                  ("origin", "severity", "custom_id", "description")}
        vm, host, cluster = root.find("vm"), root.find("host"), root.find("cluster")
        record = dict(fields, vm_id=vm.get("id") if vm is not None else None,
                      host_id=host.get("id") if host is not None else None,
                      cluster_id=cluster.get("id") if cluster is not None else None,
                      user=user.name)
        missing = [name for name, value in fields.items() if value in (None, "")]
        if missing:
            self.rejected_events.append(dict(record, why="incomplete"))
            return self._fault(400, "Incomplete parameters",
                               "Event [%s] required for add" % ", ".join(missing))
        if not user.can_add_events and not user.admin:
            self.rejected_events.append(dict(record, why="forbidden"))
            return self._fault(403, "Operation Failed",
                               "[User is not authorized to perform this action.]")
        if fields["severity"] not in SEVERITIES:
            self.rejected_events.append(dict(record, why="severity"))
            return self._fault(400, "Invalid value", "%s is not a valid LogSeverity: use one "
                               "of %s" % (fields["severity"], ", ".join(SEVERITIES)))
        try:
            custom_id = int(str(fields["custom_id"]))
            if not -INT32_MAX - 1 <= custom_id <= INT32_MAX:
                raise ValueError("out of the int range")
        except ValueError:
            self.rejected_events.append(dict(record, why="custom_id"))
            return self._fault(400, "Invalid value",
                               "custom_id %r is not a 32-bit integer" % fields["custom_id"])
        if str(fields["origin"]).lower() == "ovirt":
            self.rejected_events.append(dict(record, why="origin"))
            return self._fault(409, "Operation Failed", "[Cannot add External Event. Illegal "
                               "origin for External Event : oVirt]")
        if any(e["origin"] == fields["origin"] and e["custom_id"] == custom_id
               for e in self.events):
            self.rejected_events.append(dict(record, why="duplicate"))
            return self._fault(409, "Operation Failed", "[Cannot add External Event. External "
                               "Event with the same custom ID already exists for this origin.]")
        for kind, known in (("vm", self.vms), ("host", self.hosts), ("cluster", self.clusters)):
            if record[kind + "_id"] is not None and record[kind + "_id"] not in known:
                self.rejected_events.append(dict(record, why=kind))
                return self._fault(404, "Operation Failed",
                                   "Entity not found: %s" % record[kind + "_id"])
        event = dict(record, custom_id=custom_id, id=next(self._ids),
                     time_iso=datetime.datetime.now(datetime.timezone.utc).isoformat())
        self.events.append(event)
        return self._xml(xml.event_element(event), 201)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        if self.vmdiag_upstream is None or self._session is None:
            return web.Response(status=503, text="vmdiag is not proxied in this test")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        headers["X-Forwarded-Proto"] = "https"
        try:
            async with self._session.request(
                    request.method, self.vmdiag_upstream + request.rel_url.path_qs,
                    headers=headers, data=await request.read(), allow_redirects=False) as up:
                body = await up.read()
                out = {k: v for k, v in up.headers.items()
                       if k.lower() in ("content-type", "www-authenticate", "location",
                                        "cache-control")}
                return web.Response(body=body, status=up.status, headers=out)
        except aiohttp.ClientError as err:
            # What Apache answers when the proxied service is down.
            return web.Response(status=503, text="Service Unavailable: %s" % err)

    async def _unknown(self, request: web.Request) -> web.Response:
        self._record(request, None)
        return self._fault(404, "Not Found", "the stand-in engine does not serve %s %s"
                           % (request.method, request.path))
