"""History, rollups and retention with known values, on every backend.

Raw retention is one hour here, so a few hours of one-minute reports cover every case: raw
points, rolled-up 5-minute buckets, the boundary between them and late samples.
"""

from __future__ import annotations

import math
from typing import Callable, List

import pytest

from engine_plugin.storage import Store
from lab.store_reports import envelope, ingest_as_received, vm_uuid

HOUR = 3600.0
START = 1_700_000_100.0  # on a 5-minute boundary
CONFIG = {"raw_retention_s": HOUR, "rollup_retention_s": 6 * HOUR, "vm_retention_s": 12 * HOUR}


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store(**CONFIG)


def minutes(vm: int, count: int, first: int = 0, **values: object) -> List[dict]:
    """One report a minute from START + first minutes; cpu.percent of minute i is i."""
    return [envelope(vm, i, START + 60 * i, cpu=float(i), **values)
            for i in range(first, first + count)]


def test_raw_history_is_exactly_the_samples_in_range(store: Store) -> None:
    store.ingest(minutes(1, 10))
    resolution, points = store.history(vm_uuid(1), "cpu.percent", START + 120, START + 300)
    assert resolution == "raw"
    assert points == [(START + 60 * i, float(i)) for i in (2, 3, 4, 5)]


def test_unknown_vm_or_metric_has_empty_history(store: Store) -> None:
    store.ingest(minutes(1, 2))
    assert store.history(vm_uuid(2), "cpu.percent", 0, 2e9)[1] == []
    assert store.history(vm_uuid(1), "no.such.metric", 0, START + 10)[1] == []
    assert store.history(vm_uuid(1), "cpu.percent", START + 10, START)[1] == []


def test_history_is_downsampled_to_max_points(store: Store) -> None:
    samples = [("cpu.percent", START + 10 * i, float(i % 7)) for i in range(300)]
    samples[123] = ("cpu.percent", START + 1230, 500.0)
    assert store.import_history(vm_uuid(1), samples=samples) == 300
    resolution, points = store.history(vm_uuid(1), "cpu.percent", START, START + 3000,
                                       max_points=50)
    assert resolution == "raw"
    assert len(points) == 50
    assert points[0] == (START, 0.0) and points[-1] == (START + 2990, float(299 % 7))
    assert (START + 1230, 500.0) in points
    with pytest.raises(ValueError):
        store.history(vm_uuid(1), "cpu.percent", START, START + 3000, max_points=1)


def test_retention_rolls_expired_raw_samples_into_exact_buckets(store: Store) -> None:
    ingest_as_received(store, minutes(1, 180))    # three hours, cpu = minute number
    now = START + 180 * 60
    stats = store.apply_retention(now)
    cutoff = now - HOUR                               # already on a 5-minute boundary
    rolled_minutes = int((cutoff - START) / 60)       # 120
    per_report = len(store.metric_names(vm_uuid(1)))
    assert stats["raw_rolled"] == rolled_minutes * per_report
    assert stats["rollups_written"] == rolled_minutes // 5 * per_report
    assert stats["ledger_pruned"] == rolled_minutes       # received 1 s after collection
    rollups = store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9)
    assert rollups == [(START + 300 * k, 5 * k + 2.0, 5 * k + 0.0, 5 * k + 4.0, 5)
                       for k in range(rolled_minutes // 5)]
    # Raw points now start at the cutoff.
    resolution, points = store.history(vm_uuid(1), "cpu.percent", cutoff - 600, now)
    assert resolution == "5m"
    resolution, points = store.history(vm_uuid(1), "cpu.percent", cutoff, now)
    assert resolution == "raw"
    assert points[0] == (cutoff, float(rolled_minutes))
    assert len(points) == 60
    # Running it again finds nothing left to do.
    again = store.apply_retention(now)
    assert (again["raw_rolled"], again["rollups_written"]) == (0, 0)


def test_wide_range_is_five_minute_averages_across_rollups_and_raw(store: Store) -> None:
    store.ingest(minutes(1, 180))
    now = START + 180 * 60
    store.apply_retention(now)
    resolution, points = store.history(vm_uuid(1), "cpu.percent", START, now)
    assert resolution == "5m"
    # Rolled buckets and raw buckets averaged on the fly give the same series.
    assert points == [(START + 300 * k, 5 * k + 2.0) for k in range(36)]


def test_wide_range_before_any_rollup_is_averaged_on_the_fly(store: Store) -> None:
    store.ingest(minutes(1, 20))
    resolution, points = store.history(vm_uuid(1), "cpu.percent", START - 2 * HOUR,
                                       START + 1200)
    assert resolution == "5m"
    assert points == [(START + 300 * k, 5 * k + 2.0) for k in range(4)]


def test_samples_older_than_rolled_time_are_dropped_as_stale(store: Store) -> None:
    store.ingest(minutes(1, 180))
    now = START + 180 * 60
    store.apply_retention(now)
    before = store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9)
    late = store.ingest([envelope(1, 0, START + 30, run_id="spooled", cpu=1000.0)])
    assert late.accepted == 1
    assert late.stale_samples == len(store.metric_names(vm_uuid(1)))
    assert store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9) == before
    store.apply_retention(now + 60)
    assert store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9) == before


