"""A VM's health verdict: the agent's checks, metrics and forecasts, judged without flapping.

``evaluate_vm`` is pure: it takes the latest report, the stored history and the previous
state, and returns the verdict document (the ``health`` and ``forecasts`` parts of the API's
VM document) and the state to keep for the next pass. The state holds when each finding was
first seen (a warning must last ``warning_min_duration_s`` before it is raised) and which are
active (a raised metric clears only ``hysteresis_percent`` below its limit; a raised forecast
only when the time left exceeds its horizon by a quarter), so values hovering at a threshold
do not raise and clear events on every report.
"""

import bisect
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from diag_protocol.vocabulary import NOT_OK, worst, worst_first
from diag_protocol.vocabulary import finding as finding_doc

from . import humanize
from .forecast import Forecast, Point, forecast
from .thresholds import Thresholds

Histories = Mapping[str, Sequence[Point]]


@dataclasses.dataclass
class Finding:
    code: str
    status: str
    message: str
    metric: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return finding_doc(self.code, self.status, self.message, self.metric)


def evaluate_vm(report: Optional[Mapping[str, Any]], histories: Optional[Histories],
                thresholds: Thresholds, previous: Optional[Mapping[str, Any]], now: float,
                received_at: Optional[float], forecaster: Callable[..., Forecast] = forecast
                ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Return ``(verdict, state)``; ``verdict`` = {status, since, findings, forecasts}.

    Forecasts cost milliseconds per VM and move slowly, while checks change with every
    report: pass ``histories=None`` to reuse the forecasts kept in ``previous`` (the service
    refreshes them every few minutes, not on every report). ``forecaster`` is
    ``forecast.forecast``; the replay benchmark passes the usual alternatives instead.
    """
    prev = dict(previous or {})
    active: Dict[str, str] = dict(prev.get("active") or {})
    pending: Dict[str, float] = dict(prev.get("pending") or {})

    if histories is None:
        forecasts = list(prev.get("forecasts") or [])
        forecasts_at = prev.get("forecasts_at")
    else:
        held = {f.get("metric"): f for f in prev.get("forecasts") or ()
                if isinstance(f, Mapping)}
        forecasts = forecast_vm(report, histories, thresholds, active, now, forecaster, held)
        forecasts_at = now
    candidates = _check_findings(report) + _metric_findings(report, thresholds, active)
    candidates += [Finding("forecast:" + f["metric"], f["status"], f["message"], f["metric"])
                   for f in forecasts if f["status"] != "ok"]

    raised: List[Finding] = []
    new_pending: Dict[str, float] = {}
    for finding in candidates:
        first = pending.get(finding.code, now)
        if (finding.status == "warning" and finding.code not in active
                and now - first < thresholds.warning_min_duration_s):
            new_pending[finding.code] = first
            continue
        raised.append(finding)

    silence = _silence(received_at, thresholds, now)
    if silence is not None:
        raised.insert(0, silence)
    raised = worst_first(raised, key=lambda f: f.status)

    status = "unknown" if silence is not None else worst(f.status for f in raised)
    since = prev.get("since") if prev.get("status") == status else now
    verdict = {"status": status, "since": since, "findings": [f.as_dict() for f in raised],
               "forecasts": [{k: v for k, v in f.items() if k != "message"} for f in forecasts]}
    state = {"status": status, "since": since, "pending": new_pending,
             "forecasts": forecasts, "forecasts_at": forecasts_at,
             "active": {f.code: f.status for f in raised if not f.code.startswith("agent.")}}
    return verdict, state


def _silence(received_at: Optional[float], t: Thresholds, now: float) -> Optional[Finding]:
    if received_at is None:
        return Finding("agent.not_reporting", "unknown",
                       "No report from the vmdiag agent yet: check that the agent is installed "
                       "and running in the guest and that the VM has the vmdiag channel.")
    silent = now - received_at
    if silent > t.silence_s:
        return Finding("agent.silent", "unknown",
                       "The agent has been silent for %s: check that the VM is up and the "
                       "vmdiag-agent service runs in the guest." % humanize.duration(silent))
    return None


def _check_findings(report: Optional[Mapping[str, Any]]) -> List[Finding]:
    results = _get(report, "sections", "checks", "data", "results") or []
    out = []
    for r in results:
        if r.get("status") in NOT_OK:
            out.append(Finding("check:" + str(r.get("id")), r["status"],
                               str(r.get("message") or r.get("name") or r.get("id"))))
    return out


def _metric_findings(report: Optional[Mapping[str, Any]], t: Thresholds,
                     active: Mapping[str, str]) -> List[Finding]:
    out = []
    memory = _get(report, "sections", "resources", "data", "memory", "percent")
    # CPU steal is the guest's cpu.steal check alone (one judge per finding; docs/engine.md)
    for code, value, warn, crit, what in (
            ("metric:memory.percent", memory, t.memory_warning_percent,
             t.memory_critical_percent, "Memory use is %.0f%%: find what grows (top processes) "
             "or give the VM more memory."),):
        if not isinstance(value, (int, float)):
            continue
        level = _level(value, warn, crit, active.get(code), t.hysteresis_percent)
        if level != "ok":
            out.append(Finding(code, level, what % value, code.split(":", 1)[1]))
    return out


def _level(value: float, warn: float, crit: float, previous: Optional[str],
           hysteresis: float) -> str:
    """ok/warning/critical with hysteresis: a raised level holds until ``hysteresis`` below."""
    if value >= crit or (previous == "critical" and value >= crit - hysteresis):
        return "critical"
    if value >= warn or (previous in ("warning", "critical") and value >= warn - hysteresis):
        return "warning"
    return "ok"


def forecast_vm(report: Optional[Mapping[str, Any]], histories: Histories, t: Thresholds,
                active: Mapping[str, str], now: float,
                forecaster: Callable[..., Forecast] = forecast,
                previous: Optional[Mapping[str, Mapping[str, Any]]] = None
                ) -> List[Dict[str, Any]]:
    """Forecast objects (API shape plus a ``message``) for every series worth forecasting.

    ``previous`` holds the last pass's objects by metric: a raised forecast whose evidence
    thins out for a pass or two (noise hides a slow fill now and then) is held for up to
    ``forecast_hold_s`` after it was last confirmed, as long as the series has not dropped,
    so one fill raises one event, not one per gap in the evidence."""
    since = now - t.forecast_window_s
    out = []

    def series(name: str) -> Sequence[Point]:
        pts = histories.get(name, ())
        return pts[bisect.bisect_left(pts, (since,)):] if pts and pts[0][0] < since else pts

    def capacity(name: str, fallback: Optional[float] = None) -> Optional[float]:
        pts = histories.get(name)
        return float(pts[-1][1]) if pts else fallback

    mem_total = capacity("memory.total", _get(report, "sections", "resources", "data",
                                              "memory", "total"))
    for name in sorted(histories):
        kind, label, cap = _describe(name, capacity, mem_total)
        if kind is None:
            continue
        pts = series(name)
        if len(pts) < 2 or (cap is not None and cap <= 0):
            continue
        f = forecaster(pts, cap, now, min_span_s=t.forecast_min_span_s)
        doc = _forecast_doc(name, kind, label, f, t, active, now, pts)
        before = (previous or {}).get(name)
        if doc["status"] == "ok" and before is not None and "forecast:" + name in active:
            doc = _held(doc, before, t, now) or doc
        out.append(doc)
    return out


def _held(doc: Dict[str, Any], before: Mapping[str, Any], t: Thresholds, now: float
          ) -> Optional[Dict[str, Any]]:
    """The previous raised forecast, aged, if it may still hold (see ``forecast_vm``)."""
    confirmed = before.get("confirmed_at")
    eta_at = before.get("eta_at")
    current = before.get("current")
    if not isinstance(confirmed, (int, float)) or not isinstance(eta_at, (int, float)):
        return None
    if now - confirmed > t.forecast_hold_s or before.get("status") not in ("warning", "critical"):
        return None
    if isinstance(current, (int, float)) and isinstance(doc.get("current"), (int, float)) \
            and doc["current"] < current - 0.01 * abs(current):
        return None  # it went down: a cleanup, or the burst is over
    eta = max(0.0, eta_at - now)
    status = "critical" if eta <= t.forecast_critical_s else "warning"
    if status == "critical" and before.get("status") != "critical":
        status = "warning"  # holding never worsens a forecast; fresh evidence does
    return {**before, "status": status, "eta_s": eta, "current": doc.get("current"),
            "held": True}


def _describe(name: str, capacity: Any, mem_total: Optional[float]
              ) -> Tuple[Optional[str], str, Optional[float]]:
    if name.startswith("fs.used:"):
        mp = name.split(":", 1)[1]
        return "filesystem_bytes", mp, capacity("fs.total:" + mp)
    if name.startswith("fs.inodes_used:"):
        mp = name.split(":", 1)[1]
        return "filesystem_inodes", "inodes of " + mp, capacity("fs.inodes_total:" + mp)
    if name == "memory.used":
        return "memory", "memory", mem_total
    if name == "swap.used":
        total = capacity("swap.total")
        return ("swap", "swap", total) if total else (None, "", None)
    if name.startswith("proc.rss:"):
        return "process_memory", "process " + name.split(":", 1)[1], mem_total
    return None, "", None


def _forecast_doc(name: str, kind: str, label: str, f: Forecast, t: Thresholds,
                  active: Mapping[str, str], now: float, pts: Sequence[Point]) -> Dict[str, Any]:
    code = "forecast:" + name
    status, message = "ok", ""
    eta = f.eta_s
    confident = f.trend.confidence >= t.forecast_min_confidence
    if eta is not None and confident:
        grace = 1.25 if code in active else 1.0
        if eta <= t.forecast_critical_s * (grace if active.get(code) == "critical" else 1.0):
            status = "critical"
        elif eta <= t.forecast_warning_s * grace:
            status = "warning"
    if status != "ok":
        # a fill measured in hours reads better per hour: "5.2 GiB an hour", not "125 GiB a day"
        rate = ("%s an hour" % _amount(kind, f.trend_per_day / 24.0) if eta < 6 * 3600
                else "%s a day" % _amount(kind, f.trend_per_day))
        message = "%s will be full in about %s (growing %s)%s" % (
            label.capitalize() if kind != "filesystem_bytes" else label, humanize.duration(eta),
            rate, _advice(kind))
    elif kind == "process_memory" and confident and pts:
        start = f.trend.value_at(f.trend.start)
        growth = (f.trend.value_at(now) - start) / start * 100 if start > 0 else 0.0
        if growth >= t.leak_min_growth_percent:
            status = "warning"
            message = ("%s grew %.0f%% steadily over %s (%s a day): a memory leak is likely; "
                       "restart it or report it to its maintainers." % (
                           label.capitalize(), growth, humanize.duration(now - f.trend.start),
                           humanize.size(f.trend_per_day)))
    return {"metric": name, "label": label, "kind": kind, "status": status,
            "confirmed_at": now if status != "ok" else None, "held": False,
            "eta_s": eta, "eta_at": now + eta if eta is not None else None,
            "confidence": f.trend.confidence, "trend_per_day": f.trend_per_day,
            "capacity": f.capacity, "current": f.current, "method": f.trend.method,
            "fit": {"slope": f.trend.slope, "slope_error": f.trend.slope_error,
                    "intercept": f.trend.intercept, "t0": f.trend.t0,
                    "start": f.trend.start, "end": f.trend.end, "resets": f.resets,
                    "reason": f.trend.reason or None},
            "message": message}


def _amount(kind: str, per_day: float) -> str:
    return "%.0f inodes" % per_day if kind == "filesystem_inodes" else humanize.size(per_day)


def _advice(kind: str) -> str:
    return {
        "filesystem_bytes": ": free space or grow the disk before then.",
        "filesystem_inodes": ": remove small files (caches, sessions, mail queues).",
        "memory": ": find the growing process or give the VM more memory.",
        "swap": ": the guest is short of memory; find the growing process.",
        "process_memory": ": a memory leak is likely; restart it or report it.",
    }.get(kind, ".")


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc
