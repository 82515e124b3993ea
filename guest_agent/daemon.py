"""The agent's scheduler: hello, a report every ``interval``, heartbeats, and host requests.

Two threads, so that neither the host nor the collectors can stall the other:

* the I/O thread runs ``Channel.pump``: it writes queued lines, reads requests, answers the
  cheap ones (ping, config.get), sends heartbeats and a ``hello`` whenever the host connects;
* the collector thread builds reports on schedule and for ``report.now``/``checks.run``. It only
  ever *queues* lines, so a host that never reads costs dropped old reports, not collection.

All periodic work goes through ``PeriodicOperation`` (after WALinuxAgent's): an exception is
logged with its traceback the first time, then at most once an hour while it keeps recurring,
and never ends the loop.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Tuple

import guest_agent
from diag_protocol import (
    ALLOWED_METHODS,
    SECTIONS,
    ProtocolError,
    encode,
    make_heartbeat,
    make_hello,
    make_reply,
    make_report,
    validate,
)

from . import requests
from .channel import CONNECTED, Channel, device_resolver, missing_message
from .checks import checks_section
from .config import AgentConfig

log = logging.getLogger(__name__)

Section = Dict[str, Any]
CollectFn = Callable[[str], Section]
#: The sections collectors fill; ``checks`` is computed from them.
DATA_SECTIONS = tuple(name for name in SECTIONS if name != "checks")
#: Collections waiting for the collector thread (report.now / checks.run beyond the schedule).
MAX_PENDING_JOBS = 4
LOG_REPEAT_S = 3600.0
#: Delay of the first report after start (at most ``interval``): the span of its first rates.
FIRST_REPORT_S = 2.0


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


def read_boot_id(root: str = "/") -> str:
    try:
        with open(os.path.join(root, "proc/sys/kernel/random/boot_id"), encoding="ascii") as fh:
            return fh.read().strip()[:64] or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def os_info(root: str = "/") -> Dict[str, str | None]:
    """name/version from os-release, kernel and arch from uname, for ``hello``."""
    release: Dict[str, str] = {}
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        release[key] = value.strip().strip("\"'")
            break
        except OSError:
            continue
    uname = platform.uname()
    return {"name": release.get("NAME") or uname.system, "version": release.get("VERSION_ID"),
            "kernel": uname.release, "arch": uname.machine}


def error_section(name: str, why: str) -> Section:
    return {"collected_at": time.time(), "duration_ms": 0.0,
            "errors": [{"field": name, "error": why[:1000]}], "data": {}}


class ReportBuilder:
    """Collects all sections, judges them, and encodes a report that is always valid.

    A collector that raises, or returns data outside the schema, costs its own section (which
    then carries the error); a report too large for one line loses its largest sections first.
    """

    def __init__(self, config: AgentConfig, collect: CollectFn | None = None,
                 **collector_overrides: Any) -> None:
        self.config = config
        self._collect = collect
        self.overrides = collector_overrides
        self.state: Any = None  # the collectors' CollectorState, when the real ones are used
        self.lock = threading.Lock()  # collectors keep rate state: one collection at a time
        self._forced: Dict[str, bool] = {}

    def force(self, what: str) -> None:
        """Ask the next collection for "slow" parts now (report.now) or the full "packages"
        list again (a new host session); safe from any thread."""
        self._forced[what] = True

    def _collector(self) -> CollectFn:
        if self._collect is None:
            from guest_agent.collectors import CollectorState, collect_section, prime

            options = self.config.collector_options(**self.overrides)
            state = self.state = CollectorState()
            prime(options, state)  # baseline samples, so the first report has rates
            self._collect = lambda name: collect_section(name, options, state)
        if self.state is not None:
            self.state.new_collection()
            if self._forced.pop("slow", False):
                self.state.force_slow()
            if self._forced.pop("packages", False):
                self.state.force_packages()
        return self._collect

    def prime(self) -> None:
        """Set up the collectors and take the samples rates are computed from."""
        with self.lock:
            self._collector()

    def close(self) -> None:
        if self.state is not None:
            self.state.close()

    def collect(self) -> Dict[str, Section]:
        sections: Dict[str, Section] = {}
        with self.lock:
            collect = self._collector()
            for name in DATA_SECTIONS:
                started = time.monotonic()
                try:
                    sections[name] = collect(name)
                except Exception as err:  # noqa: BLE001 - one collector costs one section
                    log.warning("collector %s failed", name, exc_info=True)
                    sec = error_section(name, "collector failed: %s: %s; please report this bug"
                                        % (type(err).__name__, err))
                    sec["duration_ms"] = (time.monotonic() - started) * 1000.0
                    sections[name] = sec
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


class Agent:
    """One agent run: a run_id, a seq, a channel, and the two threads."""

    def __init__(self, config: AgentConfig, channel: Channel | None = None,
                 collect: CollectFn | None = None, root: str = "/",
                 backoff: Tuple[float, float] = (0.5, 5.0), **collector_overrides: Any) -> None:
        self.config = config
        self.root = root
        self.run_id = str(uuid.uuid4())
        self.boot_id = read_boot_id(root)
        self.builder = ReportBuilder(config, collect, **collector_overrides)
        if channel is None:
            channel = Channel(device_resolver(config.device, root),
                              max_messages=int(config.get("agent", "queue_max_messages")),
                              max_bytes=int(config.get("agent", "queue_max_bytes")),
                              backoff=backoff, missing=missing_message(config.device))
        self.channel = channel
        self.channel.on_connect = self._on_connect
        self.seq = -1  # last report seq used; the first report is 0
        self.heartbeats = 0
        self.reports_built = 0
        self.reports_dropped_encode = 0
        self._seq_lock = threading.Lock()
        self._jobs: queue.Queue[Tuple[str, str] | None] = queue.Queue(MAX_PENDING_JOBS)
        self._stop = threading.Event()
        self._report_op = PeriodicOperation("report", self._scheduled_report, config.interval)
        self._heartbeat_op = PeriodicOperation("heartbeat", self._heartbeat,
                                               config.heartbeat_interval)
        self._heartbeat_op.next_run += config.heartbeat_interval  # hello comes first
        self.events: Any = None  # the EventWatcher while running

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``; returns after both threads finished."""
        log.info("vmdiag-agent %s starting: run_id %s, report every %gs, heartbeat every %gs",
                 guest_agent.__version__, self.run_id, self.config.interval,
                 self.config.heartbeat_interval)
        for warning in self.config.warnings:
            log.warning("%s", warning)
        # Rates need a baseline: sample now, send the first report a moment later.
        self._report_op.next_run = time.monotonic() + min(self.config.interval, FIRST_REPORT_S)
        collector = threading.Thread(target=self._collector_loop, name="vmdiag-collector",
                                     daemon=True)
        collector.start()
        self.events = self._start_events()
        try:
            self._io_loop()
        finally:
            self._stop.set()
            if self.events is not None:
                self.events.stop()
            self._wake_collector()
            collector.join(timeout=max(5.0, float(self.config.get("probes", "timeout")) * 4))
            self.channel.close()
            self.builder.close()
            log.info("vmdiag-agent stopped")

    def _start_events(self) -> Any:
        """The event watcher (guest_agent.events), when ``[agent] events`` is on."""
        if not self.config.get("agent", "events"):
            return None
        from .events import EventWatcher

        watcher = EventWatcher(self.config.collector_options(**self.builder.overrides),
                               self.config.thresholds,
                               lambda reason: self._submit("event", reason),
                               float(self.config.get("agent", "event_poll_interval")),
                               float(self.config.get("agent", "event_min_interval")))
        watcher.start()
        return watcher

    def stop(self) -> None:
        """Ask both threads to finish (safe from a signal handler or another thread)."""
        self._stop.set()
        self.channel.wake()
        self._wake_collector()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- I/O thread ---------------------------------------------------------------------------

    def _io_loop(self) -> None:
        while not self._stop.is_set():
            reqs, rejected = self.channel.pump(self._heartbeat_op.remaining())
            for req in reqs:
                reply = requests.handle(req, run_id=self.run_id,
                                        effective_config=self.effective_config,
                                        submit=self._submit)
                if reply is not None:
                    self._send(reply, "reply", urgent=True)
            for rid, method in rejected:
                log.info("host asked for %r, which is not allowed; answered ok:false", method)
                reply = (requests.unknown_method(rid, method) if method not in ALLOWED_METHODS
                         else make_reply(rid, False, code="bad_request",
                                         message="the request does not match the protocol "
                                                 "schema; check its params"))
                self._send(reply, "reply", urgent=True)
            if self._heartbeat_op.due():
                if self.channel.state == CONNECTED:
                    self._heartbeat_op.run()
                else:
                    self._heartbeat_op.next_run += self._heartbeat_op.period

    def _on_connect(self) -> None:
        # Whatever was queued for the previous host session means nothing to the new one.
        self.channel.discard(("hello", "heartbeat", "reply"))
        self.builder.force("packages")  # the new host session may not have the list yet
        self._send(self.hello(), "hello", urgent=True)

    def hello(self) -> Dict[str, Any]:
        capabilities = ["section:" + s for s in SECTIONS] + ["method:" + m
                                                           for m in ALLOWED_METHODS]
        return make_hello(guest_agent.__version__, os_info(self.root), socket.gethostname(),
                          self.boot_id, capabilities)

    def _heartbeat(self) -> None:
        self.heartbeats += 1
        self._send(make_heartbeat(self.boot_id, self.run_id, self.heartbeats), "heartbeat")

    def effective_config(self) -> Dict[str, Any]:
        out = self.config.effective()
        out["status"] = {"run_id": self.run_id, "boot_id": self.boot_id,
                         "agent_version": guest_agent.__version__, "last_seq": self.seq,
                         "queued": self.channel.queued, "channel": self.channel.stats.as_dict(),
                         "report_failures": self._report_op.failures}
        return out

    def _send(self, msg: Dict[str, Any], kind: str, urgent: bool = False) -> None:
        try:
            line = encode(msg)
        except ProtocolError:
            log.exception("internal error: a %s message does not encode; it was not sent", kind)
            return
        self.channel.send(line, kind, urgent=urgent)

    def _submit(self, method: str, request_id: str) -> bool:
        try:
            self._jobs.put_nowait((method, request_id))
        except queue.Full:
            return False
        return True

    # -- collector thread ---------------------------------------------------------------------

    def _wake_collector(self) -> None:
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass  # the thread is busy and will see the stop flag

    def _collector_loop(self) -> None:
        try:
            self.builder.prime()
        except Exception:  # noqa: BLE001 - the first report will say what is wrong
            log.warning("priming the collectors failed", exc_info=True)
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=self._report_op.remaining())
            except queue.Empty:
                job = None
            if self._stop.is_set():
                return
            if job is not None:
                self._run_job(*job)
            elif self._report_op.due():
                self._report_op.run()

    def _next_seq(self) -> int:
        with self._seq_lock:
            self.seq += 1
            return self.seq

    def build_report(self) -> Tuple[int, bytes]:
        sections = self.builder.collect()
        if self.events is not None:
            self.events.note_report(sections, self.builder.state)
        seq = self._next_seq()
        line = self.builder.encode(self.boot_id, self.run_id, seq, sections)
        self.reports_built += 1
        return seq, line

    def _scheduled_report(self) -> None:
        seq, line = self.build_report()
        self.channel.send(line, "report")
        log.debug("report %d queued (%d bytes)", seq, len(line))

    def _run_job(self, method: str, request_id: str) -> None:
        if method == "event":  # from the event watcher: request_id is the reason
            log.info("event: %s; reporting now", request_id)
            self._report_op.run()  # the scheduled report, early; the next one an interval later
            return
        try:
            if method == "report.now":
                self.builder.force("slow")
                seq, line = self.build_report()
                self.channel.send(line, "report")
                reply = make_reply(request_id, True, {"run_id": self.run_id, "seq": seq})
            else:
                sections = self.builder.collect()
                reply = make_reply(request_id, True, sections["checks"])
        except Exception as err:  # noqa: BLE001 - answer the host, keep the thread alive
            log.warning("%s failed", method, exc_info=True)
            reply = make_reply(request_id, False, code="collection_failed",
                               message="%s failed: %s: %s; see the agent's log"
                               % (method, type(err).__name__, err))
        # report.now's reply queues behind its report, so the host has the report when it
        # reads the reply.
        self._send(reply, "reply", urgent=method != "report.now")


def collect_once(config: AgentConfig, collect: CollectFn | None = None,
                 warmup_s: float = 0.0, **collector_overrides: Any) -> Dict[str, Section]:
    """One full set of sections, for ``vmdiag-agent report`` and ``check``.

    Rates (CPU %, steal, swap and disk activity) need two samples; with ``warmup_s`` a first
    collection is made and thrown away that long before the one returned.
    """
    builder = ReportBuilder(config, collect, **collector_overrides)
    try:
        if warmup_s > 0:
            builder.prime()
            time.sleep(warmup_s)
        return builder.collect()
    finally:
        builder.close()


def report_document(config: AgentConfig, sections: Mapping[str, Section],
                    root: str = "/") -> Dict[str, Any]:
    """The report message the daemon would send (seq 0 of a fresh run), validated."""
    line = ReportBuilder.encode(read_boot_id(root), str(uuid.uuid4()), 0, sections)
    result: Dict[str, Any] = json.loads(line)
    return result


__all__: List[str] = ["Agent", "PeriodicOperation", "ReportBuilder", "collect_once",
                      "report_document", "read_boot_id", "os_info"]
