"""Health thresholds: one declaration per knob, overridable per cluster and per VM.

The service config holds them (``/etc/vmdiag/engine.conf``): ``[health]`` for everyone,
``[health:cluster:<cluster name>]`` and ``[health:vm:<vm name or id>]`` to override single
keys. Custom properties were considered and left out: oVirt admits only properties the
administrator declared with ``engine-config``, and thresholds are the monitoring team's
concern rather than the VM owner's.
"""

import dataclasses
from typing import Any, Mapping, Optional

#: Keys that engine.conf no longer uses, and why: still accepted (with a warning naming the file
#: and the key) so an existing configuration keeps working. One judge per finding: the guest
#: judges facts of the moment, the engine only what needs time (docs/engine.md).
RETIRED = {
    "steal_warning_percent": "CPU steal is judged once, by the guest agent's cpu.steal check; "
                             "set [thresholds] steal_warning_percent in agent.conf instead",
    "steal_critical_percent": "CPU steal is judged once, by the guest agent's cpu.steal check; "
                              "set [thresholds] steal_critical_percent in agent.conf instead",
}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    silence_s: float = 300.0             # no report for this long: verdict "unknown"
    warning_min_duration_s: float = 300.0  # a warning must hold this long before it is raised
    hysteresis_percent: float = 5.0      # a raised metric clears this many points below its limit
    memory_warning_percent: float = 90.0
    memory_critical_percent: float = 97.0
    forecast_warning_s: float = 7 * 86400.0
    forecast_critical_s: float = 86400.0
    forecast_min_confidence: float = 0.5
    forecast_window_s: float = 7 * 86400.0
    forecast_min_span_s: float = 2 * 3600.0  # history a trend needs before it may forecast
    forecast_hold_s: float = 2 * 3600.0  # a raised forecast holds this long without new evidence
    forecast_min_duration_s: float = 3600.0  # a forecast must hold this long before it is raised
    forecast_refresh_s: float = 4 * 3600.0  # a fit the new samples agree with is kept this long
    leak_min_growth_percent: float = 20.0  # a process growing this much over the window, steadily
    # CPU a pass may spend on reads of whole histories (first forecasts, refits: a kept fit's
    # refresh due, or new samples that strayed), per VM of the pass, in milliseconds; 0: no
    # limit (engine_plugin/service/workers.py)
    forecast_cold_budget_ms: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Optional["Thresholds"] = None,
                     source: str = "<thresholds>") -> "Thresholds":
        """``base`` with the keys of ``values`` replaced; a bad key or value raises ValueError
        naming ``source``, the key and what is allowed."""
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        changes = {}
        for key, raw in values.items():
            if key not in known:
                raise ValueError("%s: unknown key %r; allowed: %s"
                                 % (source, key, ", ".join(sorted(known))))
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError("%s: %s=%r is not a number" % (source, key, raw)) from None
            if value < 0:
                raise ValueError("%s: %s=%r must be zero or more" % (source, key, raw))
            changes[key] = value
        result = dataclasses.replace(base, **changes)
        for low, high in (("memory_warning_percent", "memory_critical_percent"),
                          ("forecast_critical_s", "forecast_warning_s")):
            if getattr(result, low) > getattr(result, high):
                raise ValueError("%s: %s must not exceed %s" % (source, low, high))
        return result
