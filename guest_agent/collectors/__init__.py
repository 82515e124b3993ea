"""Collectors turn what the platform layer reads into the report sections of protocol v1.

``collect_section(name, options, state)`` returns one section
``{"collected_at", "duration_ms", "errors": [{"field", "error"}], "data": {...}}``.
A field that cannot be read is left out of ``data`` and explained in ``errors``; a collector
that raises something unexpected costs only its own section (logged, ``data`` empty, the
error recorded), the way cloud-init's module runner carries on past a failing module.

Sections: ``network``, ``resources``, ``applications``, ``settings``. (``checks`` is computed
from these by ``guest_agent.checks``.) ``collect_sections`` reads several for one report. Rates
need two samples: ``prime`` takes the first one without building sections (``vmdiag-agent
report --sample``); the daemon does not, its first report is the baseline and has no rates.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Sequence

from .. import platform
from . import applications, network, resources, settings
from .errors import FieldErrors
from .options import CollectorOptions
from .state import CollectorState

log = logging.getLogger(__name__)

Collector = Callable[[CollectorOptions, CollectorState, FieldErrors], Dict[str, Any]]

COLLECTORS: Dict[str, Collector] = {
    "network": network.collect,
    "resources": resources.collect,
    "applications": applications.collect,
    "settings": settings.collect,
}


def collect_section(name: str, options: CollectorOptions, state: CollectorState
                    ) -> Dict[str, Any]:
    collector = COLLECTORS.get(name)
    if collector is None:
        raise ValueError("no collector for section %r; collectors exist for %s"
                         % (name, ", ".join(sorted(COLLECTORS))))
    collected_at = time.time()
    start = time.perf_counter()
    errors = FieldErrors()
    try:
        data = collector(options, state, errors)
    except Exception as err:  # a bug or an unforeseen system: lose this section only
        log.exception("collector %s failed", name)
        data = {}
        errors.add("*", "the %s collector failed (%s: %s); the agent log has the traceback, "
                        "please report it" % (name, type(err).__name__, err))
    return {"collected_at": collected_at,
            "duration_ms": round((time.perf_counter() - start) * 1000.0, 3),
            "errors": errors.items, "data": data}


def collect_sections(names: Sequence[str], options: CollectorOptions, state: CollectorState,
                     lean: bool = False) -> Dict[str, Dict[str, Any]]:
    """The named sections of one report, keyed by name.

    The network probes are started first and the network section is read last, so probes
    that wait for an answer overlap with reading the rest. ``lean``: the first report of an
    agent start, without the slow parts that say nothing about health (``CollectorState.lean``).
    """
    state.lean = lean
    state.new_collection()
    state.collecting = True
    try:
        if "network" in names:
            network.start_probes(options, state)
        order = [n for n in names if n != "network"] + [n for n in names if n == "network"]
        done = {name: collect_section(name, options, state) for name in order}
    finally:
        state.lean = False
        state.collecting = False
        state.pending_probes = None
    return {name: done[name] for name in names}


def collect_all(options: CollectorOptions, state: CollectorState) -> Dict[str, Dict[str, Any]]:
    """Every collector's section, keyed by name (the ``checks`` section is not included)."""
    return collect_sections(list(COLLECTORS), options, state)


def prime(options: CollectorOptions, state: CollectorState) -> None:
    """Take the baseline samples rates are computed from, without building sections."""
    m = options.machine
    for key, read in (("resources.cpu", lambda: platform.cpu_stat(m)),
                      ("resources.swap", lambda: platform.vmstat(m)),
                      ("resources.disks", lambda: platform.disk_stats(m)),
                      ("resources.proc_ticks", lambda: {
                          (p.pid, p.start_ticks): p.ticks for p in platform.scan(m)}),
                      ("network.counters",
                       lambda: {i["name"]: i for i in platform.interfaces(m)})):
        try:
            state.swap(key, read())
        except Exception:  # priming is best effort; the collector reports real errors later
            log.debug("priming %s failed", key, exc_info=True)


__all__ = ["COLLECTORS", "CollectorOptions", "CollectorState", "FieldErrors", "collect_all",
           "collect_section", "collect_sections", "prime"]
