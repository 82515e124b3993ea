"""Where the health pass computes: the reading and evaluating half of a pass, in worker
processes (issue 16).

A pass has two halves. ``compute`` reads what it needs (the batch's latest reports and
evaluation states, and in one query the samples since each VM's last pass) and runs
``engine_plugin.health.evaluate_vm``: nearly all of the CPU. The other half, storing verdicts
and planning oVirt events, stays in the service (``evaluation.HealthPass.apply``), the only
writer of the event outbox.

``EvaluationPool`` runs ``compute`` in separate processes, each with its own store
connection, at a lower CPU priority (``WORKER_NICE``): a pass uses every core the machine has,
and neither holds the service's interpreter lock nor outranks ingest and the API for a core.
Processes are started with ``spawn`` (the service has threads and open connections, which a
``fork`` would copy half-way) when the first batch arrives, and live as long as the service:
each watches its parent and ends when the service is gone, SIGKILL included (the pool's queues
never tell a worker: it holds both ends of their pipes).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Set, Tuple

from ..health import HISTORY_PREFIXES, Thresholds, evaluate_vm
from ..health.forecast import RAW_FIT_MAX_S
from .cores import usable_cores

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
    #: its first forecasts or refits did not fit in this pass's budget (checks were judged,
    #: its kept forecasts shown): due again
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


#: a batch may spend on full reads (first forecasts, refits) the budget of at least this many
#: VMs, so a small fleet gets all of them in its first pass
COLD_FLOOR_VMS = 200
#: and a batch makes at least this many full reads, whatever they cost
COLD_MIN_VMS = 2
#: the key of a VM's evaluation state where ``compute`` keeps what its next pass must read
#: (``_next_reads``)
READS_KEY = "reads"
#: how many of a series' last samples a kept forecast looks at (its current value: the
#: median of the last 5, ``health.verdict``): the next read starts early enough to hold them
TAIL_POINTS = 5
#: a series with no sample this long before the VM's newest one stopped (a process that
#: exited, a file system unmounted): its last samples are kept in the state, not re-read
STALE_S = 900.0


def raw_since(t: Thresholds, now: float) -> float:
    """Where a whole read's raw samples begin (``Store.histories``' ``raw_since``): before it,
    5-minute means. The forecast fits raw samples in windows up to ``RAW_FIT_MAX_S`` (means
    of time buckets beyond), and a new forecast is made again on the data as it was up to
    ``forecast_min_duration_s`` earlier (``health.verdict._held_since``): those windows are
    raw; older data is seen as the 5-minute means the store keeps beyond raw retention."""
    return now - RAW_FIT_MAX_S - t.forecast_min_duration_s


#: a VM whose history is shorter than this is read raw whole: the forecast places each
#: cleanup of a cycle looking at a 168th of the history around it, a quarter of which must
#: hold samples (``forecast._cycle``), which 5-minute means do only beyond about 56 hours
MEANS_MIN_HISTORY_S = 3 * 86400.0


def read_whole(store: Any, vm_ids: Sequence[str], since: float, raw_from: float,
               names: Set[str] | None = None) -> Dict[str, Dict[str, Any]]:
    """The histories of ``vm_ids`` since ``since`` for fitting: raw samples after
    ``raw_from`` (``raw_since``), 5-minute means before; a VM whose history is shorter than
    ``MEANS_MIN_HISTORY_S`` is read again all raw."""
    kw: Dict[str, Any] = {} if names is None else {"names": names}
    out = store.histories(list(vm_ids), HISTORY_PREFIXES, since, raw_since=raw_from, **kw)
    young = [v for v, series in out.items()
             if min((pts[0][0] for pts in series.values() if pts), default=math.inf)
             > raw_from - MEANS_MIN_HISTORY_S]
    if young:
        out.update(store.histories(young, HISTORY_PREFIXES, since, **kw))
    return out


def is_cold(previous: Dict[str, Any] | None) -> bool:
    """Whether a VM was never forecast (no state, or a state with no forecasts): its first
    forecasts fit every series on its whole history, some 30 times a kept fit's cost."""
    return not isinstance((previous or {}).get("forecasts_at"), (int, float))


