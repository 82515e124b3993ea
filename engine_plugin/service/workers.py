"""Where the health pass computes: the reading and evaluating half of a pass, in worker
processes (issue 16).

A pass has two halves. ``compute`` reads what it needs (each VM's latest report and
evaluation state, one bulk history query for the batch) and runs
``engine_plugin.health.evaluate_vm``: nearly all of the CPU. The other half, storing verdicts
and planning oVirt events, stays in the service (``evaluation.HealthPass.apply``), the only
writer of the event outbox.

``EvaluationPool`` runs ``compute`` in separate processes, each with its own store
connection, at a lower CPU priority (``WORKER_NICE``): a pass uses every core the machine has,
and neither holds the service's interpreter lock nor outranks ingest and the API for a core.
Processes are started with ``spawn`` (the service has threads and open connections, which a
``fork`` would copy half-way) when the first batch arrives, and live as long as the service.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

from ..health import HISTORY_PREFIXES, Thresholds, evaluate_vm

log = logging.getLogger("vmdiag.engine.health")

STATE_PREFIX = "health:"
#: CPU priority of the worker processes, relative to the service (``nice`` steps).
WORKER_NICE = 10


@dataclass
class Evaluated:
    """One VM's outcome of ``compute``; ``verdict`` None when its evaluation failed."""

    vm_id: str
    verdict: Dict[str, Any] | None
    state: Dict[str, Any] | None
    #: engine receive time of the latest report evaluated (``Store.set_verdict``)
    data_through: float | None
    #: the guest's hostname from the latest report (names the VM in events without oVirt)
    hostname: str | None
    error: str | None = None
    #: its first forecasts did not fit in this pass's budget (checks were judged): due again
    deferred: bool = False


def heard_at(row: Any) -> float | None:
    """When the engine last heard from a VM (a store row or latest report, or None): its own
    receive time, which measures silence; rows stored before schema 2 have only the relay's."""
    if row is None:
        return None
    return row.ingested_at if row.ingested_at is not None else row.received_at


def has_new_data(latest: Any, previous: Dict[str, Any] | None) -> bool:
    """Whether a VM has data its stored forecasts have not seen (or has none stored)."""
    done = (previous or {}).get("forecasts_at")
    heard = heard_at(latest)
    return not isinstance(done, (int, float)) or (heard is not None and heard > done)


def report_hostname(report: Any) -> str | None:
    settings = ((report or {}).get("sections") or {}).get("settings") or {}
    hostname = (settings.get("data") or {}).get("hostname")
    return hostname if isinstance(hostname, str) else None


#: a batch may spend on first forecasts the budget of at least this many VMs, so a small
#: fleet gets all of them in its first pass
COLD_FLOOR_VMS = 200
#: and a batch forecasts at least this many VMs for the first time, whatever their cost
COLD_MIN_VMS = 2
def is_cold(previous: Dict[str, Any] | None) -> bool:
    """Whether a VM was never forecast (no state, or a state with no forecasts): its first
    forecasts fit every series on its whole history, some 30 times a kept fit's cost."""
    return not isinstance((previous or {}).get("forecasts_at"), (int, float))


