"""oVirt external events for health changes: planned once, stored, delivered until accepted.

Flow::

    verdict --plan()--> new events + new dedup state  --(store, under one lock)--> outbox
            (the verdict, the VM's notified state and the outbox: one transaction)
    outbox --EventDispatcher--> EventsService.add(origin='vmdiag', custom_id, severity, vm)

* Dedup: ``plan`` compares a verdict with the last *notified* state of the VM
  (``store.event_state("events:vm:<id>")``); a steady state plans nothing.
* Which changes raise an event: the status moving between ok, warning and critical (a
  recovery to ok is a NORMAL event), and a forecast entering or worsening to warning/critical
  (it crossed a horizon) while the status itself did not change. The "unknown" status (agent
  silent or absent) raises none: a VM being shut down makes its agent silent, and oVirt
  already reports VM state changes; the next known status is compared with the last notified
  one.
* custom_id: the engine keeps ``(origin, custom_id)`` unique and stores custom_id in a 32-bit
  column. Ids come from a counter in the store whose floor is seconds since 2020-09-13
  (1.6e9 Unix), so a re-created database continues above ids it issued before, unless it
  issued more than one a second on average; it lasts until 2088.
* Delivery: the outbox lives in the store, so events planned while the engine is down survive
  a restart. An event keeps its custom_id across retries; if the engine accepted it but the
  answer was lost, the retry is refused as a duplicate and that counts as delivered. So
  delivery is at least once, and the engine keeps each event once: also across a handover,
  when a new leader sends again what a dead one had sent but not yet settled.
  A down engine never blocks ingest: planning only writes the outbox.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import ovirtsdk4
from ovirtsdk4 import types

from diag_protocol.vocabulary import CRITICAL, WARNING, at_least, findings_of, rank

from ..tasks import cancel_and_wait
from .connection import EngineEndpoint

log = logging.getLogger(__name__)

ORIGIN = "vmdiag"
CUSTOM_ID_EPOCH = 1_600_000_000
INT32_MAX = 2**31 - 1
MAX_OUTBOX = 5000
MAX_DESCRIPTION = 3000

#: oVirt's event severity for each status that raises events ("unknown" raises none).
SEVERITY = {"ok": types.LogSeverity.NORMAL, "warning": types.LogSeverity.WARNING,
            "critical": types.LogSeverity.ERROR}

KEY_OUTBOX = "events:outbox"
KEY_COUNTER = "events:custom_id"
KEY_PATTERNS = "events:patterns"


def pattern_key(pattern: Mapping[str, Any]) -> str:
    """One fleet pattern's identity: its scope, host or cluster, and finding code."""
    return "%s:%s:%s" % (pattern["scope"], pattern["id"], pattern["code"])


def vm_key(vm_id: str) -> str:
    return "events:vm:" + vm_id


@dataclass
class PlannedEvent:
    """An event decided on, before it has a custom_id."""

    vm_id: str
    status: str
    description: str


def plan(vm_id: str, vm_label: str, verdict: Mapping[str, Any],
         previous: Mapping[str, Any] | None, min_status: str = "warning"
         ) -> Tuple[List[PlannedEvent], Dict[str, Any]]:
    """Events a verdict calls for, and the VM's new notified state (pure)."""
    status = verdict.get("status")
    # forecasts as the verdict raised them: one still holding its minimum duration (at all,
    # or at a worse status) is no event yet
    raised = {r.get("code"): r["status"] for r in findings_of(verdict)}
    forecasts = {f.get("metric"): dict(f, status=raised["forecast:%s" % f.get("metric")])
                 for f in verdict.get("forecasts") or ()
                 if raised.get("forecast:%s" % f.get("metric")) in (WARNING, CRITICAL)}
    prev = dict(previous or {})
    prev_status = prev.get("status")
    prev_forecasts: Dict[str, str] = dict(prev.get("forecasts") or {})
    state = {"status": prev_status, "forecasts": {m: f["status"] for m, f in forecasts.items()}}
    if status not in SEVERITY:  # "unknown": keep the last notified status, plan nothing
        state["forecasts"] = prev_forecasts
        return [], state
    state["status"] = status
    events: List[PlannedEvent] = []
    reasons = [r for r in findings_of(verdict) if r["status"] == status]
    if status != prev_status:
        # Entering a level worth an event, or leaving one that was worth an event (recovery).
        entering = at_least(status, min_status)
        leaving = prev_status in SEVERITY and at_least(prev_status, min_status)
        if entering or leaving:
            events.append(PlannedEvent(vm_id, status, describe(vm_label, status, reasons)))
        return events, state
    for metric, forecast in sorted(forecasts.items()):
        before = prev_forecasts.get(metric, "ok")
        if rank(forecast["status"]) > rank(before):
            text = "VM %s: %s" % (vm_label, _forecast_text(forecast, verdict))
            events.append(PlannedEvent(vm_id, forecast["status"], text))
    return events, state


