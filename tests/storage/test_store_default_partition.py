"""Samples in the default partition and the continuous roll-up (PostgreSQL, issue 16).

Samples land in ``samples_default`` when no hour partition covers their time: history older
than the partitions (a store that has not run a retention pass yet), hours the service was
down for (no pass created their partitions; relays deliver them afterwards) and a guest whose
clock runs 20 hours ahead. The roll-up works per partition, the pass rolls the default partition
the row way and moves its rows into partitions it creates, and ingest merges late samples into
rolled hours. Whatever the order, fed through real ingest and run through simulated days of
roll-ups and passes, every accepted sample is counted exactly once: in the rollups once its
time is past the raw cutoff, else as a raw sample (and, on PostgreSQL, once in the rollups the
roll-up wrote ahead for its closed hour). SQLite has no partitions; the same contract is
checked there too.
"""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

from engine_plugin.storage.config import ROLLUP_STEP
from engine_plugin.storage.extract import extract_samples
from lab.store_reports import envelope, vm_uuid

HOUR = 3600.0
NORMAL_VMS = (1, 2, 3)
AHEAD_VM = 4  # its guest clock runs 20 hours ahead
AHEAD_S = 20 * HOUR
STEP_S = 900.0  # one report a VM every 15 minutes

Key = Tuple[str, str, float]  # (vm_id, metric, bucket)
Sums = Dict[Key, Tuple[int, float]]


class Fleet:
    """Reports fed through ``Store.ingest`` as the service would, and every sample the store
    accepted, for the expected sums."""

    def __init__(self, store) -> None:
        self.store = store
        self.rng = random.Random(7)
        self.seq: Dict[int, int] = {}
        self.accepted: List[Tuple[str, str, float, float]] = []
        self.lock = threading.Lock()

    def report(self, vm: int, t: float, received: float, now: float, store=None) -> None:
        with self.lock:
            seq = self.seq[vm] = self.seq.get(vm, -1) + 1
        env = envelope(vm, seq, t, received_at=received,
                       cpu=round(self.rng.uniform(0, 100), 3),
                       mem_used=float(self.rng.randrange(10 ** 9, 4 * 10 ** 9)))
        cutoff = raw_cutoff(self.store)
        samples = extract_samples(env["report"])
        stale = [s for s in samples if cutoff is not None and s[1] < cutoff]
        result = (store or self.store).ingest([env], now=now)
        assert result.accepted == 1 and result.stale_samples == len(stale)
        with self.lock:
            self.accepted += [(vm_uuid(vm), m, st, v) for m, st, v in samples
                              if cutoff is None or st >= cutoff]

    def span(self, vms, start: float, end: float, now: float, ahead: float = 0.0,
             stores=None) -> None:
        """Reports of ``vms`` every STEP_S in ``[start, end)`` (relay time), delivered at
        ``now``; the guest's clock is ``ahead`` seconds ahead of the relay's."""
        t, k = start, 0
        while t < end:
            for vm in vms:
                self.report(vm, t + ahead, t + 1.0, now,
                            stores[k % len(stores)] if stores else None)
            t, k = t + STEP_S, k + 1

    def imported(self, vm: int, times: List[float]) -> None:
        """``import_history`` (no cutoff check: it keeps whatever it is given)."""
        rows = [("cpu.percent", t, round(self.rng.uniform(0, 100), 3)) for t in times]
        self.store.import_history(vm_uuid(vm), samples=rows)
        self.accepted += [(vm_uuid(vm), m, t, v) for m, t, v in rows]


def raw_cutoff(store) -> float | None:
    return store._read(lambda tx: store._raw_cutoff(tx))


def sums(rows, keep=lambda t: True) -> Sums:
    out: Sums = {}
    for vm_id, metric, t, value in rows:
        if keep(t):
            key = (vm_id, metric, math.floor(t / ROLLUP_STEP) * ROLLUP_STEP)
            n, total = out.get(key, (0, 0.0))
            out[key] = (n + 1, total + value)
    return out


def same(got: Sums, want: Sums, what: str) -> None:
    assert sorted(set(got) ^ set(want))[:5] == [], what  # no bucket missing or extra
    for key, (n, total) in want.items():
        assert got[key][0] == n, (what, key)  # counted once: not lost, not twice
        assert math.isclose(got[key][1], total, rel_tol=1e-9, abs_tol=1e-3), (what, key)


