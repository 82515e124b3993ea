"""What collectors remember between two reports: previous counters and slow-cadence results.

Rates (bits/s, IOPS, CPU %) need two samples, so each collector stores its last raw counters
here with the monotonic time it read them. Heavy parts (package inventory, listening sockets,
top processes) run on their own slower cadence and their last result is reused in between.
One ``CollectorState`` lives as long as the agent process; it is not thread-safe and is meant
to be used by the one scheduler thread that calls ``collect_section``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Tuple

from ..platform import Package, ProcStat

#: Probes that hang (a stuck resolver) keep their worker; the pool bounds how many can pile up.
PROBE_WORKERS = 8


class PackagesMemo:
    """The last package inventory and which one was sent in full."""

    def __init__(self) -> None:
        self.manager: str | None = None
        self.digest: str | None = None
        self.count: int | None = None
        self.stamp: Any = None
        #: Kept as the platform's tuples (about a third of the memory of one dict each).
        self.items: List[Package] | None = None
        self.error: str | None = None
        #: The ``items`` list last sent in full; ``force_packages`` clears it to resend.
        self.sent: List[Package] | None = None


class CollectorState:
    """Samples, slow-cadence results and the probe pool of one agent process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: Dict[str, Tuple[float, Any]] = {}
        self.slow: Dict[str, Tuple[float, Any]] = {}
        self.packages = PackagesMemo()
        self.user_names: Dict[int, str] = {}
        self._scan: Tuple[float, List[ProcStat]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: True while the lean report of an agent start is collected: the parts that are
        #: slow and say nothing about health (package inventory unless cached, listening
        #: sockets, time sync state, FQDN lookup) are left out, the next report has them.
        self.lean = False
        #: Probes started for the report being collected (``network.start_probes``).
        self.pending_probes: Any = None
        #: True while ``collect_sections`` collects one report: its sections share one /proc
        #: walk however long they take (under emulation a section can take seconds).
        self.collecting = False

    def swap(self, key: str, value: Any) -> Tuple[float, Any] | None:
        """Store ``value`` as the newest sample of ``key``; return (seconds since, old value).

        Returns None on the first sample or when no time passed (a rate would be meaningless).
        """
        now = self.clock()
        previous = self.samples.get(key)
        self.samples[key] = (now, value)
        if previous is None or now <= previous[0]:
            return None
        return now - previous[0], previous[1]

    def due(self, key: str, interval: float) -> bool:
        """True when the slow part ``key`` has never run or ran ``interval`` seconds ago."""
        last = self.slow.get(key)
        return last is None or self.clock() - last[0] >= interval

    def remember(self, key: str, value: Any) -> None:
        self.slow[key] = (self.clock(), value)

    def recall(self, key: str) -> Any:
        last = self.slow.get(key)
        return None if last is None else last[1]

    def process_scan(self, scan: Callable[[], List[ProcStat]], max_age: float = 1.0
                     ) -> List[ProcStat]:
        """One /proc walk shared by the sections of one report (resources and applications);
        outside ``collect_sections``, one at most ``max_age`` seconds old."""
        now = self.clock()
        if self._scan is None or not self.collecting and (now - self._scan[0] > max_age
                                                          or now < self._scan[0]):
            self._scan = (now, scan())
        return self._scan[1]

    def new_collection(self) -> None:
        """Forget the last /proc walk: a new report (an event's, maybe a second after the last
        one) must see processes as they are now."""
        self._scan = None

    def force_packages(self) -> None:
        """Send the full package list with the next report (e.g. after the host reconnected)."""
        self.packages.sent = None

    def force_slow(self) -> None:
        """Run every slow part at the next collection (``report.now`` from the host)."""
        self.slow.clear()
        self.force_packages()

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(PROBE_WORKERS,
                                                    thread_name_prefix="vmdiag-probe")
            return self._executor

    def close(self) -> None:
        """Stop the probe threads without waiting for ones stuck in a resolver."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
