"""The words every part uses for a judgement: statuses, their order, and the worst of several.

One name per idea, across guest, relay, engine, API and pages (docs/design.md, "Vocabulary"):

* a **status** is the level of anything judged: a check result, a finding, a forecast, a VM's
  verdict. It is one of ``STATUSES``. (The words "severity" and "health" do not name a level:
  a VM's *health* is its verdict, whose ``status`` is one of these.)
* a **finding** is one thing judged not ok: ``{"code", "status", "message", "metric"}``; a
  verdict lists its ``findings`` most severe first.

The order of severity, worst last: ok < unknown < warning < critical. "unknown" (a judgement
that could not be made) is worse than ok, because nobody knows all is well, and better than a
warning, because nothing is known to be wrong. A string that is not a status ranks as unknown,
so a hostile or newer peer can never make a result look better than "unknown".
"""

import collections.abc
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TypeVar

T = TypeVar("T")
#: isinstance against typing.Mapping is several times slower than against the ABC, and
#: findings are read for every VM on every health pass
_MAPPING = collections.abc.Mapping

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
UNKNOWN = "unknown"

#: Every status, in the order lists and counters show them.
STATUSES = (OK, WARNING, CRITICAL, UNKNOWN)
#: The same, most severe first (how findings and checks are listed).
WORST_FIRST = (CRITICAL, WARNING, UNKNOWN, OK)
#: Statuses that make a finding (everything but ok).
NOT_OK = (WARNING, CRITICAL, UNKNOWN)
#: Rank of each status; higher is worse.
RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
#: Nagios plugin exit codes (``vmdiag-agent check``).
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


def status_of(value: Any) -> str:
    """``value`` when it is a status, else "unknown" (never silently "ok")."""
    return value if isinstance(value, str) and value in RANK else UNKNOWN


def rank(status: Any) -> int:
    """How severe ``status`` is (higher is worse); anything else ranks as unknown."""
    return RANK[status_of(status)]


def worst(statuses: Iterable[Any], default: str = OK) -> str:
    """The most severe of ``statuses`` (``default`` for none): critical > warning > unknown > ok."""
    found = default
    for status in statuses:
        status = status_of(status)
        if RANK[status] > RANK[found]:
            found = status
    return found


def _status_key(item: Any) -> Any:
    # decoded messages hold plain dicts: the exact type test first, the ABC for the rest
    return item.get("status") if type(item) is dict or isinstance(item, _MAPPING) else None


def worst_first(items: Iterable[T], key: Callable[[T], Any] = _status_key) -> List[T]:
    """``items`` most severe first (stable: equal statuses keep their order)."""
    return sorted(items, key=lambda item: -rank(key(item)))


def worst_item(items: Iterable[T], key: Callable[[T], Any] = _status_key) -> Optional[T]:
    """The most severe of ``items`` (the first wins a tie), or None when there are none."""
    found: Optional[T] = None
    found_rank = -1  # below every rank: the first item is taken
    for item in items:
        item_rank = rank(key(item))
        if item_rank > found_rank:
            found, found_rank = item, item_rank
    return found


def at_least(status: Any, floor: str) -> bool:
    """True when ``status`` is as severe as ``floor`` or worse."""
    return rank(status) >= RANK[floor]


def parse_statuses(value: Any, source: str = "status") -> Sequence[str]:
    """A comma-separated list of statuses; ValueError names ``source`` and what is allowed."""
    wanted = [v.strip() for v in str(value).split(",") if v.strip()]
    bad = [v for v in wanted if v not in RANK]
    if bad:
        raise ValueError("%s=%s is not one of %s (comma-separate several)"
                         % (source, ",".join(bad), ", ".join(STATUSES)))
    return wanted


def finding(code: str, status: str, message: str, metric: Optional[str] = None
            ) -> Dict[str, Any]:
    """One finding as every document carries it (API 1 also repeats ``status`` as
    ``severity``, the name it had before; docs/design.md, "Vocabulary")."""
    return {"code": code, "status": status, "message": message, "metric": metric,
            "severity": status}


def findings_of(doc: Any, key: str = "findings") -> List[Dict[str, Any]]:
    """The findings a document lists, each with ``status``, whether it was written with the
    current names (``findings``, ``status``) or the old ones (``reasons``/``worst_findings``,
    ``severity``): stored verdicts and older services still carry the old names."""
    if not isinstance(doc, _MAPPING):
        return []
    items = doc.get(key)
    if items is None:
        items = doc.get("reasons", doc.get("worst_findings"))
    out = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, _MAPPING):
            status = status_of(item.get("status", item.get("severity")))
            out.append(dict(item, status=status, severity=status))
    return out
