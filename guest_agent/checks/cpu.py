"""CPU checks: time stolen by the hypervisor (steal), the VM-specific sign of host overcommit."""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, fmt_pct, level, result, threshold_for


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    res = sections.get("resources") or {}
    steal = ((res.get("data") or {}).get("cpu") or {}).get("steal")
    if not isinstance(steal, (int, float)):
        err = field_error(res, "cpu.steal", "cpu")
        return [result("cpu.steal", "CPU steal", "unknown",
                       "Could not read CPU steal time (%s)" % err)] if err else []
    warn, crit = t["steal_warning_percent"], t["steal_critical_percent"]
    status = level(steal, warn, crit)
    if status == "ok":
        text = "CPU steal is %s" % fmt_pct(steal)
    else:
        text = ("The hypervisor withheld %s of CPU time from this VM (steal), so the host is "
                "overcommitted; move the VM to a less loaded host or give it dedicated CPUs"
                % fmt_pct(steal))
    return [result("cpu.steal", "CPU steal", status, text, steal,
                   threshold_for(status, warn, crit))]