def describe(vm_label: str, status: str, reasons: Sequence[Mapping[str, Any]]) -> str:
    if status == "ok":
        return "VM %s is healthy again (vmdiag)." % vm_label
    text = "VM %s is %s (vmdiag): %s" % (vm_label, status, "; ".join(
        str(r.get("message")) for r in reasons[:3]) or "see its Diagnostics tab.")
    return text[:MAX_DESCRIPTION]


def _forecast_text(forecast: Mapping[str, Any], verdict: Mapping[str, Any]) -> str:
    for reason in findings_of(verdict):
        if reason.get("metric") == forecast.get("metric") and reason.get("message"):
            return str(reason["message"])[:MAX_DESCRIPTION]
    return "%s is forecast to run out (%s)." % (forecast.get("label") or forecast.get("metric"),
                                                forecast.get("status"))


def next_custom_ids(counter: Mapping[str, Any] | None, count: int, now: float
                    ) -> Tuple[List[int], Dict[str, Any]]:
    """``count`` fresh custom_ids and the new counter state (pure)."""
    floor = int(now) - CUSTOM_ID_EPOCH
    start = max(int((counter or {}).get("next", 0)), floor, 1)
    if start + count > INT32_MAX:
        start = 1  # only after 2088; duplicates are then refused by the engine and counted
    return list(range(start, start + count)), {"next": start + count}


