"""Memory checks: OOM kills since boot, swap storms and memory pressure (PSI)."""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, fmt_count, fmt_pct, level, plural, result, threshold_for


def _oom(res: Mapping[str, Any]) -> List[Result]:
    kills = (res.get("data") or {}).get("oom_kills")
    if not isinstance(kills, int):
        err = field_error(res, "oom_kills")
        return [result("mem.oom", "OOM kills", "unknown",
                       "Could not count OOM kills (%s)" % err)] if err else []
    if kills == 0:
        return [result("mem.oom", "OOM kills", "ok",
                       "No process has been killed for lack of memory since boot", 0, 1)]
    return [result("mem.oom", "OOM kills", "warning",
                   "The kernel killed %s for lack of memory since boot; add memory to the VM or "
                   "find what grows with `journalctl -k | grep -i 'out of memory'`"
                   % plural(kills, "process", "processes"), kills, 1)]


def _swap(res: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    mem = (res.get("data") or {}).get("memory") or {}
    pin, pout = mem.get("swap_in_per_s"), mem.get("swap_out_per_s")
    if not isinstance(pin, (int, float)) and not isinstance(pout, (int, float)):
        return []  # no rate yet (first sample) or no swap accounting
    pin, pout = float(pin or 0), float(pout or 0)
    rate = pin + pout
    warn, crit = t["swap_storm_pages_per_s"], t["swap_storm_critical_pages_per_s"]
    status = level(rate, warn, crit)
    text = "The guest swaps %s pages/s (in %s, out %s)" % (fmt_count(rate), fmt_count(pin),
                                                         fmt_count(pout))
    if status != "ok":
        text += ", which slows everything down; add memory to the VM or reduce what runs in it"
    return [result("mem.swap", "Swap activity", status, text, rate,
                   threshold_for(status, warn, crit))]


def _pressure(res: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    psi = ((res.get("data") or {}).get("pressure") or {}).get("memory")
    if not psi:
        err = field_error(res, "pressure.memory")
        return [result("mem.pressure", "Memory pressure", "unknown",
                       "Could not read memory pressure (%s)" % err)] if err else []
    some, full = psi.get("some_avg60"), psi.get("full_avg60")
    some = float(some) if isinstance(some, (int, float)) else 0.0
    full = float(full) if isinstance(full, (int, float)) else 0.0
    warn, crit = t["memory_pressure_warning_percent"], t["memory_pressure_critical_percent"]
    detail = "(PSI avg60: some %s, full %s)" % (fmt_pct(some), fmt_pct(full))
    if full >= crit:
        return [result("mem.pressure", "Memory pressure", "critical",
                       "All tasks were stalled waiting for memory %s of the last minute %s; add "
                       "memory to the VM or stop what uses it" % (fmt_pct(full), detail),
                       full, crit)]
    if some >= warn:
        return [result("mem.pressure", "Memory pressure", "warning",
                       "Tasks waited for memory %s of the last minute %s; add memory to the VM "
                       "or reduce the working set" % (fmt_pct(some), detail), some, warn)]
    return [result("mem.pressure", "Memory pressure", "ok", "Memory pressure is low " + detail,
                   some, warn)]


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    res = sections.get("resources") or {}
    return _oom(res) + _swap(res, t) + _pressure(res, t)
