"""The agent daemon: hello, a report every ``interval``, heartbeats, and host requests.

Two threads, so that neither the host nor the collectors can stall the other:

* the I/O thread runs ``Channel.pump``: it writes queued lines, reads requests, answers the
  cheap ones (ping, config.get), sends heartbeats and a ``hello`` whenever the host connects;
* the collector thread builds reports (``report.ReportBuilder``) on schedule and for
  ``report.now``/``checks.run``. It only ever *queues* lines, so a host that never reads costs
  dropped old reports, not collection.

At start the collector builds a lean first report at once (what says whether the guest is
healthy; the package inventory, listening sockets and the time sync state follow in the first
full report, ``FOLLOW_UP_S`` later). Only then is the event watcher imported and started (it
subscribes to D-Bus on its own thread, with that report as its baseline), so nothing else runs
in the agent while the first report is built and the channel never waits for either.

All periodic work goes through ``periodic.PeriodicOperation``, which never ends the loop.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, Dict, List, Tuple

import guest_agent
from diag_protocol import (
    ACK_CAPABILITY,
    ALLOWED_METHODS,
    SECTIONS,
    ProtocolError,
    encode,
    make_heartbeat,
    make_hello,
    make_reply,
)

from . import requests
from .channel import CONNECTED, Channel, device_resolver, missing_message
from .config import AgentConfig
from .periodic import PeriodicOperation
from .report import ReportBuilder, boot_id, os_info, random_uuid

log = logging.getLogger(__name__)

#: Collections waiting for the collector thread (report.now / checks.run beyond the schedule).
MAX_PENDING_JOBS = 4
#: Seconds from the lean first report of a start to the first full one (at most ``interval``),
#: which also is the span of the first rates.
FOLLOW_UP_S = 10.0


class Agent:
    """One agent run: a run_id, a seq, a channel, and the two threads."""

    def __init__(self, config: AgentConfig, channel: Channel | None = None,
                 backoff: Tuple[float, float] = (0.5, 5.0), **collector_overrides: Any) -> None:
        self.config = config
        self.run_id = random_uuid()
        self.builder = ReportBuilder(config, **collector_overrides)
        self.machine = self.builder.machine
        self.boot_id = boot_id(self.machine)
        if channel is None:
            channel = Channel(device_resolver(config.device, self.machine.paths.root),
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
        self.events: Any = None  # the EventWatcher, from the first report on
        self._events_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``; returns after both threads finished."""
        log.info("vmdiag-agent %s starting: run_id %s, report every %gs, heartbeat every %gs",
                 guest_agent.__version__, self.run_id, self.config.interval,
                 self.config.heartbeat_interval)
        for warning in self.config.warnings:
            log.warning("%s", warning)
        collector = threading.Thread(target=self._collector_loop, name="vmdiag-collector",
                                     daemon=True)
        collector.start()  # the lean first report at once, then the event watcher
        try:
            self._io_loop()
        finally:
            self._stop.set()
            self._wake_collector()
            collector.join(timeout=max(5.0, float(self.config.get("probes", "timeout")) * 4))
            with self._events_lock:
                events, self.events = self.events, None
            if events is not None:
                events.stop()
            self.channel.close()
            self.builder.close()
            log.info("vmdiag-agent stopped")

    def _start_events(self, baseline: Dict[str, Any] | None) -> None:
        """Start the event watcher (guest_agent.events), when ``[agent] events`` is on, with
        ``baseline`` (the first report's sections) as what it compares with."""
        if not self.config.get("agent", "events"):
            return
        from .events import EventWatcher

        watcher = EventWatcher(self.config.collector_options(**self.builder.overrides),
                               self.config.thresholds,
                               lambda reason: self._submit("event", reason),
                               float(self.config.get("agent", "event_poll_interval")),
                               float(self.config.get("agent", "event_min_interval")))
        if baseline is not None:
            watcher.note_report(baseline, self.builder.state)
        with self._events_lock:
            if self._stop.is_set():
                return
            self.events = watcher
        watcher.start(subscribe_now=False)  # the collector does not wait for D-Bus

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
                reply = requests.refusal(rid, method)
                log.info("host request %r (id %r) refused: %s", method, rid,
                         reply["error"]["code"])
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
        # ACK_CAPABILITY: the channel keeps reports until the host acknowledges them
        capabilities = (["section:" + s for s in SECTIONS]
                        + ["method:" + m for m in ALLOWED_METHODS] + [ACK_CAPABILITY])
        return make_hello(guest_agent.__version__, os_info(self.machine), socket.gethostname(),
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
        self._start_events(self._first_report())
        self._report_op.next_run = time.monotonic() + min(self.config.interval, FOLLOW_UP_S)
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

    def _first_report(self) -> Dict[str, Any] | None:
        """The first report of a start, lean (units, processes, file systems, connectivity,
        resources; no package inventory unless cached, listening sockets, time sync state) and
        queued at once, so the host sees this guest within a report's build time of the start.
        It is the baseline of the rates and of the event watcher (returned: its sections);
        the first full report follows ``FOLLOW_UP_S`` later."""
        began = time.monotonic()
        try:
            sections = self.builder.collect(lean=True)
            seq, line = self._encode_report(sections)
        except Exception:  # noqa: BLE001 - the scheduled reports will say what is wrong
            log.warning("the first report failed", exc_info=True)
            return None
        self.channel.send(line, "report", ack_key=(self.run_id, seq))
        log.info("first report %d queued (lean, %d bytes, built in %.1fs)",
                 seq, len(line), time.monotonic() - began)
        return sections

    def build_report(self, lean: bool = False) -> Tuple[int, bytes]:
        sections = self.builder.collect(lean)
        events = self.events
        if events is not None:
            events.note_report(sections, self.builder.state)
        return self._encode_report(sections)

    def _encode_report(self, sections: Dict[str, Any]) -> Tuple[int, bytes]:
        seq = self._next_seq()
        line = self.builder.encode(self.boot_id, self.run_id, seq, sections)
        self.reports_built += 1
        return seq, line

    def _scheduled_report(self) -> None:
        seq, line = self.build_report()
        self.channel.send(line, "report", ack_key=(self.run_id, seq))
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
                self.channel.send(line, "report", ack_key=(self.run_id, seq))
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


__all__: List[str] = ["Agent"]
