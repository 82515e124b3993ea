"""Filter, count, sort and page a list of VM summary rows: the fleet and host lists of API 1.

The service hands this module every row the user may see (oVirt decided that; a VM the user
may not see never reaches it), so every count it returns is a count of visible VMs and the
counts always agree with the rows::

    query = parse_list_query(request.query)          # BadRequest names the bad parameter
    doc = select(rows, query, text_of)               # counts, totals, one page, facets

What the answer means (docs/design.md, "Fleet lists: paging, search and sort"):

* ``total``: the rows in scope (all the user may see, or all on that host);
* ``counts``: per status, the rows matching host, cluster and text search (not the health
  filter, so the counts can offer "only critical" without losing the others);
* ``matched``: the rows matching every filter; the pages hold exactly these, in order;
* ``page``: which part of ``matched`` came back, and ``next_cursor`` for the part after it.

Paging is by page number (``page``, for the pages) or by an opaque cursor (``cursor``, for
programs walking the whole list). A cursor holds the sort key of the last row served, so a
walk neither repeats nor skips a VM that keeps its place while VMs before it come or go;
a VM whose sort key changes during the walk (its health changed) may be met twice or not at
all, which no cursor over a live list can avoid.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from diag_protocol.vocabulary import (
    RANK,
    STATUSES,
    findings_of,
    parse_statuses,
    rank,
    worst_item,
)

#: Sort keys, each with a total order (the VM id breaks every tie).
SORT_KEYS = ("health", "name", "cluster", "host", "last_report", "finding")
DIRECTIONS = ("asc", "desc")
DEFAULT_PER_PAGE = 50
#: The most rows one answer carries when a page size is asked for.
MAX_PER_PAGE = 500
#: Longest accepted text of a filter (longer ones are a client error, or truncated on pages).
MAX_QUERY = 200
MAX_CURSOR = 2048
#: Query parameters that ask for the paged answer; without any of them the API answers the
#: whole list as API 1 always did (docs/design.md).
PAGING_PARAMS = ("per_page", "page", "cursor")

Key = Tuple[Any, ...]


class ListError(ValueError):
    """A list parameter that cannot be used; the message names it and what is allowed."""


@dataclass(frozen=True)
class ListQuery:
    health: Tuple[str, ...] = ()      # empty: any
    host: str = ""                    # host id or name
    cluster: str = ""                 # cluster id or name
    q: str = ""                       # text search (case-insensitive substring)
    sort: str = "name"
    dir: str = "asc"
    per_page: int | None = None       # None: every matching row (the API 1 answer)
    page: int = 1
    cursor: str | None = None

    def params(self, **changes: Any) -> Dict[str, str]:
        """The query as URL parameters (with ``changes``), leaving out defaults."""
        values = {"health": ",".join(self.health), "host": self.host,
                  "cluster": self.cluster, "q": self.q, "sort": self.sort, "dir": self.dir,
                  "per_page": self.per_page, "page": self.page}
        values.update(changes)
        return {k: str(v) for k, v in values.items()
                if v not in (None, "") and not (k == "page" and v == 1)}


def parse_list_query(query: Mapping[str, str], *, default_sort: str = "name",
                     lenient: bool = False) -> ListQuery:
    """The list parameters of ``query``.

    Strict (the API): a bad value raises ListError naming the parameter and what is allowed.
    ``lenient`` (the pages, whose address bar anybody can edit): a bad value falls back to
    its default and long texts are cut.
    """
    def fail(message: str) -> None:
        if not lenient:
            raise ListError(message)

    def text(name: str) -> str:
        value = str(query.get(name) or "").strip()
        if len(value) > MAX_QUERY:
            fail("%s is longer than %d characters" % (name, MAX_QUERY))
            value = value[:MAX_QUERY]
        return value

    health: Tuple[str, ...] = ()
    raw_health = query.get("health")
    if raw_health:
        try:
            health = tuple(parse_statuses(raw_health, "health"))
        except ValueError as err:
            fail(str(err))
    sort = query.get("sort") or default_sort
    if sort not in SORT_KEYS:
        fail("sort=%s is not one of %s" % (sort, ", ".join(SORT_KEYS)))
        sort = default_sort
    direction = query.get("dir") or "asc"
    if direction not in DIRECTIONS:
        fail("dir=%s is not asc or desc" % direction)
        direction = "asc"
    per_page = _int(query, "per_page", None, 1, MAX_PER_PAGE, fail)
    page = _int(query, "page", 1, 1, 10 ** 9, fail) or 1
    cursor = query.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR:
        fail("cursor is not one this service issued")
        cursor = None
    if per_page is None and any(query.get(p) for p in PAGING_PARAMS):
        per_page = DEFAULT_PER_PAGE
    return ListQuery(health=health, host=text("host"), cluster=text("cluster"), q=text("q"),
                     sort=sort, dir=direction, per_page=per_page, page=page, cursor=cursor)


def _int(query: Mapping[str, str], name: str, default: int | None, low: int, high: int,
         fail: Callable[[str], None]) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw))
    except ValueError:
        fail("%s=%s is not a whole number" % (name, str(raw)[:40]))
        return default
    if not low <= value <= high:
        fail("%s=%d is not between %d and %d" % (name, value, low, high))
        return min(max(value, low), high)
    return value


# -- sort keys ------------------------------------------------------------------------------

def _name(row: Mapping[str, Any]) -> str:
    return str(row.get("name") or row.get("id") or "").casefold()


def worst_finding(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return worst_item(findings_of(row))


def sort_key(row: Mapping[str, Any], key: str) -> Key:
    """The total-order key of ``row`` for sort ``key`` (JSON-safe: it goes into cursors)."""
    name, vm_id = _name(row), str(row.get("id") or "")
    if key == "name":
        return (name, vm_id)
    if key == "cluster":
        return (str(row.get("cluster") or "").casefold(), name, vm_id)
    if key == "host":
        return (str(row.get("host_name") or "").casefold(), name, vm_id)
    if key == "last_report":
        last = row.get("last_report_at")
        if isinstance(last, (int, float)) and not isinstance(last, bool):
            return (0, -float(last), name, vm_id)
        return (1, 0.0, name, vm_id)
    if key == "finding":
        worst = worst_finding(row)
        if worst is None:
            return (1, 0, "", name, vm_id)
        return (0, -rank(worst.get("status")), str(worst.get("code") or ""), name, vm_id)
    return (-RANK.get(str(row.get("health")), RANK["unknown"]), name, vm_id)


def encode_cursor(sort: str, direction: str, key: Key) -> str:
    raw = json.dumps([sort, direction, list(key)], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, sort: str, direction: str) -> Key:
    """The key a cursor holds; ListError for a cursor of another sort or not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c_sort, c_dir, key = json.loads(raw.decode("utf-8"))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ListError("cursor is not one this service issued") from None
    if c_sort != sort or c_dir != direction:
        raise ListError("this cursor belongs to sort=%s&dir=%s; pass the same sort and dir "
                        "as the request that returned it" % (c_sort, c_dir))
    if not isinstance(key, list) or not all(isinstance(k, (str, int, float)) for k in key):
        raise ListError("cursor is not one this service issued")
    return tuple(key)


