"""Continuous roll-up ahead of retention, on PostgreSQL (by hour partition, 100 VMs a step)
and SQLite (5 minutes of the whole fleet a step): every raw sample ends up in exactly one
rollup, whatever runs in between (late samples, sent twice, a retention pass overlapping a
half-rolled hour, another instance taking over), and queries show what they showed without
it."""

from __future__ import annotations

import math
import random
import time
from typing import Dict, List, Tuple

import pytest

from engine_plugin.storage import postgres_store
from engine_plugin.storage.config import ROLLUP_GRACE_S, ROLLUP_STEP
from lab.store_reports import vm_uuid

HOUR = 3600.0
METRICS = ("cpu.percent", "memory.used")
VMS = 5

Bucket = Tuple[int, str, float]


def hour_start(t: float) -> float:
    return math.floor(t / HOUR) * HOUR


def generate(rng: random.Random, start: float, end: float, step: float = 60.0
             ) -> Dict[int, List[Tuple[str, float, float]]]:
    """Samples of VMS VMs, each metric every ``step`` s with jitter, in ``[start, end)``."""
    out: Dict[int, List[Tuple[str, float, float]]] = {}
    for vm in range(VMS):
        rows = []
        t = start + rng.uniform(0, step)
        while t < end:
            for metric in METRICS:
                rows.append((metric, round(t, 3), round(rng.uniform(0, 100), 3)))
            t += step
        out[vm] = rows
    return out


def expected_buckets(batches: List[Dict[int, List[Tuple[str, float, float]]]],
                     before: float) -> Dict[Bucket, Tuple[int, float]]:
    """(count, sum) per (vm, metric, bucket) of every sample older than ``before``."""
    out: Dict[Bucket, Tuple[int, float]] = {}
    for batch in batches:
        for vm, rows in batch.items():
            for metric, t, value in rows:
                if t < before:
                    key = (vm, metric, math.floor(t / ROLLUP_STEP) * ROLLUP_STEP)
                    n, total = out.get(key, (0, 0.0))
                    out[key] = (n + 1, total + value)
    return out


def stored_buckets(store, since: float, until: float) -> Dict[Bucket, Tuple[int, float]]:
    out = {}
    for vm in range(VMS):
        for metric in METRICS:
            for bucket, avg, _, _, n in store.rollups(vm_uuid(vm), metric, since, until):
                out[(vm, metric, bucket)] = (n, avg * n)
    return out


def same(got: Dict[Bucket, Tuple[int, float]], want: Dict[Bucket, Tuple[int, float]]) -> None:
    assert set(got) == set(want)
    for key, (n, total) in want.items():
        assert got[key][0] == n, key  # counted once: not lost, not twice
        assert got[key][1] == pytest.approx(total, rel=1e-9, abs=1e-6), key


def raw_cutoff(store) -> float:
    """Samples before this were rolled by retention (5 minutes on SQLite, whole partitions
    on PostgreSQL)."""
    return store._read(lambda tx: store._raw_cutoff(tx))


def load(store, batch) -> None:
    for vm, rows in batch.items():
        store.import_history(vm_uuid(vm), samples=rows)
        # VMs with only imported history count as silent without a verdict
        store.set_verdict(vm_uuid(vm), {"status": "ok"}, time.time() + 30 * HOUR)


def roll_steps(store, now: float, steps: int) -> int:
    """``steps`` transactions of the roll-up, as a leader would run them (PostgreSQL: 100 VMs
    of an hour partition; SQLite: 5 minutes of every VM)."""
    if hasattr(store, "_roll_up_step"):
        def step(tx):
            return store._roll_up_step(tx, now)
    else:
        end = hour_start(now - ROLLUP_GRACE_S)

        def step(tx):
            return store._roll_ahead_step(tx, end)
    done = 0
    for _ in range(steps):
        if store._write(step) is None:
            break
        done += 1
    return done


