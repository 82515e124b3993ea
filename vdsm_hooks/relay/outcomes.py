"""What the engine's ingest answer means for each envelope, and the per-VM record of refusals.

The ingest contract (docs/design.md, "Relay -> engine: per-envelope outcomes"): a batch the
engine could parse is answered 200 with one result per envelope, in order::

    {"results": [{"outcome": "stored"} | {"outcome": "duplicate"}
                 | {"outcome": "refused", "reason": "<code>", "message": "<text>"}
                 | {"outcome": "retry", "reason": "<code>"}, ...], ...}

``stored`` and ``duplicate`` are done; ``refused`` is for good (the relay drops the envelope,
counted per VM); ``retry`` is transient and only that envelope is tried again. An older engine
answers ``{"accepted": N, ...}`` without ``results``: then every envelope counts as stored,
which is what that engine did with the valid ones.

``RefusalLedger`` keeps, per VM, how many envelopes the engine refused and why (or, with
another ``says``, how many the relay dropped itself), and decides when to log: once per VM per
hour. It holds at most ``limit`` VMs (least recently refused
dropped first), so nothing here grows with what peers send.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

# the outcome names are the engine's contract, defined once in diag_protocol
from diag_protocol.ingest import OUTCOMES, RETRY

#: Most bytes of an ingest answer read; 500 results are about 15 KB.
MAX_ANSWER_BYTES = 4 << 20
#: Seconds between two log lines about refusals of the same VM.
LOG_EVERY = 3600.0
#: VMs whose refusals are remembered at once.
MAX_VMS = 10000


@dataclass(frozen=True)
class Result:
    outcome: str
    reason: str = ""
    message: str = ""


def parse_results(body: bytes, count: int) -> Optional[List[Result]]:
    """The per-envelope results of a 2xx answer to a batch of ``count`` envelopes.

    None for an answer without ``results`` (an engine before per-envelope outcomes: all
    stored). A ``results`` list of the wrong length, or an outcome this relay does not know,
    becomes ``retry`` for the envelopes concerned: keeping an envelope is never wrong, dropping
    one on a misunderstanding would be.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "results" not in answer:
        return None
    raw = answer["results"]
    if not isinstance(raw, list) or len(raw) != count:
        return [Result(RETRY, "bad_answer")] * count
    out = []
    for item in raw:
        outcome = item.get("outcome") if isinstance(item, dict) else None
        if outcome not in OUTCOMES:
            out.append(Result(RETRY, "bad_answer"))
            continue
        assert isinstance(item, dict)
        out.append(Result(str(outcome), str(item.get("reason") or "")[:64],
                          str(item.get("message") or "")[:300]))
    return out


def vm_of(line: bytes) -> str:
    """The vm_id of one spooled envelope line, for counting (the line was validated)."""
    try:
        value = json.loads(line)
        return str(value["vm_id"])[:64]
    except (ValueError, KeyError, TypeError):
        return "?"


@dataclass
class _VMRefusals:
    count: int = 0
    reason: str = ""
    message: str = ""
    logged_at: float = float("-inf")
    unlogged: int = 0


class RefusalLedger:
    """Per-VM counts of envelopes refused for good, and when to say so in the log."""

    def __init__(self, limit: int = MAX_VMS, log_every: float = LOG_EVERY,
                 says: str = "engine refused %d report(s) of VM %s for good") -> None:
        self.says = says
        self.limit = limit
        self.log_every = log_every
        self.total = 0
        self._vms: collections.OrderedDict[str, _VMRefusals] = collections.OrderedDict()

    def add(self, vm_id: str, reason: str, message: str,
            now: Optional[float] = None) -> Optional[str]:
        """Count one refusal; return the log line to write now, or None (already said within
        the hour; the count keeps growing and the next line says how many)."""
        now = time.monotonic() if now is None else now
        self.total += 1
        entry = self._vms.pop(vm_id, None) or _VMRefusals()
        self._vms[vm_id] = entry  # most recent last
        while len(self._vms) > self.limit:
            self._vms.popitem(last=False)
        entry.count += 1
        entry.unlogged += 1
        entry.reason, entry.message = reason, message
        if now - entry.logged_at < self.log_every:
            return None
        line = (self.says % (entry.unlogged, vm_id)
                + " (%s: %s); dropped, %d so far" % (reason or "no reason", message or "-",
                                                     entry.count))
        entry.logged_at = now
        entry.unlogged = 0
        return line

    def count(self, vm_id: str) -> int:
        entry = self._vms.get(vm_id)
        return entry.count if entry is not None else 0

    def as_dict(self) -> Dict[str, Any]:
        return {vm: {"count": e.count, "reason": e.reason, "message": e.message}
                for vm, e in self._vms.items()}

    def __len__(self) -> int:
        return len(self._vms)
