"""Forecasts of when a growing quantity (a filesystem, memory, swap, a process) reaches its limit.

What the common tools do, and where they cry wolf:

* Prometheus ``predict_linear`` fits least squares over a fixed window: one spike or a cleanup
  inside the window swings the slope, and the ramp of a cycle or a sawtooth looks like a fill.
* Zabbix ``timeleft``/``forecast`` fit a chosen function over a fixed period: the same problems.
* Netdata's ``out_of_disk_space_time`` divides free space by the recent rate: any burst alarms.

A forecast here is a claim that the latest part of the series rises in a straight line, and
will go on doing so. It is made only when the data supports every part of that claim:

1. **Windows ending now.** Windows of 2 minutes, 4, 8, ... up to the whole history (or the
   part since a cleanup) are fitted each on its own: raw samples for windows up to two hours,
   means of ``FIT_BUCKETS`` equal time buckets beyond (prefix sums make any bucket mean cost a
   bisection, so a week costs about what a day costs).
2. **Robust fit with an error.** Lag-paired Theil–Sen (median of the slopes between points half
   the window apart); the residuals' robust scale (MAD) gives the error of the rise over the
   window, ``sigma * sqrt(12 / n)``. The rise must be ``MIN_T`` errors or more. Where the
   history holds fewer than ``MIN_PAST_WINDOWS`` earlier windows to compare with (4), the
   error also counts the residuals' lag-1 correlation (effective ``n``): usage wandering
   slowly around a level is smooth, hence "significant" to a test that assumes independence.
3. **One straight line, not a step or a bend.** The medians of the residuals in each quarter of
   the window must stay within a tenth of the rise (plus their own noise): a step inside the
   window (a package upgrade, a restored data set) or a fill that only began halfway is no
   line, and a shorter window, after the change, is judged instead. This is the change-point
   test, in both directions.
4. **Exceptional for this series.** The same rise (mean of the window's last quarter minus mean
   of its first quarter) is measured over every earlier window of that length in the history
   (on raw samples for windows up to two hours). The current rise must exceed the largest of
   them by ``EXCEPTIONAL_RATIO``: a cycle's ramp, a job's sawtooth of a few minutes, usage that
   wanders around a level, a daily batch job, all rose as much before without filling anything.
   A window with no earlier window of its length in the history (a fill as old as the history)
   is exempt, and then only the other tests apply. The rise must also be ``TYPICAL_RATIO``
   times the root mean square of the earlier windows' rises and falls (rises only for
   windows up to ``RAW_FIT_MAX_S``, which have dozens of earlier windows: a cleanup sawtooth
   falls at once what it rose slowly): a level that wanders shows its typical excursion even
   where few earlier windows hold no large one.
4b. **Not a staircase.** One or two level shifts (flat between; the best split of the
   window's bucket means, searched exactly) must not explain the window better than a line by
   the Bayesian information criterion: upgrades or restores a few days apart line up, but do
   not go on rising.
5. **Cleanups.** Drops larger than the noise and than ``reset_floor_fraction`` of capacity are
   resets. After exactly one reset (a cleanup) only the data since it counts; with two or more
   (rotation, a periodic job) the whole history stays, so earlier ramps are the reference of (4).
5b. **A cleanup cycle.** With ``CYCLE_MIN_RESETS`` cleanups or more at a regular period (the
   median deviation of their intervals within ``CYCLE_JITTER`` of the median interval: a
   routine job's bursts, deleted at random moments, are no cycle), their shape is taken
   out (``_cycle``): each cleanup is placed at the sample where the level falls most, the
   period is the median time between them, and the shape is the median level in each
   ``CYCLE_BINS``-th of the period after a cleanup, less each cycle's own level and the
   trend across cycles. What remains is the level across the cleanups: flat for a plain
   sawtooth, rising for a fill on top of it, from its first cycles (the raw series shows it
   only once its peaks rise above the earlier ones, a day or more on a daily rotation).
   Windows longer than the current cycle and than ``CYCLE_MIN_PERIODS`` periods, and
   windows inside the current cycle (after its first eighth of a period), are judged on it
   by the same tests (method ``cleanup_cycle``): a ramp that rises faster than the earlier
   ramps at the same time after their cleanups is a fill, even below their peaks. The limit
   is reached by the cycle's peaks: the fitted level plus the shape's top. Inside the
   current cycle the raw samples are judged too, as before (a fast fill on one ramp).
5c. **Any other cycle** (a daily load, an hourly job; a sine or a ramp and a fall, 20
   minutes to 1.75 days: ``_season``). Where no window passed and some rose clearly but
   failed a later test (no cleanup cycle found), the history's 5-minute means are searched
   for a period: the lag at which the series differs least from itself against half that
   lag (a cycle differs most half a period apart; a level that wanders or fills differs
   more the longer the lag), the shortest such peak among candidates ``SEASON_SPACING``
   apart, refined on multiples of it. The profile is the median, per part of the period,
   of the means less their moving mean over one period (which follows a fill, so the
   profile does not absorb it); it must explain ``SEASON_SHARE`` of what the moving mean
   leaves (a wandering level's "profile" explains little). The samples less the profile
   at their phase are judged by every test above on every window (method ``seasonal``): a
   fill shows as the level rising across the cycles, each part of the cycle higher than
   at the same phase of the earlier ones, long before the raw series rises above the
   cycle's earlier peaks. The limit is reached by the peaks (the level plus the profile's
   top).
6. **Persistence proportional to the horizon.** A window may forecast a time left of at most
   ``MAX_EXTRAPOLATION`` times its length, or ``LONG_EXTRAPOLATION`` times if it covers
   ``min_span_s`` (``[health] forecast_min_span_s``) and passed (4) against earlier windows:
   minutes of a disk filling in minutes are enough, minutes of a boot's memory ramp cannot
   predict the next day, and a history with nothing to compare to never looks far ahead.

The longest window that passes everything gives the forecast (the most data, hence the
steadiest rate), unless a shorter one that passes rises faster, by more than twice their
combined error and by a tenth: then the growth sped up, or began, inside the longer window. The
``Trend`` says which span was fitted, how, and how sure (``slope_error``, ``confidence``), so
the API and the VM page can show why. Limits are in ``docs/engine.md``;
``benchmarks/forecast_replay.py`` measures all of this by replay on a corpus it was not tuned on.
"""