def compute(store: Any, vm_ids: Sequence[str], thresholds: Dict[str, Thresholds],
            now: float) -> List[Evaluated]:
    """Evaluate ``vm_ids`` (blocking, read-only on the store).

    Forecasts are recomputed only for VMs with data newer than their last forecast; the
    others (a silent VM marked by the sweep) keep theirs, and their history is not read.

    First forecasts (VMs never forecast: a new VM, every VM of a new installation) are
    bounded by a CPU budget, ``[health] forecast_cold_budget_ms`` per VM of the batch (of at
    least ``COLD_FLOOR_VMS``), less what the batch's other VMs cost (and at least
    ``COLD_MIN_VMS`` of them whatever they cost): the VMs that waited longest are forecast
    first, the others are judged on their report alone (checks, silence, memory: an observed
    critical status is never delayed) and come back (``Evaluated.deferred``) until their
    turn."""
    loaded = {v: (store.latest(v), store.event_state(STATE_PREFIX + v)) for v in vm_ids}
    fresh = [v for v, (latest, previous) in loaded.items() if has_new_data(latest, previous)]
    cold = [v for v in fresh if is_cold(loaded[v][1])]
    limited = bool(cold) and all(thresholds[v].forecast_cold_budget_ms > 0 for v in vm_ids)
    put_off = set(cold) if limited else set()
    started = time.process_time()
    out: Dict[str, Evaluated] = {}
    _evaluate(store, [v for v in vm_ids if v not in put_off],
              [v for v in fresh if v not in put_off], loaded, thresholds, now, out)
    if limited:
        per_vm = sum(thresholds[v].forecast_cold_budget_ms for v in vm_ids) / len(vm_ids)
        budget = per_vm * max(COLD_FLOOR_VMS, len(vm_ids)) / 1000.0

        def waited(v: str) -> float:
            since = (loaded[v][1] or {}).get("cold_since")
            return since if isinstance(since, (int, float)) else now
        order = sorted(cold, key=lambda v: (waited(v), v))
        take, last = 0, 0.0
        # one at a time (its own history query), while the next one (costing about what the
        # last one did) fits in the batch's budget
        while take < len(order) and (take < COLD_MIN_VMS or
                                     time.process_time() - started + last <= budget):
            first = time.process_time()
            _evaluate(store, order[take:take + 1], order[take:take + 1], loaded, thresholds,
                      now, out)
            last = time.process_time() - first
            take += 1
        later = order[take:]
        _evaluate(store, later, [], loaded, thresholds, now, out)
        for v in later:
            done = out[v]
            if done.state is not None:
                done.state["cold_since"] = waited(v)
                done.deferred = True
    return [out[v] for v in vm_ids]


def _evaluate(store: Any, vm_ids: Sequence[str], fresh: Sequence[str],
              loaded: Dict[str, Any], thresholds: Dict[str, Thresholds], now: float,
              out: Dict[str, Evaluated]) -> None:
    """Evaluate ``vm_ids`` into ``out``; the histories of ``fresh`` are read (one query) and
    their forecasts made, the others keep theirs."""
    histories: Dict[str, Dict[str, Any]] = {}
    if fresh:
        longest = max(thresholds[v].forecast_window_s for v in fresh)
        histories = store.histories(list(fresh), HISTORY_PREFIXES, now - longest)
    fresh_set = set(fresh)
    for vm_id in vm_ids:
        latest, previous = loaded[vm_id]
        report = latest.report if latest is not None else None
        try:
            hist = histories.get(vm_id, {}) if vm_id in fresh_set else None
            verdict, state = evaluate_vm(report, hist, thresholds[vm_id], previous, now,
                                         heard_at(latest))
        except Exception as err:  # one VM's failure must not cost the batch
            log.exception("evaluating VM %s failed", vm_id)
            out[vm_id] = Evaluated(vm_id, None, None, None, None, "%s: %s"
                                   % (type(err).__name__, err))
            continue
        out[vm_id] = Evaluated(vm_id, verdict, state,
                               latest.ingested_at if latest is not None else None,
                               report_hostname(report))


# -- worker processes ------------------------------------------------------------------------

_STORE: Any = None


def _start_worker(storage_config: Any, nice: int) -> None:
    global _STORE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when workers stop
    try:
        os.nice(nice)
    except OSError:
        pass
    from ..storage import open_store

    _STORE = open_store(storage_config)


def _compute_in_worker(vm_ids: Sequence[str], thresholds: Dict[str, Thresholds],
                       now: float) -> List[Evaluated]:
    return compute(_STORE, vm_ids, thresholds, now)


def worker_count(setting: int) -> int:
    """``[evaluation] workers``: -1 (auto) is one process per core this process may use."""
    if setting >= 0:
        return setting
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores)


class EvaluationPool:
    """``compute`` in ``workers`` processes, each with its own store connection."""

    def __init__(self, storage_config: Any, workers: int, nice: int = WORKER_NICE) -> None:
        import dataclasses

        self.workers = workers
        # one connection per worker is all a worker uses
        self._config = (dataclasses.replace(storage_config, pool_size=1)
                        if hasattr(storage_config, "pool_size") else storage_config)
        self._nice = nice
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(self._config, self._nice))

    async def compute(self, vm_ids: Sequence[str], thresholds: Dict[str, Thresholds],
                      now: float) -> List[Evaluated]:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _compute_in_worker,
                                               list(vm_ids), thresholds, now)
        except concurrent.futures.process.BrokenProcessPool:
            # a worker died (out of memory, killed): start new ones for the next batch
            log.error("a health pass worker process died; starting new ones")
            old, self._executor = self._executor, self._new_executor()
            old.shutdown(wait=False)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
