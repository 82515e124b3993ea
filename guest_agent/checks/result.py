"""The shape of one check result and the wording helpers every check shares.

A result's message is what an administrator reads in the oVirt console or in Nagios, so it
says what is wrong with numbers and then what to do about it, in one sentence.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

STATUSES = ("ok", "warning", "critical", "unknown")
#: Order of severity when several results are folded into one (Nagios-style exit code).
SEVERITY = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}

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


def worst(statuses: Iterable[str]) -> str:
    """The most severe status: critical > warning > unknown > ok."""
    found = "ok"
    for status in statuses:
        if SEVERITY.get(status, 1) > SEVERITY[found]:
            found = status
    return found


def fmt_bytes(value: float) -> str:
    """1.2 GiB, 300 MiB, 512 B: binary units, one decimal below 10."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            if unit == "B":
                return "%d B" % size
            return ("%.1f %s" % (size, unit)) if abs(size) < 10 else ("%.0f %s" % (size, unit))
        size /= 1024
    return "%d B" % value  # pragma: no cover - loop always returns


def fmt_count(value: float) -> str:
    return "{:,}".format(int(value))


def fmt_pct(value: float) -> str:
    """96%, 0.5%: whole percent unless below 10."""
    return ("%.0f%%" % value) if value >= 10 or float(value).is_integer() else ("%.1f%%" % value)


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
