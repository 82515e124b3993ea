"""LTTB keeps the shape of a series (spikes included) in fewer points."""

from __future__ import annotations

import math

from engine_plugin.storage.downsample import lttb


def test_short_series_is_returned_unchanged() -> None:
    points = [(float(i), float(i * i)) for i in range(10)]
    assert lttb(points, 10) == points
    assert lttb(points, 1000) == points


def test_reduces_to_max_points_keeping_ends_and_order() -> None:
    points = [(float(i), math.sin(i / 50.0)) for i in range(5000)]
    out = lttb(points, 300)
    assert len(out) == 300
    assert out[0] == points[0] and out[-1] == points[-1]
    assert [p[0] for p in out] == sorted(p[0] for p in out)
    assert set(out) <= set(points)


def test_a_single_spike_survives() -> None:
    points = [(float(i), 1.0) for i in range(10000)]
    points[4321] = (4321.0, 99.0)
    out = lttb(points, 100)
    assert (4321.0, 99.0) in out
    # Bucket averaging would have turned the spike into about 2.
    assert max(v for _, v in out) == 99.0
