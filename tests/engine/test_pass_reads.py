"""What a health pass reads (real SQLite and PostgreSQL): the samples since a VM's last pass,
with the same verdicts and states as a read of its whole history, and refits that fall due at
once (after an outage) bounded by the pass's budget."""

from __future__ import annotations

import math
import random
import time
from typing import Any, Dict, List, Tuple

import pytest

from engine_plugin.health import HISTORY_PREFIXES, Thresholds, evaluate_vm
from engine_plugin.service import workers
from engine_plugin.service.evaluation import STATE_PREFIX, HealthPass
from engine_plugin.service.metrics import ServiceMetrics
from engine_plugin.storage import open_store
from lab.store_reports import envelope, vm_uuid
from tests.health import shapes

GIB = float(2**30)
DAY = 86400.0
STEP = 300.0


class RecordingStore:
    """The real store, recording every history read: (VMs, since, exact names or None)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads: List[Tuple[List[str], float, Any]] = []

    def histories(self, vm_ids, prefixes, since, names=None, raw_since=None):
        self.reads.append((sorted(vm_ids), since, None if names is None else sorted(names)))
        return self.store.histories(vm_ids, prefixes, since, names=names, raw_since=raw_since)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def start_time() -> float:
    # partitions of a PostgreSQL store cover its retention around the real clock
    return math.floor(time.time() / STEP) * STEP - 6 * 3600


class Fleet:
    """Seven VMs with a day of history (imported) that then report every ``STEP``."""

    def __init__(self, store: Any, t0: float, noise: float = 1.0) -> None:
        self.store = store
        self.noise = noise
        self.t0 = t0
        self.rnd = random.Random(7)
        self.seq = 0
        self.ids = [vm_uuid(n) for n in range(7)]
        for n in range(7):
            samples = []
            t = t0 - DAY
            while t < t0:
                samples += [(name, t, value) for name, value in self.samples(n, t, 0).items()]
                t += STEP
            store.import_history(vm_uuid(n), samples=samples, host_id="host-1")

    def values(self, n: int, t: float, k: int) -> Dict[str, Any]:
        def g(mean: float, sigma: float) -> float:
            return self.rnd.gauss(mean, sigma * self.noise)
        root = 40 * GIB + g(0, 0.05 * GIB)
        if n == 0:                       # a steady fill: raised, refitted often
            root = 30 * GIB + 10 * GIB * (t - self.t0 + DAY) / DAY + g(0, 0.02 * GIB)
        if n == 5 and k >= 8:            # a fill that starts: the new samples stray
            root += (k - 7) * 2 * GIB
        total = 100 * GIB * (2 if n == 4 and k >= 15 else 1)   # a grown disk
        procs = [("postgres", 0.5 * GIB + g(0, 0.01 * GIB))]
        if not (n == 2 and k >= 10):     # java exits
            procs.append(("java", GIB + g(0, 0.02 * GIB)))
        if n == 3 and k >= 12:           # a new process
            procs.append(("worker", 0.2 * GIB + g(0, 0.01 * GIB)))
        return {"filesystems": (("/", root, total), ("/var", 10 * GIB, 30 * GIB)),
                "mem_used": 3 * GIB + g(0, 0.1 * GIB), "mem_total": 8 * GIB,
                "processes": tuple(procs)}

    def samples(self, n: int, t: float, k: int) -> Dict[str, float]:
        v = self.values(n, t, k)
        out = {"memory.used": v["mem_used"], "memory.total": v["mem_total"],
               "swap.used": 1e8, "swap.total": 2e9}
        for i, (mp, used, total) in enumerate(v["filesystems"]):
            out.update({"fs.used:" + mp: float(int(used)), "fs.total:" + mp: float(int(total)),
                        "fs.inodes_used:" + mp: 12345.0 + i, "fs.inodes_total:" + mp: 655360.0})
        for name, rss in v["processes"]:
            out["proc.rss:" + name] = float(int(rss))
        return out

    def report(self, vms: List[int], t: float, k: int, checks: Dict[int, Any] | None = None
               ) -> None:
        envs = [envelope(n, self.seq, t, host_id="host-1", received_at=t,
                         checks=(checks or {}).get(n, ()), **self.values(n, t, k))
                for n in vms]
        self.seq += 1
        self.store.ingest(envs, now=t)


def evaluate_both(store: RecordingStore, ids: List[str], th: Thresholds, now: float
                  ) -> Tuple[List[workers.Evaluated], List[workers.Evaluated], list, list]:
    """The pass's compute with its reads, and the same on every VM's whole history."""
    ths = {v: th for v in ids}
    store.reads.clear()
    whole = workers.compute(store, ids, ths, now, full_reads=True)
    whole_reads = list(store.reads)
    store.reads.clear()
    incremental = workers.compute(store, ids, ths, now)
    return incremental, whole, list(store.reads), whole_reads


def test_a_pass_reads_the_samples_since_the_last_fits_and_decides_as_a_whole_read(store_url):
    real = open_store(store_url)
    real.migrate()
    store = RecordingStore(real)
    t0 = start_time()
    fleet = Fleet(real, t0)
    # refreshes fall due within the test; no budget: what it puts off depends on the CPU
    # time refits take (a loaded machine), and the whole read below has none (the budget
    # has its own test)
    th = Thresholds(forecast_refresh_s=1800.0, forecast_cold_budget_ms=0)
    clock = [t0]
    health = HealthPass(store, lambda vm_id=None: th, None, ServiceMetrics(),
                        clock=lambda: clock[0])
    ids = fleet.ids
    fleet.report(list(range(7)), t0, 0)
    clock[0] = t0 + 5
    health.apply(workers.compute(store, ids, {v: th for v in ids}, clock[0]), clock[0])
    since_fit_reads = 0
    whole_reads = 0
    starts = []
    for k in range(1, 31):
        t = t0 + k * STEP
        reporting = [n for n in range(7) if not (n == 6 and 5 <= k < 20)]   # VM 6 silent
        fleet.report(reporting, t - 10, k)
        clock[0] = t
        incremental, whole, reads, _ = evaluate_both(store, ids, th, t)
        for a, b in zip(incremental, whole):
            assert a.verdict == b.verdict, (k, a.vm_id)
            assert a.state == b.state, (k, a.vm_id)
            assert not a.deferred
            if a.vm_id != ids[6]:     # (back from silence, its last samples are older)
                starts.append((t - a.state[workers.READS_KEY]["from"], k, ids.index(a.vm_id)))
        for vms, since, names in reads:
            if names is None and since >= t - 3 * 3600:
                since_fit_reads += len(vms)       # the batch's query since the last pass
            elif names is None:
                whole_reads += len(vms)           # a VM read whole
        health.apply(incremental, t)
        if k == 19:
            silent = real.event_state(STATE_PREFIX + ids[6])
            assert silent["status"] == "unknown"
    # most VMs of most passes read only their samples since the last pass; refits read
    # the series refitted (names), rarely a whole VM
    assert since_fit_reads >= 6 * 25
    assert whole_reads <= 6     # (a day of history is read twice: workers.MEANS_MIN_HISTORY_S)
    # and the next pass's read starts at this pass's last samples (TAIL_POINTS of them), not
    # at the fits, up to hours back: the state sums up the samples since each fit
    # (health.verdict)
    # (but for java's series on VM 2, which stopped at pass 10: until it is stale, its last
    # samples hold the read back)
    assert {(k, n) for start, k, n in starts if start > workers.TAIL_POINTS * STEP} <= {
        (k, 2) for k in range(10, 10 + int(workers.STALE_S / STEP))}
    # the story each VM tells: the fill raised, the grown disk and the new process seen,
    # java's series kept from the state after it exited (no read back to it)
    final = {r.vm_id: r for r in incremental}
    fill = [f for f in final[ids[0]].verdict["forecasts"] if f["metric"] == "fs.used:/"]
    assert fill and fill[0]["status"] != "ok"
    sudden = [f for f in final[ids[5]].verdict["forecasts"] if f["metric"] == "fs.used:/"]
    assert sudden and sudden[0]["status"] == "critical"
    grown = [f for f in final[ids[4]].verdict["forecasts"] if f["metric"] == "fs.used:/"]
    assert grown[0]["capacity"] == float(int(200 * GIB))
    assert "proc.rss:worker" in {f["metric"] for f in final[ids[3]].verdict["forecasts"]}
    assert "proc.rss:java" in final[ids[2]].state[workers.READS_KEY]["ghosts"]
    real.close()


def test_refits_due_after_an_outage_are_bounded_by_the_budget(store_url):
    # six VMs forecast, then an outage longer than forecast_refresh_s: every fit is due at
    # once. With a budget that fits none, a pass refits the least (two), the raised forecast
    # first, then the longest-waiting; the others keep their forecasts (judged on their
    # report: a critical check is raised at once) and come back, oldest first
    real = open_store(store_url)
    real.migrate()
    store = RecordingStore(real)
    t0 = start_time()
    fleet = Fleet(real, t0, noise=0.0)   # no noise: only the refreshes are due
    # the first pass forecasts all six whatever the CPU (no budget: a loaded machine's fits
    # of six weeks took longer than the default budget's 0.2 s and left some unforecast)
    th = Thresholds(forecast_refresh_s=1800.0, forecast_cold_budget_ms=0)
    tight = Thresholds(forecast_refresh_s=1800.0, forecast_cold_budget_ms=1e-4)
    clock = [t0]
    use = [th]
    health = HealthPass(store, lambda vm_id=None: use[0], None, ServiceMetrics(),
                        clock=lambda: clock[0])
    ids = fleet.ids[:6]
    vms = list(range(6))
    fleet.report(vms, t0, 0)
    clock[0] = t0 + 5
    health.evaluate(ids)
    before = {v: real.event_state(STATE_PREFIX + v)["forecasts_at"] for v in ids}
    assert all(at == clock[0] for at in before.values())

    def made(v: str) -> Dict[str, Any]:
        # a fit as made (a kept one's sums of the samples since it grow pass by pass)
        return {name: (memo["last"], memo["due"])
                for name, memo in real.event_state(STATE_PREFIX + v)["fits"].items()}

    fits = {v: made(v) for v in ids}

    def refitted() -> List[str]:
        """The VMs whose fits this pass made anew (a refit writes new ones)."""
        out = []
        for v in ids:
            now_fits = made(v)
            if now_fits != fits[v]:
                out.append(v)
            fits[v] = now_fits
        return out

    use[0] = tight
    # three hours later: every refresh is due, a quiet fit's too (three times the refresh,
    # spread by its last sample's time: 0.75 to 2.25 hours here; at two hours some were not)
    t = t0 + 3 * 3600
    fleet.report(vms, t - 10, 1, checks={3: (("units.failed", "critical", "1 unit failed"),)})
    clock[0] = t
    health.evaluate(ids)
    assert refitted() == [ids[0], ids[1]]         # VM 0's forecast is raised: first
    assert health._deferred == set(ids[2:])
    assert real.verdicts([ids[3]])[ids[3]]["status"] == "critical"   # never delayed
    for v in ids[2:]:
        state = real.event_state(STATE_PREFIX + v)
        assert state["refit_since"] == t and state["forecasts_at"] == before[v]
        assert state["forecasts"]                 # the kept forecasts are still shown

    t += 30   # (within the raised forecast's own refresh, an eighth of the others')
    fleet.report(vms, t - 10, 2)
    clock[0] = t
    health._deferred.clear()
    health.evaluate(ids)
    assert refitted() == [ids[2], ids[3]]         # the longest-waiting next
    t += 30
    fleet.report(vms, t - 10, 3)
    clock[0] = t
    health._deferred.clear()
    health.evaluate(ids)
    assert refitted() == [ids[4], ids[5]]
    # and the pass after reads only the samples since the refits, for all six at once
    t += 30
    fleet.report(vms, t - 10, 4)
    clock[0] = t
    store.reads.clear()
    health.evaluate(ids)
    assert store.reads[0][0] == sorted(ids) and store.reads[0][2] is None
    assert all(names is not None for _, _, names in store.reads[1:])   # raised ones' refits
    real.close()


@pytest.mark.parametrize("points", [3, 40])
def test_next_reads_start_early_enough_for_the_tail_and_the_fit(points):
    pts = [(1000.0 + 60 * i, float(i)) for i in range(points)]
    stopped = [(1000.0 + 60 * i, 1.0) for i in range(10)]
    newest = pts[-1][0]
    reads = workers._next_reads({"a": pts, "gone": stopped},
                                {"a": {"last": newest - 600}, "gone": {"last": 1000.0}})
    want = min(pts[max(0, points - workers.TAIL_POINTS)][0], newest - 600)
    assert reads["from"] == want
    # a fit that has summed up the samples since it (``seen``) needs only those after it
    counted = workers._next_reads({"a": pts}, {"a": {"last": newest - 600, "seen": newest}})
    assert counted["from"] == pts[max(0, points - workers.TAIL_POINTS)][0]
    if newest - stopped[-1][0] > workers.STALE_S:
        assert reads["ghosts"] == {"gone": [list(p) for p in stopped]}


def _shape(n: int, t: float, now: float, rnd: random.Random) -> float:
    return shapes.value(n, t, now, rnd.gauss(0, 1))


def test_refits_read_means_before_raw_since_and_decide_as_on_raw_samples(store_url):
    # what changes with a refit's input (5-minute means older than workers.raw_since, raw
    # samples after) against raw samples throughout: the same statuses and methods, the time
    # left within 5 %, on four days of 1-minute samples of eight shapes, at three moments
    real = open_store(store_url)
    real.migrate()
    now = start_time()
    ids = [vm_uuid(n) for n in range(8)]
    for n, vm_id in enumerate(ids):
        rnd = random.Random(n)
        samples = []
        t = now - 4 * DAY + 60
        while t <= now:
            samples += [("fs.used:/", t, float(int(_shape(n, t, now, rnd)))),
                        ("fs.total:/", t, 100 * GIB)]
            t += 60
        real.import_history(vm_id, samples=samples, host_id="host-1")
    th = Thresholds()
    raised = 0
    for at in (now - 2 * 3600, now - 3600, now):
        since = at - th.forecast_window_s
        raw = real.histories(ids, HISTORY_PREFIXES, since)
        means = workers.read_whole(real, ids, since, workers.raw_since(th, at))
        for vm_id in ids:
            upto = {name: [p for p in pts if p[0] <= at] for name, pts in raw[vm_id].items()}
            got = {name: [p for p in pts if p[0] <= at] for name, pts in means[vm_id].items()}
            assert len(got["fs.used:/"]) < len(upto["fs.used:/"]) / 3      # fewer rows
            a = evaluate_vm(None, upto, th, None, at, at)[0]["forecasts"][0]
            b = evaluate_vm(None, got, th, None, at, at)[0]["forecasts"][0]
            assert (a["status"], a["method"]) == (b["status"], b["method"]), (at, vm_id)
            if a["eta_s"] is not None:
                assert b["eta_s"] == pytest.approx(a["eta_s"], rel=0.05), (at, vm_id)
            raised += a["status"] != "ok"
    assert raised >= 6     # (the fill and the fast fill, at each moment)
    # a VM with less history than workers.MEANS_MIN_HISTORY_S is read raw
    young = workers.read_whole(real, ids[:1], now - 3600, workers.raw_since(th, now) + 3600)
    assert young == real.histories(ids[:1], HISTORY_PREFIXES, now - 3600)
    real.close()