def table(store, sql: str) -> List[Tuple[str, str, float, float, int]]:
    """Rows (vm_id, metric, time, value or average, count) of a samples/rollups query."""
    return store._read(lambda tx: tx.fetchall(sql))


def check(store, fleet: Fleet) -> None:
    """Every accepted sample once: rolled (shown rollups) before the cutoff, raw after it;
    on PostgreSQL also once in the rollups written ahead for the hours rolled so far."""
    cutoff = raw_cutoff(store)
    if cutoff is None:
        cutoff = -math.inf
    shown: Sums = {}
    for vm_id, metric in sorted({a[:2] for a in fleet.accepted}):
        for bucket, avg, _, _, n in store.rollups(vm_id, metric, 0, 2e10):
            shown[(vm_id, metric, bucket)] = (n, avg * n)
    same(shown, sums(fleet.accepted, lambda t: t < cutoff), "rolled before the cutoff")
    raw = table(store, "SELECT v.vm_id, m.name, s.t, s.value FROM samples s"
                       " JOIN vms v ON v.vm_key = s.vm_key"
                       " JOIN metrics m ON m.metric_id = s.metric_id")
    same(sums(raw), sums(fleet.accepted, lambda t: t >= cutoff), "raw samples kept")
    if not hasattr(store, "_rolled"):
        return
    rolled = store._read(lambda tx: store._rolled(tx))
    assert all(upto in (-1, 2 ** 31 - 1) for _, _, upto in rolled)  # whole hours (100 VMs)
    ahead = [(start, end) for start, end, upto in rolled if upto > 0]

    def rolled_ahead(t: float) -> bool:
        return any(start <= t < end for start, end in ahead)

    written: Sums = {}
    for vm_id, metric, bucket, avg, n in table(
            store, "SELECT v.vm_id, m.name, r.bucket, r.v_avg, r.n FROM rollups r"
                   " JOIN vms v ON v.vm_key = r.vm_key"
                   " JOIN metrics m ON m.metric_id = r.metric_id"):
        if rolled_ahead(bucket):
            written[(vm_id, metric, bucket)] = (n, avg * n)
    same(written, sums(fleet.accepted, rolled_ahead), "rolled ahead of retention")


def test_default_partition_samples_are_counted_once(make_store) -> None:
    hs = math.floor(time.time() / HOUR) * HOUR
    t0 = hs + 1800.0  # partitions (made at migration): [hs - 13 h, hs + 4 h)
    store = make_store(raw_retention_s=12 * HOUR, rollup_retention_s=30 * 86400)
    pg = hasattr(store, "_roll_up_step")
    fleet = Fleet(store)

    # before the first pass (no raw cutoff yet): history older than any partition, the
    # normal hours, and a guest 20 hours ahead (its samples have no partition for a while)
    fleet.span(NORMAL_VMS, hs - 20 * HOUR, hs - 14 * HOUR, now=t0)
    fleet.span(NORMAL_VMS, hs - 6 * HOUR, t0, now=t0)
    fleet.span([AHEAD_VM], t0 - HOUR, t0, now=t0, ahead=AHEAD_S)
    if pg:
        assert default_rows(store) > 0
    store.roll_up(t0)
    check(store, fleet)
    stats = store.apply_retention(t0)  # rolls the old history out of the default partition
    assert stats["raw_rolled"] > 0
    check(store, fleet)

    # the service is down 10 hours; the relays spooled and deliver when it is back: the
    # hours past hs + 4 h have no partition yet (no pass ran to make them)
    t1 = hs + 10.5 * HOUR
    fleet.span(NORMAL_VMS, t0, t1, now=t1)
    fleet.span([AHEAD_VM], t0, t1, now=t1, ahead=AHEAD_S)
    waiting = default_rows(store) if pg else 0
    assert waiting > 0 or not pg
    store.roll_up(t1)  # the leader's minute comes before the hourly pass
    check(store, fleet)
    stats = store.apply_retention(t1)  # creates the missing partitions, moving those rows
    if pg:
        assert stats["partitions_created"] >= 7 and 0 < default_rows(store) < waiting
    check(store, fleet)
    store.roll_up(t1)
    check(store, fleet)
    # late samples for hours that spent time in the default partition, now rolled
    fleet.span([1], hs + 5 * HOUR + 60.0, hs + 6 * HOUR, now=t1 + 60.0)
    check(store, fleet)

    # a day and a half of normal running, hour by hour: the ahead guest's samples sit in the
    # default partition until their hours are created, then are rolled and expire
    now = t1
    while now < hs + 36 * HOUR:
        fleet.span(NORMAL_VMS, now, now + HOUR, now=now + HOUR)
        fleet.span([AHEAD_VM], now, now + HOUR, now=now + HOUR, ahead=AHEAD_S)
        now += HOUR
        if now == hs + 20.5 * HOUR:
            # an import of old history lands behind the cutoff, in the default partition
            fleet.imported(2, [hs - 5 * HOUR + 30.0 * i for i in range(20)])
        store.roll_up(now)
        store.apply_retention(now)
        store.roll_up(now)
        check(store, fleet)
    cutoff = raw_cutoff(store)
    assert cutoff is not None and cutoff > hs + 20 * HOUR  # past the first ahead samples
    assert any(t < cutoff for vm_id, _, t, _ in fleet.accepted
               if vm_id == vm_uuid(AHEAD_VM) and t > hs + 19 * HOUR)


