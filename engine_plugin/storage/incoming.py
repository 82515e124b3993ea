"""Turning a batch of relay envelopes into rows, before any database work.

Everything that needs no database happens here, outside the write lock: shape checks,
duplicates inside one batch, metric extraction, summary fields. The "newer" rule that decides
which report becomes a VM's latest lives here too, mirrored by the SQL of the backends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from .extract import Sample, agent_version_of, extract_samples, hostname_of, worst_checks


@dataclass
class Incoming:
    """One new report of a batch, with what the store extracts from it."""

    vm_id: str
    host_id: str | None
    run_id: str
    seq: int
    received_at: float
    report_time: float | None
    report: Dict[str, Any]
    samples: List[Sample]
    hostname: str | None
    agent_version: str | None
    worst_status: str | None
    worst_checks: str | None
    _json: str | None = field(default=None, repr=False)

    @property
    def key(self) -> Tuple[str, str, int]:
        return (self.vm_id, self.run_id, self.seq)

    def report_json(self) -> str:
        if self._json is None:
            # a validated report is a tree (no cycles, depth capped): skipping the cycle check
            # makes this, the costliest step of an ingest, about a fifth faster
            self._json = json.dumps(self.report, separators=(",", ":"), ensure_ascii=False,
                                    check_circular=False)
        return self._json


def _bad(index: int, what: str) -> ValueError:
    return ValueError("envelope %d: %s; validate envelopes with "
                      "diag_protocol.validate_envelope before storing them" % (index, what))


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def prepare(envelopes: Sequence[Dict[str, Any]]) -> Tuple[List[Incoming], int]:
    """(new reports in batch order, duplicates within the batch itself)."""
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
        if (vm_id, run_id, seq) in seen:
            duplicates += 1
            continue
        seen.add((vm_id, run_id, seq))
        host_id = env.get("host_id") if isinstance(env.get("host_id"), str) else None
        worst = worst_checks(report)
        items.append(Incoming(
            vm_id=vm_id, host_id=host_id, run_id=run_id, seq=seq, received_at=received_at,
            report_time=_float(report.get("time")), report=report,
            samples=extract_samples(report), hostname=hostname_of(report),
            agent_version=agent_version_of(env),
            worst_status=worst[0] if worst else None,
            worst_checks=json.dumps(worst[1], separators=(",", ":")) if worst else None))
    return items, duplicates


def is_newer(cand: Incoming, run_id: str | None, seq: int | None,
             received_at: float | None) -> bool:
    """Whether ``cand`` should replace a latest report with these fields.

    Within one agent run ``seq`` orders reports exactly. Across runs (agent restart, reboot)
    the relay's receive time decides: host clocks are kept in sync by oVirt, guest clocks
    may not be, and a report spooled by the relay keeps its original receive time.
    """
    if received_at is None or run_id is None or seq is None:
        return True
    if cand.run_id == run_id:
        return cand.seq > seq
    return cand.received_at > received_at


def encode_latest_candidates(items: Sequence[Incoming]) -> None:
    """Serialise, ahead of the write transaction, the report of each VM that will most likely
    become its latest: JSON encoding is the costliest step of an ingest, and done here it
    does not hold the write lock (SQLite) or an open transaction (PostgreSQL)."""
    best: Dict[str, Incoming] = {}
    for item in items:
        cur = best.get(item.vm_id)
        if cur is None or is_newer(item, cur.run_id, cur.seq, cur.received_at):
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
        new, old = (item, cur) if is_newer(item, cur.run_id, cur.seq, cur.received_at) \
            else (cur, item)
        if new.hostname is None:
            new.hostname = old.hostname
        if new.agent_version is None:
            new.agent_version = old.agent_version
        if new.worst_status is None:
            new.worst_status, new.worst_checks = old.worst_status, old.worst_checks
        best[item.vm_id] = new
    return sorted(best.values(), key=lambda i: i.vm_id)
