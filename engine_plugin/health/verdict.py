"""A VM's health verdict: the agent's checks, metrics and forecasts, judged without flapping.

``evaluate_vm`` is pure: it takes the latest report, the stored history and the previous
state, and returns the verdict document (the ``health`` and ``forecasts`` parts of the API's
VM document) and the state to keep for the next pass. The state holds when each finding was
first seen (a warning must last ``warning_min_duration_s`` before it is raised) and which are
active (a raised metric clears only ``hysteresis_percent`` below its limit; a raised forecast
only when the time left exceeds its horizon by a quarter), so values hovering at a threshold
do not raise and clear events on every report. A forecast is raised once it held its
persistence (``forecast_persistence``, in the data's time), and a raised warning turns
critical only once the critical forecast held it too.
"""

import bisect
import collections.abc
import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from diag_protocol.vocabulary import NOT_OK, worst, worst_first
from diag_protocol.vocabulary import finding as finding_doc

from . import humanize
from .forecast import Forecast, Point, forecast, median, shape_at
from .thresholds import Thresholds

Histories = Mapping[str, Sequence[Point]]
_MAPPING = collections.abc.Mapping  # isinstance against typing.Mapping is several times slower

#: the share of its time left a forecast must hold before it is raised (at most
#: ``forecast_min_duration_s``)
PERSIST_SHARE = 0.125

#: how many earlier moments of its data a new forecast is judged at (``_held_since``)
HOLD_CHECKS = 4

