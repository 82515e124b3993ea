"""What a user may see, asked of the engine with the user's own token.

vmdiag holds no permission model of its own: oVirt's is authoritative (roles, groups,
inheritance from data center and cluster, quota...). For each API request the service asks
the engine "can this token see VM x?" (``GET /vms/x?follow=host,cluster`` with ``Filter:
true``; 404 = no) and "which VMs can this user see?". The names of VM, host and cluster come
from those same answers.

Which VMs a user may see (the fleet and host lists) is decided once per *user* (not per
token) and kept, refreshed in the background:

* A user whom the engine lets query without ``Filter: true`` is an administrator: oVirt's
  web admin shows them every VM, and so does vmdiag, from the service account's shared VM
  directory (``directory.VmDirectory``, refreshed every few minutes) -- one cheap request
  (``GET /permissions`` with ``Filter: false``, as oVirt's own VM portal asks it to decide
  whether a user is an administrator) instead of listing every VM for every user.
* Anybody else gets exactly what ``GET /vms?follow=host,cluster`` with ``Filter: true``
  answers them, parsed with ElementTree (``connection.get_xml``), not ovirtsdk4's objects.
  (An administrator while there is no directory: the same, unfiltered.) The list is read a
  page at a time, as oVirt's own web UI does (``max=N`` and ``search=sortby name asc page
  P``; ``pages()``): a user's first request waits for the first page only (``FIRST_PAGE``
  VMs), and the rest is read in the background, each page added to what the user is shown,
  with ``UserView.complete`` False until the last page came. Every VM shown was in one of
  the user's own filtered pages, so a partial list only ever lacks VMs, never adds one.
  A background refresh of a complete list reads every page first and then replaces the
  list whole (the user never sees a half-read refresh).
* Single VMs and hosts are asked the same way: unfiltered for an administrator (the engine's
  filtered view counts user roles only, so it could hide from them a VM their list shows),
  with ``Filter: true`` for anybody else.

A user's answer is fresh for ``ttl`` seconds; after that the next request is served the kept
one while it is read again in the background, and after ``max_age`` seconds it is not served
any more (that request waits for the engine). A permission the administrator removes
therefore takes up to ``ttl`` seconds (plus one read) to take effect for an active user, and
at most one request of up to ``max_age`` for a user who comes back. Tokens are still checked
with the engine (``identity``, cached ``ttl`` seconds per token): a token the engine refuses
is refused on every route, whatever is kept for its user.

Answers of per-VM and per-host questions are cached for ``ttl`` seconds per token, so a UI
page that makes several calls costs the engine one request.

Why ovirtsdk4 and not aiohttp against the REST API: the SDK is the engine's supported client
(SSO, TLS, its headers, fault mapping); the lists go through its connection and only skip
its object mapping. The price is that it blocks, so calls run in the thread pool given to
``Visibility`` (bounded, so a slow engine cannot exhaust the service's threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple, cast

import ovirtsdk4

from ..tasks import cancel_and_wait
from .connection import (
    EngineEndpoint,
    enum_value,
    get_xml,
    link_id,
    link_name,
    open_user_connection,
    translate,
    user_connection,
)
from .errors import EngineRefused, EngineUnavailable, NotAuthenticated

log = logging.getLogger(__name__)

Observer = Callable[[str, float, str], None]

MAX_CACHE_ENTRIES = 20000
#: The first page of a user's filtered VM list (what their first request waits for), and the
#: largest page: pages double from FIRST_PAGE up to MAX_PAGE (``pages()``). At a real
#: engine's speed (docs/engine.md) the first page costs ~0.2 s, a largest one ~1 s.
FIRST_PAGE = 250
MAX_PAGE = 2000
#: A token the engine refused is refused again without asking for this long, so a client
#: retrying a bad token cannot turn vmdiag into a load generator against the engine.
DENIED_TTL_S = 5.0


class _Denied:
    def __init__(self, error: NotAuthenticated) -> None:
        self.error = error


@dataclass(frozen=True)
class VmInfo:
    """A VM as the engine describes it to one user."""

    id: str
    name: str | None
    status: str | None
    host_id: str | None
    host_name: str | None
    cluster_id: str | None
    cluster_name: str | None

    @classmethod
    def from_sdk(cls, vm: Any) -> VmInfo:
        return cls(id=vm.id, name=vm.name, status=enum_value(vm.status),
                   host_id=link_id(vm.host), host_name=link_name(vm.host),
                   cluster_id=link_id(vm.cluster), cluster_name=link_name(vm.cluster))

    @classmethod
    def from_xml(cls, vm: ET.Element) -> VmInfo:
        """From a ``<vm>`` of the REST API (``follow=host,cluster`` inlines the names; an
        entity the reader may not see stays a bare link, so its name stays unknown)."""
        host, cluster = vm.find("host"), vm.find("cluster")
        return cls(id=vm.get("id") or "", name=vm.findtext("name"),
                   status=vm.findtext("status"),
                   host_id=host.get("id") if host is not None else None,
                   host_name=host.findtext("name") if host is not None else None,
                   cluster_id=cluster.get("id") if cluster is not None else None,
                   cluster_name=cluster.findtext("name") if cluster is not None else None)


def pages(first: int = FIRST_PAGE, most: int = MAX_PAGE) -> Iterator[Tuple[int, int]]:
    """(page, max) of the engine's search paging, in order, for consecutive slices of one
    sorted list: page P with max N is the VMs ``(P-1)*N`` to ``P*N - 1``. The size doubles
    from ``first`` to at most ``most`` (``most`` = ``first`` times a power of two), always on a
    boundary of the new size: 250 (page 1), 250 (2), 500 (2), 1000 (2), 2000 (2), 2000 (3)..."""
    start, size = 0, first
    while True:
        yield start // size + 1, size
        start += size
        if size * 2 <= most and start % (size * 2) == 0:
            size *= 2


class _Reading:
    """The state of one paged read of a user's list (blocking parts run in the executor)."""

    def __init__(self, plan: Iterator[Tuple[int, int]]) -> None:
        self.plan = plan
        #: the (page, max) to read next: the plan moves on only once a page was read
        self.pending = next(plan)
        #: one connection for all the pages of the read (no TLS handshake per page); used by
        #: one executor thread at a time, closed once the read ends (``finish``)
        self.conn: Any = None
        self.seen: Set[str] = set()
        self.done = False
        self.task: asyncio.Task | None = None
        self.error: str | None = None

    def finish(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close(logout=False)  # never revoke the user's token
            except Exception:  # noqa: BLE001 - a connection that will not close is dropped
                pass


@dataclass
class UserView:
    """The VMs one user may see: an administrator's are the shared directory's (``vms`` is
    None), anybody else's (or an administrator's while there is no directory) ``vms`` as the
    engine listed them for the user. ``complete`` is False while the pages after the first
    are still being read (``vms`` then holds the pages read so far; each page read replaces it
    with a longer list, never changes a list in place)."""

    admin: bool
    vms: List[VmInfo] | None
    read_at: float
    complete: bool = True
    reading: _Reading | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class HostInfo:
    id: str
    name: str | None
    address: str | None


def token_key(token: str) -> str:
    """Tokens are never kept as cache keys in clear (they would show up in memory dumps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Visibility:
    """Cached answers of the engine about what a token may see."""

    def __init__(self, endpoint: EngineEndpoint, executor: concurrent.futures.Executor,
                 ttl: float = 30.0, observe: Observer | None = None,
                 clock: Callable[[], float] = time.monotonic, directory: Any = None,
                 max_age: float = 600.0) -> None:
        self.endpoint = endpoint
        self.executor = executor
        self.ttl = ttl
        self.max_age = max(max_age, ttl)
        self.observe = observe
        self.clock = clock
        #: the shared ``VmDirectory`` (administrators' lists); None: every user is listed
        self.directory = directory
        self._cache: Dict[Tuple[str, str, str], Tuple[float, Any]] = {}
        self._inflight: Dict[Tuple[str, str, str], asyncio.Future] = {}
        self._views: Dict[str, UserView] = {}
        self._refreshing: Dict[str, asyncio.Task] = {}

    async def identity(self, token: str) -> str:
        """The engine's id of the token's user; raises NotAuthenticated for a bad token."""
        return await self._cached("identity", token, "", lambda: self._identity(token))

    async def vm(self, token: str, vm_id: str) -> VmInfo | None:
        """The VM if the token may see it, else None (it does not exist or is not visible).
        An administrator is asked unfiltered, as their fleet list is (the engine's filtered
        view counts user roles only), anybody else with ``Filter: true``."""
        admin = await self.admin(token)
        return await self._cached("vm", token, vm_id,
                                  lambda: self._get_vm(token, vm_id, not admin))

    async def admin(self, token: str) -> bool:
        """Whether the token's user may query unfiltered (from the user's kept view if any)."""
        view = self._views.get(await self._user_key(token))
        if view is not None:
            return view.admin
        return bool(await self._cached("admin", token, "", lambda: self._sees_all(token)))

    async def vms(self, token: str, complete: bool = False) -> List[VmInfo]:
        """The VMs the token's user may see (see the module docstring): with ``complete``,
        all of them (waits for a list still being read), else what was read so far."""
        return (await self.listed(token, complete))[0]

    async def listed(self, token: str, complete: bool = False) -> Tuple[List[VmInfo], bool]:
        """(the VMs the token's user may see, whether that is all of them): the list is
        incomplete while the user's first list is still being read from the engine page by
        page (``complete``: wait until it is not)."""
        user_id = await self._user_key(token)
        view = self._views.get(user_id)
        now = self.clock()
        if view is None or now - view.read_at >= self.max_age:
            view = await self._cached("view", token, user_id, lambda: self._read_view(token),
                                      in_loop=True)
            self._keep(user_id, view)
            if not view.complete:
                self._read_rest(token, view)
        elif now - view.read_at >= self.ttl or (
                not view.complete and view.reading is not None and view.reading.error):
            # stale, or its first read stopped half-way (a page failed): read it again
            self._refresh_later(token, user_id)
        if complete and not view.complete:
            await asyncio.shield(self._read_rest(token, view))
            if not view.complete:
                raise EngineUnavailable("the engine stopped answering while listing the VMs "
                                        "the user may see: %s" % (
                                            view.reading.error if view.reading else "?"))
        return self._listing(view), view.complete

    def _read_rest(self, token: str, view: UserView) -> asyncio.Task:
        """Read the pages of ``view`` after the first, in the background (once per view):
        each page extends ``view.vms`` (a new list), the last one marks it complete."""
        reading = view.reading
        assert reading is not None
        if reading.task is not None and not (reading.task.done() and reading.error):
            return reading.task

        async def run() -> None:
            loop = asyncio.get_running_loop()
            reading.error = None
            try:
                while not reading.done:
                    page = await loop.run_in_executor(
                        self.executor, self._next_page, token, reading, not view.admin)
                    if page:
                        view.vms = list(view.vms or ()) + page
                view.complete = True
            except asyncio.CancelledError:
                reading.finish()
                raise
            except NotAuthenticated as err:
                reading.error = str(err)  # this token is refused now; another reads anew
            except Exception as err:  # noqa: BLE001 - kept as it is, read again on next ask
                reading.error = str(err)
                log.info("reading the VMs a user may see stopped after %d (%s); the next "
                         "request reads them again", len(view.vms or ()), err)

        reading.task = asyncio.get_running_loop().create_task(
            run(), name="vmdiag-visibility-pages")
        return reading.task

    async def _user_key(self, token: str) -> str:
        """Whose view a token's is: the engine's user id; an engine that names no user keeps
        one view per token, never one shared by every token it did not name."""
        user_id = await self.identity(token)
        return ("user:" + user_id) if user_id else ("token:" + token_key(token))

    def _listing(self, view: UserView) -> List[VmInfo]:
        if view.vms is None and self.directory is not None:
            return self.directory.vms()
        return view.vms or []

    def current(self, vms: List[VmInfo]) -> bool:
        """Whether ``vms`` is a list some user is shown now (the directory's or a kept one)."""
        directory = self.directory
        if directory is not None and directory.vms() is vms:
            return True
        return any(view.vms is vms for view in list(self._views.values()))

    def _keep(self, user_id: str, view: UserView) -> None:
        kept = self._views.get(user_id)
        if (kept is not None and kept.vms is not None and view.vms is not None
                and kept.vms == view.vms):
            # the same VMs as before: the same list, so what was derived from it (by
            # identity, documents.PreparedList) stays valid
            view.vms = kept.vms
        if kept is None or kept.read_at <= view.read_at:
            if len(self._views) >= MAX_CACHE_ENTRIES and kept is None:
                self._views.clear()
            self._views[user_id] = view

    def _refresh_later(self, token: str, user_id: str) -> None:
        """Read the user's view again in the background (once at a time per user)."""
        running = self._refreshing.get(user_id)
        if running is not None and not running.done():
            return

        async def refresh() -> None:
            try:
                view = await self._cached("view", token, user_id,
                                          lambda: self._read_view(token), in_loop=True)
                if not view.complete:
                    # every page first: the list shown is replaced whole, never half-read
                    await self._read_rest(token, view)
                    if not view.complete:
                        raise EngineUnavailable(
                            view.reading.error if view.reading else "incomplete")
                self._keep(user_id, view)
            except NotAuthenticated:
                pass  # that token is refused from now on; the user's next token reads anew
            except Exception as err:  # noqa: BLE001 - the kept view stays until max_age
                log.info("could not refresh what user %s may see (%s); the last answer is "
                         "kept for up to %.0f s", user_id, err, self.max_age)
            finally:
                self._refreshing.pop(user_id, None)

        self._refreshing[user_id] = asyncio.get_running_loop().create_task(
            refresh(), name="vmdiag-visibility-refresh")

    async def close(self) -> None:
        """Stop background refreshes (the service is stopping)."""
        tasks = list(self._refreshing.values()) + [
            view.reading.task for view in self._views.values()
            if view.reading is not None and view.reading.task is not None]
        await cancel_and_wait(*tasks)

    async def host(self, token: str, host_id: str) -> HostInfo | None:
        admin = await self.admin(token)
        return await self._cached("host", token, host_id,
                                  lambda: self._get_host(token, host_id, not admin))

    def forget(self, token: str | None = None) -> None:
        """Drop cached answers (of one token, or all: then every user's view too)."""
        if token is None:
            self._cache.clear()
            self._views.clear()
            return
        digest = token_key(token)
        for key in [k for k in self._cache if k[1] == digest]:
            del self._cache[key]

    async def _cached(self, kind: str, token: str, arg: str, fetch: Callable[[], Any],
                      in_loop: bool = False) -> Any:
        """``fetch()``'s answer, cached ``ttl`` seconds per token and shared by concurrent
        callers; ``fetch`` blocks (run in the executor), or with ``in_loop`` returns an
        awaitable (which runs its blocking parts in the executor itself)."""
        key = (kind, token_key(token), arg)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], _Denied):
                raise NotAuthenticated(str(hit[1].error))
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._inflight[key] = future
        started = time.monotonic()
        outcome = "error"
        try:
            value = await (fetch() if in_loop else loop.run_in_executor(self.executor, fetch))
            outcome = "ok"
            self._store(key, value, now)
            future.set_result(value)
            return value
        except NotAuthenticated as err:
            # The engine no longer accepts the token (revoked, expired): forget every answer
            # cached for it, so no route keeps serving it, and refuse it at once for a while.
            self.forget(token)
            denied = _Denied(err)
            self._store(key, denied, now, min(self.ttl, DENIED_TTL_S))
            self._store(("identity", key[1], ""), denied, now, min(self.ttl, DENIED_TTL_S))
            future.set_exception(err)
            future.exception()
            raise
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved here, so a future nobody awaited does not warn
            raise
        finally:
            del self._inflight[key]
            if self.observe is not None:
                self.observe(kind, time.monotonic() - started, outcome)

    def _store(self, key: Tuple[str, str, str], value: Any, now: float,
               ttl: float | None = None) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            for old in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                del self._cache[old]
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()
        self._cache[key] = (now + (self.ttl if ttl is None else ttl), value)

    # -- blocking parts, run in the executor ------------------------------------------------

    def _identity(self, token: str) -> str:
        with user_connection(self.endpoint, token) as conn:
            api = translate(conn.system_service().get, "checking the SSO token")
            user = api.authenticated_user
            return str(getattr(user, "id", None) or "")

    def _get_vm(self, token: str, vm_id: str, filtered: bool = True) -> VmInfo | None:
        with user_connection(self.endpoint, token, filtered) as conn:
            service = conn.system_service().vms_service().vm_service(vm_id)
            try:
                vm = translate(lambda: service.get(follow="host,cluster"),
                               "checking access to VM %s" % vm_id)
            except ovirtsdk4.NotFoundError:
                return None
            return VmInfo.from_sdk(vm)

    async def _read_view(self, token: str) -> UserView:
        """What the user may see: asks whether they are an administrator and, at the same
        time, for the first page of their filtered list (one round trip to the engine less
        for a user; an administrator's page is not used, one small request per new
        administrator and ``max_age``)."""
        loop = asyncio.get_running_loop()
        read_at = self.clock()
        reading = _Reading(pages())
        probe = loop.run_in_executor(self.executor, self._sees_all, token)
        page = loop.run_in_executor(self.executor, self._next_page, token, reading, True)
        answers = await asyncio.gather(probe, page, return_exceptions=True)
        if isinstance(answers[0], BaseException):
            reading.finish()
            raise answers[0]
        admin = bool(answers[0])
        directory = self.directory
        if admin and directory is not None and directory.refreshed_at is not None:
            reading.finish()  # the page (or its failure) is not needed
            return UserView(True, None, read_at)
        if isinstance(answers[1], BaseException):
            reading.finish()
            raise answers[1]
        first = cast(List[VmInfo], answers[1])
        if admin:
            reading.finish()
            # no directory: an administrator's own list, unfiltered
            reading = _Reading(pages())
            first = await loop.run_in_executor(self.executor, self._next_page, token,
                                               reading, False)
        return UserView(admin, first, read_at, complete=reading.done, reading=reading)

    def _next_page(self, token: str, reading: _Reading, filtered: bool = True
                   ) -> List[VmInfo]:
        """The next page of the user's list (VMs not seen on an earlier page: a VM renamed
        meanwhile may move between pages); marks the read done after a short page."""
        page, most = reading.pending
        if reading.conn is None:
            reading.conn = open_user_connection(self.endpoint, token, filtered)
        try:
            root = get_xml(reading.conn, "/vms", "listing the VMs the user may see",
                           {"follow": "host,cluster", "max": str(most),
                            "search": "sortby name asc page %d" % page})
        except BaseException:
            reading.finish()
            raise
        listed = root.findall("vm") if root is not None else []
        reading.pending = next(reading.plan)
        if len(listed) < most:
            reading.done = True
            reading.finish()
        out = []
        for vm in (VmInfo.from_xml(e) for e in listed):
            if vm.id and vm.id not in reading.seen:
                reading.seen.add(vm.id)
                out.append(vm)
        return out

    def _sees_all(self, token: str) -> bool:
        """Whether the engine lets the token's user query without ``Filter: true`` (an
        administrator, whom oVirt's web admin shows every VM). The same question oVirt's VM
        portal asks (``GET /permissions`` with ``Filter: false``): a user gets 403."""
        with user_connection(self.endpoint, token, filtered=False) as conn:
            try:
                get_xml(conn, "/permissions", "asking whether the user is an administrator")
            except EngineRefused as err:
                if err.code is not None and 400 <= err.code < 500:
                    return False
                raise
            return True

    def _get_host(self, token: str, host_id: str, filtered: bool = True) -> HostInfo | None:
        with user_connection(self.endpoint, token, filtered) as conn:
            service = conn.system_service().hosts_service().host_service(host_id)
            try:
                host = translate(service.get, "checking access to host %s" % host_id)
            except ovirtsdk4.NotFoundError:
                return None
            return HostInfo(id=host.id, name=host.name, address=host.address)
