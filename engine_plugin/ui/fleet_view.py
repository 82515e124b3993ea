"""View model of the fleet and host pages: filter, sort and count the VM summaries.

Why filtering happens here and not only in the service: the page needs the whole list the user may
see to offer the cluster and host choices and the per-verdict counts, and the filters are cheap on
a list the service already narrowed to what the user may see. Query parameters are untrusted: an
unknown sort key or direction falls back to the default instead of failing.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from diag_protocol.vocabulary import RANK, WORST_FIRST, findings_of, worst_first

from .formatting import as_number, human_age
from .vm_view import HEALTH_TEXT, health_status

SORT_KEYS = ("health", "name", "cluster", "host", "last_report", "finding")
VERDICTS = WORST_FIRST
MAX_VMS = 5000
MAX_QUERY = 200


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_query(query: Mapping[str, str]) -> Dict[str, str]:
    """Normalise the page's filter/sort query string (values are truncated, unknowns dropped)."""
    sort = query.get("sort", "health")
    direction = query.get("dir", "asc")
    health = query.get("health", "")
    return {
        "health": health if health in VERDICTS else "",
        "cluster": query.get("cluster", "")[:MAX_QUERY],
        "host": query.get("host", "")[:MAX_QUERY],
        "q": query.get("q", "").strip()[:MAX_QUERY],
        "sort": sort if sort in SORT_KEYS else "health",
        "dir": direction if direction in ("asc", "desc") else "asc",
    }


def _row(vm: Mapping[str, Any], now: float) -> Dict[str, Any]:
    findings = []
    for finding in findings_of(vm):
        code = _text(finding.get("code"))
        findings.append({"status": finding["status"], "status_text": HEALTH_TEXT[finding["status"]],
                         "code": code, "message": _text(finding.get("message")) or code})
    findings = worst_first(findings)
    health = health_status(vm.get("health"))
    last = as_number(vm.get("last_report_at"))
    return {
        "id": _text(vm.get("id")),
        "name": _text(vm.get("name")) or _text(vm.get("id")),
        "host_id": _text(vm.get("host_id")),
        "host_name": _text(vm.get("host_name")),
        "cluster": _text(vm.get("cluster")),
        "health": health,
        "health_text": HEALTH_TEXT[health],
        "last_report_at": last,
        "last_report_age": human_age(last, now) if last is not None else "never",
        "findings": findings[:3],
        "worst": findings[0] if findings else None,
    }


def _matches(row: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    if query["health"] and row["health"] != query["health"]:
        return False
    if query["cluster"] and row["cluster"] != query["cluster"]:
        return False
    if query["host"] and query["host"] not in (row["host_id"], row["host_name"]):
        return False
    needle = query["q"].casefold()
    if needle:
        haystack = [row["name"]] + [f["code"] for f in row["findings"]] + \
                   [f["message"] for f in row["findings"]]
        if not any(needle in text.casefold() for text in haystack):
            return False
    return True


def _sort_key(key: str):
    def by(row: Mapping[str, Any]):
        name = row["name"].casefold()
        if key == "name":
            return (name,)
        if key == "cluster":
            return (row["cluster"].casefold(), name)
        if key == "host":
            return (row["host_name"].casefold(), name)
        if key == "last_report":
            last = row["last_report_at"]
            return (last is None, -(last or 0.0), name)
        if key == "finding":
            worst = row["worst"]
            return (worst is None, -RANK[worst["status"]] if worst else 9,
                    (worst or {}).get("code", ""), name)
        return (-RANK[row["health"]], name)
    return by


def build_fleet_view(
    summary: Mapping[str, Any] | None,
    query: Mapping[str, str],
    now: float,
) -> Dict[str, Any]:
    """Rows after filters and sort, the per-verdict counts and the choices for the filters."""
    query = parse_query(query)
    vms = (summary or {}).get("vms") or []
    rows = [_row(vm, now) for vm in vms[:MAX_VMS] if isinstance(vm, dict)]
    counts_in = (summary or {}).get("counts")
    counts = {v: 0 for v in VERDICTS}
    for row in rows:
        counts[row["health"]] += 1
    if isinstance(counts_in, dict):
        # The service's counts are authoritative when present (it may cap the list it returns).
        for verdict in VERDICTS:
            value = as_number(counts_in.get(verdict))
            if value is not None:
                counts[verdict] = int(value)
    shown = [row for row in rows if _matches(row, query)]
    shown.sort(key=_sort_key(query["sort"]), reverse=query["dir"] == "desc")
    hosts = sorted({(r["host_id"], r["host_name"] or r["host_id"]) for r in rows if r["host_id"]},
                   key=lambda h: h[1].casefold())
    return {
        "query": query,
        "rows": shown,
        "total": len(rows),
        "counts": [(v, HEALTH_TEXT[v], counts[v]) for v in VERDICTS],
        "clusters": sorted({r["cluster"] for r in rows if r["cluster"]}, key=str.casefold),
        "hosts": hosts,
        "sort_keys": SORT_KEYS,
    }


def build_host_view(summary: Mapping[str, Any], host_id: str, now: float) -> Dict[str, Any]:
    """The host page: its VMs worst first, with the host's name taken from the summary."""
    view = build_fleet_view(summary, {"sort": "health"}, now)
    host = summary.get("host") if isinstance(summary.get("host"), dict) else {}
    name = _text(host.get("name")) or next(
        (r["host_name"] for r in view["rows"] if r["host_name"]), "") or host_id
    view["host"] = {"id": host_id, "name": name}
    return view
