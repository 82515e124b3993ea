"""Periodic work that cannot kill the loop (after WALinuxAgent's ``periodic_operation.py``).

An exception is logged with its traceback the first time, then at most once an hour while it
keeps recurring, and never ends the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

LOG_REPEAT_S = 3600.0


class PeriodicOperation:
    """Run ``fn`` every ``period`` seconds; failures are logged, rate-limited, and swallowed."""

    def __init__(self, name: str, fn: Callable[[], Any], period: float,
                 clock: Callable[[], float] = time.monotonic,
                 log_every: float = LOG_REPEAT_S) -> None:
        self.name = name
        self._fn = fn
        self.period = period
        self._clock = clock
        self._log_every = log_every
        self.next_run = clock()
        self.runs = 0
        self.failures = 0
        self.suppressed = 0
        self._last_error: str | None = None
        self._last_logged = float("-inf")

    def due(self) -> bool:
        return self._clock() >= self.next_run

    def remaining(self) -> float:
        return max(0.0, self.next_run - self._clock())

    def run(self) -> bool:
        """Run once now and schedule the next run; True when ``fn`` succeeded."""
        started = self._clock()
        # Fixed rate; a run that overslept skips the missed slots instead of bunching up.
        self.next_run = max(self.next_run + self.period, started + self.period * 0.5)
        self.runs += 1
        try:
            self._fn()
        except Exception as err:  # noqa: BLE001 - periodic work must never end the loop
            self.failures += 1
            key = "%s: %s" % (type(err).__name__, err)
            now = self._clock()
            if key != self._last_error or now - self._last_logged >= self._log_every:
                log.warning("%s failed: %s (a repeat of this error is logged at most once an "
                            "hour)", self.name, key, exc_info=True)
                self._last_error, self._last_logged = key, now
            else:
                self.suppressed += 1
            return False
        if self._last_error is not None:
            log.info("%s works again after %d failures", self.name, self.failures)
            self._last_error, self.failures = None, 0
        return True


__all__ = ["LOG_REPEAT_S", "PeriodicOperation"]
