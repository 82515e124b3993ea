"""Events between reports: a failure is reported at once, not at the next interval.

``EventWatcher`` asks for an immediate report (``trigger(reason)``) when

* a watched systemd unit leaves the state it must be in, or comes back to it, or any unit
  fails: heard from systemd's own signals (``platform.watch_units``, D-Bus) as they happen,
  so it costs nothing while nothing changes. Without D-Bus unit changes wait for the next
  report (reading them would cost a ``systemctl`` process per poll);
* every watched process found at the last report is gone: its PIDs (remembered by the
  applications collector) are polled every ``poll_s`` (one small /proc read each), and only
  when all are gone is /proc scanned for another process of that name;
* a file system turns read-only, or crosses the critical fill threshold upwards: each one
  in the last report is polled with one statvfs(2) every ``poll_s``.

Triggers are rate limited: at most one immediate report per ``min_interval_s``; what happens
in between is reported together at the end of that gap. The watcher's own thread never ends
on an error (logged, like ``PeriodicOperation``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Tuple

from . import platform
from .checks.filesystems import WRITABLE_FSTYPES
from .collectors.applications import WATCHED_PIDS, match_processes, parse_unit_spec
from .collectors.options import CollectorOptions
from .collectors.resources import fs_usage

log = logging.getLogger(__name__)

Trigger = Callable[[str], Any]
#: Seconds between two attempts to subscribe to unit changes again after the bus went away.
RESUBSCRIBE_S = 30.0


class RateLimit:
    """At most one ``fire`` per ``gap`` seconds; a reason arriving inside the gap waits for its
    end (``flush``), and reasons that wait together are joined into one."""

    def __init__(self, fire: Trigger, gap: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._fire = fire
        self.gap = gap
        self._clock = clock
        self._last = float("-inf")
        self._pending: List[str] = []
        self._lock = threading.Lock()
        self.fired = 0
        self.coalesced = 0

    def __call__(self, reason: str) -> None:
        with self._lock:
            self._pending.append(reason)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._pending or self._clock() - self._last < self.gap:
                return
            reasons, self._pending = self._pending, []
            self._last = self._clock()
            self.fired += 1
            self.coalesced += len(reasons) - 1
        self._fire("; ".join(dict.fromkeys(reasons)))


class EventWatcher:
    """Watches units (signals), processes and file systems (polling) between reports."""

    def __init__(self, options: CollectorOptions, thresholds: Mapping[str, float],
                 trigger: Trigger, poll_s: float = 2.0, min_interval_s: float = 10.0) -> None:
        self.options = options
        self.m = options.machine
        self.poll_s = poll_s
        self.limit = RateLimit(trigger, min_interval_s)
        self.fs_critical = float(thresholds["fs_critical_percent"])
        self.expected = dict(parse_unit_spec(s) for s in options.watched_units)
        self.units_via: str | None = None  # "signals" once subscribed
        self._units_ok: Dict[str, bool] = {}
        self._pids: Dict[str, List[int]] = {}
        self._filesystems: Dict[str, Tuple[platform.Mount, bool, float | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals: Any = None
        self._next_subscribe = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, subscribe_now: bool = True) -> None:
        """Subscribe to unit changes and start polling. ``subscribe_now`` False: subscribe on
        the watcher's own thread, so an agent start does not wait for D-Bus."""
        if subscribe_now:
            self._subscribe()
        self._thread = threading.Thread(target=self._poll_loop, args=(not subscribe_now,),
                                        name="vmdiag-events", daemon=True)
        self._thread.start()

    def _subscribe(self) -> None:
        self._next_subscribe = time.monotonic() + RESUBSCRIBE_S
        try:
            self._signals = platform.watch_units(self.m, self._unit_changed)
            self.units_via = "signals"
        except platform.PlatformError as err:
            if self.units_via != "lost":
                log.info("unit changes are seen at the next report only: %s", err)
            self.units_via = None

    def _check_signals(self) -> None:
        """Subscribe again when the bus went away, at most every ``RESUBSCRIBE_S``."""
        if self._signals is not None and not self._signals.connected:
            log.warning("the D-Bus connection for unit changes closed; subscribing again")
            self._signals.close()
            self._signals, self.units_via = None, "lost"
        if self._signals is None and self.units_via == "lost" \
                and time.monotonic() >= self._next_subscribe:
            self._subscribe()
            if self.units_via is None:
                self.units_via = "lost"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)  # first: it may be subscribing
        if self._signals is not None:
            self._signals.close()
            self._signals = None

    # -- what the last report saw -------------------------------------------------------------

    def note_report(self, sections: Mapping[str, Any], state: Any) -> None:
        """Take the baselines from a report just built (called on the collector thread)."""
        apps = (sections.get("applications") or {}).get("data") or {}
        res = (sections.get("resources") or {}).get("data") or {}
        units_ok = {}
        for unit in apps.get("units") or ():
            if unit.get("active_state") is not None:
                units_ok[unit["name"]] = unit["active_state"] == unit.get("expected", "active")
        filesystems = {}
        for fs in res.get("filesystems") or ():
            mount = platform.Mount(str(fs.get("device") or ""), str(fs.get("mountpoint")),
                                   str(fs.get("fstype") or ""), ())
            filesystems[mount.mountpoint] = (mount, bool(fs.get("readonly")), fs.get("percent"))
        pids = state.recall(WATCHED_PIDS) if state is not None else None
        with self._lock:
            self._units_ok.update(units_ok)
            self._filesystems = filesystems
            self._pids = {n: list(p) for n, p in (pids or {}).items()}

    # -- units: called on the signal thread ---------------------------------------------------

    def _unit_changed(self, name: str, active: str | None, sub: str | None) -> None:
        if name in self.expected:
            ok = None if active is None else active == self.expected[name]
            with self._lock:
                before = self._units_ok.get(name)
                if ok is not None:
                    self._units_ok[name] = ok
            if ok is None or ok != before:
                self.limit("watched unit %s is %s" % (name, active or "changing"))
        elif active == "failed":
            self.limit("unit %s failed" % name)

    # -- processes and file systems: polled ---------------------------------------------------

    def _poll_loop(self, subscribe: bool = False) -> None:
        if subscribe:
            try:
                self._subscribe()
            except Exception:  # noqa: BLE001 - the watcher must outlive any error
                log.warning("event watcher: subscribing to unit changes failed", exc_info=True)
        last_error = None
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
                last_error = None
            except Exception as err:  # noqa: BLE001 - the watcher must outlive any error
                if str(err) != last_error:
                    log.warning("event watcher: %s", err, exc_info=True)
                    last_error = str(err)

    def poll(self) -> None:
        self.limit.flush()
        self._check_signals()
        with self._lock:
            pids = dict(self._pids)
            filesystems = dict(self._filesystems)
        for name, known in pids.items():
            if not known or any(self._alive(pid) for pid in known):
                continue
            found = self._find(name)
            with self._lock:
                self._pids[name] = found
            if not found:
                self.limit("watched process %s is gone" % name)
        for mountpoint, (mount, was_ro, was_pct) in filesystems.items():
            try:
                st = platform.statvfs(self.m, mountpoint)
            except OSError:
                continue  # unmounted: the next report says so
            readonly = bool(st.f_flag & os.ST_RDONLY)
            pct = fs_usage(mount, st)["percent"]
            reasons = []
            if readonly and not was_ro and mount.fstype in WRITABLE_FSTYPES:
                reasons.append("%s turned read-only" % mountpoint)
            if pct is not None and pct >= self.fs_critical and (was_pct is None
                                                                or was_pct < self.fs_critical):
                reasons.append("%s is %.1f%% full" % (mountpoint, pct))
            with self._lock:
                if mountpoint in self._filesystems:
                    self._filesystems[mountpoint] = (mount, readonly, pct)
            for reason in reasons:
                self.limit(reason)

    def _alive(self, pid: int) -> bool:
        st = platform.process_stat(self.m, pid)
        return st is not None and st.state != "Z"

    def _find(self, name: str) -> List[int]:
        """PIDs of live processes named ``name`` (comm or argv[0]), by a full /proc scan."""
        return match_processes(self.m, platform.scan(self.m), [name])[name]


__all__ = ["EventWatcher", "RateLimit"]
