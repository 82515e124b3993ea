"""The JSON documents of the API (VM, fleet, host, history), built for one user.

``DocumentSource`` is shared by the JSON API and the UI pages (``engine_plugin.ui.setup_ui``),
so both show exactly the same thing. Every method first asks oVirt what the user may see;
anything else is ``None`` (the API answers 404, as for a VM that does not exist). Names of VMs,
hosts and clusters come from oVirt's answers, diagnostics from the store.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Tuple, TypeVar, cast

from aiohttp import web

from diag_protocol import is_uuid
from diag_protocol.units import metric_unit
from diag_protocol.vocabulary import finding, findings_of, status_of

from ..ovirt import NotAuthenticated, Visibility, VmInfo
from ..ovirt.events import KEY_PATTERNS
from . import patterns
from .evaluation import heard_at
from .listing import (
    Key,
    ListError,
    ListQuery,
    facets,
    ordered,
    parse_list_query,
    select,
)

F = TypeVar("F", bound=Callable[..., Any])
DOWN_STATUSES = ("down", "suspended", "image_locked")
MAX_FINDINGS = 3
#: Above this many VMs, summaries are read in one scan rather than by lists of ids.
IN_LIST_LIMIT = 2000
MAX_HISTORY_SPAN_S = 400 * 86400.0
#: A fleet list of more than ``IN_LIST_LIMIT`` VMs is answered from rows prepared from one
#: scan of the store (rows, search texts, patterns, filter choices, orders), kept per list of
#: VMs a user may see: used as they are for this long, then served while they are prepared
#: again in the background...
LIST_FRESH_S = 20.0
#: ... and no longer served after this long (the request waits for new rows).
LIST_MAX_AGE_S = 60.0
MAX_PREPARED_LISTS = 16
#: Lists asked for within this long are prepared again every LIST_MAX_AGE_S / 2 in the
#: background (``keep_fresh``), so a user who comes back within it never waits for rows.
LIST_KEEP_S = 900.0

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A query parameter the API cannot use; the message says what is allowed."""


@dataclass(frozen=True)
class User:
    """An authenticated caller: the SSO token (used to ask oVirt) and the engine's user id."""

    token: str
    user_id: str

    def __repr__(self) -> str:  # never print tokens
        return "User(%s)" % self.user_id


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


#: What a caller whose token the engine stopped accepting is told, on every route.
SIGNED_OUT = ("the engine does not accept this SSO token (expired, revoked or logged out); "
              "log in to the engine again")


def unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text='{"error": {"code": "unauthorized", "message": "%s"}}' % message.replace('"', "'"),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="vmdiag"'})


def _token_may_expire(method: F) -> F:
    """A token checked at the start of a request may stop working before its end (revoked,
    expired): the engine then refuses it, and the caller gets the same 401 as at the start."""
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except NotAuthenticated:
            raise unauthorized(SIGNED_OUT) from None
    return cast(F, wrapper)


@dataclass
class PreparedList:
    """The rows of one list of visible VMs, prepared once for many requests."""

    vms: List[VmInfo]              # the very list they were built from (its identity counts)
    built_at: float
    rows: List[Dict[str, Any]]
    texts: Dict[str, str]
    found: Dict[str, Any]
    row_facets: Dict[str, List[Dict[str, Any]]]
    orders: Dict[Tuple[str, str], List[Tuple[Key, Any]]] = field(default_factory=dict)

    def in_order(self, sort: str, direction: str) -> List[Tuple[Key, Any]]:
        key = (sort, direction)
        if key not in self.orders:
            self.orders[key] = ordered(self.rows, sort, direction)
        return self.orders[key]