#: the last stretch of a series (before a fit) whose mean and noise the next passes' new
#: samples are compared with, and how far (in standard errors) they may stray and still agree
SCREEN_S = 3600.0
SCREEN_SIGMAS = 4.0
#: nor by more than this share of capacity: a change smaller than that cannot bring a limit
#: within a horizon before the refresh is due anyway
SCREEN_CAPACITY_SHARE = 0.002
#: an unraised forecast is refitted once its time left comes within this share of the warning
#: horizon (``_agrees``), and judged against its line only while it stays beyond (``_far``).
#: Its kept time left is counted down pass by pass and its samples must follow its line, so
#: a margin of a tenth (most of a day for the 7-day default) is enough for it to be refitted
#: at every pass before it would be raised; with 1.5, a fill spent three and a half days
#: refitted at every pass (in the health bench, 360 of its 460 refits)
NEAR_SHARE = 1.1
#: an unraised forecast whose fit shows no evidence of growth (its confidence below
#: ``QUIET_CONFIDENCE``: a rise under 3 of its errors) this many times less often: its new
#: samples are checked pass by pass too (``_agrees``), so the refresh no longer bounds how
#: late a change after the fit is seen (one with some evidence, a noisy slow writer, keeps
#: the usual refresh and the check of the mean since the fit alone: with the pass-by-pass
#: check, such fills were raised at other passes and the replay's error p90 of 9000.. went
#: from 23 to 27 %)
UNRAISED_REFRESH_SHARE = 3.0
QUIET_CONFIDENCE = 0.3
#: a raised forecast is refitted this many times more often (its time left is counted down)
RAISED_REFRESH_SHARE = 8.0
#: the ``pending`` key of a raised warning forecast that turned critical (its code + this)
ESCALATION = ">critical"
#: the keys of a forecast object that stay in the state, not in the verdict (the API's)
PRIVATE = ("message", "cycle", "level")
#: a raised forecast whose series (less its cycle) fell by more than this share of its
#: value since the last pass is not held (``_held``): a cleanup, or the burst is over
DROP_SHARE = 0.01


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

    fits: Dict[str, Any] = {}
    seen = prev.get("data_end")
    data_end: Dict[str, float] = dict(seen) if isinstance(seen, _MAPPING) else {}
    if histories is None:
        forecasts = list(prev.get("forecasts") or [])
        forecasts_at = prev.get("forecasts_at")
        fits = dict(prev.get("fits") or {})
    else:
        held = {f["metric"]: f for f in prev.get("forecasts") or ()
                if isinstance(f, _MAPPING) and isinstance(f.get("metric"), str)}
        kept = prev.get("fits") if forecaster is forecast else None
        forecasts = forecast_vm(report, histories, thresholds, active, now, forecaster, held,
                                kept if isinstance(kept, _MAPPING) else None, fits,
                                pending=pending, seen=dict(data_end))
        forecasts_at = now
        for f in forecasts:
            pts = histories.get(f["metric"])
            if pts:
                data_end[f["metric"]] = min(now, float(pts[-1][0]))
    candidates = _check_findings(report) + _metric_findings(report, thresholds, active)
    # forecasts persist in the data's time (the samples' timestamps), other findings in the
    # service's: a history that arrives at once is judged as it would have been live
    persist: Dict[str, float] = {}
    clock: Dict[str, float] = {}
    for f in forecasts:
        if f["status"] != "ok":
            code = "forecast:" + f["metric"]
            candidates.append(Finding(code, f["status"], f["message"], f["metric"]))
            persist[code] = forecast_persistence(f.get("eta_s"), thresholds)
            clock[code] = data_end.get(f["metric"], now)
            if code not in pending and isinstance(f.get("since"), (int, float)):
                pending[code] = f["since"]

    raised: List[Finding] = []
    new_pending: Dict[str, float] = {}
    for finding in candidates:
        at = clock.get(finding.code, now)
        first = pending.get(finding.code, at)
        need = thresholds.warning_min_duration_s if finding.status == "warning" else 0.0
        need = max(need, persist.get(finding.code, 0.0))
        if finding.code not in active and at - first < need - 1e-3:
            new_pending[finding.code] = first
            continue
        if finding.code in persist and finding.status == "critical" \
                and active.get(finding.code) == "warning":
            # a raised warning forecast turning critical holds its persistence at the worse
            # status too, as a new one does: a fit that dips for a pass (a cycle's steep
            # half, a shorter window rising faster for a while) is no critical event
            key = finding.code + ESCALATION
            first = pending.get(key, at)
            if at - first < persist[finding.code] - 1e-3:
                new_pending[key] = first
                finding = dataclasses.replace(finding, status="warning")
        raised.append(finding)
    before_since = {f.get("metric"): f.get("since") for f in prev.get("forecasts") or ()
                    if isinstance(f, _MAPPING)}
    for f in forecasts:
        code = "forecast:" + f["metric"]
        if f["status"] != "ok":
            # from when (data time) it held; raised once it held its persistence
            since = new_pending.get(code, pending.get(code, before_since.get(f["metric"])))
            f["since"] = since if isinstance(since, (int, float)) else clock.get(code, now)
        else:
            f.pop("since", None)

    silence = _silence(received_at, thresholds, now)
    if silence is not None:
        raised.insert(0, silence)
    raised = worst_first(raised, key=lambda f: f.status)

    status = "unknown" if silence is not None else worst(f.status for f in raised)
    since = prev.get("since") if prev.get("status") == status else now
    verdict = {"status": status, "since": since, "findings": [f.as_dict() for f in raised],
               "forecasts": [{k: v for k, v in f.items() if k not in PRIVATE}
                             for f in forecasts]}
    state = {"status": status, "since": since, "pending": new_pending,
             "forecasts": forecasts, "forecasts_at": forecasts_at, "fits": fits,
             "data_end": data_end,
             "active": {f.code: f.status for f in raised if not f.code.startswith("agent.")}}
    return verdict, state


