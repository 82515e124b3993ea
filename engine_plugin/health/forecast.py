"""Forecasts of when a growing quantity (a filesystem, memory, swap, a process) reaches its limit.

What the common tools do, and where they cry wolf:

* Prometheus ``predict_linear`` fits least squares over a fixed window: one spike or a cleanup
  inside the window swings the slope, and the ramp of a log-rotation sawtooth looks like a fill.
* Zabbix ``timeleft``/``forecast`` fit a chosen function over a fixed period: the same problems.
* Netdata's ``out_of_disk_space_time`` divides free space by the recent rate: any burst alarms.

This module does the following instead, on bucketed medians so its cost is bounded:

1. Buckets the series into at most ``MAX_BUCKETS`` medians (a week of 1-minute samples costs
   the same as a day).
2. Removes isolated spikes with a Hampel filter (a point far from its neighbours' median).
3. Finds *resets*: drops larger than the noise (robust scale of the differences) and than a
   floor relative to capacity. One reset is a cleanup: only the data after it counts. Two or
   more are a sawtooth (log rotation, a periodic job): then the risk is judged on the cycle
   peaks' trend, and on whether the current ramp reaches the limit before the next usual reset.
4. Fits the trend with a lag-paired Theil–Sen estimator (median of the slopes between points
   half the window apart): robust to outliers, O(n log n).
5. Gives a confidence from how consistently the pairs agree on the direction and how much of
   the horizon (the time left, at most a day) the data covers, so a noisy history never raises
   an alarm.
6. Never looks further ahead than ``MAX_EXTRAPOLATION`` times the history it has, unless that
   history covers ``min_span_s`` (two hours by default): minutes of a disk filling in minutes
   are enough to warn, but minutes of a boot's memory ramp cannot predict the next day.
7. Fits the latest raw samples on their own as well (``_surge``), so a fill that began minutes
   ago after a quiet week is caught as soon as it stands clear of the noise.

``benchmarks/forecast_compare.py`` runs these and the usual alternatives on the same histories.
"""

import bisect
import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

Point = Tuple[float, float]

MAX_BUCKETS = 240
MIN_POINTS = 6
MIN_SPAN_S = 2 * 3600.0
FULL_CONFIDENCE_SPAN_S = 24 * 3600.0
MIN_ETA_CONFIDENCE = 0.3
MAX_EXTRAPOLATION = 10.0
#: Latest raw samples fitted on their own to catch a fill that just began (``_surge``).
SURGE_WINDOWS = (12, 24, 48, 96, 192)
SURGE_MIN_AGREEMENT = 0.9
SURGE_MIN_UP_STEPS = 0.75
SURGE_MIN_RISE_SIGMAS = 6.0
SURGE_NOISE_POINTS = 1440
MAX_ETA_S = 5 * 365 * 86400.0


@dataclasses.dataclass(frozen=True)
class Trend:
    """A fitted straight line ``value = intercept + slope * (t - t0)`` and its quality."""

    slope: float            # units per second
    intercept: float        # fitted value at t0
    t0: float
    confidence: float       # 0..1
    method: str             # "linear", "after_reset", "sawtooth", "insufficient"
    agreement: float = 0.0  # 0..1, how consistently the pairs agree on the direction

    def value_at(self, t: float) -> float:
        return self.intercept + self.slope * (t - self.t0)


@dataclasses.dataclass(frozen=True)
class Forecast:
    """When a series reaches ``capacity``; ``eta_s`` is None when it does not or cannot tell."""

    trend: Trend
    current: float
    capacity: Optional[float]
    eta_s: Optional[float]
    resets: int

    @property
    def trend_per_day(self) -> float:
        return self.trend.slope * 86400.0