class DocumentSource:
    """Builds the API documents for a user (see the module docstring)."""

    def __init__(self, store: Any, visibility: Visibility,
                 executor: concurrent.futures.Executor, thresholds_for: Callable[..., Any],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.visibility = visibility
        self.executor = executor
        self.thresholds_for = thresholds_for
        self.clock = clock
        self._prepared: collections.OrderedDict[int, PreparedList] = collections.OrderedDict()
        self._preparing: Dict[int, asyncio.Future] = {}
        #: the last prepared list of the shared directory (every administrator's)
        self._shared: PreparedList | None = None
        self._used: Dict[int, float] = {}  # id(vms) -> when a request last asked for it

    async def _store(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, getattr(self.store, method), *args)

    # -- authentication ---------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> User:
        """The caller, from ``Authorization: Bearer <oVirt SSO token>``; else HTTP 401."""
        token = bearer_token(request)
        if token is None:
            raise unauthorized("send Authorization: Bearer <oVirt SSO token>")
        try:
            user_id = await self.visibility.identity(token)
        except NotAuthenticated:
            raise unauthorized(SIGNED_OUT) from None
        return User(token=token, user_id=user_id)

    # -- VM ---------------------------------------------------------------------------------

    @_token_may_expire
    async def vm_document(self, user: User, vm_id: str) -> Dict[str, Any] | None:
        if not is_uuid(vm_id):
            return None
        vm = await self.visibility.vm(user.token, vm_id)
        if vm is None:
            return None
        latest = await self._store("latest", vm_id)
        rows = await self._store("summaries", [vm_id])
        row = rows[0] if rows else None
        verdict = (row.verdict if row is not None else None) or {}
        received_at = latest.received_at if latest is not None else None
        active = await self._store("event_state", KEY_PATTERNS)
        return {
            "vm": vm_block(vm),
            "agent": self._agent(vm, row, heard_at(latest)),
            "health": health_block(verdict),
            "forecasts": list(verdict.get("forecasts") or []),
            "report": latest.report if latest is not None else None,
            "received_at": received_at,
            "patterns": patterns_of_vm(vm, verdict, (active or {}).get("active") or {}),
        }

    def _agent(self, vm: VmInfo, row: Any, heard: float | None) -> Dict[str, Any]:
        """``heard``: when the engine last received a report of the VM (its own clock)."""
        now = self.clock()
        silent_for = now - heard if heard is not None else None
        if vm.status in DOWN_STATUSES:
            state = "vm_down"
        elif heard is None:
            state = "not_installed"
        elif silent_for is not None and silent_for > self.thresholds_for(
                vm_id=vm.id, vm_name=vm.name, cluster=vm.cluster_name).silence_s:
            state = "silent"
        else:
            state = "reporting"
        return {"state": state, "version": getattr(row, "agent_version", None),
                "last_report_at": heard, "silent_for_s": silent_for}

    # -- fleet and host ---------------------------------------------------------------------

    @_token_may_expire
    async def fleet_summary(self, user: User, filters: Mapping[str, Any],
                            complete: bool = False) -> Dict[str, Any]:
        """Every VM the user may see, with health: ``filters`` are the API's list parameters
        (health, host, cluster, q, sort, dir, per_page, page, cursor; ``listing``)."""
        return await self.fleet_list(user, list_query(filters), complete)

    @_token_may_expire
    async def fleet_list(self, user: User, query: ListQuery, complete: bool = False
                         ) -> Dict[str, Any]:
        """The list document (``listing.select``) over every VM the user may see, or, while
        the user's first list is still being read from the engine (and not ``complete``:
        wait for it), over those read so far; ``visible`` says which (``visible_block``)."""
        vms, whole = await self.visibility.listed(user.token, complete)
        doc = await self._fleet_doc(vms, query)
        doc["visible"] = visible_block(vms, whole)
        return doc

    async def _fleet_doc(self, vms: List[VmInfo], query: ListQuery) -> Dict[str, Any]:
        if len(vms) > IN_LIST_LIMIT:
            prepared = await self._prepared_list(vms)
            try:
                doc = select(prepared.rows, query, lambda row: prepared.texts[row["id"]],
                             prepared.in_order(query.sort, query.dir), prepared.row_facets)
            except ListError as err:  # a cursor that does not fit
                raise BadRequest(str(err)) from None
            doc["patterns"] = prepared.found["patterns"]
            doc["finding_groups"] = prepared.found["groups"]
            return doc
        return await self._list(vms, query)

    async def _prepared_list(self, vms: List[VmInfo]) -> PreparedList:
        """The prepared rows of ``vms`` (see ``LIST_FRESH_S``)."""
        self._used[id(vms)] = time.monotonic()
        kept = self._prepared.get(id(vms))
        if kept is not None and kept.vms is vms:
            age = time.monotonic() - kept.built_at
            if age < LIST_MAX_AGE_S:
                if age >= LIST_FRESH_S and id(vms) not in self._preparing:
                    task = asyncio.get_running_loop().create_task(self._prepare(vms))
                    task.add_done_callback(_log_failure)
                return kept
        shared = self._shared
        if (shared is not None and self._is_shared(vms)
                and time.monotonic() - shared.built_at < LIST_MAX_AGE_S):
            # The directory was read again: administrators may see every VM, so its last
            # prepared rows serve them while the new list is prepared.
            if id(vms) not in self._preparing:
                task = asyncio.get_running_loop().create_task(self._prepare(vms))
                task.add_done_callback(_log_failure)
            return shared
        return await self._prepare(vms)

    async def keep_fresh(self) -> None:
        """Forever: prepare again, every LIST_MAX_AGE_S / 2, the lists asked for within
        LIST_KEEP_S (one at a time; ~0.5 s of CPU per 10,000 VMs each)."""
        while True:
            await asyncio.sleep(LIST_MAX_AGE_S / 2)
            now = time.monotonic()
            for key, prepared in list(self._prepared.items()):
                if now - self._used.get(key, float("-inf")) > LIST_KEEP_S:
                    continue
                if (key in self._preparing or now - prepared.built_at < LIST_FRESH_S
                        or not self.visibility.current(prepared.vms)):
                    continue
                try:
                    await self._prepare(prepared.vms)
                except Exception as err:  # noqa: BLE001 - the next request tries again
                    log.info("preparing a fleet list again failed: %s", err)
            self._used = {k: t for k, t in self._used.items()
                          if k in self._prepared and now - t <= LIST_KEEP_S}

    def _is_shared(self, vms: List[VmInfo]) -> bool:
        directory = self.visibility.directory
        return directory is not None and vms is directory.vms()

    async def prepare_shared(self) -> None:
        """Prepare the rows of the shared directory's list (after it was read), so the first
        administrator to ask does not wait for them."""
        directory = self.visibility.directory
        if directory is None or len(directory.vms()) <= IN_LIST_LIMIT:
            return
        try:
            await self._prepare(directory.vms())
        except Exception as err:  # noqa: BLE001 - the next request prepares them again
            log.warning("preparing the fleet list of the VM directory failed: %s", err)

    async def _prepare(self, vms: List[VmInfo]) -> PreparedList:
        pending = self._preparing.get(id(vms))
        if pending is not None:
            return cast(PreparedList, await asyncio.shield(pending))
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._preparing[id(vms)] = future
        try:
            started = time.monotonic()
            stored = await self._store("summaries", None)
            loop = asyncio.get_running_loop()
            # the CPU-bound part off the event loop, so other requests go on meanwhile
            prepared = await loop.run_in_executor(self.executor, self._prepare_rows, vms,
                                                  stored, started)
            self._prepared[id(vms)] = prepared
            self._prepared.move_to_end(id(vms))
            if self._is_shared(vms):
                self._shared = prepared
            while len(self._prepared) > MAX_PREPARED_LISTS:
                self._prepared.popitem(last=False)
            future.set_result(prepared)
            return prepared
        except BaseException as err:
            future.set_exception(err)
            future.exception()
            raise
        finally:
            del self._preparing[id(vms)]

    def _prepare_rows(self, vms: List[VmInfo], stored: Any, started: float) -> PreparedList:
        rows, texts, every, onsets = rows_of(vms, stored)
        prepared = PreparedList(vms, started, rows, texts,
                                patterns.find(rows, every, onsets, ("host", "cluster")),
                                facets(rows))
        prepared.in_order("name", "asc")  # the pages' default order
        return prepared

    @_token_may_expire
    async def host_summary(self, user: User, host_id: str,
                           filters: Mapping[str, Any] | None = None,
                           complete: bool = False) -> Dict[str, Any] | None:
        """The VMs the user may see on one host; None if the user sees neither host nor VMs."""
        return await self.host_list(user, host_id, list_query(filters or {}), complete)

    @_token_may_expire
    async def host_list(self, user: User, host_id: str, query: ListQuery,
                        complete: bool = False) -> Dict[str, Any] | None:
        if not is_uuid(host_id):
            return None
        listed, whole = await self.visibility.listed(user.token, complete)
        vms = [vm for vm in listed if vm.host_id == host_id]
        if not vms and await self.visibility.host(user.token, host_id) is None:
            return None
        doc = await self._list(vms, query, ("host",))
        doc["visible"] = visible_block(listed, whole)
        return doc

    async def _list(self, vms: List[VmInfo], query: ListQuery,
                    kinds: Tuple[str, ...] = ("host", "cluster")) -> Dict[str, Any]:
        """The list document over ``vms``, with the fleet patterns among them."""
        rows, texts, every, onsets = await self._rows(vms)
        doc = select_rows(rows, texts, query)
        found = patterns.find(rows, every, onsets, kinds)
        doc["patterns"] = found["patterns"]
        doc["finding_groups"] = found["groups"]
        return doc

    async def _rows(self, vms: List[VmInfo]) -> Tuple[List[Dict[str, Any]], Dict[str, str],
                                                       Dict[str, List[Dict[str, Any]]],
                                                       Dict[str, Any]]:
        """Summary rows of ``vms`` (``rows_of``), read from the store now."""
        wanted = {vm.id for vm in vms}
        # One scan beats many IN lists once the user sees most of the store.
        stored = await self._store("summaries", None if len(wanted) > IN_LIST_LIMIT
                                   else sorted(wanted))
        return rows_of(vms, stored)

    # -- history ----------------------------------------------------------------------------

    @_token_may_expire
    async def history(self, user: User, vm_id: str, metric: str, since: float,
                      until: float) -> Dict[str, Any] | None:
        if not metric or len(metric) > 1100:
            raise BadRequest("metric is required, e.g. metric=fs.used:/ or cpu.percent")
        if not since < until or until - since > MAX_HISTORY_SPAN_S:
            raise BadRequest("since must be before until and the span at most 400 days")
        if not is_uuid(vm_id) or await self.visibility.vm(user.token, vm_id) is None:
            return None
        resolution, points = await self._store("history", vm_id, metric, since, until)
        verdicts = await self._store("verdicts", [vm_id])
        forecast = next((f for f in (verdicts.get(vm_id) or {}).get("forecasts") or ()
                         if f.get("metric") == metric), None)
        return {"vm_id": vm_id, "metric": metric, "unit": metric_unit(metric),
                "resolution": resolution,
                "points": [[t, v] for t, v in points], "forecast": forecast}


def rows_of(vms: List[VmInfo], stored: Any) -> Tuple[List[Dict[str, Any]], Dict[str, str],
                                                  Dict[str, List[Dict[str, Any]]],
                                                  Dict[str, Any]]:
    """Summary rows of ``vms`` from the store's ``stored`` summaries; per VM id, the text the
    search looks in (names and every finding, not only the few the row carries), every
    finding and the verdict's since."""
    wanted = {vm.id for vm in vms}
    by_id = {r.vm_id: r for r in stored if r.vm_id in wanted}
    rows: List[Dict[str, Any]] = []
    texts: Dict[str, str] = {}
    # Rows of one ``summaries`` call share equal verdict dicts (most VMs are "ok, no
    # findings"): derive each distinct one once. Keyed by identity: they live meanwhile.
    derived: Dict[int, Tuple[str, List[Dict[str, Any]], str, List[Dict[str, Any]]]] = {}
    every_of: Dict[str, List[Dict[str, Any]]] = {}
    onsets: Dict[str, Any] = {}
    for vm in vms:
        row = by_id.get(vm.id)
        verdict = (row.verdict if row is not None else None) or {}
        key = id(verdict) if verdict else id(getattr(row, "worst_checks", None))
        parts = derived.get(key)
        if parts is None:
            findings = worst_findings(verdict, row)
            every = findings_of(verdict) if verdict.get("findings") or verdict.get(
                "reasons") else findings
            text = "\n".join(str(p) for f in every for p in (f.get("code"),
                                                              f.get("message")) if p)
            parts = derived[key] = (status_of(verdict.get("status")), findings, text,
                                    every)
        status, findings, text, every_of[vm.id] = parts
        onsets[vm.id] = verdict.get("since")
        rows.append({
            "id": vm.id, "name": vm.name, "host_id": vm.host_id, "host_name": vm.host_name,
            "cluster": vm.cluster_name, "cluster_id": vm.cluster_id,
            "health": status,
            "last_report_at": heard_at(row),
            "findings": findings,
            "worst_findings": findings,  # the name of API 1 before "findings"; kept
        })
        texts[vm.id] = "\n".join(p for p in (vm.name, vm.id, vm.host_name,
                                              vm.cluster_name, text) if p).casefold()
    return rows, texts, every_of, onsets


def visible_block(vms: List[VmInfo], complete: bool) -> Dict[str, Any]:
    """The list answers' ``visible``: whether the list covers every VM the user may see
    (``complete``), or only the ``read`` VMs read so far from the engine, the user's first
    list being read page by page; the counts, totals and pages then describe exactly those."""
    return {"complete": complete, "read": len(vms)}


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("preparing a fleet list in the background failed: %s", task.exception())


def patterns_of_vm(vm: VmInfo, verdict: Mapping[str, Any], active: Mapping[str, Any]
                   ) -> List[Dict[str, Any]]:
    """The fleet patterns (active, as the health pass found them) that this VM's own findings
    belong to: its host's or cluster's with the same code. Only the place and the code are
    given, no counts: the user may not see the other VMs (the fleet page, linked, counts what
    the user may see)."""
    out = []
    for f in findings_of(verdict):
        code = str(f.get("code") or "")
        for scope, key in (("host", vm.host_id), ("cluster", vm.cluster_id)):
            if key and "%s:%s:%s" % (scope, key, code) in active:
                out.append({"scope": scope, "id": key, "code": code,
                            "name": (vm.host_name if scope == "host" else vm.cluster_name)
                            or key})
    return out


def vm_block(vm: VmInfo) -> Dict[str, Any]:
    return {"id": vm.id, "name": vm.name, "host_id": vm.host_id, "host_name": vm.host_name,
            "cluster": vm.cluster_name, "status": vm.status}


def health_block(verdict: Mapping[str, Any]) -> Dict[str, Any]:
    """The VM document's ``health``: status, since, findings (and ``reasons``, their name in
    API 1 before "findings", kept for existing clients; docs/design.md, "Vocabulary")."""
    if not verdict:
        findings = [finding("engine.not_evaluated", "unknown",
                            "vmdiag has no verdict for this VM yet: it has not received a "
                            "report from its agent.")]
        return {"status": "unknown", "since": None, "findings": findings, "reasons": findings}
    findings = findings_of(verdict)
    return {"status": status_of(verdict.get("status")), "since": verdict.get("since"),
            "findings": findings, "reasons": findings}


def worst_findings(verdict: Mapping[str, Any], row: Any) -> List[Dict[str, Any]]:
    """The few most severe findings of a VM, for the summaries: the verdict's, else (no
    verdict yet) the worst checks stored at ingest."""
    findings = findings_of(verdict)
    if findings:
        return [finding(str(f.get("code") or ""), f["status"], str(f.get("message") or ""),
                        f.get("metric")) for f in findings[:MAX_FINDINGS]]
    # a guest's check may come without a message: named by its id, as the verdict names it
    checks = getattr(row, "worst_checks", None) or ()
    return [finding("check:%s" % c.get("id"), status_of(c.get("status")),
                    str(c.get("message") or c.get("id")))
            for c in list(checks)[:MAX_FINDINGS]]


def select_rows(rows: List[Dict[str, Any]], texts: Mapping[str, str], query: ListQuery
                ) -> Dict[str, Any]:
    try:
        return select(rows, query, lambda row: texts[row["id"]])
    except ListError as err:  # a cursor that does not fit
        raise BadRequest(str(err)) from None


def list_query(params: Mapping[str, Any]) -> ListQuery:
    """The API's list parameters (strict: a bad one is a 400 naming it)."""
    try:
        return parse_list_query({k: v for k, v in params.items() if isinstance(v, str)})
    except ListError as err:
        raise BadRequest(str(err)) from None
