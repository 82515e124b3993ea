"""Built-in checks: judge the collected sections and produce the ``checks`` section.

Each module holds the checks of one area and exposes ``check(sections, thresholds)``, returning
results ``{"id", "name", "status", "message", "value", "threshold"}``. A check that raises is a
bug: it is recorded in the section's errors and costs only its own results, never the report.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from diag_protocol.vocabulary import EXIT_CODES, STATUSES, worst, worst_first

from . import cpu, filesystems, memory, network, services, timesync
from .result import Result, result

CheckFn = Callable[[Mapping[str, Any], Mapping[str, float]], List[Result]]

CHECKS: Tuple[Tuple[str, CheckFn], ...] = (
    ("filesystems", filesystems.check),
    ("services", services.check),
    ("network", network.check),
    ("memory", memory.check),
    ("cpu", cpu.check),
    ("timesync", timesync.check),
)
#: The schema caps the results list; more would make the whole report invalid.
MAX_RESULTS = 512


def run_checks(sections: Mapping[str, Any], thresholds: Mapping[str, float],
               checks: Sequence[Tuple[str, CheckFn]] = CHECKS
               ) -> Tuple[List[Result], List[Dict[str, str]]]:
    """All results and the errors of checks that failed, in a stable order."""
    results: List[Result] = []
    errors: List[Dict[str, str]] = []
    for name, fn in checks:
        try:
            results.extend(fn(sections, thresholds))
        except Exception as err:  # noqa: BLE001 - one broken check must not cost the others
            errors.append({"field": "checks." + name,
                           "error": "check failed: %s: %s; please report this bug"
                           % (type(err).__name__, err)})
    if len(results) > MAX_RESULTS:
        results = worst_first(results)
        errors.append({"field": "results", "error": "%d results cut to the %d most severe"
                       % (len(results), MAX_RESULTS)})
        results = results[:MAX_RESULTS]
    return results, errors


def checks_section(sections: Mapping[str, Any], thresholds: Mapping[str, float]
                   ) -> Dict[str, Any]:
    """The ``checks`` report section for the other, already collected, sections."""
    started = time.monotonic()
    results, errors = run_checks(sections, thresholds)
    return {"collected_at": time.time(), "duration_ms": (time.monotonic() - started) * 1000.0,
            "errors": errors, "data": {"results": results}}


def exit_code(results: Sequence[Mapping[str, Any]]) -> int:
    """0 ok, 1 warning, 2 critical, 3 unknown: the worst result, Nagios style."""
    return EXIT_CODES[worst(r.get("status", "unknown") for r in results)]


__all__ = ["CHECKS", "EXIT_CODES", "STATUSES", "checks_section", "exit_code", "result",
           "run_checks", "worst"]