def _fits(state: Dict[str, Any] | None) -> Dict[str, Any]:
    fits = (state or {}).get("fits")
    return fits if isinstance(fits, dict) else {}


def _due(previous: Dict[str, Any] | None, now: float) -> Set[str]:
    """The series whose kept fit's refresh is due (refitted on their whole history)."""
    out = set()
    for name, memo in _fits(previous).items():
        due = memo.get("due") if isinstance(memo, dict) else None
        if not isinstance(due, (int, float)) or now >= due:
            out.add(name)
    return out


def _refit_due(previous: Dict[str, Any] | None, now: float) -> bool:
    return bool(_due(previous, now))


def _urgent(previous: Dict[str, Any] | None, now: float) -> bool:
    """Whether a VM's full read is more than a routine refresh: never forecast, a raised
    forecast, or new samples that strayed from a kept fit whose refresh is not due."""
    if is_cold(previous) or any(isinstance(f, dict) and f.get("status") != "ok"
                                for f in (previous or {}).get("forecasts") or ()):
        return True
    return not _refit_due(previous, now)


def compute(store: Any, vm_ids: Sequence[str], thresholds: Dict[str, Thresholds],
            now: float, full_reads: bool = False) -> List[Evaluated]:
    """Evaluate ``vm_ids`` (blocking, read-only on the store).

    Forecasts are recomputed only for VMs with data newer than their last forecast; the
    others (a silent VM marked by the sweep) keep theirs, and their history is not read.

    A VM whose forecasts are all kept (``health.verdict``: the samples since each fit agree
    with it and its refresh is not due, the steady state) needs only the samples since its
    last pass (each kept fit's memo sums up those before: ``health.verdict._agrees``) and its
    series' last ``TAIL_POINTS``: they are read for the whole batch in one query from where
    the VM's state says (``READS_KEY``, ``_next_reads``), and the result is the one a read of
    its whole history gives (``tests/engine/test_pass_reads.py``). The series of a VM that
    must be refitted (refresh due, new samples that strayed, a series new or gone) are then
    read whole by name (``_reread``); a VM never forecast, or whose state says nothing of its
    reads, is read whole. A whole read is raw since ``raw_since``, 5-minute means before
    (``read_whole``). ``full_reads`` reads every VM whole (as before; benchmarks compare).

    Full reads (first forecasts of VMs never forecast, refits) are bounded by a CPU budget,
    ``[health] forecast_cold_budget_ms`` per VM of the batch (of at least
    ``COLD_FLOOR_VMS``), on top of what the batch's other VMs cost (and at least
    ``COLD_MIN_VMS`` of them whatever they cost): the VMs never forecast, with a raised
    forecast or whose samples strayed come first, then the routine refreshes, each the
    longest-waiting first; the others are judged on their report with their kept forecasts
    (checks, silence, memory: an observed critical status is never delayed) and come back
    (``Evaluated.deferred``) until their turn. So a pass after an outage longer than
    ``forecast_refresh_s`` (every VM's refresh due) costs at most the budget more than a
    steady pass, and the refreshes spread over the next passes."""
    latests = _bulk(store, "latests", "latest", vm_ids)
    states = _bulk(store, "event_states", "event_state", [STATE_PREFIX + v for v in vm_ids])
    loaded = {v: (latests.get(v), states.get(STATE_PREFIX + v)) for v in vm_ids}
    fresh = [v for v, (latest, previous) in loaded.items() if has_new_data(latest, previous)]
    out: Dict[str, Evaluated] = {}
    cold = [v for v in fresh if is_cold(loaded[v][1])]
    warm = [v for v in fresh if v not in set(cold)]
    #: VMs whose full read is budgeted: the series to read whole (None: all of them) and
    #: the view of the samples since their last pass that the others keep
    rereads: Dict[str, Tuple[Set[str] | None, Dict[str, Any]]] = {v: (None, {}) for v in cold}
    if full_reads:
        _evaluate(store, [v for v in vm_ids if v not in set(cold)], warm, loaded, thresholds,
                  now, out)
    else:
        rereads.update(_evaluate_incremental(store, warm, loaded, thresholds, now, out))
        _evaluate(store, [v for v in vm_ids if v not in set(fresh)], [], loaded, thresholds,
                  now, out)
    budgeted = [v for v in vm_ids if v in rereads]
    started = time.process_time()
    limited = bool(budgeted) and all(thresholds[v].forecast_cold_budget_ms > 0 for v in vm_ids)
    if not limited:
        for v in budgeted:
            _reread(store, v, rereads[v], loaded, thresholds, now, out)
    else:
        per_vm = sum(thresholds[v].forecast_cold_budget_ms for v in vm_ids) / len(vm_ids)
        budget = per_vm * max(COLD_FLOOR_VMS, len(vm_ids)) / 1000.0

        def waited(v: str) -> float:
            state = loaded[v][1] or {}
            since = state.get("cold_since", state.get("refit_since"))
            return since if isinstance(since, (int, float)) else now
        order = sorted(budgeted, key=lambda v: (not _urgent(loaded[v][1], now), waited(v), v))
        take, last = 0, 0.0
        # one at a time (its own history query), while the next one (costing about what the
        # last one did) fits in the batch's budget
        while take < len(order) and (take < COLD_MIN_VMS or
                                     time.process_time() - started + last <= budget):
            first = time.process_time()
            _reread(store, order[take], rereads[order[take]], loaded, thresholds, now, out)
            last = time.process_time() - first
            take += 1
        later = order[take:]
        _evaluate(store, later, [], loaded, thresholds, now, out)
        for v in later:
            done = out[v]
            if done.state is not None:
                done.state["cold_since" if is_cold(loaded[v][1]) else "refit_since"] = \
                    waited(v)
                done.deferred = True
    return [out[v] for v in vm_ids]


