"""Disk-usage shapes over four days that the forecast tests share (``test_pass_reads``'s eight
and ``test_kept_fits``' two more): ``value(n, t, now, noise)`` is shape ``n``'s bytes at
``t``, ``now`` the first pass, ``noise`` a standard normal draw."""

from __future__ import annotations

import math

GIB = float(2**30)
DAY = 86400.0
HOUR = 3600.0


def value(n: int, t: float, now: float, noise: float) -> float:
    grown = t - (now - 2 * DAY)
    return {
        0: lambda: 30 * GIB + 10 * GIB * grown / DAY + 0.1 * GIB * noise,    # a fill: warning
        1: lambda: 40 * GIB + 0.5 * GIB * noise,                              # flat, noisy
        2: lambda: 40 * GIB + max(0.0, t - (now - 6 * HOUR)) / HOUR * 4 * GIB
        + 0.05 * GIB * noise,                                                 # began 6 h ago
        3: lambda: 50 * GIB + 20 * GIB * ((t % (6 * HOUR)) / (6 * HOUR))
        + 0.05 * GIB * noise,                                                 # cleanups, 6 h
        4: lambda: 40 * GIB + 30 * GIB * ((t % DAY) / DAY) + 0.1 * GIB * noise,   # daily ramp
        5: lambda: 40 * GIB + (10 * GIB if t > now - 20 * HOUR else 0.0)
        + 0.05 * GIB * noise,                                                 # a step
        6: lambda: 20 * GIB + 3 * GIB * grown / DAY
        + 5 * GIB * math.sin(2 * math.pi * t / (8 * HOUR)) + 0.3 * GIB * noise,   # on a cycle
        7: lambda: 60 * GIB + 0.5 * GIB * max(0.0, t - (now - 3 * HOUR)) / HOUR
        + 0.02 * GIB * noise,                                                 # began 3 h ago
        # a fill full in about 20 days (no alarm due) that, 3 hours into the passes, speeds
        # up to full in about 2 days
        8: lambda: 40 * GIB + 3 * GIB * grown / DAY
        + max(0.0, t - (now + 3 * HOUR)) / DAY * 25 * GIB + 0.05 * GIB * noise,
        # the daily ramp, and from the first pass a fill of 1 GiB an hour on top of it (below
        # the earlier peaks for hours: the cleanup cycle's level shows it)
        9: lambda: 40 * GIB + 30 * GIB * ((t % DAY) / DAY) + max(0.0, t - now) / HOUR * GIB
        + 0.1 * GIB * noise,
    }[n]()
