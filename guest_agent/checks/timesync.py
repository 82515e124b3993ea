"""Time checks: is a synchronisation service keeping the clock in step, and how far off is it."""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, level, result, threshold_for


def _offset_text(ms: float) -> str:
    return ("%.1f s" % (ms / 1000.0)) if abs(ms) >= 1000 else ("%.0f ms" % ms)


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    settings = sections.get("settings") or {}
    ts = (settings.get("data") or {}).get("time_sync")
    if ts is None:
        err = field_error(settings, "time_sync")
        return [result("time.sync", "Time synchronisation", "unknown",
                       "Could not read the time synchronisation state (%s)" % err)] if err else []
    service, synced, source = ts.get("service"), ts.get("synchronized"), ts.get("source")
    src = (", source %s" % source) if source else ""
    out: List[Result] = []
    if not service:
        out.append(result("time.sync", "Time synchronisation", "warning",
                          "No time synchronisation service is running; enable chronyd or "
                          "systemd-timesyncd so logs and certificates agree on the time"))
    elif synced is None:
        out.append(result("time.sync", "Time synchronisation", "unknown",
                          "%s runs but could not tell whether the clock is synchronised" % service))
    elif synced:
        out.append(result("time.sync", "Time synchronisation", "ok",
                          "The clock is synchronised by %s%s" % (service, src)))
    else:
        out.append(result("time.sync", "Time synchronisation", "warning",
                          "The clock is not synchronised by %s%s; check that its time servers "
                          "are reachable (`chronyc sources` or `timedatectl timesync-status`)"
                          % (service, src)))
    offset = ts.get("offset_ms")
    if isinstance(offset, (int, float)):
        warn, crit = t["time_offset_warning_ms"], t["time_offset_critical_ms"]
        status = level(abs(offset), warn, crit)
        text = "The clock is %s off its time source" % _offset_text(offset)
        if status != "ok":
            text += "; step it (`chronyc makestep`) and find why synchronisation drifts"
        out.append(result("time.offset", "Clock offset", status, text, offset,
                          threshold_for(status, warn, crit)))
    return out