def _bulk(store: Any, many: str, one: str, keys: Sequence[str]) -> Dict[str, Any]:
    """``store.<many>(keys)`` (one query), or ``store.<one>(key)`` for each key."""
    if hasattr(store, many):
        return getattr(store, many)(keys)
    found = {key: getattr(store, one)(key) for key in keys}
    return {key: value for key, value in found.items() if value is not None}


def _evaluate(store: Any, vm_ids: Sequence[str], fresh: Sequence[str],
              loaded: Dict[str, Any], thresholds: Dict[str, Thresholds], now: float,
              out: Dict[str, Evaluated]) -> None:
    """Evaluate ``vm_ids`` into ``out``; the whole histories of ``fresh`` are read (one
    query) and their forecasts made, the others keep theirs."""
    histories: Dict[str, Dict[str, Any]] = {}
    if fresh:
        longest = max(thresholds[v].forecast_window_s for v in fresh)
        histories = read_whole(store, fresh, now - longest,
                               min(raw_since(thresholds[v], now) for v in fresh))
    fresh_set = set(fresh)
    for vm_id in vm_ids:
        hist = histories.get(vm_id, {}) if vm_id in fresh_set else None
        _store_result(vm_id, hist, loaded, thresholds, now, out)


def _store_result(vm_id: str, hist: Dict[str, Any] | None, loaded: Dict[str, Any],
                  thresholds: Dict[str, Thresholds], now: float,
                  out: Dict[str, Evaluated]) -> Evaluated:
    latest, previous = loaded[vm_id]
    report = latest.report if latest is not None else None
    try:
        verdict, state = evaluate_vm(report, hist, thresholds[vm_id], previous, now,
                                     heard_at(latest))
    except Exception as err:  # one VM's failure must not cost the batch
        log.exception("evaluating VM %s failed", vm_id)
        done = out[vm_id] = Evaluated(vm_id, None, None, None, None, "%s: %s"
                                      % (type(err).__name__, err))
        return done
    if hist is not None:
        state[READS_KEY] = _next_reads(hist, _fits(state))
    elif isinstance((previous or {}).get(READS_KEY), dict):
        state[READS_KEY] = previous[READS_KEY]  # type: ignore[index]
    done = out[vm_id] = Evaluated(vm_id, verdict, state,
                                  latest.ingested_at if latest is not None else None,
                                  report_hostname(report))
    return done


