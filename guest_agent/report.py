"""Building a report: collect every section, judge them, encode one valid protocol line.

The guest's identity for ``hello`` and reports (boot id, OS) comes from the platform facade,
like everything else the agent reads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Mapping, Sequence

from diag_protocol import SECTIONS, ProtocolError, encode, make_report, validate

from . import platform
from .checks import checks_section
from .config import AgentConfig
from .platform import Machine

log = logging.getLogger(__name__)

Section = Dict[str, Any]
CollectFn = Callable[[Sequence[str], bool], Dict[str, Section]]
#: The sections collectors fill; ``checks`` is computed from them.
DATA_SECTIONS = tuple(name for name in SECTIONS if name != "checks")


def random_uuid() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())``: the uuid module loads
    the platform module, which costs the agent's start more than this takes."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def boot_id(machine: Machine = platform.LOCAL) -> str:
    """The kernel's boot id, or "unknown" when it cannot be read."""
    try:
        return platform.boot_id(machine)[:64] or "unknown"
    except (OSError, ValueError, platform.PlatformError):
        return "unknown"


def os_info(machine: Machine = platform.LOCAL) -> Dict[str, str | None]:
    """name, version, kernel and arch for ``hello``; what cannot be read is None."""
    def read(fn: Callable[[Machine], Any]) -> Any:
        try:
            return fn(machine)
        except (OSError, ValueError, platform.PlatformError):
            return None

    release = read(platform.os_release) or {}
    return {"name": release.get("name") or platform.OS_FAMILY.capitalize(),
            "version": release.get("version"), "kernel": read(platform.kernel_release),
            "arch": read(platform.arch)}


def error_section(name: str, why: str) -> Section:
    return {"collected_at": time.time(), "duration_ms": 0.0,
            "errors": [{"field": name, "error": why[:1000]}], "data": {}}


class ReportBuilder:
    """Collects all sections, judges them, and encodes a report that is always valid.

    A collector that raises costs its own section (``collect_section`` records the error), one
    that returns data outside the schema likewise (``encode``); a report too large for one line
    loses its largest sections first.
    """

    def __init__(self, config: AgentConfig, **collector_overrides: Any) -> None:
        self.config = config
        self._collect: CollectFn | None = None
        self.overrides = collector_overrides
        #: What the collectors read: the running system, or a tree given by the overrides.
        self.machine = config.collector_options(**collector_overrides).machine
        self.state: Any = None  # the collectors' CollectorState, when the real ones are used
        self.options: Any = None  # their CollectorOptions
        self.lock = threading.Lock()  # collectors keep rate state: one collection at a time
        self._forced: Dict[str, bool] = {}

    def force(self, what: str) -> None:
        """Ask the next collection for "slow" parts now (report.now) or the full "packages"
        list again (a new host session); safe from any thread."""
        self._forced[what] = True

    def _collector(self) -> CollectFn:
        if self._collect is None:
            from guest_agent.collectors import CollectorState, collect_sections

            options = self.options = self.config.collector_options(**self.overrides)
            state = self.state = CollectorState()
            self._collect = lambda names, lean: collect_sections(names, options, state, lean)
        if self.state is not None:
            self.state.new_collection()
            if self._forced.pop("slow", False):
                self.state.force_slow()
            if self._forced.pop("packages", False):
                self.state.force_packages()
        return self._collect

    def prime(self) -> None:
        """Set up the collectors and take the samples rates are computed from, so that the
        next collection has rates (without it, the first one has none)."""
        with self.lock:
            self._collector()
            from guest_agent.collectors import prime

            prime(self.options, self.state)

    def close(self) -> None:
        if self.state is not None:
            self.state.close()

    def collect(self, lean: bool = False) -> Dict[str, Section]:
        """Every section, judged. ``lean``: the first report of an agent start, which leaves
        out what is slow and says nothing about health (see ``CollectorState.lean``)."""
        with self.lock:
            collect = self._collector()
            # collect_section costs a failing collector its own section, never the report
            sections: Dict[str, Section] = collect(DATA_SECTIONS, lean)
        sections["checks"] = checks_section(sections, self.config.thresholds)
        return sections

    @staticmethod
    def encode(boot_id: str, run_id: str, seq: int, sections: Mapping[str, Section],
               now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        try:
            return encode(make_report(boot_id, run_id, seq, sections, now))
        except ProtocolError as err:
            log.warning("report %d does not encode (%s); leaving out what is at fault", seq, err)
        fixed: Dict[str, Section] = {}
        for name, sec in sections.items():
            try:
                validate(make_report(boot_id, run_id, seq, {name: sec}, now))
                fixed[name] = sec
            except ProtocolError as err:
                fixed[name] = error_section(name, "section left out, it broke the protocol "
                                            "schema (%s); please report this bug" % err)
        by_size = sorted(fixed, key=lambda n: -len(json.dumps(fixed[n], default=str)))
        while True:
            try:
                return encode(make_report(boot_id, run_id, seq, fixed, now))
            except ProtocolError as err:
                if err.reason != "oversize" or not by_size:
                    raise
                name = by_size.pop(0)
                fixed[name] = error_section(name, "section left out: the report exceeded the "
                                            "1 MiB line limit; watch fewer items")


def collect_once(config: AgentConfig, warmup_s: float = 0.0,
                 **collector_overrides: Any) -> Dict[str, Section]:
    """One full set of sections, for ``vmdiag-agent report`` and ``check``.

    Rates (CPU %, steal, swap and disk activity) need two samples; with ``warmup_s`` a first
    collection is made and thrown away that long before the one returned.
    """
    builder = ReportBuilder(config, **collector_overrides)
    try:
        if warmup_s > 0:
            builder.prime()
            time.sleep(warmup_s)
        return builder.collect()
    finally:
        builder.close()


def report_document(config: AgentConfig, sections: Mapping[str, Section],
                    machine: Machine = platform.LOCAL) -> Dict[str, Any]:
    """The report message the daemon would send (seq 0 of a fresh run), validated."""
    line = ReportBuilder.encode(boot_id(machine), random_uuid(), 0, sections)
    result: Dict[str, Any] = json.loads(line)
    return result


__all__ = ["DATA_SECTIONS", "ReportBuilder", "boot_id", "collect_once", "error_section",
           "os_info", "random_uuid", "report_document"]
