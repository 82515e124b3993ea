"""How far this host's clock is from the engine's, read from the ``Date`` header of the
engine's ingest answers, so the relay never stamps reports with a clock it knows is wrong.

The engine's clock decides order and silence (docs/design.md); it clamps a ``received_at``
that runs ahead. The relay still should not send a bogus clock: once an answer has shown this
host's clock off by more than ``CORRECT_ABOVE`` seconds, ``received_at`` is corrected by that
offset, and beyond ``WARN_ABOVE`` seconds the relay says so (once an hour) and shows it in
``vmdiag-relay status``. ``Date`` has a resolution of one second and the request takes time, so
smaller offsets are noise and are left alone.
"""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Optional

log = logging.getLogger(__name__)

#: Offsets smaller than this are the header's resolution and the request's time.
CORRECT_ABOVE = 2.0
#: A clock off by more is worth an operator's attention (the engine's default
#: ``[ingest] max_clock_skew`` is 60 s).
WARN_ABOVE = 30.0
WARN_EVERY = 3600.0


class EngineClock:
    """``observe()`` each answer's Date header; ``correct()`` a local time before sending."""

    def __init__(self) -> None:
        #: engine time - local time, seconds; None until an answer carried a usable Date.
        self.offset: Optional[float] = None
        self._warned_at = float("-inf")

    def observe(self, date_header: Optional[str], sent_at: float, answered_at: float) -> None:
        if not date_header:
            return
        try:
            engine_time = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        # The header is whole seconds, truncated: its middle is half a second later.
        offset = engine_time + 0.5 - (sent_at + answered_at) / 2
        self.offset = offset
        now = time.monotonic()
        if abs(offset) > WARN_ABOVE and now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("this host's clock is %.0f s %s the engine's; reports are stamped with "
                        "the corrected time, but fix the host's time sync (chronyd)",
                        abs(offset), "behind" if offset > 0 else "ahead of")

    def correct(self, local_time: float) -> float:
        """``local_time`` on the engine's clock, when this host's is known to be off."""
        if self.offset is None or abs(self.offset) <= CORRECT_ABOVE:
            return local_time
        return local_time + self.offset
