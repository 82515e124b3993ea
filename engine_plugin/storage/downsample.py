"""Fewer points for a chart without losing its spikes.

Averaging buckets would flatten a one-minute CPU spike into nothing; Largest-Triangle-Three-
Buckets (Steinarsson, 2013) keeps real points chosen for the visual area they span, so peaks
and dips survive at any zoom. First and last points are always kept.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

Point = Tuple[float, float]


def lttb(points: Sequence[Point], max_points: int) -> List[Point]:
    """``points`` (sorted by time) reduced to at most ``max_points`` by LTTB."""
    count = len(points)
    if max_points >= count or count <= 2:
        return list(points)
    if max_points < 3:
        return [points[0], points[-1]][:max(max_points, 1)]
    out = [points[0]]
    every = (count - 2) / (max_points - 2)
    chosen = 0
    for i in range(max_points - 2):
        start = int(i * every) + 1
        end = int((i + 1) * every) + 1
        nxt_start, nxt_end = end, min(int((i + 2) * every) + 1, count)
        if nxt_start >= nxt_end:
            avg_t, avg_v = points[-1]
        else:
            span = points[nxt_start:nxt_end]
            avg_t = sum(p[0] for p in span) / len(span)
            avg_v = sum(p[1] for p in span) / len(span)
        a_t, a_v = points[chosen]
        best, best_area = start, -1.0
        for j in range(start, end):
            t, v = points[j]
            area = abs((a_t - avg_t) * (v - a_v) - (a_t - t) * (avg_v - a_v))
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        chosen = best
    out.append(points[-1])
    return out
