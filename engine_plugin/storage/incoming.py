"""Turning a batch of relay envelopes into rows, before any database work.

Everything that needs no database happens here, outside the write lock: shape checks,
duplicates inside one batch, metric extraction, summary fields. The "newer" rule that decides
which report becomes a VM's latest lives here too, mirrored by the SQL of the backends.

Two times travel with a report: ``received_at``, when the relay read it from the guest (the
relay's clock), and ``ingested_at``, when this engine stored it (the engine's clock, the same
for a whole batch). Order across agent runs and silence use ``ingested_at``: no relay's clock,
fast or hostile, can pin a VM's latest report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from .. import fastjson
from .extract import Sample, agent_version_of, extract_samples, hostname_of, worst_checks


@dataclass
class Incoming:
    """One new report of a batch, with what the store extracts from it."""

    vm_id: str
    host_id: str | None
    run_id: str
    seq: int
    received_at: float
    ingested_at: float
    report_time: float | None
    report: Dict[str, Any]
    samples: List[Sample]
    hostname: str | None
    agent_version: str | None
    worst_status: str | None
    worst_checks: str | None
    #: position of the envelope in the batch given to ``prepare``
    index: int = 0
    _json: str | None = field(default=None, repr=False)

    @property
    def key(self) -> Tuple[str, str, int]:
        return (self.vm_id, self.run_id, self.seq)

    def report_json(self) -> str:
        if self._json is None:
            self._json = fastjson.dumps(self.report)
        return self._json


def _bad(index: int, what: str) -> ValueError:
    return ValueError("envelope %d: %s; validate envelopes with "
                      "diag_protocol.validate_envelope before storing them" % (index, what))


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def prepare(envelopes: Sequence[Dict[str, Any]],
            now: float | None = None) -> Tuple[List[Incoming], int]:
    """(new reports in batch order, duplicates within the batch itself); ``now`` is the
    engine's receive time of the batch (default: the clock)."""
    ingested_at = time.time() if now is None else float(now)
    seen = set()
    items: List[Incoming] = []
    duplicates = 0
    for index, env in enumerate(envelopes):
        report = env.get("report") if isinstance(env, dict) else None
        if not isinstance(report, dict):
            raise _bad(index, "no report object")
        vm_id, run_id, seq = env.get("vm_id"), report.get("run_id"), report.get("seq")
        received_at = _float(env.get("received_at"))
        if not isinstance(vm_id, str) or not vm_id:
            raise _bad(index, "vm_id missing")
        if not isinstance(run_id, str) or isinstance(seq, bool) or not isinstance(seq, int):
            raise _bad(index, "report without run_id/seq")
        if received_at is None:
            raise _bad(index, "received_at missing")
        # the store never keeps a relay time later than its own clock (ingest counts relays
        # whose clock runs ahead beyond [ingest] max_clock_skew)
        received_at = min(received_at, ingested_at)
        if (vm_id, run_id, seq) in seen:
            duplicates += 1
            continue
        seen.add((vm_id, run_id, seq))
        host_id = env.get("host_id") if isinstance(env.get("host_id"), str) else None
        worst = worst_checks(report)
        items.append(Incoming(
            vm_id=vm_id, host_id=host_id, run_id=run_id, seq=seq, received_at=received_at,
            ingested_at=ingested_at, index=index, report_time=_float(report.get("time")),
            report=report,
            samples=extract_samples(report), hostname=hostname_of(report),
            agent_version=agent_version_of(env),
            worst_status=worst[0] if worst else None,
            # orjson when installed: the standard library built an encoder per call
            worst_checks=fastjson.dumps(worst[1]) if worst else None))
    return items, duplicates


def is_newer(cand: Incoming, run_id: str | None, seq: int | None,
             ingested_at: float | None, received_at: float | None) -> bool:
    """Whether ``cand`` should replace a latest report with these fields.

    Within one agent run ``seq`` orders reports exactly. Across runs (agent restart, reboot,
    a migration with a restart) the engine's receive time decides, and between reports the
    engine received at the same instant (one batch) the relay's receive time: guest clocks
    may be wrong, relay clocks may run fast, the engine's own clock is the one both sides
    of a migration share. A report therefore stays latest only until a newer run's report
    arrives, whatever times it carries.
    """
    if ingested_at is None or received_at is None or run_id is None or seq is None:
        return True
    if cand.run_id == run_id:
        return cand.seq > seq
    if cand.ingested_at != ingested_at:
        return cand.ingested_at > ingested_at
    return cand.received_at > received_at


def _beats(item: Incoming, cur: Incoming) -> bool:
    return is_newer(item, cur.run_id, cur.seq, cur.ingested_at, cur.received_at)


def encode_latest_candidates(items: Sequence[Incoming]) -> None:
    """Serialise, ahead of the write transaction, the report of each VM that will most likely
    become its latest: JSON encoding is the costliest step of an ingest, and done here it
    does not hold the write lock (SQLite) or an open transaction (PostgreSQL)."""
    best: Dict[str, Incoming] = {}
    for item in items:
        cur = best.get(item.vm_id)
        if cur is None or _beats(item, cur):
            best[item.vm_id] = item
    for item in best.values():
        item.report_json()


def newest_per_vm(items: Sequence[Incoming]) -> List[Incoming]:
    """The report of each VM that becomes its latest, with summary fields carried forward from
    older reports of the batch when the newest lacks them (a failed settings/checks section)."""
    best: Dict[str, Incoming] = {}
    for item in items:
        cur = best.get(item.vm_id)
        if cur is None:
            best[item.vm_id] = item
            continue
        new, old = (item, cur) if _beats(item, cur) else (cur, item)
        if new.hostname is None:
            new.hostname = old.hostname
        if new.agent_version is None:
            new.agent_version = old.agent_version
        if new.worst_status is None:
            new.worst_status, new.worst_checks = old.worst_status, old.worst_checks
        best[item.vm_id] = new
    return sorted(best.values(), key=lambda i: i.vm_id)