def forecast_persistence(eta_s: Any, t: Thresholds) -> float:
    """How long a forecast must hold, pass after pass, before it is raised:
    ``forecast_min_duration_s``, or ``PERSIST_SHARE`` of its time left if that is shorter (a
    disk filling in an hour cannot wait an hour). A rise that stops (a routine job's burst, a
    step, a random walk up) fails the forecast at a later pass and raises nothing."""
    if isinstance(eta_s, (int, float)):
        return min(t.forecast_min_duration_s, PERSIST_SHARE * max(0.0, eta_s))
    return t.forecast_min_duration_s


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
                previous: Optional[Mapping[str, Mapping[str, Any]]] = None,
                fits: Optional[Mapping[str, Any]] = None,
                new_fits: Optional[Dict[str, Any]] = None,
                pending: Optional[Mapping[str, float]] = None,
                seen: Optional[Mapping[str, float]] = None) -> List[Dict[str, Any]]:
    """Forecast objects (API shape plus a ``message``) for every series worth forecasting.

    ``previous`` holds the last pass's objects by metric: a raised forecast whose evidence
    thins out for a pass or two (noise hides a slow fill now and then) is held for up to
    ``forecast_hold_s`` after it was last confirmed, as long as the series has not dropped,
    so one fill raises one event, not one per gap in the evidence.

    ``fits`` (kept in the state by ``evaluate_vm``) says, per metric, what the samples of the
    last refit looked like; a forecast that raised nothing is kept, not refitted, while the
    samples that arrived since agree with it (see ``_agrees``) and its refresh is not due:
    most series of a fleet move within their noise most of the time, and a refit reads a
    week of samples. ``new_fits`` receives the fits to keep for the next pass.

    A forecast that raises something and is neither raised nor pending yet (``active``,
    ``pending``) is judged again on the data as it was before, back to the end of the data the
    last pass saw (``seen``, per metric): its ``since`` says from when (the data's time) it
    held, so a history that arrives at once is judged as it would have been live
    (``_held_since``)."""
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
        before = (previous or {}).get(name)
        memo = (fits or {}).get(name)
        kept = (_agrees(memo, before, pts, cap, t, now)
                if memo is not None and before is not None else None)
        if kept is not None and before is not None:
            out.append(_aged(before, pts, now))
            if new_fits is not None:
                new_fits[name] = kept
            continue
        f = forecaster(pts, cap, now, min_span_s=t.forecast_min_span_s)
        doc = _forecast_doc(name, kind, label, f, t, active, now, pts)
        code = "forecast:" + name
        if doc["status"] != "ok" and code not in active and code not in (pending or {}):
            doc["since"] = _held_since(doc, name, kind, label, pts, cap, t, active, forecaster,
                                       (seen or {}).get(name), now)
        if new_fits is not None:
            new_fits[name] = _screen(pts, cap, t, now, doc, kind, f.cycle)
        shape = f.cycle or f.season
        if doc["status"] != "ok" and shape is not None:
            # the cycle its fit found, kept with a raised forecast so that its series' fall
            # along the cycle is not taken for a drop (``_held``)
            doc["cycle"] = [shape[0], shape[1], list(shape[2])]
            doc["level"] = _less_cycle(pts, doc["cycle"])
        if doc["status"] == "ok" and before is not None and "forecast:" + name in active:
            doc = _held(doc, before, t, now, active["forecast:" + name], pts) or doc
        out.append(doc)
    return out


def _held_since(doc: Mapping[str, Any], name: str, kind: str, label: str,
                pts: Sequence[Point], cap: Optional[float], t: Thresholds,
                active: Mapping[str, str], forecaster: Callable[..., Forecast],
                seen: Optional[float], now: float) -> float:
    """From when (the data's time) the new forecast ``doc`` held: the forecast is made again
    on the data up to each of ``HOLD_CHECKS`` earlier moments, spread over the persistence it
    needs, as passes would have made it live; the earliest moment of an unbroken run of
    forecasts that raise something is returned (the data's end when the one before did not).
    Moments the last pass's data already covered (``seen``) are not judged again: that pass
    raised nothing, or this forecast would be pending."""
    end = min(now, float(pts[-1][0]))
    need = forecast_persistence(doc.get("eta_s"), t)
    since = end
    if need <= 0:
        return since
    step = need / HOLD_CHECKS
    for k in range(1, HOLD_CHECKS + 1):
        cut = end - k * step
        if seen is not None and cut <= seen:
            break
        upto = pts[:bisect.bisect_right(pts, (cut, math.inf))]
        if len(upto) < 2:
            break
        f = forecaster(upto, cap, cut, min_span_s=t.forecast_min_span_s)
        if _forecast_doc(name, kind, label, f, t, active, cut, upto)["status"] == "ok":
            break
        since = cut
    return since


