"""The shape of one check result and the wording helpers every check shares.

A result's message is what an administrator reads in the oVirt console or in Nagios, so it
says what is wrong with numbers and then what to do about it, in one sentence.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from diag_protocol.units import fmt_bytes, fmt_count
from diag_protocol.units import fmt_percent as fmt_pct
from diag_protocol.vocabulary import STATUSES, worst

__all__ = ["STATUSES", "Result", "field_error", "fmt_bytes", "fmt_count", "fmt_pct", "level",
           "names", "plural", "result", "threshold_for", "worst"]

Result = Dict[str, Any]


def result(check_id: str, name: str, status: str, message: str,
           value: float | None = None, threshold: float | None = None) -> Result:
    if status not in STATUSES:
        raise ValueError("status %r is not one of %s" % (status, ", ".join(STATUSES)))
    return {"id": check_id, "name": name, "status": status, "message": message,
            "value": None if value is None else round(float(value), 3),
            "threshold": None if threshold is None else float(threshold)}


def level(value: float, warning: float, critical: float) -> str:
    """ok, warning or critical for a value that is bad when high."""
    if value >= critical:
        return "critical"
    if value >= warning:
        return "warning"
    return "ok"


def threshold_for(status: str, warning: float, critical: float) -> float:
    return critical if status == "critical" else warning


def plural(n: int, word: str, many: str | None = None) -> str:
    return "%d %s" % (n, word if n == 1 else (many or word + "s"))


def names(items: List[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (" and %d more" % (len(items) - limit) if len(items) > limit else "")


def field_error(section: Mapping[str, Any], *fields: str) -> str | None:
    """The collector's error for the first of ``fields`` (or a parent of it), if it recorded one.

    Collectors put ``{"field": "filesystems", "error": "..."}`` (or a dotted path) into the
    section's errors when they could not read something; a check turns that into "unknown"
    with the reason, instead of pretending all is well.
    """
    for err in section.get("errors") or ():
        name = str(err.get("field") or "")
        for wanted in fields:
            if name == wanted or wanted.startswith(name + ".") or name.startswith(wanted + "."):
                return str(err.get("error") or "no reason given")
    return None
