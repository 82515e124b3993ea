"""Geometry for the small time-series charts, drawn as server-side SVG.

Why server-side SVG and not a chart library: the pages are rendered by the server anyway, SVG
needs no script (so the page keeps a strict Content-Security-Policy), it prints, and it scales
from a 1280 px page down to a 500 px detail pane. This module only computes coordinates and
labels; the template ``_chart.html`` turns a :class:`Chart` into markup, escaped like any other
value.

A forecast is drawn from its least-squares fit, ``value(t) = intercept + slope * (t - t0)`` with
``slope`` in units per second, from the last observation to the time the series reaches its
capacity (the ETA), so a filling disk shows where and when it meets the "full" line.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Sequence, Tuple

from diag_protocol import units

from .formatting import as_number

WIDTH = 640
HEIGHT = 200
MARGIN_LEFT = 64
MARGIN_RIGHT = 12
MARGIN_TOP = 12
MARGIN_BOTTOM = 28
MAX_POINTS = 320
FORECAST_HORIZON_S = 14 * 86400.0

Point = Tuple[float, float]


@dataclass(frozen=True)
class Tick:
    """One axis label at a position in SVG units."""

    pos: float
    label: str


@dataclass(frozen=True)
class Line:
    """A polyline; ``kind`` becomes the CSS class (observed, forecast, capacity)."""

    points: str
    kind: str
    label: str


@dataclass(frozen=True)
class Marker:
    """A vertical rule with a label, e.g. where the forecast reaches capacity."""

    x: float
    label: str
    kind: str


@dataclass
class Chart:
    """Everything the SVG template needs; all coordinates are already in SVG units."""

    title: str
    description: str
    width: int = WIDTH
    height: int = HEIGHT
    left: float = MARGIN_LEFT
    top: float = MARGIN_TOP
    right: float = WIDTH - MARGIN_RIGHT
    bottom: float = HEIGHT - MARGIN_BOTTOM
    lines: List[Line] = field(default_factory=list)
    area: str = ""
    x_ticks: List[Tick] = field(default_factory=list)
    y_ticks: List[Tick] = field(default_factory=list)
    markers: List[Marker] = field(default_factory=list)
    last: Tuple[float, float] = (0.0, 0.0)
    last_label: str = ""
    empty: bool = False


def clean_points(raw: Any) -> List[Point]:
    """Keep only ``[t, v]`` pairs of finite numbers, sorted by time (history is untrusted)."""
    points: List[Point] = []
    if not isinstance(raw, (list, tuple)):
        return points
    for item in raw:
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            continue
        t, v = as_number(item[0]), as_number(item[1])
        if t is not None and v is not None:
            points.append((t, v))
    points.sort(key=lambda p: p[0])
    return points


def downsample(points: Sequence[Point], limit: int = MAX_POINTS) -> List[Point]:
    """Average consecutive buckets so a week of raw samples stays a light SVG."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    out: List[Point] = []
    for start in range(0, len(points), size):
        bucket = points[start:start + size]
        size_b = len(bucket)
        out.append((sum(p[0] for p in bucket) / size_b, sum(p[1] for p in bucket) / size_b))
    return out