def test_raw_rows_behind_the_cutoff_merge_into_existing_buckets(store: Store) -> None:
    # Such rows exist when an ingest that read the old cutoff commits after a retention pass.
    store.ingest(minutes(1, 180))
    now = START + 180 * 60
    store.apply_retention(now)
    store.import_history(vm_uuid(1), samples=[("cpu.percent", START + 30, 14.0)])
    store.apply_retention(now)
    first = store.rollups(vm_uuid(1), "cpu.percent", START, START)
    # Bucket 0 held 0..4 (avg 2, n 5); adding 14 gives avg 24 / 6 = 4.
    assert first == [(START, 4.0, 0.0, 14.0, 6)]


def test_metric_names_include_metrics_that_only_have_rollups(store: Store) -> None:
    store.ingest(minutes(1, 30, filesystems=[("/", 1e9, 2e9), ("/old", 1e9, 2e9)]))
    store.ingest(minutes(1, 30, first=150, filesystems=[("/", 1e9, 2e9)]))
    store.apply_retention(START + 180 * 60)
    names = store.metric_names(vm_uuid(1))
    assert "fs.used:/old" in names and "fs.used:/" in names
    assert store.history(vm_uuid(1), "fs.used:/old", START, START + 600)[0] == "5m"
    assert store.metric_names(vm_uuid(9)) == []


def test_bulk_histories_by_prefix_mix_rollups_and_raw(store: Store) -> None:
    for vm in (1, 2, 3):
        store.ingest(minutes(vm, 180, filesystems=[("/", 1e9 * vm, 1e10),
                                                   ("/var", 2e9, 1e10)]))
    now = START + 180 * 60
    store.apply_retention(now)
    out = store.histories([vm_uuid(1), vm_uuid(3), vm_uuid(42)], ["fs.used:", "cpu.percent"],
                          since=START + 2 * HOUR - 600)
    assert sorted(out) == [vm_uuid(1), vm_uuid(3)]
    assert sorted(out[vm_uuid(1)]) == ["cpu.percent", "fs.used:/", "fs.used:/var"]
    cpu = out[vm_uuid(3)]["cpu.percent"]
    # Two rolled buckets before the cutoff (bucket starts), then one raw point a minute.
    assert cpu[:2] == [(START + 2 * HOUR - 600, 112.0), (START + 2 * HOUR - 300, 117.0)]
    assert cpu[2:] == [(START + 60 * i, float(i)) for i in range(120, 180)]
    assert {v for _, v in out[vm_uuid(3)]["fs.used:/"]} == {3e9}
    assert store.histories([vm_uuid(1)], [], since=0) == {}


def test_bulk_histories_average_raw_samples_before_raw_since(store: Store) -> None:
    # a refit's read (workers.raw_since): 5-minute means of the raw samples before the bucket
    # of raw_since, computed by the database and stamped at the bucket's start like the
    # rollups, then raw samples
    store.ingest(minutes(3, 180, filesystems=[("/", 3e9, 1e10)]))
    now = START + 180 * 60
    store.apply_retention(now)
    since = START + 2 * HOUR - 600
    raw_since = START + 150 * 60 + 100
    out = store.histories([vm_uuid(3)], ["cpu.percent", "fs.used:"], since=since,
                          raw_since=raw_since)[vm_uuid(3)]
    cpu = out["cpu.percent"]
    assert cpu[:2] == [(START + 2 * HOUR - 600, 112.0), (START + 2 * HOUR - 300, 117.0)]
    means = [(START + 60 * i, float(i + 2)) for i in range(120, 150, 5)]
    assert cpu[2:8] == means
    assert cpu[8:] == [(START + 60 * i, float(i)) for i in range(150, 180)]
    assert {v for _, v in out["fs.used:/"]} == {3e9}
    # the same read without raw_since, or with it before since: raw samples after the rollups
    plain = store.histories([vm_uuid(3)], ["cpu.percent"], since=since)[vm_uuid(3)]
    assert plain["cpu.percent"][2:] == [(START + 60 * i, float(i)) for i in range(120, 180)]
    assert store.histories([vm_uuid(3)], ["cpu.percent"], since=since,
                           raw_since=since - HOUR)[vm_uuid(3)] == plain


