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
from typing import Any, Callable, Iterable, List, Set, Tuple

from ..ovirt.events import EventOutbox
from ..tasks import cancel_and_wait
from .metrics import ServiceMetrics
from .workers import STATE_PREFIX, Evaluated, EvaluationPool, compute, heard_at

log = logging.getLogger("vmdiag.engine.health")

__all__ = ["HealthPass", "STATE_PREFIX", "heard_at", "vm_label"]

BATCH = 200
#: How often the leader asks the store for VMs with new data (stored by any instance).
NEW_DATA_POLL_S = 5.0
#: How far back each such query looks before the previous one began: an ingest stamps its
#: receive time before its transaction commits.
NEW_DATA_SLACK_S = 120.0
#: VMs whose first forecasts or refits did not fit in a pass's budget (workers.compute) are
#: marked again this long after that pass, the VMs that waited longest first
COLD_RETRY_S = 60.0


class HealthPass:
    """Evaluates dirty VMs in the background; ``drain()`` waits until all are done."""

    def __init__(self, store: Any, thresholds_for: Callable[..., Any],
                 executor: concurrent.futures.Executor, metrics: ServiceMetrics,
                 outbox: EventOutbox | None = None,
                 on_events: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 names: Callable[[str], Tuple[str | None, str | None]] | None = None,
                 after_pass: Callable[[], int] | None = None,
                 may_run: Callable[[], bool] | None = None,
                 pool: EvaluationPool | None = None) -> None:
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
        #: worker processes that compute (None: compute in ``executor``, in this process)
        self.pool = pool
        self._polled_from: float | None = None
        self._dirty: Set[str] = set()
        #: VMs whose first forecasts or refits were put off (``Evaluated.deferred``), for a
        #: later pass
        self._deferred: Set[str] = set()
        self._retry: asyncio.TimerHandle | None = None
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
        await cancel_and_wait(self._task, self._poller)
        self._task = self._poller = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

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
                # Up to one batch per worker at once; smaller batches when few VMs are due,
                # so every worker gets a share.
                lanes = self.pool.workers if self.pool is not None else 1
                due = sorted(self._dirty)
                size = max(1, min(BATCH, -(-len(due) // lanes)))
                batches = [due[i:i + size] for i in range(0, min(len(due), size * lanes), size)]
                for batch in batches:
                    self._dirty.difference_update(batch)
                results = await asyncio.gather(*(self._evaluate_batch(b) for b in batches))
                if any(results):
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
            if self._deferred and self._retry is None and self._running():
                later, self._deferred = set(self._deferred), set()
                self._retry = loop.call_later(COLD_RETRY_S, self._mark_deferred, later)
            if not self._dirty:
                self._idle.set()

    def _mark_deferred(self, vm_ids: Set[str]) -> None:
        self._retry = None
        self.mark(vm_ids)

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

    async def _evaluate_batch(self, batch: List[str]) -> int:
        """Compute one batch (in a worker process, or the executor) and apply it; return how
        many events were planned."""
        loop = asyncio.get_running_loop()
        try:
            if self.pool is None:
                return int(await loop.run_in_executor(self.executor, self.evaluate, batch))
            now = self.clock()
            thresholds = {vm_id: self.thresholds_for(vm_id=vm_id) for vm_id in batch}
            results = await self.pool.compute(batch, thresholds, now)
            return int(await loop.run_in_executor(self.executor, self.apply, results, now))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("evaluating %d VMs failed; they are retried on their next report",
                          len(batch))
            self.metrics.health_evaluations.labels("error").inc(len(batch))
            return 0

    def evaluate(self, vm_ids: List[str]) -> int:
        """Evaluate ``vm_ids`` now in this thread (blocking); return how many events were
        planned."""
        now = self.clock()
        thresholds = {vm_id: self.thresholds_for(vm_id=vm_id) for vm_id in vm_ids}
        return self.apply(compute(self.store, vm_ids, thresholds, now), now)

    def apply(self, results: List[Evaluated], now: float) -> int:
        """Store computed verdicts and plan their events in one transaction; return how many
        events were planned.

        One transaction, so a process killed (or a store failing) half-way leaves a verdict
        with its events planned, or neither: the next leader evaluates again only VMs whose
        latest report is newer than their verdict, so a verdict stored alone would never
        raise its event (docs/engine.md, "Several instances")."""
        done = [r for r in results if r.verdict is not None]
        self._deferred.update(r.vm_id for r in done if r.deferred)
        failed = len(results) - len(done)
        planned = 0
        if done:
            rows = [(r.vm_id, r.verdict, r.data_through) for r in done]
            states = {STATE_PREFIX + r.vm_id: r.state for r in done if r.state is not None}
            if self.outbox is None:
                self.store.set_verdicts(rows, now, states)
            else:
                verdicts = []
                for r in done:
                    assert r.verdict is not None
                    name = self.names(r.vm_id)[0] if self.names is not None else None
                    verdicts.append((r.vm_id, vm_label(r.vm_id, name, r.hostname), r.verdict))
                planned, unplanned = self.outbox.record(
                    verdicts, lambda events: self.store.set_verdicts(rows, now,
                                                                     dict(states, **events)))
                failed += len(unplanned)
            self.metrics.health_evaluations.labels("ok").inc(len(results) - failed)
        if failed:
            self.metrics.health_evaluations.labels("error").inc(failed)
        if planned:
            self.metrics.events_planned.inc(planned)
        return planned


def vm_label(vm_id: str, name: str | None, hostname: str | None) -> str:
    """How an event names the VM: its oVirt name, else its id and the guest's hostname."""
    if name:
        return name
    return "%s (guest %s)" % (vm_id, hostname) if hostname else vm_id
