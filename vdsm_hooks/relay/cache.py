"""The relay's read model: per VM, the latest report, what the agent said, and counters.

Sessions write here; the control socket (``status``, ``show``) reads here. Memory per VM is
bounded whatever a guest sends: the latest report is kept as its JSON (at most one protocol
line, 1 MiB, and typically 10-30 KB, several times smaller than the decoded Python objects):
the guest's own line when cleaning left it as it was (plain.py), else the compact encoding of
the cleaned report; with a small summary extracted once for the status table. Older reports
are never kept: they have gone to the uploader, which spools on its own bounds.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any, Dict, Iterator

from diag_protocol.framing import dumps_tree
from diag_protocol.vocabulary import worst_item

Message = Dict[str, Any]


class Counters:
    """What one VM's channel has carried since the relay started following it."""

    __slots__ = ("messages", "bytes", "drops", "reports", "heartbeats", "replies", "connects",
                 "disconnects", "throttled", "acks", "last_seen")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.reports = 0
        self.heartbeats = 0
        self.replies = 0
        self.connects = 0
        self.disconnects = 0
        self.throttled = 0
        #: Reports acknowledged to the agent (diag_protocol.acks)
        self.acks = 0
        self.last_seen: float | None = None

    @property
    def dropped(self) -> int:
        """Lines or messages thrown away, whatever the reason."""
        return sum(self.drops.values())

    def as_dict(self) -> Dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["drops"] = dict(sorted(self.drops.items()))
        out["dropped"] = self.dropped
        return out


class ReportSummary:
    """The few fields of the latest report that ``status`` shows, extracted once on receipt."""

    __slots__ = ("run_id", "boot_id", "seq", "time", "received_at", "size", "worst",
                 "section_errors")

    def __init__(self, report: Message, received_at: float, size: int) -> None:
        self.run_id: str = report["run_id"]
        self.boot_id: str = report["boot_id"]
        self.seq: int = report["seq"]
        self.time: float = report["time"]
        self.received_at = received_at
        self.size = size
        self.worst = worst_check(report)
        self.section_errors = sum(len(sec.get("errors") or ())
                                  for sec in report["sections"].values())

    def as_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def worst_check(report: Message) -> Dict[str, Any] | None:
    """The most severe check result of a report (first one wins a tie), or None without checks."""
    checks = report.get("sections", {}).get("checks") or {}
    results = (checks.get("data") or {}).get("results") or ()
    worst: Dict[str, Any] | None = worst_item(results)
    if worst is None:
        return None
    return {"id": worst["id"], "status": worst["status"], "message": worst.get("message")}


class VMEntry:
    """Everything the relay knows about one VM. Sessions mutate it; readers copy from it."""

    __slots__ = ("vm_id", "name", "vm_state", "session_state", "responsive", "hello",
                 "heartbeat", "summary", "counters", "last_error", "_report_json")

    def __init__(self, vm_id: str, name: str | None = None) -> None:
        self.vm_id = vm_id
        self.name = name
        self.vm_state = "unknown"       # from libvirt: running, paused, stopped, crashed, ...
        self.session_state = "idle"     # session Runstate name, lower case
        self.responsive: bool | None = None  # None until the agent has said something
        self.hello: Message | None = None
        self.heartbeat: Message | None = None
        self.summary: ReportSummary | None = None
        self.counters = Counters()
        self.last_error: str | None = None
        self._report_json: bytes | None = None

    @property
    def agent_version(self) -> str | None:
        return self.hello.get("agent_version") if self.hello else None

    @property
    def report_bytes(self) -> int:
        return len(self._report_json) if self._report_json is not None else 0

    def set_report(self, report: Message, received_at: float,
                   encoded: bytes | None = None) -> ReportSummary:
        """Replace the latest report. Returns its summary. ``encoded``: the report's JSON when
        the caller has it (the guest's own line, taken as it is: plain.py), else encoded here."""
        if encoded is None:
            encoded = dumps_tree(report)
        self.summary = ReportSummary(report, received_at, len(encoded))
        self._report_json = encoded
        return self.summary

    @property
    def report_json(self) -> bytes | None:
        """The latest report as UTF-8 JSON (what the uploader sends, encoded at most once)."""
        return self._report_json

    def report(self) -> Message | None:
        """A fresh decoded copy of the latest report (callers may keep or change it)."""
        if self._report_json is None:
            return None
        value: Message = json.loads(self._report_json)
        return value

    def status_row(self, now: float | None = None) -> Dict[str, Any]:
        """One row of ``vmdiag-relay status``: small, JSON-ready."""
        now = time.time() if now is None else now
        summary = self.summary
        return {
            "vm_id": self.vm_id,
            "name": self.name,
            "vm_state": self.vm_state,
            "state": self.session_state,
            "responsive": self.responsive,
            "agent_version": self.agent_version,
            "last_report_age": None if summary is None else max(0.0, now - summary.received_at),
            "worst_check": None if summary is None else summary.worst,
            "dropped": self.counters.dropped,
            "last_seen": self.counters.last_seen,
            "last_error": self.last_error,
        }

    def detail(self, now: float | None = None) -> Dict[str, Any]:
        """Everything for ``vmdiag-relay show``: the status row plus hello, counters, report."""
        out = self.status_row(now)
        out.update({
            "hello": self.hello,
            "heartbeat": self.heartbeat,
            "counters": self.counters.as_dict(),
            "summary": None if self.summary is None else self.summary.as_dict(),
            "report": self.report(),
        })
        return out


class ReportCache:
    """VM id -> VMEntry. Lookup by id or by name, because people type names."""

    def __init__(self) -> None:
        self._entries: Dict[str, VMEntry] = {}

    def entry(self, vm_id: str, name: str | None = None) -> VMEntry:
        """The entry for ``vm_id``, created on first use; ``name`` updates a known entry."""
        entry = self._entries.get(vm_id)
        if entry is None:
            entry = self._entries[vm_id] = VMEntry(vm_id, name)
        elif name:
            entry.name = name
        return entry

    def get(self, vm_id: str) -> VMEntry | None:
        return self._entries.get(vm_id)

    def find(self, key: str) -> VMEntry | None:
        """The entry whose id (case-insensitive) or name equals ``key``."""
        entry = self._entries.get(key) or self._entries.get(key.lower())
        if entry is not None:
            return entry
        for candidate in self._entries.values():
            if candidate.name == key or candidate.vm_id.lower() == key.lower():
                return candidate
        return None

    def remove(self, vm_id: str) -> VMEntry | None:
        return self._entries.pop(vm_id, None)

    def __iter__(self) -> Iterator[VMEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, vm_id: object) -> bool:
        return vm_id in self._entries
