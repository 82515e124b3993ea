"""The health pass: verdicts for VMs after their reports were stored, and for silent VMs.

Ingest only marks VMs dirty; one background task evaluates them in batches (a batch is one
bulk history query), so a relay's upload never waits for forecasting and a burst of uploads
for the same VM costs one evaluation. A periodic sweep evaluates VMs that stopped reporting,
because a silent VM produces no ingest to trigger anything. Each verdict is stored, and the
event outbox plans oVirt events from it (delivery is the dispatcher's business).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Set, Tuple

from ..health import HISTORY_PREFIXES, evaluate_vm
from ..ovirt.events import EventOutbox
from .metrics import ServiceMetrics

log = logging.getLogger("vmdiag.engine.health")

STATE_PREFIX = "health:"
BATCH = 200
#: How often the leader asks the store for VMs with new data (stored by any instance).
NEW_DATA_POLL_S = 5.0
#: How far back each such query looks before the previous one began: an ingest stamps its
#: receive time before its transaction commits.
NEW_DATA_SLACK_S = 120.0


def heard_at(row: Any) -> float | None:
    """When the engine last heard from a VM (a store row or latest report, or None): its own
    receive time, which measures silence; rows stored before schema 2 have only the relay's."""
    if row is None:
        return None
    return row.ingested_at if row.ingested_at is not None else row.received_at


def _has_new_data(latest: Any, previous: Dict[str, Any] | None) -> bool:
    """Whether a VM has data its stored forecasts have not seen (or has none stored)."""
    done = (previous or {}).get("forecasts_at")
    heard = heard_at(latest)
    return not isinstance(done, (int, float)) or (heard is not None and heard > done)