def nice_step(span: float, target_ticks: int = 4) -> float:
    """A 1/2/2.5/5 x 10^n step that splits ``span`` into about ``target_ticks`` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def fit_value(fit: Mapping[str, Any], t: float) -> float | None:
    """Evaluate a forecast fit at time ``t``; None when the fit is malformed."""
    slope = as_number(fit.get("slope"))
    intercept = as_number(fit.get("intercept"))
    t0 = as_number(fit.get("t0"))
    if slope is None or intercept is None or t0 is None:
        return None
    return intercept + slope * (t - t0)


def _time_label(t: float, span: float) -> str:
    moment = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    if span <= 2 * 86400:
        return moment.strftime("%H:%M")
    return moment.strftime("%b %d")


def _time_ticks(start: float, end: float) -> List[float]:
    span = end - start
    steps = (300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
    step = next((s for s in steps if span / s <= 6), 14 * 86400)
    first = math.ceil(start / step) * step
    ticks: List[float] = []
    t = first
    while t <= end:
        ticks.append(t)
        t += step
    return ticks


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    description: str,
    since: float,
    until: float,
    unit: str = "percent",
    capacity: float | None = None,
    forecast: Mapping[str, Any] | None = None,
) -> Chart:
    """Lay out one metric over ``[since, until]``, extended to the forecast's ETA when it is near.

    ``unit`` is a unit of diag_protocol.units: ``"percent"`` has a fixed 0-100 axis, others
    (``"bytes"``) go from 0 to the larger of capacity and the data. ``capacity`` draws a dashed
    "full" line; ``forecast`` is a forecast object of the engine's VM document (its ``fit`` and
    ``eta_at`` are used).
    """
    chart = Chart(title=title, description=description)
    observed = downsample([p for p in points if since <= p[0] <= until])
    if not observed:
        chart.empty = True
        return chart
    def fmt(value: Any) -> str:
        return units.format_value(unit, value)

    fit = forecast.get("fit") if isinstance(forecast, Mapping) else None
    eta_at = as_number(forecast.get("eta_at")) if isinstance(forecast, Mapping) else None
    last_t = observed[-1][0]
    end = until
    if isinstance(fit, Mapping) and fit_value(fit, last_t) is not None:
        window = max(until - since, 3600.0)
        if eta_at is not None and until < eta_at <= until + FORECAST_HORIZON_S:
            end = eta_at + 0.05 * (eta_at - since)
        else:
            end = until + 0.5 * window
    start = since

    values = [v for _, v in observed]
    forecast_line: List[Point] = []
    if end > until and isinstance(fit, Mapping):
        stop = min(end, eta_at) if eta_at is not None and eta_at > last_t else end
        for i in range(0, 21):
            t = last_t + (stop - last_t) * i / 20
            v = fit_value(fit, t)
            if v is not None:
                forecast_line.append((t, v))
    if unit == "percent":
        y_max = 100.0
    else:
        candidates = values + [v for _, v in forecast_line]
        if capacity is not None:
            candidates.append(capacity)
        y_max = max(candidates) * 1.05 if max(candidates) > 0 else 1.0
    y_min = 0.0
    if unit == "percent":
        step = 25.0
    else:
        # Steps in whole binary units (2 GiB, 25 GiB...) so the labels read as round numbers.
        scale = 1024.0 ** max(0, min(5, int(math.log(max(y_max, 1.0), 1024))))
        step = nice_step(y_max / scale) * scale
        y_max = math.ceil(y_max / step) * step

    def sx(t: float) -> float:
        return round(chart.left + (t - start) / (end - start) * (chart.right - chart.left), 1)

    def sy(v: float) -> float:
        v = min(max(v, y_min), y_max)
        return round(chart.bottom - (v - y_min) / (y_max - y_min) * (chart.bottom - chart.top), 1)

    def poly(pts: Sequence[Point]) -> str:
        return " ".join("%s,%s" % (sx(t), sy(v)) for t, v in pts)

    chart.lines.append(Line(poly(observed), "observed", "measured"))
    # The latest value as a dot: visible even when the history has a single sample so far.
    chart.last = (sx(observed[-1][0]), sy(observed[-1][1]))
    chart.last_label = "latest %s" % fmt(observed[-1][1])
    chart.area = "M%s,%s L%s L%s,%s Z" % (
        sx(observed[0][0]), chart.bottom, poly(observed), sx(observed[-1][0]), chart.bottom)
    if forecast_line:
        chart.lines.append(Line(poly(forecast_line), "forecast", "forecast"))
    if capacity is not None:
        chart.lines.append(Line(poly([(start, capacity), (end, capacity)]), "capacity",
                                "capacity %s" % fmt(capacity)))
    if end > until:
        chart.markers.append(Marker(sx(until), "now", "now"))
    if eta_at is not None and start <= eta_at <= end:
        label = _dt.datetime.fromtimestamp(eta_at, tz=_dt.timezone.utc).strftime("%b %d %H:%M")
        chart.markers.append(Marker(sx(eta_at), "full " + label, "eta"))

    tick = y_min
    while tick <= y_max + step / 1000:
        chart.y_ticks.append(Tick(sy(tick), fmt(tick)))
        tick += step
    chart.x_ticks = [Tick(sx(t), _time_label(t, end - start)) for t in _time_ticks(start, end)]
    return chart
