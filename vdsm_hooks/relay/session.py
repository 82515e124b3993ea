"""One asyncio session per VM: the host end of the vmdiag virtio-serial channel.

QEMU owns the channel's unix socket (``mode='bind'``); the session connects to it, decodes the
guest's lines with ``diag_protocol.LineDecoder`` (reports that need no cleaning through the
gate of plain.py), keeps the latest hello, report and heartbeat in the ``ReportCache``, hands
each new report to ``on_report`` (the uploader), and sends requests
whose replies it matches by id. To an agent whose hello lists ``ack`` it acknowledges each
report once the uploader says it is safe (delivered or spooled; diag_protocol.acks). It
reconnects with backoff after EOF or errors (QEMU restarted,
socket not there yet) and marks the agent unresponsive after ``silence_timeout`` seconds without
a valid message (the connection to QEMU stays up when the guest agent dies or never starts).

The session is an explicit state machine, after qemu.qmp's ``Runstate``::

    IDLE --start()--> CONNECTING --ok--> CONNECTED --EOF/error--> BACKOFF --delay--> CONNECTING
      |                    |  \\--failed--> BACKOFF                   |
      +------- close() from any state --> CLOSED (final) <-----------+

Everything the guest sends is hostile: lines are capped (1 MiB) and dropped whole past the cap
without being buffered, every drop is counted by reason, reading is rate-limited per session
(a token bucket pauses the transport, so a flooding guest is pushed back into QEMU and the
guest instead of costing the host CPU and memory), reports are rate-limited per VM (one per
``min_report_interval`` plus a burst; the rest dropped as ``rate_limited``, so a flooding guest
cannot fill the uploader's queue and spool with its own reports), and only the latest report
is kept.

Errors::

    SessionError                 anything this module raises
     +-- StateError              an operation or transition not allowed in the current state
     +-- ConnectError            the channel socket could not be opened (wraps the OSError)
     +-- RequestError            a request to the agent failed
          +-- NotConnected       no connection to the channel right now
          +-- RequestTimeout     no reply within the timeout
          +-- RemoteError        the agent replied ok=false (``code``, ``message``)
          +-- Busy               too many requests pending, or the guest is not reading
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from diag_protocol import (
    ACK_CAPABILITY,
    ALLOWED_METHODS,
    MAX_LINE_BYTES,
    LineDecoder,
    ProtocolError,
    encode,
    make_ack,
    make_request,
    negotiate,
)

from .cache import ReportCache, VMEntry
from .plain import PlainLineDecoder, message_gate

Message = Dict[str, Any]
#: Called once a report is safe from a relay crash: the session then acknowledges it to the
#: agent (diag_protocol.acks). None when the agent does not take acknowledgements.
OnSafe = Optional[Callable[[], None]]
#: Where a session hands each report it accepted: ``(vm_id, report, received_at,
#: agent_version, on_safe, encoded_report)``, the signature of ``Uploader.submit_report``,
#: which wraps it in the envelope of this host and calls ``on_safe`` once the report is
#: delivered or spooled; ``encoded_report`` is the report's JSON as the cache encoded it, so
#: it is encoded once. The session builds no envelope of its own.
ReportSink = Callable[[str, Message, float, Optional[str], OnSafe, Optional[bytes]], Any]

log = logging.getLogger("vmdiag.relay.session")

#: How a report line starts, as every agent writes it (``json.dumps`` spacing or compact): a
#: guest over its report rate has such lines dropped unread (``VMSession._skip_line``).
_REPORT_HEAD = re.compile(rb'\{\s*"type"\s*:\s*"report"')


class Runstate(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


_TRANSITIONS = {
    Runstate.IDLE: {Runstate.CONNECTING, Runstate.CLOSED},
    Runstate.CONNECTING: {Runstate.CONNECTED, Runstate.BACKOFF, Runstate.CLOSED},
    Runstate.CONNECTED: {Runstate.BACKOFF, Runstate.CLOSED},
    Runstate.BACKOFF: {Runstate.CONNECTING, Runstate.CLOSED},
    Runstate.CLOSED: set(),
}


class SessionError(Exception):
    """Base of this module's errors."""