class EventOutbox:
    """Plans events and keeps the undelivered ones in the store.

    The store is synchronous and this runs in executor threads; one lock serialises the
    read-modify-write of the outbox and the custom_id counter within this process, and each
    change of the outbox, the counter and the VMs' notified states is one store transaction,
    with the verdicts they were planned from (``record``), so a process killed in between
    leaves either all or none. Only
    one of several service instances plans and delivers events at a time (the leader,
    engine_plugin.service.leadership), so no other process writes these keys meanwhile.
    """

    def __init__(self, store: Any, min_status: str = "warning",
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.min_status = min_status
        self.clock = clock
        self.dropped = 0
        self.lock = threading.Lock()

    def record(self, verdicts: Sequence[Tuple[str, str, Mapping[str, Any]]],
               write: Callable[[Dict[str, Dict[str, Any]]], None] | None = None
               ) -> Tuple[int, List[str]]:
        """Plan events for the verdicts ``(vm_id, vm_label, verdict)`` of several VMs; return
        how many events were queued and the VMs whose planning failed (logged).

        Every change (each VM's notified state, and when events were planned the outbox and
        the custom_id counter) goes to ``write`` as one ``{key: state}`` mapping, which must
        store it in one transaction (default ``store.set_event_states``). The health pass
        writes its verdicts in that same transaction (``HealthPass.apply``): a verdict stored
        without its events planned would never raise them, as a new leader evaluates again
        only VMs whose latest report is newer than their verdict.
        """
        with self.lock:
            changes, queued, failed = self._plan(verdicts)
            (write or self.store.set_event_states)(changes)
            return queued, failed

    def _plan(self, verdicts: Sequence[Tuple[str, str, Mapping[str, Any]]]
              ) -> Tuple[Dict[str, Dict[str, Any]], int, List[str]]:
        previous = self.store.event_states([vm_key(vm_id) for vm_id, _, _ in verdicts])
        changes: Dict[str, Dict[str, Any]] = {}
        planned: List[PlannedEvent] = []
        failed: List[str] = []
        for vm_id, vm_label, verdict in verdicts:
            try:
                events, state = plan(vm_id, vm_label, verdict, previous.get(vm_key(vm_id)),
                                     self.min_status)
            except Exception:
                log.exception("planning events for VM %s failed", vm_id)
                failed.append(vm_id)
                continue
            # written even when steady: retention prunes states untouched for vm_retention
            changes[vm_key(vm_id)] = previous[vm_key(vm_id)] = state
            planned.extend(events)
        if planned:
            ids, counter = next_custom_ids(self.store.event_state(KEY_COUNTER), len(planned),
                                           self.clock())
            outbox = self._pending()
            now = self.clock()
            for custom_id, event in zip(ids, planned):
                outbox.append({"custom_id": custom_id, "vm_id": event.vm_id,
                               "status": event.status, "description": event.description,
                               "planned_at": now, "attempts": 0})
            if len(outbox) > MAX_OUTBOX:
                self.dropped += len(outbox) - MAX_OUTBOX
                log.warning("event outbox full: dropped the %d oldest undelivered events",
                            len(outbox) - MAX_OUTBOX)
                outbox = outbox[-MAX_OUTBOX:]
            # In the same transaction as the VMs' states: a crash between them would raise
            # an event twice (the VM's state not yet notified) or never (the state notified,
            # the event lost).
            changes[KEY_COUNTER] = counter
            changes[KEY_OUTBOX] = {"items": outbox}
        return changes, len(planned), failed

    def record_patterns(self, found: List[Mapping[str, Any]]) -> int:
        """Plan one event per fleet pattern that appeared (attached to its host or cluster)
        and one NORMAL event per pattern that ended; undelivered per-VM events of the VMs a
        new pattern covers are dropped, as the pattern's event says it for all of them.
        ``found``: patterns (engine_plugin.service.patterns) with ``host_id``/``cluster_id``
        and ``description``. Returns how many events were queued."""
        with self.lock:
            before = dict((self.store.event_state(KEY_PATTERNS) or {}).get("active") or {})
            now_active = {pattern_key(p): p for p in found}
            if not before and not now_active:
                return 0
            planned: List[Dict[str, Any]] = []
            covered: set = set()
            for key, p in sorted(now_active.items()):
                if key not in before:
                    planned.append({"vm_id": None, "host_id": p.get("host_id"),
                                    "cluster_id": p.get("cluster_id"), "status": p["status"],
                                    "description": str(p["description"])[:MAX_DESCRIPTION]})
                    covered.update(p.get("vm_ids") or ())
            for key, old in sorted(before.items()):
                if key not in now_active:
                    planned.append({"vm_id": None, "host_id": old.get("host_id"),
                                    "cluster_id": old.get("cluster_id"), "status": "ok",
                                    "description": ("Over: %s" % old.get("description", ""))
                                    [:MAX_DESCRIPTION]})
            changes: Dict[str, Dict[str, Any]] = {}
            if planned or covered:
                outbox = [i for i in self._pending() if i.get("vm_id") not in covered]
                if planned:
                    ids, counter = next_custom_ids(self.store.event_state(KEY_COUNTER),
                                                   len(planned), self.clock())
                    changes[KEY_COUNTER] = counter
                    for custom_id, item in zip(ids, planned):
                        outbox.append(dict(item, custom_id=custom_id, planned_at=self.clock(),
                                           attempts=0))
                changes[KEY_OUTBOX] = {"items": outbox[-MAX_OUTBOX:]}
            changes[KEY_PATTERNS] = {"active": {
                key: {"host_id": p.get("host_id"), "cluster_id": p.get("cluster_id"),
                      "description": str(p["description"])[:MAX_DESCRIPTION]}
                for key, p in now_active.items()}}
            self.store.set_event_states(changes)  # one transaction, as in _record
            return len(planned)

    def pending(self) -> List[Dict[str, Any]]:
        with self.lock:
            return self._pending()

    def _pending(self) -> List[Dict[str, Any]]:
        return list((self.store.event_state(KEY_OUTBOX) or {}).get("items") or [])

    def settle(self, done: List[int], retried: List[int]) -> None:
        """Remove delivered (or undeliverable) ids; count an attempt on the retried ones."""
        with self.lock:
            self._settle(done, retried)

    def _settle(self, done: List[int], retried: List[int]) -> None:
        items = []
        for item in self._pending():
            if item["custom_id"] in done:
                continue
            if item["custom_id"] in retried:
                item["attempts"] = int(item.get("attempts", 0)) + 1
            items.append(item)
        self.store.set_event_state(KEY_OUTBOX, {"items": items})


class ServiceAccount:
    """The service's own engine session (never a user's), used to add events."""

    def __init__(self, endpoint: EngineEndpoint, user: str = "", password: str = "",
                 token: str = "") -> None:
        if not token and not (user and password):
            raise ValueError("set [ovirt] user and password (or password_file), or token_file, "
                             "so vmdiag can add events to the engine; or set [events] "
                             "enabled = no")
        self.endpoint = endpoint
        self.user = user
        self.password = password
        self.token = token
        self._conn: ovirtsdk4.Connection | None = None

    def connection(self) -> ovirtsdk4.Connection:
        if self._conn is None:
            self._conn = ovirtsdk4.Connection(
                url=self.endpoint.url, username=self.user or None,
                password=self.password or None, token=self.token or None,
                ca_file=self.endpoint.ca_file, timeout=int(self.endpoint.timeout))
        return self._conn

    def reset(self) -> None:
        """Forget the connection (after a failure), so the next attempt starts afresh."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close(logout=False)
            except Exception:  # closing a broken connection may fail too; nothing to do
                log.debug("closing a failed engine connection failed", exc_info=True)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close(logout=not self.token)  # revoke only tokens we created
            except ovirtsdk4.Error as err:
                log.info("could not log the service account out of the engine: %s", err)

    def add_event(self, item: Mapping[str, Any]) -> str:
        """Add one event; return "sent", "duplicate" (already there) or raise."""
        # A VM's event is attached to the VM; a fleet pattern's to its host or cluster (the
        # engine's event API takes vm, host, cluster, ... links by id).
        event = types.Event(
            origin=ORIGIN, custom_id=int(item["custom_id"]), severity=SEVERITY[item["status"]],
            description=item["description"],
            vm=types.Vm(id=item["vm_id"]) if item.get("vm_id") else None,
            host=types.Host(id=item["host_id"]) if item.get("host_id") else None,
            cluster=(types.Cluster(id=item["cluster_id"])
                     if item.get("cluster_id") and not item.get("host_id") else None))
        try:
            self.connection().system_service().events_service().add(event)
            return "sent"
        except ovirtsdk4.Error as err:
            if getattr(err, "code", None) == 409 and "same custom ID" in str(err):
                return "duplicate"
            raise


class EventDispatcher:
    """Delivers the outbox in the background; retries every ``retry_interval`` seconds."""

    def __init__(self, outbox: EventOutbox, account: ServiceAccount,
                 executor: concurrent.futures.Executor, retry_interval: float = 60.0,
                 on_result: Callable[[str], None] | None = None,
                 may_run: Callable[[], bool] | None = None) -> None:
        self.outbox = outbox
        #: whether this instance delivers now (the leader of several instances); None: always
        self.may_run = may_run
        self.account = account
        self.executor = executor
        self.retry_interval = retry_interval
        self.on_result = on_result
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vmdiag-events")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await asyncio.get_running_loop().run_in_executor(self.executor, self.account.close)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.retry_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.deliver()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything; the next pass retries
                log.exception("delivering events failed; retrying in %.0f s", self.retry_interval)

    async def deliver(self) -> Dict[str, int]:
        """One pass over the outbox; returns counts by outcome."""
        loop = asyncio.get_running_loop()
        counts = {"sent": 0, "duplicate": 0, "rejected": 0, "failed": 0}
        if self.may_run is not None and not self.may_run():
            return counts  # another instance delivers
        items = await loop.run_in_executor(self.executor, self.outbox.pending)
        done: List[int] = []
        retried: List[int] = []
        for item in items:
            if self.may_run is not None and not self.may_run():
                break  # lost the lease meanwhile: the next leader goes on from here
            outcome = await loop.run_in_executor(self.executor, self._attempt, item)
            counts[outcome] += 1
            if self.on_result is not None:
                self.on_result(outcome)
            if outcome == "failed":
                retried.append(item["custom_id"])
                break  # the engine is down or refuses us: keep order, retry later
            done.append(item["custom_id"])
        if done or retried:
            await loop.run_in_executor(self.executor, self.outbox.settle, done, retried)
        return counts

    def _attempt(self, item: Mapping[str, Any]) -> str:
        try:
            outcome = self.account.add_event(item)
            self.last_error = None
            return outcome
        except ovirtsdk4.Error as err:
            code = getattr(err, "code", None)
            if code in (400, 404, 409):
                # The engine will never take this one (the VM was removed, a validation
                # failure other than a duplicate): drop it rather than block the outbox.
                log.warning("the engine rejected event %s for VM %s for good: %s",
                            item["custom_id"], item["vm_id"], err)
                return "rejected"
            if self.last_error is None:
                log.warning("cannot add events to the engine (will retry every %.0f s): %s",
                            self.retry_interval, err)
            self.last_error = str(err)
            self.account.reset()
            return "failed"