class HealthPass:
    """Evaluates dirty VMs in the background; ``drain()`` waits until all are done."""

    def __init__(self, store: Any, thresholds_for: Callable[..., Any],
                 executor: concurrent.futures.Executor, metrics: ServiceMetrics,
                 outbox: EventOutbox | None = None,
                 on_events: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 names: Callable[[str], Tuple[str | None, str | None]] | None = None,
                 after_pass: Callable[[], int] | None = None,
                 may_run: Callable[[], bool] | None = None) -> None:
        self.store = store
        self.thresholds_for = thresholds_for
        self.executor = executor
        self.metrics = metrics
        self.outbox = outbox
        self.on_events = on_events
        self.clock = clock
        self.names = names
        #: runs (blocking, in the executor) once the marked VMs are all evaluated; returns
        #: how many events it planned (the fleet patterns' events)
        self.after_pass = after_pass
        #: whether this instance runs passes now (the leader of several instances,
        #: engine_plugin.service.leadership); None: always
        self.may_run = may_run
        self._polled_from: float | None = None
        self._dirty: Set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="vmdiag-health")
        self._poller = loop.create_task(self._poll(), name="vmdiag-health-poll")

    async def stop(self) -> None:
        for task in (self._task, self._poller):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._poller = None

    def _running(self) -> bool:
        return self.may_run is None or self.may_run()

    def restart_polling(self) -> None:
        """Look at every VM on the next poll (this instance just became leader: VMs another
        instance stored but did not evaluate are due)."""
        self._polled_from = None

    async def _poll(self) -> None:
        """Every ``NEW_DATA_POLL_S``, mark VMs whose latest report is newer than their
        verdict: reports another instance stored, and any this one stored while it was not
        the leader. The first query looks at every VM, the next ones at those received since
        the previous query began (less a slack)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(NEW_DATA_POLL_S)
            if not self._running():
                self._polled_from = None
                continue
            started = self.clock()
            since = None if self._polled_from is None else self._polled_from - NEW_DATA_SLACK_S
            try:
                due = await loop.run_in_executor(self.executor, self.store.vms_with_new_data,
                                                 since)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for VMs with new data failed; retrying")
                continue
            self._polled_from = started
            self.mark(due)

    def mark(self, vm_ids: Iterable[str]) -> None:
        """Queue VMs for evaluation (called by ingest; never blocks). Ignored while another
        instance runs the passes: it finds them in the store."""
        if not self._running():
            return
        self._dirty.update(vm_ids)
        if self._dirty:
            self._idle.clear()
            self._wake.set()

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every marked VM has been evaluated."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            planned_any = False
            while self._dirty:
                if not self._running():  # another instance took over
                    self._dirty.clear()
                    break
                batch = sorted(self._dirty)[:BATCH]
                self._dirty.difference_update(batch)
                try:
                    planned = await loop.run_in_executor(self.executor, self.evaluate, batch)
                except Exception:
                    log.exception("evaluating %d VMs failed; they are retried on their next "
                                  "report", len(batch))
                    self.metrics.health_evaluations.labels("error").inc(len(batch))
                    continue
                if planned:
                    planned_any = True
                    if self.after_pass is None and self.on_events is not None:
                        self.on_events()
            if self.after_pass is not None and self._running():
                # Deliver only after the patterns were looked for: a pattern's one event
                # replaces its VMs' events still in the outbox.
                try:
                    if await loop.run_in_executor(self.executor, self.after_pass):
                        planned_any = True
                except Exception:
                    log.exception("looking for fleet patterns failed; retried after the next "
                                  "evaluations")
                if planned_any and self.on_events is not None:
                    self.on_events()
            if not self._dirty:
                self._idle.set()

    async def sweep(self) -> int:
        """Evaluate VMs that went silent since their last verdict; return how many."""
        loop = asyncio.get_running_loop()
        silent = await loop.run_in_executor(self.executor, self._silent_vms)
        self.mark(silent)
        return len(silent)

    def _silent_vms(self) -> List[str]:
        now = self.clock()
        out = []
        for row in self.store.summaries():
            verdict = row.verdict or {}
            heard = heard_at(row)
            if verdict.get("status") == "unknown" or heard is None:
                continue
            limit = self.thresholds_for(vm_id=row.vm_id).silence_s
            if now - heard > limit:
                out.append(row.vm_id)
        return out

    def evaluate(self, vm_ids: List[str]) -> int:
        """Evaluate ``vm_ids`` now (blocking); return how many events were planned.

        Forecasts are recomputed only for VMs with data newer than their last forecast; the
        others (a silent VM marked by the sweep) keep theirs, and their history is not read."""
        now = self.clock()
        loaded = {v: (self.store.latest(v), self.store.event_state(STATE_PREFIX + v))
                  for v in vm_ids}
        fresh = [v for v, (latest, previous) in loaded.items() if _has_new_data(latest, previous)]
        histories: Dict[str, Dict[str, Any]] = {}
        if fresh:
            longest = max(self.thresholds_for(vm_id=v).forecast_window_s for v in fresh)
            histories = self.store.histories(fresh, HISTORY_PREFIXES, now - longest)
        fresh_set = set(fresh)
        planned = 0
        for vm_id in vm_ids:
            try:
                latest, previous = loaded[vm_id]
                hist = histories.get(vm_id, {}) if vm_id in fresh_set else None
                planned += self._evaluate_one(vm_id, latest, previous, hist, now)
                self.metrics.health_evaluations.labels("ok").inc()
            except Exception:
                log.exception("evaluating VM %s failed", vm_id)
                self.metrics.health_evaluations.labels("error").inc()
        if planned:
            self.metrics.events_planned.inc(planned)
        return planned

    def _evaluate_one(self, vm_id: str, latest: Any, previous: Dict[str, Any] | None,
                      histories: Dict[str, Any] | None, now: float) -> int:
        report = latest.report if latest is not None else None
        heard = heard_at(latest)
        verdict, state = evaluate_vm(report, histories, self.thresholds_for(vm_id=vm_id),
                                     previous, now, heard)
        self.store.set_verdict(vm_id, verdict, now,
                               latest.ingested_at if latest is not None else None)
        self.store.set_event_state(STATE_PREFIX + vm_id, state)
        if self.outbox is None:
            return 0
        name = self.names(vm_id)[0] if self.names is not None else None
        return self.outbox.record(vm_id, vm_label(vm_id, name, report), verdict)


def vm_label(vm_id: str, name: str | None, report: Any) -> str:
    """How an event names the VM: its oVirt name, else its id and the guest's hostname."""
    if name:
        return name
    settings = ((report or {}).get("sections") or {}).get("settings") or {}
    hostname = (settings.get("data") or {}).get("hostname")
    return "%s (guest %s)" % (vm_id, hostname) if hostname else vm_id