import bisect
import dataclasses
import itertools
import math
import operator
from typing import Any, List, Optional, Sequence, Tuple

Point = Tuple[float, float]

MIN_POINTS = 6
MIN_SPAN_S = 2 * 3600.0
FIRST_WINDOW_S = 120.0
RAW_FIT_MAX_S = 2 * 3600.0        # windows up to this long are fitted on raw samples
FIT_BUCKETS = 32                  # longer windows: means of this many time buckets
MIN_T = 5.0                       # the rise over the window, in units of its error
LINEARITY = 0.1                   # quarter residual medians within this share of the rise
EXCEPTIONAL_RATIO = 2.0           # the rise vs the largest earlier rise of the same length
TYPICAL_RATIO = 3.5               # ... and vs the root mean square of the earlier rises (and falls)
SPREAD_SHARE = 0.5                # the rise vs the samples' interquartile range in the window
SPREAD_SAMPLES = 512              # (measured on at most this many samples)
MIN_PAST_WINDOWS = 3.0            # earlier history needed, in window lengths, to compare with
DENSE_STEPS = 192                 # earlier windows ending every quarter window, most recent
PAST_STEP_S = 300.0               # then every quarter window, or this if longer (the rollups'
                                  # width: finer steps see nothing new in 5-minute means)
MAX_EXTRAPOLATION = 10.0
LONG_EXTRAPOLATION = 40.0
RESET_SIGMAS = 6.0
RESET_BUCKETS = 168
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
FUTURE_TOLERANCE_S = 300.0        # samples stamped later than now + this are ignored
MAX_ETA_S = 5 * 365 * 86400.0


@dataclasses.dataclass(frozen=True)
class Trend:
    """A fitted straight line ``value = intercept + slope * (t - t0)`` and why it is trusted.

    ``start``..``end`` is the span that was fitted, ``slope_error`` the slope's standard error
    (same unit), ``confidence`` 0..1 (at least 0.5 only when every test passed)."""

    slope: float            # units per second
    intercept: float        # fitted value at t0
    t0: float
    confidence: float       # 0..1
    method: str             # "linear", "recent", "after_reset", "sawtooth", "cleanup_cycle",
                            # "seasonal", "insufficient"
    start: float = 0.0
    end: float = 0.0
    slope_error: float = 0.0
    reason: str = ""        # why no forecast was trusted, when none was
    reach: float = 0.0      # the longest time left this fit may forecast (persistence)

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
    #: the cleanup cycle found, if any: its last cleanup's time, its period and its shape
    #: (``CYCLE_BINS`` levels after a cleanup, ``shape_at``), which the verdict's kept fits
    #: expect the next samples to follow
    cycle: Optional[Tuple[float, float, Tuple[float, ...]]] = None
    #: any other cycle found (``_season``), in the same form: a moment at phase 0, its period
    #: and its profile (``SEASON_BINS`` levels at most), which the verdict takes out before it
    #: judges whether a raised forecast's series went down
    season: Optional[Tuple[float, float, Tuple[float, ...]]] = None

    @property
    def trend_per_day(self) -> float:
        return self.trend.slope * 86400.0


def median(values: Sequence[float]) -> float:
    """statistics.median without its overhead, for the many short lists here."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


class _Series:
    """Times, values and prefix sums: any time range's mean costs two bisections."""

    def __init__(self, times: Sequence[float], values: Sequence[float]) -> None:
        self.t = times
        self.v = values
        self.cs = [0.0]
        self.cs.extend(itertools.accumulate(values))
        self.ct = [0.0]
        self.ct.extend(itertools.accumulate(times))

    def index(self, t: float) -> int:
        return bisect.bisect_left(self.t, t)

    def mean(self, a: float, b: float) -> Optional[float]:
        lo, hi = bisect.bisect_left(self.t, a), bisect.bisect_left(self.t, b)
        return (self.cs[hi] - self.cs[lo]) / (hi - lo) if hi > lo else None

    def buckets(self, a: float, b: float, count: int) -> List[Point]:
        width = (b - a) / count
        out = []
        lo = bisect.bisect_left(self.t, a)
        for k in range(1, count + 1):
            hi = bisect.bisect_left(self.t, a + k * width) if k < count else len(self.t)
            if hi > lo:
                out.append(((self.ct[hi] - self.ct[lo]) / (hi - lo),
                            (self.cs[hi] - self.cs[lo]) / (hi - lo)))
            lo = hi
        return out


def _clean(points: Sequence[Point], now: float) -> Tuple[List[float], List[float]]:
    if not points:
        return [], []
    vs = list(map(_SECOND, points))
    if not math.isfinite(sum(vs)):
        points = [p for p in points if math.isfinite(p[1])]
        if not points:
            return [], []
        vs = list(map(_SECOND, points))
    ts = list(map(_FIRST, points))
    if ts[-1] > now + FUTURE_TOLERANCE_S:     # a guest clock ahead of ours: not yet
        cut = bisect.bisect_right(ts, now + FUTURE_TOLERANCE_S)
        ts, vs = ts[:cut], vs[:cut]
    return ts, vs