# -- selection ------------------------------------------------------------------------------

def _in_scope_filters(row: Mapping[str, Any], query: ListQuery, text: str) -> bool:
    if query.host and query.host not in (row.get("host_id"), row.get("host_name")):
        return False
    if query.cluster and query.cluster not in (row.get("cluster_id"), row.get("cluster")):
        return False
    return not query.q or query.q.casefold() in text


def default_text(row: Mapping[str, Any]) -> str:
    """What the text search looks at: names of VM, host and cluster, the VM id and the
    findings' codes and messages, case-folded."""
    parts = [row.get("name"), row.get("id"), row.get("host_name"), row.get("cluster")]
    for f in findings_of(row):
        parts.extend((f.get("code"), f.get("message")))
    return "\n".join(str(p) for p in parts if p).casefold()


def facets(rows: Sequence[Mapping[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """The hosts and clusters of ``rows`` with how many rows each has (filter choices)."""
    hosts: Dict[str, Dict[str, Any]] = {}
    clusters: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        host_id = row.get("host_id")
        if host_id:
            entry = hosts.setdefault(host_id, {"id": host_id, "name": row.get("host_name")
                                               or host_id, "vms": 0})
            entry["vms"] += 1
        cluster = row.get("cluster")
        if cluster:
            entry = clusters.setdefault(cluster, {"id": row.get("cluster_id"),
                                                  "name": cluster, "vms": 0})
            entry["vms"] += 1
    return {"hosts": sorted(hosts.values(), key=lambda h: (str(h["name"]).casefold(), h["id"])),
            "clusters": sorted(clusters.values(), key=lambda c: str(c["name"]).casefold())}


def ordered(rows: Sequence[Mapping[str, Any]], sort: str, direction: str
            ) -> List[Tuple[Key, Any]]:
    """(sort key, row) of ``rows`` in the order served for ``sort`` and ``direction``."""
    keyed = sorted(((sort_key(row, sort), row) for row in rows), key=lambda pair: pair[0])
    if direction == "desc":
        keyed.reverse()
    return keyed


def select(rows: Sequence[Mapping[str, Any]], query: ListQuery,
           text_of: Callable[[Mapping[str, Any]], str] = default_text,
           in_order: Sequence[Tuple[Key, Any]] | None = None,
           row_facets: Dict[str, List[Dict[str, Any]]] | None = None) -> Dict[str, Any]:
    """The list document for ``rows`` (everything in scope the user may see); see the module
    docstring. ``text_of(row)`` is the case-folded text the search looks in. ``in_order``
    (``ordered(rows, query.sort, query.dir)``) and ``row_facets`` (``facets(rows)``) may be
    given when they were computed before for the same rows."""
    counts = {status: 0 for status in STATUSES}
    wanted = set(query.health)
    matched = []
    for row in rows:
        if not _in_scope_filters(row, query, text_of(row) if query.q else ""):
            continue
        status = str(row.get("health"))
        counts[status if status in counts else "unknown"] += 1
        if not wanted or status in wanted:
            matched.append(row)
    if in_order is None:
        keyed = ordered(matched, query.sort, query.dir)
    elif len(matched) == len(rows):
        keyed = list(in_order)
    else:
        chosen = {id(row) for row in matched}
        keyed = [pair for pair in in_order if id(pair[1]) in chosen]
    doc: Dict[str, Any] = {"counts": counts, "total": len(rows), "matched": len(matched)}
    doc.update(row_facets if row_facets is not None else facets(rows))
    if query.per_page is None:
        doc["vms"] = [row for _, row in keyed]
        return doc
    per_page = query.per_page
    pages = max(1, -(-len(keyed) // per_page))
    if query.cursor:
        start = _after(keyed, decode_cursor(query.cursor, query.sort, query.dir), query.dir)
        page = start // per_page + 1 if start % per_page == 0 else None
    else:
        page = min(query.page, pages)
        start = (page - 1) * per_page
    chunk = keyed[start:start + per_page]
    end = start + len(chunk)
    doc["vms"] = [row for _, row in chunk]
    doc["page"] = {
        "page": page, "per_page": per_page, "pages": pages, "sort": query.sort,
        "dir": query.dir, "first": start + 1 if chunk else 0, "last": end,
        "next_cursor": (encode_cursor(query.sort, query.dir, chunk[-1][0])
                        if chunk and end < len(keyed) else None),
    }
    return doc


def _after(keyed: List[Tuple[Key, Any]], key: Key, direction: str) -> int:
    """Index of the first row after ``key`` in the served order."""
    keys = [k for k, _ in keyed]
    try:
        if direction == "desc":
            # keys descend: count the rows whose key is >= key
            lo, hi = 0, len(keys)
            while lo < hi:
                mid = (lo + hi) // 2
                if keys[mid] >= key:
                    lo = mid + 1
                else:
                    hi = mid
            return lo
        return bisect.bisect_right(keys, key)
    except TypeError:  # a forged cursor whose key does not compare with ours
        raise ListError("cursor is not one this service issued") from None
