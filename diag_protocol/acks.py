"""Acknowledged reports: what a guest keeps until the host says a report is safe.

A relay killed with SIGKILL loses what it had read from a channel and not yet made safe, so
the sender keeps every report it wrote until the relay acknowledges it (docs/design.md,
"Acknowledged reports"):

- A guest whose ``hello`` lists the capability ``ack`` (``ACK_CAPABILITY``) gets, for each
  report, ``{"type": "ack", "v": 1, "run_id": ..., "seq": ...}`` once the relay has made it
  safe from its own crash: stored or refused by the engine, or written (fsynced) to its spool;
  a relay without an uploader acknowledges on receipt. A report the relay drops on purpose
  (rate limit, replay) is not acknowledged; the sender forgets it by time.
- The sender keeps the reports it wrote and that are not acknowledged (``Unacked``), bounded
  by ``UNACKED_MAX_MESSAGES`` and ``UNACKED_MAX_BYTES`` (the oldest forgotten first), and
  writes them again, oldest first and before anything newer, when the host side connects
  again. One unacknowledged for ``ACK_TIMEOUT`` seconds on a connection is forgotten: a relay
  older than acknowledgements never answers, and the sender neither grows nor stalls.
- Writing a report twice is harmless: the engine answers ``duplicate`` for a (vm, run_id,
  seq) it has, and a relay that still has the report drops the copy as ``stale_seq``.

The agent's channel (``guest_agent.channel``) and the lab's simulated guests use this one
class, so both follow the same rule. Standard library only: it runs inside guests.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Dict, List, Tuple

#: Reports kept for resending, at most; the agent writes one a minute by default, and a relay
#: acknowledges within seconds, so a few cover a relay crash.
UNACKED_MAX_MESSAGES = 8
#: Bytes of reports kept for resending, at most (a report line is at most 1 MiB).
UNACKED_MAX_BYTES = 4 << 20
#: Seconds a written report waits for its acknowledgement on a connection before it is
#: forgotten. A relay acknowledges once the engine answered or the report is spooled: within
#: ``[upload] timeout`` (30 s) plus a batch interval, unless it is older than acknowledgements.
ACK_TIMEOUT = 120.0

Key = Tuple[str, int]  # (run_id, seq)


class Unacked:
    """The reports written to the host and not acknowledged yet, oldest first.

    ``written`` records a line once it is completely written; ``ack`` forgets it; ``take``
    hands all of them back, oldest first, for writing again on a new connection;
    ``expire`` forgets those unacknowledged for ``timeout`` seconds since they were written.
    Not thread-safe: one sender owns it.
    """

    def __init__(self, max_messages: int = UNACKED_MAX_MESSAGES,
                 max_bytes: int = UNACKED_MAX_BYTES, timeout: float = ACK_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._clock = clock
        self._lines: collections.OrderedDict[Key, Tuple[bytes, float]] = (
            collections.OrderedDict())
        self._bytes = 0
        self.counts: Dict[str, int] = {"acked": 0, "resent": 0, "forgotten_full": 0,
                                       "forgotten_timeout": 0, "unknown_ack": 0}

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def written(self, key: Key, line: bytes) -> None:
        """``line`` (the report ``key``) is now completely written to the host."""
        old = self._lines.pop(key, None)
        if old is not None:
            self._bytes -= len(old[0])
        self._lines[key] = (line, self._clock())
        self._bytes += len(line)
        while self._lines and (len(self._lines) > self.max_messages
                               or self._bytes > self.max_bytes):
            self._forget_oldest("forgotten_full")

    def ack(self, run_id: str, seq: int) -> bool:
        """The host acknowledged the report; False when it was not kept (already forgotten,
        acknowledged twice, or not ours)."""
        entry = self._lines.pop((run_id, seq), None)
        if entry is None:
            self.counts["unknown_ack"] += 1
            return False
        self._bytes -= len(entry[0])
        self.counts["acked"] += 1
        return True

    def take(self) -> List[Tuple[Key, bytes]]:
        """Every kept report, oldest first, to write again (the host side connected anew);
        each is kept again by ``written`` once it is written."""
        out = [(key, line) for key, (line, _) in self._lines.items()]
        self._lines.clear()
        self._bytes = 0
        self.counts["resent"] += len(out)
        return out

    def expire(self) -> int:
        """Forget reports written ``timeout`` seconds ago or more; return how many."""
        limit = self._clock() - self.timeout
        gone = 0
        while self._lines and next(iter(self._lines.values()))[1] <= limit:
            self._forget_oldest("forgotten_timeout")
            gone += 1
        return gone

    def _forget_oldest(self, why: str) -> None:
        _, (line, _) = self._lines.popitem(last=False)
        self._bytes -= len(line)
        self.counts[why] += 1

    def stats(self) -> Dict[str, int]:
        return dict(self.counts, unacked=len(self._lines), unacked_bytes=self._bytes)