def _screen(pts: Sequence[Point], cap: Optional[float], t: Thresholds, now: float,
            doc: Mapping[str, Any], kind: str,
            cycle: Optional[Tuple[float, float, Tuple[float, ...]]] = None) -> Dict[str, Any]:
    """What the next passes compare their new samples with: the last sample's time, the mean
    time and value of the last ``SCREEN_S`` of samples and their noise (robust scale of the
    sample-to-sample changes), the slope they are expected to follow (``_far``), the
    cleanup cycle's shape they follow on top of it (``cycle``, the forecast's, with ``p0``
    its mean over those samples: the level of a cycle's ramp is its level across the
    cleanups, which is what the forecast judges), and when the refit is due at the latest:
    spread over half to one and a half ``forecast_refresh_s`` (so a fleet's refits do not all
    fall on one pass), an eighth of that for a raised forecast (unless ``_far``). ``seen``,
    ``k``, ``st``, ``sv`` (and ``sp``, the shape's sum) sum up the samples since the fit
    (``_agrees``): none yet."""
    last = pts[-1][0]
    recent = pts[bisect.bisect_left(pts, (last - SCREEN_S,)):]
    vs = [v for _, v in recent]
    k = len(vs)
    diffs = sorted(abs(b - a) for a, b in zip(vs, vs[1:]))
    noise = 1.4826 * diffs[len(diffs) // 2] / math.sqrt(2.0) if diffs else 0.0
    spread = 0.5 + (last * 0.6180339887) % 1.0
    due = now + spread * t.forecast_refresh_s
    far = _far(doc, cap, t, due)
    if doc["status"] != "ok" and not far:
        due = now + spread / RAISED_REFRESH_SHARE * t.forecast_refresh_s
    quiet = doc["status"] == "ok" and doc["confidence"] < QUIET_CONFIDENCE
    if quiet:
        due = now + spread * UNRAISED_REFRESH_SHARE * t.forecast_refresh_s
        far = _far(doc, cap, t, due)
    memo: Dict[str, Any] = {
        "last": last, "t": math.fsum(p[0] for p in recent) / k, "mean": math.fsum(vs) / k,
        "noise": noise, "capacity": cap, "due": due, "seen": last, "k": 0, "st": 0.0, "sv": 0.0}
    if quiet:
        memo["quiet"] = True
    slope = 0.0
    if far and doc["status"] == "ok" and not _leaks(doc, kind, t, due):
        slope = doc["fit"]["slope"]
        memo["slope"] = slope
    if cycle is not None and doc["status"] == "ok" and (not slope
                                                        or doc["method"] == "cleanup_cycle"):
        # (a trusted fit's slope is the cycle's level's only when fitted on it; a ramp's
        # slope already holds the shape. A raised or pending forecast is judged on its line
        # alone, as before: refitted an eighth of the refresh, it costs little, and a pending
        # one refitted where the shape is a little off can fail for a pass and start its
        # persistence again: the built cases' fills on a sawtooth were raised later)
        memo["cycle"] = [cycle[0], cycle[1], list(cycle[2])]
        memo["p0"] = math.fsum(shape_at(cycle, p[0]) for p in recent) / k
        memo["sp"] = 0.0
    return memo


def _far(doc: Mapping[str, Any], cap: Optional[float], t: Thresholds, due: float) -> bool:
    """Whether the forecast's fit passed every test and its line stays more than
    ``NEAR_SHARE`` of the warning horizon from the limit until ``due``. The samples after such
    an unraised fit are expected to follow its line (``_screen``: a fill whose time left is
    beyond the horizon is not refitted at every pass while it goes on as fitted; one that
    speeds up leaves the line, and one that keeps its pace comes near the horizon only after
    ``due``; anything else is expected to stay at its level: more of the same rise may be
    what it lacked, too short, too far ahead, no higher than before), and such a raised one
    (a process's leak, far from the limit: no time left to count down) is refitted at the
    usual refresh, not ``RAISED_REFRESH_SHARE`` times as often."""
    fit = doc.get("fit") or {}
    slope = fit.get("slope")
    if (not cap or not isinstance(slope, float) or slope <= 0
            or not doc["confidence"] >= t.forecast_min_confidence):
        return False
    at_due = fit["intercept"] + slope * (due - fit["t0"])
    return (cap - at_due) / slope > NEAR_SHARE * t.forecast_warning_s


def _leaks(doc: Mapping[str, Any], kind: str, t: Thresholds, due: float) -> bool:
    """Whether a process's fitted line grows by ``leak_min_growth_percent`` over the longest
    window a refit fits (``forecast_window_s``) by ``due``: a refit might call it a leak."""
    if kind != "process_memory":
        return False
    fit = doc["fit"]
    span = fit["slope"] * t.forecast_window_s
    start = fit["intercept"] + fit["slope"] * (due - fit["t0"]) - span
    return start <= 0 or span / start * 100 >= t.leak_min_growth_percent


def _agrees(memo: Mapping[str, Any], before: Mapping[str, Any], pts: Sequence[Point],
            cap: Optional[float], t: Thresholds, now: float) -> Optional[Dict[str, Any]]:
    """Whether the kept forecast ``before`` still stands: its refresh is not due, capacity is
    the same, its time left has not come near the next horizon (raised nothing: 1.5 times the
    warning horizon; a warning: 1.25 times the critical one), and the mean of the samples since
    its fit lies within ``SCREEN_SIGMAS`` standard errors (and ``SCREEN_CAPACITY_SHARE`` of
    capacity) of where they should be: for a raised forecast on its fitted line, for one that
    raised nothing on the slope its screen chose (``_far``: its fitted line while that stays
    far from the limit, else the level of the samples before its fit), plus the
    shape of its cleanup cycle where it has one. Returns the memo to keep (its sums of the
    samples since the fit brought up to date), or None: refit.

    The samples since the fit are summed up in the memo as they arrive (``seen``: the newest
    one counted; ``k`` of them, ``st`` the sum of their times after ``last``, ``sv`` of their
    values), so a pass needs only the samples after ``seen`` (``workers``), not all of those
    since the fit. A memo without them (a state of an earlier version) counts from ``last``."""
    try:
        status = before.get("status")
        if (now >= memo["due"] or memo["capacity"] != cap or not pts
                or pts[-1][0] < memo["last"] or before.get("held")):
            return None
        eta_at = before.get("eta_at")
        near = {"ok": NEAR_SHARE * t.forecast_warning_s,
                "warning": 1.25 * t.forecast_critical_s,
                "critical": -math.inf}.get(str(status))
        if near is None or (eta_at is not None and eta_at - now <= near):
            return None
        last = memo["last"]
        seen = memo.get("seen", last)
        new = pts[bisect.bisect_right(pts, (seen, math.inf)):]
        if not new and "k" in memo:
            return dict(memo)
        k = memo.get("k", 0) + len(new)
        st = math.fsum([memo.get("st", 0.0)] + [p[0] - last for p in new])
        sv = math.fsum([memo.get("sv", 0.0)] + [p[1] for p in new])
        kept = {**memo, "seen": max(seen, pts[-1][0]), "k": k, "st": st, "sv": sv}
        cycle = memo.get("cycle")
        if cycle is not None:
            kept["sp"] = math.fsum([memo["sp"]] + [shape_at(cycle, p[0]) for p in new])
        if not k:
            return kept
        # a raised forecast is checked against its line; an unraised one against the slope
        # its screen chose (``_far``: its line, or no change)
        slope = ((before.get("fit") or {}).get("slope") or 0.0 if status != "ok"
                 else memo.get("slope", 0.0))
        t_new = last + st / k
        expected = memo["mean"] + slope * (t_new - memo["t"])
        if cycle is not None:
            # the shape of the cleanup cycle, where the new samples are, against where the
            # samples before the fit were
            expected += kept["sp"] / k - memo["p0"]
        allowed = SCREEN_SIGMAS * memo["noise"] / math.sqrt(k)
        if cap:
            allowed += SCREEN_CAPACITY_SHARE * cap
        if abs(sv / k - expected) > allowed:
            return None
        if memo.get("quiet") and new:
            # the new samples alone too: a change that began hours after the fit is diluted
            # in the mean since the fit (which the refresh bounded before it came this late)
            n = len(new)
            t_n = math.fsum(p[0] for p in new) / n
            expected = memo["mean"] + slope * (t_n - memo["t"])
            if cycle is not None:
                expected += (kept["sp"] - memo["sp"]) / n - memo["p0"]
            allowed += SCREEN_SIGMAS * memo["noise"] * (1.0 / math.sqrt(n) - 1.0 / math.sqrt(k))
            if abs(math.fsum(p[1] for p in new) / n - expected) > allowed:
                return None
        return kept
    except (KeyError, TypeError, ValueError):
        return None  # a state written by another version: refit


def _aged(before: Mapping[str, Any], pts: Sequence[Point], now: float) -> Dict[str, Any]:
    """The kept forecast as of ``now``: its time left counted down, the current value new, and
    a raised one confirmed (the new samples agree with it)."""
    eta_at = before.get("eta_at")
    doc = {**before, "eta_s": eta_at - now if eta_at is not None else None,
           "current": median([p[1] for p in pts[-5:]])}
    if doc.get("status") != "ok":
        doc["confirmed_at"] = now
    if "cycle" in doc:
        doc["level"] = _less_cycle(pts, doc["cycle"])
    return doc


def _less_cycle(pts: Sequence[Point], cycle: Sequence[Any]) -> Optional[float]:
    """The series' current value less its cycle's shape (``Forecast.cycle`` or ``season``,
    as a forecast object keeps it): the median of its last five samples, each less the
    shape at its time."""
    try:
        return median([p[1] - shape_at(cycle, p[0]) for p in pts[-5:]])
    except (IndexError, TypeError, ValueError, ZeroDivisionError):
        return None  # a state written by another version


def _held(doc: Dict[str, Any], before: Mapping[str, Any], t: Thresholds, now: float,
          raised: str, pts: Sequence[Point] = ()) -> Optional[Dict[str, Any]]:
    """The previous raised forecast, aged, if it may still hold (see ``forecast_vm``);
    ``raised`` is the status it was raised at. It does not once its series went down since
    the last pass (by ``DROP_SHARE`` of its value): on a cycle its fit found, less the
    cycle's shape (a fill on a cycle falls back at each falling half of the cycle, and a
    forecast let go there was raised again at the next rising half: one more event each
    time)."""
    confirmed = before.get("confirmed_at")
    eta_at = before.get("eta_at")
    current = before.get("current")
    if not isinstance(confirmed, (int, float)) or not isinstance(eta_at, (int, float)):
        return None
    if now - confirmed > t.forecast_hold_s or before.get("status") not in ("warning", "critical"):
        return None
    if not isinstance(current, (int, float)) or not isinstance(doc.get("current"), (int, float)):
        return None
    cycle, was = before.get("cycle"), before.get("level")
    level = _less_cycle(pts, cycle) if cycle is not None and pts else None
    if level is not None and isinstance(was, (int, float)):
        if level < was - DROP_SHARE * abs(current):
            return None  # it went down, its cycle aside: a cleanup, or the burst is over
    elif doc["current"] < current - DROP_SHARE * abs(current):
        return None  # it went down: a cleanup, or the burst is over
    eta = max(0.0, eta_at - now)
    status = "critical" if eta <= t.forecast_critical_s else "warning"
    if status == "critical" and (before.get("status") != "critical" or raised != "critical"):
        status = "warning"  # holding never worsens a forecast; fresh evidence does
    held = {**before, "status": status, "eta_s": eta, "current": doc.get("current"),
            "held": True}
    if level is not None:
        held["level"] = level
    return held


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
    if status != "ok" and eta is not None:  # raised: only with a time left
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
        if not isinstance(doc, _MAPPING):
            return None
        doc = doc.get(key)
    return doc