def test_means_before_raw_since_are_the_same_once_rolled_up(make_store) -> None:
    # closed hours are rolled into rollups ahead of retention (roll_up): a refit's read takes
    # its 5-minute means from them, and the raw samples of the hours not rolled yet; the same
    # means as averaging the raw samples
    import time

    store = make_store(raw_retention_s=12 * HOUR, rollup_retention_s=30 * 86400)
    hs = math.floor(time.time() / HOUR) * HOUR     # partitions cover [hs - 13 h, hs + 4 h)
    first = hs - 6 * HOUR
    store.ingest([envelope(4, i, first + 60 * i, cpu=float(i)) for i in range(6 * 60 - 10)],
                 now=hs)
    since, raw_since = first - 600, hs - HOUR + 100
    before = store.histories([vm_uuid(4)], ["cpu.percent"], since=since, raw_since=raw_since)
    rolled = store.roll_up(hs)
    assert rolled["rolled"] > 0
    after = store.histories([vm_uuid(4)], ["cpu.percent"], since=since, raw_since=raw_since)
    cpu = after[vm_uuid(4)]["cpu.percent"]
    assert after == before
    assert cpu[:60] == [(first + 300 * k, 5.0 * k + 2) for k in range(60)]
    assert cpu[60:] == [(hs - HOUR + 60 * i, 300.0 + i) for i in range(50)]
    # those means are read from the rollups, not averaged from the raw samples again: with
    # the raw samples of the rolled hours gone, the read is the same
    store._write(lambda tx: tx.execute("DELETE FROM samples WHERE t < ?", (hs - HOUR,)))
    assert store.histories([vm_uuid(4)], ["cpu.percent"], since=since,
                           raw_since=raw_since) == before
    # while the raw samples of a closed hour are kept, other queries show them, not its
    # rollup (PostgreSQL and SQLite alike)
    assert store.rollups(vm_uuid(4), "cpu.percent", first, hs) == []


def test_recent_reads_show_rollups_imported_after_the_raw_cutoff(store: Store) -> None:
    # a pass's read of its last minutes skips the rollups when none can lie there (after
    # the raw cutoff only an import can put one): one imported there is still read
    store.ingest(minutes(5, 180))
    now = START + 180 * 60
    store.apply_retention(now)
    since = START + 150 * 60
    assert store.histories([vm_uuid(5)], ["cpu.percent"], since=since)[vm_uuid(5)][
        "cpu.percent"] == [(START + 60 * i, float(i)) for i in range(150, 180)]
    store.import_history(vm_uuid(5), rollups=[("cpu.percent", START + 155 * 60, 7.0, 7.0,
                                               7.0, 1), ("fs.used:/x", since - 300, 1.0, 1.0,
                                                         1.0, 1)])
    cpu = store.histories([vm_uuid(5)], ["cpu.percent"], since=since)[vm_uuid(5)]["cpu.percent"]
    assert (START + 155 * 60, 7.0) in cpu and len(cpu) == 31
    # and retention's rollups before the cutoff, as ever
    early = store.histories([vm_uuid(5)], ["cpu.percent"], since=START + HOUR)[vm_uuid(5)]
    assert early["cpu.percent"][0] == (START + HOUR, 62.0)


def test_retention_drops_old_rollups_silent_vms_and_old_event_states(store: Store) -> None:
    ingest_as_received(store, minutes(1, 180))
    ingest_as_received(store, minutes(2, 10, first=170))
    store.set_verdict(vm_uuid(1), {"status": "ok"}, now=START)
    store.set_event_state("old", {"x": 1}, now=START)
    now = START + 180 * 60
    store.apply_retention(now)
    assert store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9)
    # Rollups older than six hours expire; VM 1 stopped reporting at START + 3 h.
    later = START + 8 * HOUR
    stats = store.apply_retention(later)
    remaining = store.rollups(vm_uuid(1), "cpu.percent", 0, 2e9)
    cutoff = later - 6 * HOUR
    if store.backend == "postgresql":  # drops whole time partitions (docs/storage.md)
        from engine_plugin.storage.postgres_store import partition_widths

        width = partition_widths(store.config)["rollups"]
        assert width == HOUR / 2  # a twelfth of the 6 h rollup retention
        cutoff = math.floor(cutoff / width) * width
    assert remaining[0][0] == cutoff and remaining[-1][0] == START + 3 * HOUR - 300
    assert stats["rollups_deleted"] > 0
    assert stats["vms_removed"] == 0
    # Past vm retention both VMs are gone, with their reports, verdicts and history.
    stats = store.apply_retention(START + 16 * HOUR)
    assert stats["vms_removed"] == 2
    assert stats["event_states_pruned"] == 1
    assert store.vm_ids() == []
    assert store.latest(vm_uuid(1)) is None
    assert store.verdicts() == {}
    assert store.metric_names(vm_uuid(1)) == []
    assert store.event_state("old") is None
