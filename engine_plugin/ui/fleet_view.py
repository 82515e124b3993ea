"""View model of the fleet and host pages: one page of VMs, the counts, the pagination.

The service filters, counts, sorts and pages (``engine_plugin.service.listing``) over every VM
the user may see, so a page of 50 rows out of 10,000 costs the browser 50 rows, and the counts
and "Showing 51-100 of 9,812" always describe the same rows. This module only shapes that
answer for the templates. Query parameters are untrusted: the page parses them leniently (an
unknown sort key or direction falls back to the default instead of failing).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping
from urllib.parse import urlencode

from diag_protocol.vocabulary import WORST_FIRST, findings_of, worst_first

from ..service.listing import (
    DEFAULT_PER_PAGE,
    MAX_QUERY,
    SORT_KEYS,
    ListQuery,
    parse_list_query,
)
from .formatting import as_number, human_age
from .vm_view import HEALTH_TEXT, _dict, _text, health_status

VERDICTS = WORST_FIRST
#: Page sizes the pagination offers (any size up to listing.MAX_PER_PAGE is accepted).
PER_PAGE_CHOICES = (10, 20, 50, 100, 200)

__all__ = ["MAX_QUERY", "SORT_KEYS", "build_fleet_view", "build_host_view", "parse_query"]


def parse_query(query: Mapping[str, str], default_sort: str = "health") -> ListQuery:
    """The page's filter/sort/page query (lenient; a page always has a page size)."""
    parsed = parse_list_query(query, default_sort=default_sort, lenient=True)
    # One status only on the pages (the count buttons and the select choose one).
    health = parsed.health[:1] if parsed.health and parsed.health[0] in VERDICTS else ()
    return ListQuery(health=health, host=parsed.host, cluster=parsed.cluster, q=parsed.q,
                     sort=parsed.sort, dir=parsed.dir,
                     per_page=parsed.per_page or DEFAULT_PER_PAGE, page=parsed.page)


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


def _count(value: Any) -> int:
    number = as_number(value)
    return int(number) if number is not None and number >= 0 else 0


def pagination(doc: Mapping[str, Any], query: ListQuery) -> Dict[str, Any]:
    """What the pagination bar shows: "1 - 50 of 9,812", the page, and where its buttons go."""
    page_info = _dict(doc.get("page"))
    matched = _count(doc.get("matched"))
    per_page = _count(page_info.get("per_page")) or query.per_page or DEFAULT_PER_PAGE
    pages = max(1, _count(page_info.get("pages")) or 1)
    page = min(max(1, _count(page_info.get("page")) or 1), pages)
    return {
        "page": page, "pages": pages, "per_page": per_page, "matched": matched,
        "first": _count(page_info.get("first")), "last": _count(page_info.get("last")),
        "prev": page - 1 if page > 1 else None, "next": page + 1 if page < pages else None,
        "choices": sorted(set(PER_PAGE_CHOICES) | {per_page}),
    }


def _patterns(doc: Mapping[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for p in doc.get("patterns") or []:
        if not isinstance(p, dict) or p.get("scope") not in ("host", "cluster"):
            continue
        scope, key = p["scope"], _text(p.get("id"))
        out.append({
            "scope": scope, "name": _text(p.get("name")) or key, "code": _text(p.get("code")),
            "status": health_status(p.get("status")), "what": _text(p.get("what")),
            "advice": _text(p.get("advice")), "vms": _count(p.get("vms")),
            "of": _count(p.get("of")), "since": as_number(p.get("since")),
            # the list of exactly these VMs: the code on that host or cluster
            "query": urlencode({"q": _text(p.get("code")), scope: key}),
        })
    return out


def _groups(doc: Mapping[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for g in doc.get("finding_groups") or []:
        if not isinstance(g, dict):
            continue
        places = [(_text(h.get("name")), _count(h.get("vms"))) for h in g.get("hosts") or []
                  if isinstance(h, dict)]
        out.append({"code": _text(g.get("code")), "status": health_status(g.get("status")),
                    "message": _text(g.get("message")), "vms": _count(g.get("vms")),
                    "hosts": places, "query": urlencode({"q": _text(g.get("code"))})})
    return out


def build_fleet_view(doc: Mapping[str, Any] | None, query: ListQuery, now: float
                     ) -> Dict[str, Any]:
    """One page of rows, the per-verdict counts, the filter choices and the pagination."""
    doc = doc or {}
    counts_in = _dict(doc.get("counts"))
    rows = [_row(vm, now) for vm in doc.get("vms") or [] if isinstance(vm, dict)]
    hosts: List[Any] = [(_text(h.get("id")), _text(h.get("name")) or _text(h.get("id")))
                        for h in doc.get("hosts") or [] if isinstance(h, dict) and h.get("id")]
    clusters = [_text(c.get("name")) for c in doc.get("clusters") or []
                if isinstance(c, dict) and _text(c.get("name"))]
    return {
        "query": {"health": query.health[0] if query.health else "", "cluster": query.cluster,
                  "host": query.host, "q": query.q, "sort": query.sort, "dir": query.dir,
                  "per_page": query.per_page},
        "rows": rows,
        "total": _count(doc.get("total")),
        "pagination": pagination(doc, query),
        "counts": [(v, HEALTH_TEXT[v], _count(counts_in.get(v))) for v in VERDICTS],
        "clusters": clusters,
        "hosts": hosts,
        "sort_keys": SORT_KEYS,
        # the export (API, CSV) of every VM matching this view, in this order
        "export_query": urlencode(query.params(per_page=None, page=1)),
        "patterns": _patterns(doc),
        "groups": _groups(doc),
        "reading": reading(doc),
    }


def reading(doc: Mapping[str, Any]) -> int | None:
    """How many VMs were read so far while the user's list is still being read from oVirt
    page by page (the service's ``visible``), else None: the page says so, and that its
    counts and rows cover those VMs only, and refreshes itself soon."""
    visible = _dict(doc.get("visible"))
    if visible.get("complete") is False:
        return _count(visible.get("read"))
    return None


def build_host_view(doc: Mapping[str, Any], host_id: str, query: ListQuery, now: float
                    ) -> Dict[str, Any]:
    """The host page: one page of its VMs (worst first by default), named from the rows."""
    view = build_fleet_view(doc, query, now)
    host = _dict(doc.get("host"))
    named = [h[1] for h in view["hosts"] if h[0] == host_id]
    name = _text(host.get("name")) or (named[0] if named else "") or next(
        (r["host_name"] for r in view["rows"] if r["host_name"]), "") or host_id
    view["host"] = {"id": host_id, "name": name}
    return view