def fit(points: Sequence[Point], t0: float) -> Tuple[float, float, float]:
    """Lag-paired Theil–Sen: (slope, value at ``t0``, robust residual scale)."""
    n = len(points)
    lag = max(1, n // 2)
    slopes = [(points[i + lag][1] - points[i][1]) / (points[i + lag][0] - points[i][0])
              for i in range(n - lag) if points[i + lag][0] > points[i][0]]
    slope = median(slopes) if slopes else 0.0
    level = median([v - slope * (t - t0) for t, v in points])
    resid = [v - level - slope * (t - t0) for t, v in points]
    scale = 1.4826 * median([abs(r) for r in resid])
    return slope, level, scale


def find_resets(s: _Series, start: float, end: float, floor: float) -> List[float]:
    """Times of drops well below the noise of bucket-to-bucket changes (cleanups, rotation)."""
    pts = s.buckets(start, end, RESET_BUCKETS) if end > start else []
    if len(pts) < 4:
        return []
    diffs = [b[1] - a[1] for a, b in zip(pts, pts[1:])]
    med = median(diffs)
    limit = max(RESET_SIGMAS * 1.4826 * median([abs(d - med) for d in diffs]), floor)
    out = []
    for i, d in enumerate(diffs):
        after = pts[i + 2][1] if i + 2 < len(pts) else pts[i + 1][1]
        if d < -limit and pts[i][1] - after > limit:  # a drop that stays down: not a dip
            out.append(pts[i + 1][0])
    return out


def forecast(points: Sequence[Point], capacity: Optional[float], now: float,
             reset_floor_fraction: float = 0.01, min_span_s: float = MIN_SPAN_S) -> Forecast:
    """Forecast when ``points`` (time, value; sorted by time) reach ``capacity`` (None: trend
    only, for display)."""
    ts, vs = _clean(points, now)
    if len(ts) < MIN_POINTS or ts[-1] <= ts[0]:
        level = median(vs) if vs else 0.0
        t0 = ts[-1] if ts else now
        return Forecast(Trend(0.0, level, t0, 0.0, "insufficient", t0, t0, 0.0,
                              "too few samples"), vs[-1] if vs else 0.0, capacity, None, 0)
    s = _Series(ts, vs)
    end = ts[-1]
    current = median(vs[-5:])
    spread = max(vs) - min(vs)
    floor = reset_floor_fraction * capacity if capacity else 0.05 * spread
    resets = find_resets(s, ts[0], end, floor) if spread > 0 else []
    seg_start = resets[-1] if len(resets) == 1 else ts[0]
    method_long = ("after_reset" if len(resets) == 1 else "sawtooth" if resets else "linear")

    passed: List[Trend] = []
    shown: Optional[Trend] = None
    reason = "history shorter than %d s" % FIRST_WINDOW_S
    cycle = _cycle(s, resets, end) if len(resets) >= CYCLE_MIN_RESETS else None
    # on a cleanup cycle, the raw series is judged only inside the current cycle (its ramp);
    # longer windows are judged on the series with the cycle's shape taken out (below), and
    # so are the windows inside the current cycle (its ramp against the earlier ramps)
    longest = (end - cycle.cuts[-1]) if cycle is not None else math.inf
    compared = False    # a window rose clearly, but failed a later test: a cycle's, maybe
    width = FIRST_WINDOW_S
    while True:
        whole = width >= end - seg_start
        a = seg_start if whole else end - width
        w = end - a
        if w > longest and (passed or shown is not None):
            break
        judged = _judge(s, a, end, w, seg_start, capacity, now, min_span_s)
        if judged is not None:
            trend, ok, why = judged
            trend = dataclasses.replace(trend, method=method_long if whole else "recent")
            shown = trend
            if ok:
                passed.append(trend)
            else:
                reason = why
                compared = compared or why not in _NOISE
        if whole:
            break
        width *= 2
    if cycle is not None:
        # the level across the cleanups: each sample less the cycle's typical shape at its
        # time since the last cleanup, judged like the raw series on windows of two periods
        # or more and on windows inside the current cycle (less its first eighth of a period,
        # where a cleanup placed a little off leaves a jump); the limit is reached by the
        # cycle's peaks (the level plus the shape's top)
        ds = cycle.series
        width = FIRST_WINDOW_S
        while True:
            whole = width >= end - ts[0]
            a = ts[0] if whole else end - width
            w = end - a
            if (w > longest and w >= CYCLE_MIN_PERIODS * cycle.period) or \
                    w <= longest - cycle.period / 8:
                judged = _judge(ds, a, end, w, ts[0], None if capacity is None
                                else capacity - cycle.top, now, min_span_s)
                if judged is not None:
                    trend, ok, why = judged
                    trend = dataclasses.replace(trend, method="cleanup_cycle",
                                                intercept=trend.intercept + cycle.top)
                    shown = trend
                    if ok:
                        passed.append(trend)
                    else:
                        reason = why
            if whole:
                break
            width *= 2
        passed.sort(key=lambda tr: tr.end - tr.start)
    # any other cycle, looked for where nothing passed and the history is wide against its
    # noise or some window rose clearly but failed a later test
    season = (_season(s, end) if cycle is None and not passed
              and (compared or _wide(vs, spread)) else None)
    if season is not None:
        # a cycle that is no cleanup sawtooth (a daily load, an hourly job): the samples less
        # its profile at their phase are judged like the raw series, on every window; the
        # limit is reached by the cycle's peaks (the level plus the profile's top)
        ds = season.series
        width = FIRST_WINDOW_S
        while True:
            whole = width >= end - seg_start
            a = seg_start if whole else end - width
            judged = _judge(ds, a, end, end - a, seg_start, None if capacity is None
                            else capacity - season.top, now, min_span_s)
            if judged is not None:
                trend, ok, why = judged
                trend = dataclasses.replace(trend, method="seasonal",
                                            intercept=trend.intercept + season.top)
                if ok:
                    passed.append(trend)
            if whole:
                break
            width *= 2
        passed.sort(key=lambda tr: tr.end - tr.start)
    if passed:
        best = passed[-1]
        for trend in reversed(passed[:-1]):
            # a shorter window rising clearly faster: the fill sped up (or began) inside the
            # longer one, whose slope mixes before and after
            error = math.hypot(trend.slope_error, best.slope_error)
            if trend.slope > max(best.slope + 2.0 * error, 1.1 * best.slope):
                best = trend
        if best.method == "cleanup_cycle" and cycle is not None:
            best = _trim(cycle.series, best, cycle.top)
        elif best.method == "seasonal" and season is not None:
            best = _trim(season.series, best, season.top)
        else:
            best = _trim(s, best)
        eta = _eta(best, capacity, now)
        if eta is not None and eta > best.reach:
            best = dataclasses.replace(best, reason="too far ahead for %s of data"
                                       % _span(best.end - best.start))
            eta = None
        return Forecast(best, current, capacity, eta, len(resets), _shown(cycle),
                        _profile(season))
    if shown is None:
        shown = Trend(0.0, current, end, 0.0, "insufficient", seg_start, end, 0.0, reason)
    else:
        shown = dataclasses.replace(shown, confidence=min(shown.confidence, 0.49), reason=reason)
    return Forecast(shown, current, capacity, None, len(resets), _shown(cycle),
                    _profile(season))


def _shown(cycle: Optional["_Cycle"]) -> Optional[Tuple[float, float, Tuple[float, ...]]]:
    return None if cycle is None else (cycle.cuts[-1], cycle.period, tuple(cycle.profile))


def _profile(season: Optional["_Season"]) -> Optional[Tuple[float, float, Tuple[float, ...]]]:
    return None if season is None else (season.start, season.period, tuple(season.profile))


def shape_at(cycle: Sequence[Any], t: float) -> float:
    """The cycle's shape (``Forecast.cycle``: last cleanup, period, levels; or
    ``Forecast.season``: a moment at phase 0, period, profile) at time ``t``: its levels,
    each at the middle of its part of the period since the last cleanup, joined by straight
    lines (a ramp, not a staircase; held flat in the first and last half part, around the
    cleanup), cycles repeating at the period after the last cleanup."""
    cut, period, shape = cycle[0], cycle[1], cycle[2]
    x = (t - cut) % period / period * len(shape) - 0.5
    if x <= 0:
        return float(shape[0])
    k = int(x)
    if k >= len(shape) - 1:
        return float(shape[-1])
    return float(shape[k] + (shape[k + 1] - shape[k]) * (x - k))


def _judge(s: _Series, a: float, end: float, w: float, seg_start: float,
           capacity: Optional[float], now: float, min_span_s: float
           ) -> Optional[Tuple[Trend, bool, str]]:
    """Fit the window ``[a, end]`` and test it; None when it has too few points to fit."""
    if w <= RAW_FIT_MAX_S:
        lo = s.index(a)
        pts = list(zip(s.t[lo:], s.v[lo:]))
    else:
        pts = s.buckets(a, end, FIT_BUCKETS)
    n = len(pts)
    if n < MIN_POINTS:
        return None
    slope, level, scale = fit(pts, end)
    resid = [v - level - slope * (t - end) for t, v in pts]
    envelope = level
    if w > RAW_FIT_MAX_S:
        # a cycle's peaks, not its middle, reach the limit first: the upper envelope
        envelope += max(0.0, sorted(resid)[int(0.9 * (n - 1))])
    diffs = [q[1] - p[1] for p, q in zip(pts, pts[1:])]
    mid = median(diffs)
    noise = 1.4826 * median([abs(d - mid) for d in diffs]) / math.sqrt(2.0)
    scale = max(scale, noise)  # the residuals' MAD alone can be fooled by a curve
    rise_error = scale * math.sqrt(12.0 / n)
    rise = slope * w
    t_stat = rise / rise_error if rise_error > 0 else (math.inf if rise > 0 else 0.0)
    confidence = round(min(1.0, 0.5 * t_stat / MIN_T) if t_stat > 0 else 0.0, 3)
    trend = Trend(slope, envelope, end, confidence, "linear", a, end, rise_error / w if w else 0.0)

    def no(why: str) -> Tuple[Trend, bool, str]:
        return dataclasses.replace(trend, confidence=min(confidence, 0.49)), False, why

    if slope <= 0:
        return no("not growing")
    if t_stat < MIN_T:
        return no("growth within the noise")
    quarter = max(1, n // 4)
    for k in range(4):
        part = pts[k * quarter:(k + 1) * quarter] if k < 3 else pts[3 * quarter:]
        if not part:
            continue
        dev = median([v - level - slope * (t - end) for t, v in part])
        if abs(dev) > LINEARITY * rise + 3.0 * noise / math.sqrt(len(part)):
            return no("a step or a bend, not a line")
    if (a - max(seg_start, s.t[0])) / w < MIN_PAST_WINDOWS:
        # Little or nothing to compare with: the residuals' own correlation must not pass
        # for evidence (usage wandering slowly around a level looks smooth, "significant").
        rho = _lag1(resid)
        n_eff = max(2.0, min(n, n * (1 - rho) / (1 + rho)))
        if rise < MIN_T * scale * math.sqrt(12.0 / n_eff):
            return no("growth within the noise (correlated)")
    head = s.mean(end - w / 4, end + 1e-9)
    tail = s.mean(a, a + w / 4)
    if head is None or tail is None:
        return no("gaps in the data")
    if head - tail < 0.5 * rise:  # a line gives 0.75: the fit leans on a few points
        return no("the fit and the means disagree")
    if w <= RAW_FIT_MAX_S:
        # a rise of minutes to hours just after a drop is judged against the levels before
        # the drop too: a process regrowing its memory after a restart is no fill
        seg_start = s.t[0]
    step = max(1, (s.index(end + 1e-9) - s.index(a)) // SPREAD_SAMPLES)
    spread = sorted(s.v[s.index(a):s.index(end + 1e-9):step])
    iqr = spread[3 * len(spread) // 4] - spread[len(spread) // 4]
    if head - tail < SPREAD_SHARE * iqr:
        return no("rise within the spread of the samples")
    past = _past(s, a, w, seg_start, (head - tail) / EXCEPTIONAL_RATIO, head)
    if past == "rise":
        return no("rose as much before")
    if past == "level":
        return no("no higher than before")
    if _steps_explain(s, a, end):
        return no("steps, not a line")
    long = past == "exceptional" and w >= min_span_s
    reach = (LONG_EXTRAPOLATION if long else MAX_EXTRAPOLATION) * w
    confidence = round(min(1.0, 0.5 + 0.5 * (t_stat - MIN_T) / MIN_T), 3)
    return dataclasses.replace(trend, confidence=confidence, reach=reach), True, ""


def _wide(vs: Sequence[float], spread: float) -> bool:
    """Whether the history's range is wide against the noise of its latest samples (the
    robust scale of their changes): white noise spans a few times its scale, a cycle (or a
    level that wanders, steps or fills) many."""
    recent = vs[-SEASON_NOISE_SAMPLES:]
    diffs = sorted([abs(b - a) for a, b in zip(recent, recent[1:])])
    noise = 1.4826 * diffs[len(diffs) // 2] / math.sqrt(2.0) if diffs else 0.0
    return spread > SEASON_WIDE * noise


_NOISE = ("not growing", "growth within the noise", "growth within the noise (correlated)",
          "gaps in the data")

CYCLE_MIN_RESETS = 4               # cleanups needed before a cycle's shape is removed
CYCLE_BINS = 32                   # the shape: mean level per this many parts of the period
CYCLE_MIN_PERIODS = 2.0           # windows across cleanups: at least this many periods long
CYCLE_JITTER = 1.0 / 3.0           # the typical deviation of the cleanups' intervals from
                                  # their median, at most this share of it


@dataclasses.dataclass
class _Cycle:
    cuts: List[float]             # the cleanups' times, to the sample
    period: float                 # the typical time between cleanups
    top: float                    # the shape's highest part, above the level
    series: "_Series"             # the samples less the shape at their time since a cleanup
    profile: List[float]          # the shape: the level of each CYCLE_BINS-th of the period


def _cycle(s: _Series, resets: Sequence[float], end: float) -> Optional[_Cycle]:
    """The cleanup cycle's shape (a sawtooth: rotation, a periodic cleanup job), found from
    the cleanups ``resets``: each cleanup placed at the sample where the level falls most,
    the typical period (median time between cleanups), and the mean level per part of that
    period after a cleanup (less each cycle's own level and the trend across cycles), so that
    the samples less that shape show the level across the cleanups: flat for a plain
    sawtooth, rising for a fill on top of it."""
    width = (end - s.t[0]) / RESET_BUCKETS
    cuts: List[float] = []
    for r in resets:
        if cuts and r - 1.5 * width <= cuts[-1]:
            continue        # the same drop, flagged in two buckets
        lo, hi = s.index(r - 1.5 * width), s.index(r + 0.5 * width)
        half = width / 4
        step = max(1, (hi - lo) // 16)
        best, at = 0.0, None
        for i in range(lo, hi, step):
            t = s.t[i]
            before, after = s.mean(t - half, t), s.mean(t, t + half)
            if before is not None and after is not None and before - after > best:
                best, at = before - after, t
        if at is not None and (not cuts or at > cuts[-1]):
            cuts.append(at)
    if len(cuts) < CYCLE_MIN_RESETS:
        return None
    intervals = [b - a for a, b in zip(cuts, cuts[1:])]
    period = median(intervals)
    if period <= 0 or median([abs(x - period) for x in intervals]) > CYCLE_JITTER * period:
        # a cycle comes at a regular period (a rotation, a periodic job: 0.01 of it and less
        # on the corpus's tuning seeds, up to about 0.2 on the built cases, whose periods
        # vary by up to 30 %); a routine job's bursts whose
        # deletions come at random moments do not, and a "shape" made of them would hide the
        # earlier bursts a new one must be compared with
        return None
    part = period / CYCLE_BINS
    # each complete cycle's level (mean over one period after its cleanup) and the trend
    # across cycles (Theil-Sen of those levels), so the shape does not absorb a fill
    levels: List[Point] = []
    for a, b in zip(cuts, cuts[1:]):
        m = s.mean(a, min(b, a + period))
        if m is not None:
            levels.append((a + min(b - a, period) / 2, m))
    if len(levels) < 3:
        return None
    slopes = [(q[1] - p[1]) / (q[0] - p[0]) for i, p in enumerate(levels)
              for q in levels[i + 1:] if q[0] > p[0]]
    trend = median(slopes) if slopes else 0.0
    shape: List[List[float]] = [[] for _ in range(CYCLE_BINS)]
    for (a, b), (mid, m) in zip(zip(cuts, cuts[1:]), levels):
        for k in range(CYCLE_BINS):
            t_lo, t_hi = a + k * part, a + (k + 1) * part
            if t_hi > b:
                break
            v = s.mean(t_lo, t_hi)
            if v is not None:
                shape[k].append(v - m - trend * ((t_lo + t_hi) / 2 - mid))
    profile = [median(x) if x else math.nan for x in shape]
    for k in range(CYCLE_BINS):     # parts no cycle reached: the last known part's level
        if math.isnan(profile[k]):
            profile[k] = profile[k - 1] if k else 0.0
    top = max(profile)
    values: List[float] = []
    starts = [cuts[0] - period] + cuts
    bounds = cuts + [math.inf]
    lo = 0
    for a, b in zip(starts, bounds):
        for k in range(CYCLE_BINS):
            hi = (s.index(min(b, a + (k + 1) * part)) if k < CYCLE_BINS - 1
                  else s.index(b))
            if hi > lo:
                p = profile[k]
                values.extend([v - p for v in s.v[lo:hi]])
                lo = hi
    return _Cycle(cuts, period, top, _Series(s.t, values), profile)


SEASON_GRID_S = 300.0              # the grid a cycle is looked for on (the rollups' width)
SEASON_MIN_LAG = 4                 # the shortest period looked for, in grid steps (20 min)
SEASON_MIN_CYCLES = 4.0            # the history must hold this many periods
SEASON_SPACING = 1.1               # candidate periods, this much apart
SEASON_STRENGTH = 2.0              # a cycle: half a period apart, the series differs this many
                                   # times more than a period apart
SEASON_COARSE = 16                 # candidates are compared on means of grid steps, at least
                                   # this many to a period
SEASON_SPAN = 16                   # ... over at most this many periods (the most recent)
SEASON_WIDE = 10.0                 # looked for only in histories this many times wider
                                   # than their noise
SEASON_NOISE_SAMPLES = 120         # (the noise of this many latest samples: raw, 2 hours)
SEASON_BINS = 64                   # the profile: a mean level per part of the period
SEASON_SHARE = 0.5                 # the profile explains at least this share of the series
                                   # less its moving mean


@dataclasses.dataclass
class _Season:
    period: float                 # seconds
    top: float                    # the profile's highest point, above the level
    series: "_Series"             # the samples less the profile at their phase
    start: float                  # a moment at phase 0 (the grid's start)
    profile: List[float]          # the level of each part of the period


def _grid(s: _Series, end: float) -> Tuple[float, List[float]]:
    """Means of ``SEASON_GRID_S`` buckets aligned on multiples of it (a rollup is its
    bucket's mean), from the first sample's bucket to ``end``'s; an empty bucket takes the
    previous one's mean."""
    start = s.t[0] - s.t[0] % SEASON_GRID_S
    n = int((end - start) // SEASON_GRID_S) + 1
    bounds = [0]
    bounds.extend(map(bisect.bisect_left, itertools.repeat(s.t, n),
                      [start + k * SEASON_GRID_S for k in range(1, n + 1)]))
    cs = s.cs
    out = [(cs[hi] - cs[lo]) / (hi - lo) if hi > lo else math.nan
           for lo, hi in zip(bounds, bounds[1:])]
    if any(map(math.isnan, out)):
        last = s.v[0]
        for k, v in enumerate(out):
            if v != v:
                out[k] = last
            else:
                last = v
    return start, out


def _lagdiff(xs: Sequence[float], lag: int, span: int) -> float:
    """Mean absolute difference of ``xs`` ``lag`` apart, over its last ``span`` values."""
    a = xs[max(lag, len(xs) - span):]
    b = xs[max(0, len(xs) - span - lag):len(xs) - lag]
    return sum(map(abs, map(operator.sub, a, b))) / len(a) if a else math.inf


def _lagcurve(xs: Sequence[float], lag: int) -> float:
    """Mean absolute difference of ``xs`` ``lag`` apart, each difference less the mean of
    the ``lag`` differences around it: how much the series differs from itself a lag apart,
    less what it rose over the lag (``_season``'s refinement)."""
    d = list(map(operator.sub, xs[lag:], xs[:len(xs) - lag]))
    m = len(d) - lag
    if lag < 1 or m < 1:
        return math.inf
    cs = [0.0]
    cs.extend(itertools.accumulate(d))
    around = map((1.0 / lag).__mul__, map(operator.sub, cs[lag:lag + m], cs[:m]))
    return sum(map(abs, map(operator.sub, d[lag // 2:lag // 2 + m], around))) / m


def _season(s: _Series, end: float) -> Optional[_Season]:
    """A cycle that is not a cleanup sawtooth (a daily load, an hourly job: a sine, a ramp
    and a fall, minutes to days), found on the grid of 5-minute means: its period is the
    lag at which the series differs least from itself compared with half that lag (a cycle
    differs most half a period apart; a level that wanders or fills differs more the longer
    the lag), refined on multiples of it; its profile is the median, per part of the
    period, of the series less its moving mean over a period (which follows a fill, so the
    profile does not absorb it). Returns the samples less the profile at their phase, or
    None when there is no clear cycle."""
    start, g = _grid(s, end)
    n = len(g)
    levels = [g]
    while len(levels[-1]) >= 4 * SEASON_COARSE * SEASON_MIN_CYCLES:
        x = levels[-1]
        levels.append([(a + b) / 2 for a, b in zip(x[::2], x[1::2])])

    def strength(lag: float) -> Tuple[float, float]:
        r = 0
        while r + 1 < len(levels) and lag / 2 ** (r + 1) >= SEASON_COARSE:
            r += 1
        x = levels[r]
        k = max(2, int(round(lag / 2 ** r)))
        span = SEASON_SPAN * k
        whole = _lagdiff(x, k, span)
        half = _lagdiff(x, k // 2, span)
        return (half / whole if whole > 0 else math.inf if half > 0 else 0.0), k * 2.0 ** r

    found: List[Tuple[float, float]] = []
    lag = float(SEASON_MIN_LAG)
    while lag * SEASON_MIN_CYCLES <= n:
        found.append(strength(lag))
        lag *= SEASON_SPACING
    # a cycle's multiples differ as little from themselves (on coarser means, even less
    # noisily): the period is the shortest lag whose strength peaks among its neighbours
    best_lag = next((at for i, (ratio, at) in enumerate(found) if ratio >= SEASON_STRENGTH
                     and ratio >= max(x[0] for x in found[max(0, i - 1):i + 2])), 0.0)
    if not best_lag:
        return None
    # refine: the lag nearest a multiple of the period, each multiple four times the last
    p, tol, m = best_lag, SEASON_SPACING * best_lag - best_lag + 1.0, 1
    while True:
        r = 0
        while r + 1 < len(levels) and 2 ** (r + 1) <= m * tol / 3:
            r += 1
        x = levels[r]
        unit = 2 ** r
        lo = max(1, int(math.floor((m * (p - tol)) / unit)))
        hi = int(math.ceil((m * (p + tol)) / unit))
        if hi * 2 > len(x):
            break
        # about the differences' mean: a fill's rise over the lag adds to every difference,
        # the more the longer the lag, so a lag shorter than the period differed least (a
        # fill of 3 % a day on a cycle of 14 hours was given 13.5: in a week the profile
        # drifted a third of a period off the cycle, and the peaks it left, taken for the
        # level, brought the limit a day nearer than it was)
        k = min(range(lo, hi + 1), key=lambda j: _lagcurve(x, j))
        p, tol = k * unit / m, unit / (2.0 * m)
        m *= 4
        if m * p * 2 > n:
            break
    period = p * SEASON_GRID_S
    # the profile: grid means less their moving mean over a period, by phase
    w = max(2, int(round(p)))
    bins = max(4, min(SEASON_BINS, w))
    cg = [0.0]
    cg.extend(itertools.accumulate(g))
    parts: List[List[float]] = [[] for _ in range(bins)]
    half_w = w // 2
    for i in range(half_w, n - (w - half_w)):
        moving = (cg[i - half_w + w] - cg[i - half_w]) / w
        phase = ((i + 0.5) * SEASON_GRID_S / period) % 1.0
        parts[int(phase * bins) % bins].append(g[i] - moving)
    if not all(parts):
        return None
    profile = [median(part) for part in parts]
    mean = math.fsum(profile) / bins
    profile = [x - mean for x in profile]
    top = max(profile)
    # the profile must explain most of what the moving mean leaves: a level that wanders
    # around shows a "profile" too, made of its excursions, but it explains little
    total = left = 0.0
    for part, p_b in zip(parts, profile):
        total += math.fsum([d * d for d in part])
        left += math.fsum([(d - p_b) ** 2 for d in part])
    if top <= 0 or total <= 0 or left > (1.0 - SEASON_SHARE) * total:
        return None
    # each sample less the profile at its phase (interpolated; a sample followed by the
    # next only a grid step or more later is a rollup: it stands for the step after its stamp)
    fine = 8 * bins
    table = []
    for j in range(fine):
        pos = (j + 0.5) / 8.0 - 0.5
        i = int(math.floor(pos))
        f = pos - i
        table.append((1 - f) * profile[i % bins] + f * profile[(i + 1) % bins])
    ts, vs = s.t, s.v
    scale, half, last = fine / period, SEASON_GRID_S / 2, SEASON_GRID_S - 1
    nxt = itertools.chain(itertools.islice(ts, 1, None), (ts[-1],))
    values = [v - table[int(((t + half if u - t >= last and not t % SEASON_GRID_S else t)
                              - start) * scale) % fine]
              for t, v, u in zip(ts, vs, nxt)]
    return _Season(period, top, _Series(ts, values), start, profile)


def _steps_explain(s: _Series, a: float, end: float) -> bool:
    """Whether one or two level shifts (flat between) explain the window's ``FIT_BUCKETS``
    bucket means better than a line does (each fitted by least squares), by the Bayesian
    information criterion (each shift costs two parameters): a package upgrade and a restored
    data set are a staircase, which a line fits only roughly, and which does not go on
    rising. Exact search of the shift positions over prefix sums."""
    pts = s.buckets(a, end, FIT_BUCKETS)
    n = len(pts)
    if n < 8:
        return False
    ref = pts[0][1]
    vs = [v - ref for _, v in pts]
    ts = [p[0] - end for p in pts]
    mt, mv = math.fsum(ts) / n, math.fsum(vs) / n
    var = math.fsum((t - mt) ** 2 for t in ts)
    if var <= 0:
        return False
    ls = math.fsum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / var
    resid = [v - mv - ls * (t - mt) for t, v in zip(ts, vs)]
    cs = [0.0]
    cs.extend(itertools.accumulate(vs))
    c2 = [0.0]
    c2.extend(itertools.accumulate(v * v for v in vs))

    line = math.fsum(r * r for r in resid)
    if line <= 0:
        return False
    total, squares = cs[n], c2[n]
    # the error of one level over the first k means, and over the means from k on
    head = [0.0] + [c2[k] - cs[k] * cs[k] / k for k in range(1, n + 1)]
    rest = [squares - c2[k] - (total - cs[k]) ** 2 / (n - k) for k in range(n)] + [0.0]
    one = min(head[k] + rest[k] for k in range(1, n))
    two = math.inf
    for i in range(1, n - 1):
        before = head[i]
        if before >= two:
            continue
        ci, qi = cs[i], c2[i]
        for j in range(i + 1, n):
            m = cs[j] - ci
            err = before + (c2[j] - qi - m * m / (j - i)) + rest[j]
            if err < two:
                two = err
    tiny = line * 1e-12

    def bic(error: float, params: int) -> float:
        return n * math.log(max(error, tiny)) + params * math.log(n)
    return min(bic(one, 3), bic(two, 5)) < bic(line, 2)


def _trim(s: _Series, trend: Trend, offset: float = 0.0) -> Trend:
    """The fit without the start of its window, where that start was still flat: a fill that
    began inside the window rises faster than the whole window says. Starts an eighth, a
    quarter and three eighths later are tried; one wins if it rises faster by a tenth and by
    twice the combined error, and still by ``MIN_T`` errors. ``s`` is the series the trend
    was fitted on, ``offset`` what its level was raised by (a cleanup cycle's top)."""
    best = trend
    w = trend.end - trend.start
    for k in (1, 2, 3):
        a = trend.start + k * w / 8
        span = trend.end - a
        if span <= RAW_FIT_MAX_S:
            lo = s.index(a)
            pts = list(zip(s.t[lo:], s.v[lo:]))
        else:
            pts = s.buckets(a, trend.end, FIT_BUCKETS)
        if len(pts) < MIN_POINTS:
            break
        slope, level, scale = fit(pts, trend.end)
        diffs = [q[1] - p[1] for p, q in zip(pts, pts[1:])]
        mid = median(diffs)
        scale = max(scale, 1.4826 * median([abs(d - mid) for d in diffs]) / math.sqrt(2.0))
        error = scale * math.sqrt(12.0 / len(pts))
        faster = max(1.1 * best.slope, best.slope + 2.0 * math.hypot(error / span,
                                                                    best.slope_error))
        if slope > faster and slope * span >= MIN_T * error:
            if span > RAW_FIT_MAX_S:  # the upper envelope, as in _judge
                resid = sorted(v - level - slope * (t - trend.end) for t, v in pts)
                level += max(0.0, resid[int(0.9 * (len(resid) - 1))])
            best = dataclasses.replace(trend, slope=slope, intercept=level + offset, start=a,
                                       slope_error=error / span)
    return best


def _lag1(values: Sequence[float]) -> float:
    """Lag-1 autocorrelation (0 for fewer than three values or no variance)."""
    n = len(values)
    if n < 3:
        return 0.0
    mean = math.fsum(values) / n
    dev = [v - mean for v in values]
    var = math.fsum(d * d for d in dev)
    return math.fsum(a * b for a, b in zip(dev, dev[1:])) / var if var > 0 else 0.0


def _past(s: _Series, a: float, w: float, seg_start: float, rise_limit: float,
          level_limit: float) -> Optional[str]:
    """Compare the current window with the earlier windows of length ``w`` ending before
    ``a``, measured like it: a window's rise is the mean of its last quarter minus the mean of
    its first, its level the mean of its last quarter. "rise" if one rose ``rise_limit`` or
    more, "level" if one reached ``level_limit``, else "exceptional"; None if the history
    holds no earlier window of that length. Windows end every quarter of ``w`` for
    ``DENSE_STEPS`` steps back, then every quarter of ``w`` or ``PAST_STEP_S``, whichever is
    longer, over the whole rest: a routine job's burst of minutes days ago is found (a
    sparser scan missed most of them). The scan stops at the first window that decides."""
    first_end = max(seg_start, s.t[0]) + w
    if first_end > a:
        return None
    seen = rises = 0
    squares = 0.0
    long = w > RAW_FIT_MAX_S    # few earlier windows: their falls count too (below)
    e = a
    step = w / 4
    dense_until = a - DENSE_STEPS * step
    while e >= first_end:
        head = s.mean(e - w / 4, e)
        if head is not None:
            if head >= level_limit:
                return "level"
            tail = s.mean(e - w, e - 3 * w / 4)
            if tail is not None:
                seen += 1
                if head > tail or long:
                    rises += 1
                    squares += (head - tail) ** 2
                if head - tail >= rise_limit:
                    return "rise"
        if e <= dense_until:
            step = max(step, PAST_STEP_S)
        e -= step
    if not seen:
        return None
    # the rises and falls of a wandering level: the current rise must stand out of their
    # typical size too, not only of their largest (few earlier windows hold few large ones).
    # For windows up to RAW_FIT_MAX_S the rises only: the history holds dozens of earlier
    # windows of that length, so their largest rise says enough, while a cleanup sawtooth's
    # falls (at once, what it rose slowly) hid a fast fill on top of it. Longer windows
    # keep the falls: a sawtooth cycle of days rises on few earlier windows, slowly.
    if rises and rise_limit * EXCEPTIONAL_RATIO < TYPICAL_RATIO * math.sqrt(squares / rises):
        return "rise"
    return "exceptional"


def _span(seconds: float) -> str:
    return "%.0f min" % (seconds / 60) if seconds < 7200 else "%.1f h" % (seconds / 3600)


def _eta(trend: Trend, capacity: Optional[float], now: float) -> Optional[float]:
    """Seconds until the trend meets capacity; None for no growth."""
    if capacity is None or trend.slope <= 0:
        return None
    level = trend.value_at(now)
    if level >= capacity:
        return 0.0
    eta = (capacity - level) / trend.slope
    return eta if eta <= MAX_ETA_S else None