def _next_reads(hist: Dict[str, Any], fits: Dict[str, Any]) -> Dict[str, Any]:
    """Where the next pass's read of a VM starts (``from``): early enough for every live
    series to hold its samples after the newest one its kept fit counted (``_counted``: the
    samples of this pass) and its last ``TAIL_POINTS``; series that
    stopped (``STALE_S``) are kept as ``ghosts`` (their samples from that point) instead of
    pulling the read back to them."""
    newest = max((float(pts[-1][0]) for pts in hist.values() if pts), default=None)
    start: float | None = None
    ghosts: Dict[str, List[List[float]]] = {}
    for name, pts in hist.items():
        if not pts or newest is None:
            continue
        need = float(pts[max(0, len(pts) - TAIL_POINTS)][0])
        last = _counted(fits.get(name))
        if last is not None:
            need = min(need, float(last))
        if float(pts[-1][0]) < newest - STALE_S:
            ghosts[name] = [[float(t), float(v)] for t, v in
                            pts[bisect.bisect_left(pts, (need,)):]]
        elif start is None or need < start:
            start = need
    return {"from": start, "ghosts": ghosts}


def _evaluate_incremental(store: Any, vm_ids: Sequence[str], loaded: Dict[str, Any],
                          thresholds: Dict[str, Thresholds], now: float,
                          out: Dict[str, Evaluated]
                          ) -> Dict[str, Tuple[Set[str] | None, Dict[str, Any]]]:
    """Evaluate the VMs of ``vm_ids`` whose kept fits all stand on the samples since their
    state's ``from`` (read for all of them in one query, or a few when they are far apart)
    into ``out``; return the others with the series each must read whole (``_reread``)."""
    plan: Dict[str, float] = {}
    rereads: Dict[str, Tuple[Set[str] | None, Dict[str, Any]]] = {}
    for v in vm_ids:
        previous = loaded[v][1]
        reads = (previous or {}).get(READS_KEY)
        start = reads.get("from") if isinstance(reads, dict) else None
        if not isinstance(start, (int, float)) or not _fits(previous):
            rereads[v] = (None, {})
        else:
            plan[v] = float(start)
    histories: Dict[str, Dict[str, Any]] = {}
    for group in _groups(plan):
        histories.update(store.histories(group, HISTORY_PREFIXES,
                                         min(plan[v] for v in group)))
    for v, start in plan.items():
        previous = loaded[v][1] or {}
        view = _view(histories.get(v, {}), previous[READS_KEY], start,
                     now - thresholds[v].forecast_window_s)
        due = _due(previous, now)
        if due:
            # refreshes due: those series are refitted on their whole history (and any
            # whose view falls short); the others are checked after (``_reread``)
            rereads[v] = (due | {n for n in _unkept(previous, previous, view)}, view)
            continue
        done = _store_result(v, view, loaded, thresholds, now, out)
        if done.state is None:
            continue
        unkept = _unkept(previous, done.state, view)
        if unkept:
            rereads[v] = (unkept, view)
            del out[v]
    return rereads