def bucket_medians(points: Sequence[Point], max_buckets: int = MAX_BUCKETS) -> List[Point]:
    """Median time and value per equal-width time bucket; at most ``max_buckets`` points."""
    pts = sorted(points)  # linear for the already sorted series the store returns
    if not pts:
        return []
    times, values = zip(*pts)
    if not math.isfinite(math.fsum(values)):
        pts = [p for p in pts if math.isfinite(p[1])]
        return bucket_medians(pts, max_buckets) if pts else []
    n = len(pts)
    if n <= max_buckets:
        return pts
    start = times[0]
    width = (times[-1] - start) / max_buckets or 1.0
    out: List[Point] = []
    lo = 0
    for k in range(1, max_buckets + 1):
        hi = n if k == max_buckets else bisect.bisect_right(times, start + k * width, lo)
        if hi > lo:
            out.append((times[(lo + hi - 1) // 2], median(values[lo:hi])))
            lo = hi
    return out


def median(values: Sequence[float]) -> float:
    """statistics.median without its overhead, for the many short lists here."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def hampel(points: Sequence[Point], half_window: int = 2, k: float = 4.0,
           floor: float = 0.0) -> List[Point]:
    """Drop isolated outliers: points farther than ``k`` robust sigmas from their neighbours."""
    values = [v for _, v in points]
    kept: List[Point] = []
    for i, p in enumerate(points):
        window = values[max(0, i - half_window):i] + values[i + 1:i + 1 + half_window]
        if len(window) < 2:
            kept.append(p)
            continue
        med = median(window)
        scale = 1.4826 * median([abs(v - med) for v in window])
        dev = abs(p[1] - med)
        if dev > floor and dev > k * scale and not _is_step(values, i, med, floor):
            continue
        kept.append(p)
    return kept


def _is_step(values: Sequence[float], i: int, med: float, floor: float) -> bool:
    """True when the point starts a level shift that persists (a reset, not a spike)."""
    after = values[i + 1:i + 3]
    return len(after) >= 2 and all(abs(v - values[i]) <= max(floor, abs(values[i] - med) / 4)
                                   for v in after)


def find_resets(points: Sequence[Point], floor: float) -> List[int]:
    """Indexes ``i`` where ``points[i]`` is well below ``points[i-1]`` (a cleanup or rotation)."""
    diffs = [b[1] - a[1] for a, b in zip(points, points[1:])]
    if not diffs:
        return []
    med = median(diffs)
    scale = 1.4826 * median([abs(d - med) for d in diffs])
    limit = max(6 * scale, floor)
    return [i + 1 for i, d in enumerate(diffs) if d < -limit]


def fit(points: Sequence[Point], min_span_s: float = MIN_SPAN_S) -> Trend:
    """Lag-paired Theil–Sen fit; confidence from direction agreement and time covered.

    Fewer than ``MIN_POINTS`` points, or points covering less than ``min_span_s``, give an
    "insufficient" trend that never forecasts (``forecast`` relaxes the span for fast fills)."""
    n = len(points)
    span = points[-1][0] - points[0][0] if n else 0.0
    t0 = points[-1][0] if n else 0.0
    if n < MIN_POINTS or span <= 0 or span < min_span_s:
        level = median([v for _, v in points]) if n else 0.0
        return Trend(0.0, level, t0, 0.0, "insufficient")
    lag = max(1, n // 2)
    slopes = [(points[i + lag][1] - points[i][1]) / (points[i + lag][0] - points[i][0])
              for i in range(n - lag) if points[i + lag][0] > points[i][0]]
    slope = median(slopes)
    intercept = median([v + slope * (t0 - t) for t, v in points])
    if slope == 0:
        agreement = 0.0
    else:
        same = sum(1 for s in slopes if (s > 0) == (slope > 0) and s != 0)
        agreement = max(0.0, 2.0 * same / len(slopes) - 1.0)
    coverage = min(1.0, span / FULL_CONFIDENCE_SPAN_S)
    return Trend(slope, intercept, t0, round(agreement * (0.5 + 0.5 * coverage), 3), "linear",
                 agreement)


def _judge(trend: Trend, span: float, capacity: Optional[float], now: float,
           min_span_s: float) -> Trend:
    """The trend of a history shorter than ``min_span_s``, judged against its own horizon.

    It may forecast when the history covers at least 1/``MAX_EXTRAPOLATION`` of the time left,
    with a confidence that grows with the share of that time it covers; otherwise it is
    "insufficient"."""
    horizon = None
    if capacity is not None and trend.slope > 0:
        horizon = max(0.0, (capacity - trend.value_at(now)) / trend.slope)
    if horizon is None or span < horizon / MAX_EXTRAPOLATION:
        return Trend(0.0, trend.intercept, trend.t0, 0.0, "insufficient")
    coverage = min(1.0, span / max(1.0, min(FULL_CONFIDENCE_SPAN_S, horizon)))
    return dataclasses.replace(
        trend, confidence=round(trend.agreement * (0.5 + 0.5 * coverage), 3))


def forecast(points: Sequence[Point], capacity: Optional[float], now: float,
             reset_floor_fraction: float = 0.01, min_span_s: float = MIN_SPAN_S) -> Forecast:
    """Forecast when ``points`` (time, value) reach ``capacity`` (None: trend only)."""
    pts = bucket_medians(points)
    if not pts:
        return Forecast(Trend(0.0, 0.0, now, 0.0, "insufficient"), 0.0, capacity, None, 0)
    span_values = max(v for _, v in pts) - min(v for _, v in pts)
    if span_values == 0:
        flat = Trend(0.0, pts[-1][1], pts[-1][0], 1.0 if len(pts) >= MIN_POINTS else 0.0, "linear")
        return Forecast(flat, pts[-1][1], capacity, None, 0)
    floor = reset_floor_fraction * capacity if capacity else 0.05 * span_values
    pts = hampel(pts, floor=floor)
    resets = find_resets(pts, floor)
    current = pts[-1][1]
    if len(resets) >= 2:
        trend, eta = _sawtooth(pts, resets, capacity, now)
        return Forecast(trend, current, capacity, eta, len(resets))  # no _surge: see there
    segment = pts[resets[-1]:] if resets else pts
    trend = fit(segment, min_span_s)
    span = segment[-1][0] - segment[0][0]
    if trend.method == "insufficient" and span > 0 and len(segment) >= MIN_POINTS:
        trend = _judge(fit(segment, 0.0), span, capacity, now, min_span_s)
    if resets and trend.method == "linear":
        trend = dataclasses.replace(trend, method="after_reset")
    eta = _eta(trend, capacity, now)
    surge = _surge(points, capacity, now)
    if surge is not None and (eta is None or surge[1] < eta):
        return Forecast(surge[0], points[-1][1], capacity, surge[1], len(resets))
    return Forecast(trend, current, capacity, eta, len(resets))


def _surge(points: Sequence[Point], capacity: Optional[float], now: float
           ) -> Optional[Tuple[Trend, float]]:
    """A fill that began recently, from the latest raw samples, or None.

    The week-long fit cannot see a log that started running away twenty minutes ago after a
    quiet week (and the buckets blur the last minutes). So the last ``SURGE_WINDOWS`` raw
    samples are fitted too, each window on its own. A window counts when nearly all its pairs
    agree on growth (``SURGE_MIN_AGREEMENT``), most of its sample-to-sample steps are up
    (``SURGE_MIN_UP_STEPS``: a sustained rise, not one jump), its rise stands
    ``SURGE_MIN_RISE_SIGMAS`` above the series' sample-to-sample noise, and its span passes the
    horizon rule (``_judge``); the window that fills soonest gives the trend, since the latest
    samples carry the current rate. Only called for a series without a periodic pattern: a
    sawtooth's ramps are judged by ``_sawtooth``.
    """
    if capacity is None or len(points) < SURGE_WINDOWS[0]:
        return None
    noise = None
    found = None
    for size in SURGE_WINDOWS:
        if size > len(points):
            break
        window = points[-size:]
        ups = sum(1 for a, b in zip(window, window[1:]) if b[1] > a[1])
        if ups < SURGE_MIN_UP_STEPS * (size - 1):
            continue  # the cheap test first: most series are not rising sample after sample
        trend = fit(window, 0.0)
        if trend.slope <= 0 or trend.agreement < SURGE_MIN_AGREEMENT:
            continue
        if noise is None:
            noise = _step_noise(points[-SURGE_NOISE_POINTS:])
        span = window[-1][0] - window[0][0]
        if trend.slope * span < SURGE_MIN_RISE_SIGMAS * noise:
            continue
        judged = _judge(trend, span, capacity, now, float("inf"))
        eta = _eta(judged, capacity, now)
        if eta is not None and (found is None or eta < found[1]):
            found = (dataclasses.replace(judged, method="surge"), eta)
    return found


def _step_noise(points: Sequence[Point]) -> float:
    """Robust standard deviation of one sample's noise, from sample-to-sample steps (MAD)."""
    diffs = [b[1] - a[1] for a, b in zip(points, points[1:])]
    med = median(diffs)
    return 1.4826 * median([abs(d - med) for d in diffs]) / math.sqrt(2.0)


def _sawtooth(pts: Sequence[Point], resets: Sequence[int], capacity: Optional[float],
              now: float) -> Tuple[Trend, Optional[float]]:
    bounds = [0] + list(resets) + [len(pts)]
    cycles = [pts[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    peaks = [max(c, key=lambda p: p[1]) for c in cycles[:-1]]
    lengths = [c[-1][0] - c[0][0] for c in cycles[:-1]]
    # The trend that matters is the peaks': a sawtooth whose peaks stay put never fills.
    peak_trend = _peak_fit(peaks)
    eta_peaks = _eta(peak_trend, capacity, now)
    # Within the current cycle: does today's ramp reach the limit before the usual reset?
    current = cycles[-1]
    eta_ramp = None
    if capacity is not None and len(current) >= 3 and lengths:
        ramp = fit_ramp(current)
        remaining = max(0.0, median(lengths) - (current[-1][0] - current[0][0]))
        level = current[-1][1]
        if ramp > 0 and level + ramp * remaining >= capacity:
            eta_ramp = max(0.0, (capacity - level) / ramp)
    etas = [e for e in (eta_peaks, eta_ramp) if e is not None]
    return peak_trend, (min(etas) if etas else None)


def _peak_fit(peaks: Sequence[Point]) -> Trend:
    if len(peaks) < 3:
        level = max(v for _, v in peaks) if peaks else 0.0
        t0 = peaks[-1][0] if peaks else 0.0
        return Trend(0.0, level, t0, 0.5 if len(peaks) == 2 else 0.0, "sawtooth")
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(peaks)
              for b in peaks[i + 1:] if b[0] > a[0]]
    slope = median(slopes)
    t0 = peaks[-1][0]
    intercept = median([v + slope * (t0 - t) for t, v in peaks])
    same = sum(1 for s in slopes if s != 0 and (s > 0) == (slope > 0))
    conf = max(0.0, 2.0 * same / len(slopes) - 1.0) if slope else 0.0
    return Trend(slope, intercept, t0, round(conf, 3), "sawtooth")


def fit_ramp(points: Sequence[Point]) -> float:
    """Median slope between consecutive points: the rate of the current ramp."""
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(points, points[1:]) if b[0] > a[0]]
    return median(slopes) if slopes else 0.0


def _eta(trend: Trend, capacity: Optional[float], now: float) -> Optional[float]:
    """Seconds until the trend meets capacity; None for no growth or a trend too weak to tell."""
    if capacity is None or trend.slope <= 0 or trend.confidence < MIN_ETA_CONFIDENCE:
        return None
    level = trend.value_at(now)
    if level >= capacity:
        return 0.0
    eta = (capacity - level) / trend.slope
    return eta if eta <= MAX_ETA_S else None