class StateError(SessionError):
    """An operation or a transition that the current state does not allow."""


class ConnectError(SessionError):
    """The channel socket could not be opened; ``__cause__`` is the OSError."""


class RequestError(SessionError):
    """A request to the guest agent failed."""


class NotConnected(RequestError):
    """The relay has no connection to this VM's channel right now."""


class RequestTimeout(RequestError):
    """The agent did not reply in time (not running, hung, or an old version)."""


class Busy(RequestError):
    """Too many requests are pending, or the guest is not reading what we send."""


class RemoteError(RequestError):
    """The agent answered ``ok: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("agent refused: %s: %s" % (code, message))
        self.code = code
        self.message = message


@dataclass
class SessionConfig:
    """Tunables of a session; the daemon builds it from relay.conf."""

    silence_timeout: float = 180.0
    reconnect_min_backoff: float = 0.5
    reconnect_max_backoff: float = 30.0
    request_timeout: float = 10.0
    max_pending_requests: int = 8
    #: Sustained bytes per second read from one guest, and the burst allowed above it.
    read_rate: float = 1 << 20
    read_burst: float = 4 << 20
    #: Requests are refused while this much is unsent (the guest is not reading its port).
    max_write_buffer: int = 256 << 10
    max_line: int = MAX_LINE_BYTES
    #: Reports taken from one VM: one per ``min_report_interval`` seconds on average, plus
    #: ``report_burst`` in a row; the rest are dropped as ``rate_limited``. 0: no limit.
    min_report_interval: float = 0.0
    report_burst: int = 10
    #: Bytes per second read from a guest while it is over its report rate: what it sends then
    #: is mostly dropped, so it should not cost the relay the CPU of decoding it all.
    read_rate_over_limit: float = 64 << 10


class _ChannelProtocol(asyncio.Protocol):
    """Transport glue: hands bytes to the session, and resolves ``lost`` on EOF or error."""

    def __init__(self, session: VMSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.session._on_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class VMSession:
    """The host side of one VM's channel. ``start()`` it, ``close()`` it, ``request()`` on it."""

    _ids = itertools.count(1)

    def __init__(self, vm_id: str, socket_path: str, cache: ReportCache, *,
                 name: str | None = None,
                 config: SessionConfig | None = None,
                 on_report: ReportSink | None = None) -> None:
        self.vm_id = vm_id
        self.socket_path = socket_path
        self.config = config or SessionConfig()
        self.on_report = on_report
        self.entry: VMEntry = cache.entry(vm_id, name)
        self.log = log.getChild(name or vm_id)
        self.paused = False  # VM paused by libvirt: silence then means nothing
        self._state = Runstate.IDLE
        self._state_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._protocol: _ChannelProtocol | None = None
        self._decoder: LineDecoder | None = None
        self._base_drops = self.entry.counters.drops.copy()
        self._decoder_drops = 0
        self._pending: Dict[str, asyncio.Future[Any]] = {}
        self._attempt = 0
        self._last_heard = time.monotonic()
        self._watchdog: asyncio.TimerHandle | None = None
        self._tokens = self.config.read_burst
        self._token_time = time.monotonic()
        self._resume: asyncio.TimerHandle | None = None
        self._report_tokens = float(self.config.report_burst)
        self._report_token_time = time.monotonic()
        self._over_rate_until = 0.0  # monotonic time the report bucket has a token again
        #: The agent's hello lists ACK_CAPABILITY: acknowledge its reports once safe.
        self.acks = ACK_CAPABILITY in ((self.entry.hello or {}).get("capabilities") or ())

    # -- state machine ---------------------------------------------------------------------

    @property
    def state(self) -> Runstate:
        return self._state

    def _set_state(self, new: Runstate) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise StateError("%s: cannot go from %s to %s"
                             % (self.vm_id, self._state.name, new.name))
        self.log.debug("%s -> %s", self._state.name, new.name)
        self._state = new
        self.entry.session_state = new.value
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def wait_state(self, *states: Runstate, timeout: float | None = None) -> Runstate:
        """Wait until the session is in one of ``states``; mostly for tests and tools."""
        async def _wait() -> Runstate:
            while self._state not in states:
                await self._state_changed.wait()
            return self._state
        return await asyncio.wait_for(_wait(), timeout)

    def start(self) -> None:
        """Start connecting in the background (IDLE -> CONNECTING)."""
        if self._state is not Runstate.IDLE or self._task is not None:
            raise StateError("%s: start() in state %s; a session starts once"
                             % (self.vm_id, self._state.name))
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="vmdiag-session-%s" % self.vm_id)

    async def close(self) -> None:
        """Stop for good (any state -> CLOSED): drop the connection, fail pending requests."""
        if self._state is Runstate.CLOSED:
            return
        self._set_state(Runstate.CLOSED)
        self.entry.responsive = None
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._drop_connection(NotConnected("session closed"))

    # -- connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._state is not Runstate.CLOSED:
            self._set_state(Runstate.CONNECTING)
            try:
                await self._connect(loop)
            except ConnectError as err:
                self.entry.last_error = "%s (%s)" % (err, err.__cause__)
                if self._attempt == 0:
                    self.log.info("%s; retrying", self.entry.last_error)
                self._set_state(Runstate.BACKOFF)
                await asyncio.sleep(self._next_delay())
                continue
            assert self._protocol is not None
            self._set_state(Runstate.CONNECTED)
            exc = await self._protocol.lost
            self._drop_connection(NotConnected("channel connection lost"))
            self.entry.counters.disconnects += 1
            self.entry.last_error = ("channel closed" if exc is None
                                     else "channel error: %s" % exc)
            self.log.info("%s; reconnecting", self.entry.last_error)
            self._set_state(Runstate.BACKOFF)
            await asyncio.sleep(self._next_delay())

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            _, protocol = await loop.create_unix_connection(
                lambda: _ChannelProtocol(self), self.socket_path)
        except OSError as err:
            raise ConnectError("cannot open channel socket %s" % self.socket_path) from err
        self._protocol = protocol
        self._decoder = self._new_decoder()
        self._decoder_drops = 0
        self._base_drops = self.entry.counters.drops.copy()
        self.entry.counters.connects += 1
        self.entry.last_error = None
        self._last_heard = time.monotonic()
        self._arm_watchdog(self.config.silence_timeout)
        self.log.info("connected to %s", self.socket_path)

    def _next_delay(self) -> float:
        """Exponential backoff with jitter, capped; reset once the agent has spoken."""
        cfg = self.config
        delay: float = min(cfg.reconnect_max_backoff,
                           cfg.reconnect_min_backoff * (2.0 ** self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return delay * random.uniform(0.5, 1.0)

    def _drop_connection(self, why: RequestError) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        for handle in (self._watchdog, self._resume):
            if handle is not None:
                handle.cancel()
        self._watchdog = self._resume = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(why)

    # -- incoming bytes --------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None or self._state is not Runstate.CONNECTED:
            return
        counters = self.entry.counters
        counters.bytes += len(data)
        self._throttle(len(data))
        try:
            messages = decoder.feed(data)
        except Exception:  # a bug in the decoder must cost this line, not the relay
            self.log.exception("decoder failed; dropping the buffered line")
            counters.drops["decoder_error"] += 1
            self._decoder = self._new_decoder()
            self._base_drops = counters.drops.copy()
            self._decoder_drops = 0
            return
        total = sum(decoder.drops.values())
        if total != self._decoder_drops:
            self._decoder_drops = total
            counters.drops = self._base_drops + decoder.drops
        encoded = getattr(decoder, "encoded", None)  # a PlainLineDecoder's (tests set others)
        for msg in messages:
            self._on_message(msg, encoded.get(id(msg)) if encoded else None)

    def _new_decoder(self) -> PlainLineDecoder:
        limited = self.config.min_report_interval > 0  # else no line is ever over the rate
        return PlainLineDecoder(max_line=self.config.max_line, gate=message_gate(),
                                skip=self._skip_line if limited else None)

    def _skip_line(self, line: bytes) -> str | None:
        """While the VM is over its report rate, a report line is dropped as ``rate_limited``
        without being decoded: it would be dropped after decoding anyway, and decoding a
        flood of valid reports is the relay CPU that one guest would otherwise take from the
        others (one event loop for every VM). A line that hides its type further in is
        decoded, within the reduced read rate (``read_rate_over_limit``)."""
        if time.monotonic() >= self._over_rate_until or not _REPORT_HEAD.match(line, 0, 64):
            return None
        return "rate_limited"

    def _throttle(self, nbytes: int) -> None:
        """Token bucket: past the burst, pause reading until the bucket refills."""
        cfg = self.config
        now = time.monotonic()
        # over its report rate, a guest is read slowly until its bucket has a token again
        rate = cfg.read_rate if now >= self._over_rate_until else cfg.read_rate_over_limit
        self._tokens = min(cfg.read_burst, self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        self._tokens -= nbytes
        if self._tokens >= 0 or self._protocol is None or self._protocol.transport is None:
            return
        self.entry.counters.throttled += 1
        transport = self._protocol.transport
        transport.pause_reading()
        delay = -self._tokens / rate
        self._resume = asyncio.get_running_loop().call_later(delay, self._resume_reading,
                                                             transport)

    def _resume_reading(self, transport: asyncio.Transport) -> None:
        self._resume = None
        if self._protocol is not None and self._protocol.transport is transport:
            transport.resume_reading()

    def _on_message(self, msg: Message, encoded: bytes | None = None) -> None:
        """``encoded``: the line's own bytes when the decoder took it as it is (plain.py)."""
        counters = self.entry.counters
        now = time.time()
        counters.messages += 1
        counters.last_seen = now
        self._last_heard = time.monotonic()
        self._attempt = 0
        if self.entry.responsive is not True:
            if self.entry.responsive is False:
                self.log.info("agent is responsive again")
            self.entry.responsive = True
        kind = msg["type"]
        if kind == "report":
            self._on_report(msg, now, encoded)
        elif kind == "heartbeat":
            counters.heartbeats += 1
            self.entry.heartbeat = msg
        elif kind == "hello":
            self._on_hello(msg)
        elif kind == "reply":
            self._on_reply(msg)
        else:  # a guest may not send requests to the host
            self._count_drop("unexpected_" + kind)

    def _on_hello(self, msg: Message) -> None:
        try:
            negotiate(msg)
        except ProtocolError as err:
            self._count_drop(err.reason)
            self.log.warning("agent hello refused: %s", err)
            return
        old = self.entry.hello
        self.entry.hello = msg
        self.acks = ACK_CAPABILITY in (msg.get("capabilities") or ())
        if old != msg:
            self.log.info("agent %s on %s says hello", msg.get("agent_version"),
                          msg.get("hostname"))

    def _on_report(self, msg: Message, now: float, encoded: bytes | None = None) -> None:
        last = self.entry.summary
        if last is not None and last.run_id == msg["run_id"] and msg["seq"] <= last.seq:
            self._count_drop("stale_seq")  # a replay: never let it replace a newer report
            return
        if not self._take_report_token():
            self._count_drop("rate_limited")
            return
        self.entry.counters.reports += 1
        self.entry.set_report(msg, now, encoded)
        on_safe = self._acknowledger(msg["run_id"], msg["seq"]) if self.acks else None
        if self.on_report is None:
            if on_safe is not None:
                on_safe()  # no uploader: the cache is where a report ends
            return
        try:
            version = (self.entry.hello or {}).get("agent_version")
            self.on_report(self.vm_id, msg, now, version, on_safe, self.entry.report_json)
        except Exception:
            self.log.exception("report sink failed; the report stays cached")

    def _acknowledger(self, run_id: str, seq: int) -> Callable[[], None]:
        def acknowledge() -> None:
            self.acknowledge(run_id, seq)
        return acknowledge

    def acknowledge(self, run_id: str, seq: int) -> bool:
        """Tell the agent the report (run_id, seq) is safe, on the current connection (the
        one it came on may be gone: the agent then still has it and matches by run and seq).
        Nothing is written to a guest that does not read its channel."""
        protocol = self._protocol
        if (self._state is not Runstate.CONNECTED or protocol is None
                or protocol.transport is None or protocol.transport.is_closing()
                or protocol.transport.get_write_buffer_size() > self.config.max_write_buffer):
            return False
        protocol.transport.write(encode(make_ack(run_id, seq)))
        self.entry.counters.acks += 1
        return True

    def _take_report_token(self) -> bool:
        """The report rate limit: a token bucket of ``report_burst`` reports, refilled at one
        per ``min_report_interval`` seconds. A session is the VM's for as long as the relay
        follows it, so reconnecting does not refill it."""
        interval = self.config.min_report_interval
        if interval <= 0:
            return True
        now = time.monotonic()
        self._report_tokens = min(float(self.config.report_burst),
                                  self._report_tokens + (now - self._report_token_time) / interval)
        self._report_token_time = now
        if self._report_tokens < 1.0:
            self._over_rate_until = now + (1.0 - self._report_tokens) * interval
            return False
        self._report_tokens -= 1.0
        return True

    def _on_reply(self, msg: Message) -> None:
        self.entry.counters.replies += 1
        future = self._pending.pop(msg["id"], None)
        if future is None or future.done():
            self._count_drop("unmatched_reply")
            return
        if msg["ok"]:
            future.set_result(msg.get("result"))
        else:
            error = msg.get("error") or {}
            future.set_exception(RemoteError(error.get("code") or "error",
                                             error.get("message") or ""))

    def _count_drop(self, reason: str) -> None:
        self.entry.counters.drops[reason] += 1
        self._base_drops[reason] += 1

    # -- silence ---------------------------------------------------------------------------

    def _arm_watchdog(self, delay: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(max(delay, 0.01), self._check)

    def _check(self) -> None:
        self._watchdog = None
        if self._state is not Runstate.CONNECTED:
            return
        silent = time.monotonic() - self._last_heard
        timeout = self.config.silence_timeout
        if silent < timeout or self.paused:
            self._arm_watchdog(timeout - silent if not self.paused else timeout)
            return
        if self.entry.responsive is not False:
            self.log.warning("agent silent for %.0f s: unresponsive", silent)
            self.entry.responsive = False
        self._arm_watchdog(timeout)

    # -- requests --------------------------------------------------------------------------

    async def request(self, method: str, params: Mapping[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """Send ``method`` to the agent and return its reply's ``result``.

        Raises NotConnected, Busy, RequestTimeout or RemoteError (all RequestError).
        """
        if method not in ALLOWED_METHODS:
            raise RequestError("method %r is not one of %s" % (method, ", ".join(ALLOWED_METHODS)))
        protocol = self._protocol
        if self._state is not Runstate.CONNECTED or protocol is None or protocol.transport is None:
            raise NotConnected("%s: not connected to the channel (state %s); try again later"
                               % (self.vm_id, self._state.value))
        transport = protocol.transport
        if len(self._pending) >= self.config.max_pending_requests:
            raise Busy("%s: %d requests already pending" % (self.vm_id, len(self._pending)))
        if transport.get_write_buffer_size() > self.config.max_write_buffer:
            raise Busy("%s: the guest is not reading its channel" % self.vm_id)
        request_id = "r%d-%d" % (next(self._ids), int(time.time()))
        try:
            line = encode(make_request(request_id, method, params))
        except ProtocolError as err:
            raise RequestError("%s: cannot send %s: %s" % (self.vm_id, method, err)) from err
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            transport.write(line)
            return await asyncio.wait_for(future, timeout or self.config.request_timeout)
        except asyncio.TimeoutError as err:
            raise RequestTimeout("%s: no reply to %s within %.1f s; is the agent running?"
                                 % (self.vm_id, method, timeout or self.config.request_timeout)
                                 ) from err
        finally:
            self._pending.pop(request_id, None)
