"""Plain records the store returns; frozen, so callers on other threads cannot change them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from diag_protocol.ingest import DUPLICATE, STORED  # what became of one envelope

__all__ = ["DUPLICATE", "STORED", "IngestResult", "LatestReport", "VmSummaryRow"]


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ``Store.ingest`` call.

    ``accepted`` reports were new; ``duplicates`` had been stored before (same vm_id, run_id,
    seq) and changed nothing. ``stale_samples`` counts metric samples dropped because they are
    older than raw retention: they arrived after their time range was already rolled up.
    ``outcomes`` holds, per envelope of the call in its order, ``STORED`` or ``DUPLICATE``.
    ``capped_samples`` counts samples dropped because they would have started a new series
    of a VM that has ``max_series_per_vm`` already (their reports are stored all the same);
    ``capped_vms`` names those VMs.
    """

    accepted: int
    duplicates: int
    stale_samples: int = 0
    outcomes: Tuple[str, ...] = ()
    capped_samples: int = 0
    capped_vms: Tuple[str, ...] = ()


@dataclass(frozen=True)
class LatestReport:
    """The newest full report of one VM, as the relay delivered it.

    ``received_at`` is the relay's receive time (never later than ``ingested_at``: ingest
    clamps it); ``ingested_at`` is the engine's, which orders reports and measures silence.
    """

    vm_id: str
    host_id: str | None
    received_at: float
    report: Dict[str, Any]
    ingested_at: float | None = None


@dataclass(frozen=True)
class VmSummaryRow:
    """One fleet-table row: enough to list a VM without reading its full report.

    ``worst_checks`` holds up to five non-ok results (``status``, ``id``, ``message``) of the
    latest checks section, most severe first; ``worst_status`` is the most severe status of
    all its results (``None`` before any checks arrived). ``verdict`` is what the health pass
    stored with ``Store.set_verdict``. Rows are read-only, and so are their dicts: rows of
    one ``summaries`` call may share equal ``verdict`` and ``worst_checks`` objects.
    """

    vm_id: str
    host_id: str | None
    hostname: str | None
    received_at: float | None
    report_time: float | None
    agent_version: str | None = None
    worst_status: str | None = None
    worst_checks: Tuple[Dict[str, Any], ...] = field(default_factory=tuple)
    verdict: Dict[str, Any] | None = None
    ingested_at: float | None = None