def default_rows(store) -> int:
    return store._read(lambda tx: tx.fetchone("SELECT count(*) FROM samples_default"))[0]


def test_default_partition_rows_racing_roll_up_and_retention(make_store) -> None:
    """The service back after 10 hours: relays deliver their spools (hours with and without
    partitions, through two instances) while one instance rolls up and the other runs its
    pass (creating the missing partitions, moving rows out of the default one); then the
    hours after. Every sample once, whatever interleaving the server chose."""
    hs = math.floor(time.time() / HOUR) * HOUR
    t0, t1 = hs + 1800.0, hs + 10.5 * HOUR
    config = {"raw_retention_s": 12 * HOUR, "rollup_retention_s": 30 * 86400}
    a, b = make_store(**config), make_store(**config)
    pg = hasattr(a, "_roll_up_step")
    fleet = Fleet(a)
    fleet.span(NORMAL_VMS, hs - 6 * HOUR, t0, now=t0)
    a.roll_up(t0)
    a.apply_retention(t0)
    check(a, fleet)

    done = threading.Event()
    barrier = threading.Barrier(len(NORMAL_VMS) + 2)

    def deliver(vm: int) -> None:
        barrier.wait()
        # VM 3's relay delivers the hours without a partition first (it lost the older ones)
        fleet.span([vm], t0 if vm != 3 else hs + 5 * HOUR, t1, now=t1, stores=[a, b])

    def roll_up() -> int:
        barrier.wait()
        steps = 0
        while not done.is_set():
            step = a.roll_up(t1).get("steps", 0)
            steps += step
            if not step:
                time.sleep(0.02)
        return steps

    def retention() -> List[Dict[str, int]]:
        barrier.wait()
        while pg and not default_rows(b) and not done.is_set():
            time.sleep(0.01)  # the first pass starts once the default partition has rows
        runs = []
        while not done.is_set():
            runs.append(b.apply_retention(t1))
            time.sleep(0.05)
        return runs

    with ThreadPoolExecutor(len(NORMAL_VMS) + 2) as pool:
        feeds = [pool.submit(deliver, vm) for vm in NORMAL_VMS]
        rolling, passes = pool.submit(roll_up), pool.submit(retention)
        for feed in feeds:
            feed.result()
        done.set()
        rolling.result()
        runs = passes.result()
    if pg:  # the missing hours' partitions were made while their rows were coming in
        assert sum(r["partitions_created"] for r in runs) >= 7
    a.roll_up(t1)
    a.apply_retention(t1)
    a.roll_up(t1)
    check(a, fleet)
    later = hs + 24.5 * HOUR  # past the cutoff of hours that were in the default partition
    b.roll_up(later)
    b.apply_retention(later)
    b.roll_up(later)
    assert raw_cutoff(b) > hs + 10 * HOUR
    check(b, fleet)