@pytest.mark.parametrize("seed", [3, 11])
def test_every_sample_is_in_one_rollup_whatever_runs_between(make_store, monkeypatch,
                                                             seed) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(postgres_store, "ROLLUP_CHUNK_VMS", 2)  # several steps an hour
    now = hour_start(time.time()) + 1800.0
    a = make_store(raw_retention_s=6 * HOUR, rollup_retention_s=30 * 86400)
    b = make_store(raw_retention_s=6 * HOUR, rollup_retention_s=30 * 86400)  # a 2nd instance
    first = generate(rng, now - 5 * HOUR, now)
    load(a, first)
    narrow = {(vm, m): a.history(vm_uuid(vm), m, now - 4 * HOUR, now, max_points=10**6)
              for vm in range(VMS) for m in METRICS}
    pg = hasattr(a, "_roll_up_step")

    stats = a.roll_up(now, budget_s=0.0)  # no budget: nothing happens
    assert stats["steps"] == 0
    # part of the closed hours by instance A, then B takes over (a leader change)
    assert roll_steps(a, now, 4) == 4
    assert roll_steps(b, now, 3) == 3
    # queries show the raw samples, not the rollups written ahead of retention
    for (vm, m), series in narrow.items():
        assert a.history(vm_uuid(vm), m, now - 4 * HOUR, now, max_points=10**6) == series
        assert b.rollups(vm_uuid(vm), m, 0, now) == []

    # late samples into hours rolled whole, half rolled and not rolled yet
    late = generate(rng, now - 5 * HOUR, now - HOUR, step=900.0)
    load(b, late)
    load(a, late)  # sent again: stored and counted once
    stats = b.roll_up(now)
    assert stats["steps"] > 0 and stats.get("lock_timeouts", 0) == 0
    assert b.roll_up(now)["steps"] == 0  # idempotent: nothing left that is due
    # the hourly retention pass, hours later, by A: partitions only dropped
    later = now + 3 * HOUR
    result = a.apply_retention(later)
    cutoff = raw_cutoff(a)
    assert hour_start(later - 6 * HOUR) - HOUR < cutoff <= later - 6 * HOUR
    if pg:
        # every expired hour was rolled before: the pass only dropped partitions
        assert result["partitions_rolled_before"] >= 2 and result["raw_rolled"] == 0
    else:
        # every expired bucket was rolled before: the pass only deleted raw samples
        assert result["raw_rolled"] > 0 and result["rollups_written"] == 0
    same(stored_buckets(a, 0, later), expected_buckets([first, late], cutoff))


def test_retention_rolls_what_the_roll_up_left_half_done(make_store, monkeypatch) -> None:
    rng = random.Random(5)
    monkeypatch.setattr(postgres_store, "ROLLUP_CHUNK_VMS", 2)
    now = hour_start(time.time()) + 1800.0
    store = make_store(raw_retention_s=3 * HOUR, rollup_retention_s=30 * 86400)
    batch = generate(rng, now - 4 * HOUR, now)
    load(store, batch)
    # the oldest hour: 4 of 5 VMs (PostgreSQL), 10 minutes of it (SQLite)
    assert roll_steps(store, now, 2) == 2
    # retention at once overlaps the half-rolled hour: it rolls the rest, then drops it
    result = store.apply_retention(now + 1.5 * HOUR)
    cutoff = raw_cutoff(store)
    assert result["raw_rolled"] > 0
    same(stored_buckets(store, 0, now), expected_buckets([batch], cutoff))
    # the roll-up goes on with the hours still kept; a second pass changes nothing
    store.roll_up(now + 1.5 * HOUR)
    store.apply_retention(now + 1.5 * HOUR)
    same(stored_buckets(store, 0, now), expected_buckets([batch], cutoff))
    later = now + 4 * HOUR
    store.roll_up(later)
    store.apply_retention(later)
    same(stored_buckets(store, 0, later), expected_buckets([batch], raw_cutoff(store)))
