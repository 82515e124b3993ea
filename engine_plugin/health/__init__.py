"""Health verdicts and forecasts over a VM's stored history (pure functions, no I/O).

    from engine_plugin.health import evaluate_vm, Thresholds
    verdict, state = evaluate_vm(report, histories, Thresholds(), previous_state, now, received_at)

``histories`` maps metric names ("fs.used:/var", "memory.used", ...) to (time, value) lists.
"""

from .forecast import Forecast, Trend, forecast
from .thresholds import Thresholds
from .verdict import evaluate_vm, forecast_vm

#: The metric prefixes the health pass needs from storage (for ``store.histories``).
HISTORY_PREFIXES = ("fs.used:", "fs.total:", "fs.inodes_used:", "fs.inodes_total:",
                    "memory.used", "memory.total", "swap.used", "swap.total", "proc.rss:")

__all__ = ["HISTORY_PREFIXES", "Forecast", "Thresholds", "Trend", "evaluate_vm", "forecast",
           "forecast_vm"]