def _reread(store: Any, vm_id: str, plan: Tuple[Set[str] | None, Dict[str, Any]],
            loaded: Dict[str, Any], thresholds: Dict[str, Thresholds], now: float,
            out: Dict[str, Evaluated]) -> None:
    """Evaluate ``vm_id`` after reading whole the series that need it (``plan``: their names,
    None for all, and the view of the others): its first forecasts, or its refits."""
    names, view = plan
    since = now - thresholds[vm_id].forecast_window_s
    if names is not None:
        whole = read_whole(store, [vm_id], since, raw_since(thresholds[vm_id], now),
                           names).get(vm_id, {})
        merged = {n: pts for n, pts in view.items() if n not in names}
        merged.update(whole)
        previous = loaded[vm_id][1] or {}
        done = _store_result(vm_id, merged, loaded, thresholds, now, out)
        if done.state is None or not _unkept(previous, done.state, merged) - names:
            return
        log.debug("VM %s: evaluating on its whole history", vm_id)
    _evaluate(store, [vm_id], [vm_id], loaded, thresholds, now, out)


#: VMs of a batch whose reads start within this of each other share one query
GROUP_S = 3600.0


def _groups(plan: Dict[str, float]) -> List[List[str]]:
    groups: List[List[str]] = []
    first = 0.0
    for v in sorted(plan, key=lambda v: (-plan[v], v)):
        if groups and first - plan[v] <= GROUP_S:
            groups[-1].append(v)
        else:
            groups.append([v])
            first = plan[v]
    return groups


def _view(hist: Dict[str, Any], reads: Dict[str, Any], start: float, window_start: float
          ) -> Dict[str, List[Any]]:
    """What a read of the whole history shows from ``start`` on, with the ghosts of stopped
    series before it (their samples, kept in the state) for what lies earlier."""
    view: Dict[str, List[Any]] = {}
    for name, pts in hist.items():
        cut = pts[bisect.bisect_left(pts, (start,)):]
        if cut:
            view[name] = cut
    ghosts = reads.get("ghosts")
    for name, pts in (ghosts if isinstance(ghosts, dict) else {}).items():
        older = [(t, v) for t, v in pts if window_start <= t < start]
        if older:
            view[name] = older + view.get(name, [])
    return view


def _unkept(previous: Dict[str, Any], state: Dict[str, Any], view: Dict[str, Any]
            ) -> Set[str]:
    """The series whose evaluation on ``view`` may differ from the one their whole history
    gives: those refitted, appeared or gone (``previous`` against ``state``, their fits),
    and kept ones whose view does not hold every sample after the newest their fit counted
    and their last ``TAIL_POINTS`` (what a kept forecast reads). Empty: the result is the
    whole history's."""
    before, after = _fits(previous), _fits(state)
    out = set(before.keys() ^ after.keys())
    for name, memo in before.items():
        pts = view.get(name)
        now = after.get(name)
        counted = _counted(memo)
        if (not isinstance(memo, dict) or not isinstance(now, dict) or not pts
                or now.get("last") != memo.get("last") or now.get("due") != memo.get("due")
                or len(pts) < TAIL_POINTS or counted is None or pts[0][0] > counted):
            out.add(name)
    return out


def _counted(memo: Any) -> float | None:
    """The newest sample a kept fit has counted (``health.verdict``: its sums of the samples
    since the fit hold every one up to it): the next read must hold every sample after it."""
    if not isinstance(memo, dict):
        return None
    seen = memo.get("seen", memo.get("last"))
    return float(seen) if isinstance(seen, (int, float)) else None


# -- worker processes ------------------------------------------------------------------------

_STORE: Any = None
#: How often a worker looks whether the service that started it is still there (seconds).
PARENT_CHECK_S = 2.0


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (it is then re-parented: another ppid)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _start_worker(storage_config: Any, nice: int) -> None:
    global _STORE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when workers stop
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="parent-watch").start()
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
    return setting if setting >= 0 else usable_cores()


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
