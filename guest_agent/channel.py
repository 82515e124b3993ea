"""The guest end of the virtio-serial channel: find the port, move lines, never block collection.

A guest write to a virtio-serial port blocks until a host client has the other end open, and a
host that connects but never reads fills the port's buffers. So the port is opened with
O_NONBLOCK, outgoing messages wait in a bounded queue (the oldest report is dropped and counted
when it is full), and one thread (``pump``) does all I/O with ``poll``; other threads only
``send()``, which never waits for the host.

Host connect/disconnect on a virtio port shows as POLLHUP, and while it lasts ``poll`` also
reports POLLIN (``read`` returns 0), so a naive loop spins. The channel notices the hang-up,
stops polling the port and looks again with exponential backoff; when the hang-up clears the
host is back and ``on_connect`` fires (the daemon sends a fresh ``hello``). A missing port
(module not loaded, VM without the channel) is retried the same way and logged once.

States::

    CLOSED --open ok--> CONNECTED --POLLHUP (char device)--> HOST_GONE --hang-up clears--> CONNECTED
      ^                    |                                     |
      +---- backoff <------+-- EOF/error (socket, pty) ----------+-- EIO (pty gone)

Reports are kept after they are written until the host acknowledges them (``ack``;
diag_protocol.acks): on a new host connection the unacknowledged ones go first, oldest first,
so a relay killed after reading a report and before making it safe loses nothing.

Besides the real port, the device may be a Unix stream socket (connected to, as a host would
expose a chardev) or a pty: tests and development use them as stand-ins for the port.
"""

from __future__ import annotations

import collections
import errno
import glob
import json
import logging
import os
import re
import select
import socket
import stat
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from diag_protocol import (
    CHANNEL_NAME,
    GUEST_DEVICE,
    ID_PATTERN,
    MAX_ECHO_ID,
    MAX_LINE_BYTES,
    LineDecoder,
    ProtocolError,
    Unacked,
)

log = logging.getLogger(__name__)

CLOSED, CONNECTED, HOST_GONE = "closed", "connected", "host_gone"
READ_CHUNK = 65536
_ID = re.compile(ID_PATTERN)
#: (request id, method) of a request the decoder dropped: the id a string of the protocol's
#: shape, or an integer (not served, but echoed on the ``bad_request`` that says so).
Rejected = Tuple[Union[str, int], str]
#: A queued line: (kind, line, ack key). A report's key is (run_id, seq): once written it is
#: kept in ``Channel.unacked`` until the host acknowledges it (diag_protocol.acks).
Queued = Tuple[str, bytes, Optional[Tuple[str, int]]]


def find_port(root: str = "/", name: str = CHANNEL_NAME) -> str | None:
    """The port's device path: the udev symlink, else /dev/<vportNpM> whose sysfs name matches.

    ``root`` lets tests lay out a fake /dev and /sys tree.
    """
    link = os.path.join(root, "dev", "virtio-ports", name)
    if os.path.exists(link):
        return link
    for name_file in sorted(glob.glob(os.path.join(glob.escape(root), "sys", "class",
                                                   "virtio-ports", "*", "name"))):
        try:
            with open(name_file, encoding="utf-8", errors="replace") as fh:
                found = fh.read().strip()
        except OSError:
            continue
        if found == name:
            dev = os.path.join(root, "dev", os.path.basename(os.path.dirname(name_file)))
            if os.path.exists(dev):
                return dev
    return None


def device_resolver(device: str, root: str = "/") -> Callable[[], str | None]:
    """How to find the port: the default path also falls back to sysfs; anything else is used
    as given (``--device`` or ``[agent] device``)."""
    if device == GUEST_DEVICE:
        return lambda: find_port(root)
    return lambda: device if os.path.exists(device) else None


def missing_message(device: str) -> str:
    if device == GUEST_DEVICE:
        return ("the virtio-serial port %s is missing; is the VM started with the vmdiag "
                "channel (VDSM hook) and the virtio_console module loaded?" % CHANNEL_NAME)
    return "the channel device %s does not exist; check --device or [agent] device" % device


class RequestDecoder(LineDecoder):
    """A LineDecoder that also remembers requests it had to reject.

    The protocol validator drops a request whose method is not on the allow-list, but the host
    must still get ``ok: false`` back rather than silence, so a dropped line that is plainly a
    request with an id that can be echoed is kept in ``rejected`` as ``(id, method)``: an id
    of the protocol's shape, or an integer (JSON-RPC and QMP clients number their requests),
    which the agent refuses with ``bad_request`` saying what an id must be. Any other id
    cannot be carried back in a reply, so that request is dropped and counted only.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        super().__init__(max_line=max_line, on_drop=self._dropped)
        self.rejected: List[Rejected] = []

    def _dropped(self, line: bytes, err: ProtocolError) -> None:
        salvaged = _salvage_request(line)
        if salvaged is not None:
            self.rejected.append(salvaged)


def _salvage_request(line: bytes) -> Rejected | None:
    try:
        value = json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("type") != "request":
        return None
    rid, method = value.get("id"), value.get("method")
    if isinstance(rid, int) and not isinstance(rid, bool):
        if abs(rid) > MAX_ECHO_ID:
            return None
    elif not isinstance(rid, str) or not _ID.match(rid):
        return None
    return rid, (method[:64] if isinstance(method, str) else repr(method)[:64])


class ChannelStats:
    """Counters for ``config.get``/logs and for tests: what moved, what was dropped and why."""

    def __init__(self) -> None:
        self.sent_messages = 0
        self.sent_bytes = 0
        self.received = 0
        self.connects = 0
        self.disconnects = 0
        self.open_failures = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.unacked: Dict[str, int] = {}

    def __repr__(self) -> str:
        return "ChannelStats(%r)" % self.as_dict()

    def as_dict(self) -> Dict[str, Any]:
        return {"sent_messages": self.sent_messages, "sent_bytes": self.sent_bytes,
                "received": self.received, "connects": self.connects,
                "disconnects": self.disconnects, "open_failures": self.open_failures,
                "dropped": dict(self.dropped), "unacked": dict(self.unacked)}


class Channel:
    """Bounded, non-blocking line channel to the host. ``pump`` runs in one I/O thread."""

    def __init__(self, resolve: Callable[[], str | None], *,
                 max_messages: int = 16, max_bytes: int = 8 << 20,
                 backoff: Tuple[float, float] = (0.5, 5.0),
                 on_connect: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 missing: str = missing_message(GUEST_DEVICE)) -> None:
        self._resolve = resolve
        self.missing = missing  # what to log when ``resolve`` finds nothing
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.backoff_min, self.backoff_max = backoff
        self.on_connect = on_connect
        self._clock = clock
        self.stats = ChannelStats()
        self.state = CLOSED
        self.path: str | None = None
        self._fd = -1
        self._sock: socket.socket | None = None
        self._is_socket = False
        self._decoder = RequestDecoder()
        self._lock = threading.Lock()
        # Urgent (hello, replies) goes before normal (reports, heartbeats); both count to the cap.
        self._urgent: Deque[Queued] = collections.deque()
        self._normal: Deque[Queued] = collections.deque()
        self._queued_bytes = 0
        self._current: Queued | None = None  # partly written, never dropped
        #: Reports written and not acknowledged by the host: written again on a new connection.
        self.unacked = Unacked(clock=clock)
        self._offset = 0
        self._delay = self.backoff_min
        self._next_try = 0.0
        self._warned_missing = False
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # -- called from any thread -------------------------------------------------------------

    def send(self, line: bytes, kind: str, urgent: bool = False,
             ack_key: Tuple[str, int] | None = None) -> None:
        """Queue one encoded line; drop the oldest queued messages if over the caps.

        ``ack_key`` ((run_id, seq) of a report) keeps the line, once written, until the host
        acknowledges it, and writes it again when the host connects anew."""
        if len(line) > self.max_bytes:
            with self._lock:
                self.stats.dropped["oversize"] += 1
            return
        with self._lock:
            (self._urgent if urgent else self._normal).append((kind, line, ack_key))
            self._queued_bytes += len(line)
            self._enforce_caps()
        self.wake()

    def _enforce_caps(self) -> None:
        while (len(self._urgent) + len(self._normal) > self.max_messages
               or self._queued_bytes > self.max_bytes):
            victim = self._normal.popleft() if self._normal else self._urgent.popleft()
            self._queued_bytes -= len(victim[1])
            self.stats.dropped[victim[0]] += 1

    def wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return  # closed: nothing waits any more (and the fd number may be reused)
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # already pending

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._urgent) + len(self._normal) + (1 if self._current else 0)

    @property
    def queued_bytes(self) -> int:
        with self._lock:
            return self._queued_bytes + (len(self._current[1]) - self._offset
                                         if self._current else 0)

    def discard(self, kinds: Tuple[str, ...]) -> None:
        """Drop queued messages of these kinds (stale heartbeats and hellos after a hang-up)."""
        with self._lock:
            for q in (self._urgent, self._normal):
                keep = [m for m in q if m[0] not in kinds]
                for kind, line, _ in q:
                    if kind in kinds:
                        self._queued_bytes -= len(line)
                        self.stats.dropped["stale_" + kind] += 1
                q.clear()
                q.extend(keep)

    # -- the I/O thread -----------------------------------------------------------------------

    def pump(self, timeout: float) -> Tuple[List[Dict[str, Any]], List[Rejected]]:
        """Do I/O for at most ``timeout`` seconds; return (requests, rejected (id, method))."""
        now = self._clock()
        if self.state == CLOSED and now >= self._next_try:
            self._open()
        elif self.state == HOST_GONE and now >= self._next_try:
            self._check_host()
        if self.state != CONNECTED:
            wait = max(0.0, min(timeout, self._next_try - self._clock()))
            self._wait_wake(wait)
            return [], []
        if self.unacked.expire():
            self._note_unacked()
        return self._io(timeout)

    def close(self) -> None:
        self._close_port()
        with self._lock:
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- internals ----------------------------------------------------------------------------

    def _retry_later(self) -> None:
        self._next_try = self._clock() + self._delay
        self._delay = min(self._delay * 2, self.backoff_max)

    def _open(self) -> None:
        path = self._resolve()
        if path is None:
            self._open_failed(self.missing)
            return
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    sock.connect(path)
                except OSError:
                    sock.close()
                    raise
                self._sock, self._fd, self._is_socket = sock, sock.fileno(), True
            else:
                self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
                self._is_socket = False
                if os.isatty(self._fd):
                    import tty  # here: termios costs the start of every agent, and only a
                    # pty stand-in (tests, containers) needs it

                    tty.setraw(self._fd)  # a pty stand-in must pass bytes through untouched
        except OSError as err:
            self._open_failed("cannot open %s: %s; check that no other program holds the port"
                              % (path, err.strerror or err))
            return
        self.path = path
        self._decoder = RequestDecoder()
        log.info("opened channel %s", path)
        self._warned_missing = False
        if self._hung_up():
            self._enter_host_gone()
        else:
            self._connected()

    def _open_failed(self, why: str) -> None:
        self.stats.open_failures += 1
        if not self._warned_missing:
            log.warning("%s; retrying every %gs or less", why, self.backoff_max)
            self._warned_missing = True
        else:
            log.debug("%s", why)
        self._retry_later()

    def _hung_up(self) -> bool:
        p = select.poll()
        p.register(self._fd, select.POLLOUT)
        for _fd, ev in p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
        return False

    def _connected(self) -> None:
        self.state = CONNECTED
        self._delay = self.backoff_min
        self.stats.connects += 1
        log.info("host connected on %s", self.path)
        self._resend_unacked()
        if self.on_connect is not None:
            self.on_connect()

    def _enter_host_gone(self) -> None:
        self.state = HOST_GONE
        self._abandon_partial()
        log.info("host side of %s is not connected; waiting for it", self.path)
        self._retry_later()

    def _check_host(self) -> None:
        if self._hung_up():
            try:
                # a pty whose master is gone says EIO; a virtio port hot-unplugged from the
                # VM (vmdiag-relay detach) says ENODEV: open the path again, which finds the
                # port when it is plugged back, under whatever vport name it gets then
                os.read(self._fd, READ_CHUNK)
            except OSError as err:
                if err.errno in (errno.EIO, errno.ENODEV):
                    self._lost("the port went away")
                    return
            self._retry_later()
        else:
            self._connected()

    def _abandon_partial(self) -> None:
        with self._lock:
            if self._current is not None:
                if self._current[2] is not None:  # a report: whole again on the next connection
                    self._normal.appendleft(self._current)
                    self._queued_bytes += len(self._current[1])
                else:
                    self.stats.dropped["partial_" + self._current[0]] += 1
                self._current = None
                self._offset = 0

    def _resend_unacked(self) -> None:
        """A new host connection: the reports the last one did not acknowledge go first,
        oldest first, before anything queued meanwhile (the relay drops a report older than
        one it already took from this run)."""
        again = self.unacked.take()
        if not again:
            return
        log.info("writing %d unacknowledged report(s) again", len(again))
        with self._lock:
            for key, line in reversed(again):
                self._normal.appendleft(("report", line, key))
                self._queued_bytes += len(line)
            self._enforce_caps()
        self._note_unacked()

    def _note_unacked(self) -> None:
        self.stats.unacked = self.unacked.stats()

    def _lost(self, why: str) -> None:
        """The connection is gone for good: close, and open again after a backoff."""
        log.info("channel %s closed (%s); reopening", self.path, why)
        self.stats.disconnects += 1
        self._close_port()
        self._abandon_partial()
        self._retry_later()

    def _close_port(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._sock, self._fd, self.state = None, -1, CLOSED

    def _wait_wake(self, timeout: float) -> None:
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        if p.poll(timeout * 1000.0):
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _has_output(self) -> bool:
        with self._lock:
            return self._current is not None or bool(self._urgent) or bool(self._normal)

    def _io(self, timeout: float) -> Tuple[List[Dict[str, Any]], List[Rejected]]:
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        p.register(self._fd, select.POLLIN | (select.POLLOUT if self._has_output() else 0))
        requests: List[Dict[str, Any]] = []
        for fd, ev in p.poll(timeout * 1000.0):
            if fd == self._wake_r:
                self._drain_wake()
                continue
            if ev & select.POLLIN and not self._read(requests):
                break
            if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                self._hangup(ev)
                break
            if ev & select.POLLOUT:
                self._write()
        rejected, self._decoder.rejected = self._decoder.rejected, []
        self.stats.received += len(requests)
        return requests, rejected

    def _read(self, requests: List[Dict[str, Any]]) -> bool:
        """Read what is there; False when the connection is gone (EOF or error)."""
        while True:
            try:
                data = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError as err:
                self._lost("read failed: %s" % (err.strerror or err))
                return False
            if not data:
                self._hangup(select.POLLHUP)
                return False
            for msg in self._decoder.feed(data):
                if msg.get("type") == "request":
                    requests.append(msg)
                elif msg.get("type") == "ack":
                    self.unacked.ack(msg["run_id"], msg["seq"])
                    self._note_unacked()
                else:
                    self.stats.dropped["unexpected_" + str(msg.get("type"))] += 1

    def _hangup(self, ev: int) -> None:
        if self._is_socket or ev & (select.POLLERR | select.POLLNVAL):
            self._lost("host closed the connection")
        else:
            self.stats.disconnects += 1
            self._enter_host_gone()

    def _write(self) -> None:
        while True:
            with self._lock:
                if self._current is None:
                    q = self._urgent if self._urgent else self._normal
                    if not q:
                        return
                    self._current = q.popleft()
                    self._offset = 0
                    self._queued_bytes -= len(self._current[1])
                kind, line, key = self._current
            try:
                n = os.write(self._fd, memoryview(line)[self._offset:])
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENODEV, errno.EIO):
                    self._hangup(select.POLLHUP)
                else:
                    self._lost("write failed: %s" % (err.strerror or err))
                return
            self._offset += n
            if self._offset >= len(line):
                with self._lock:
                    self._current = None
                    self._offset = 0
                self.stats.sent_messages += 1
                self.stats.sent_bytes += len(line)
                if key is not None:
                    self.unacked.written(key, line)
                    self._note_unacked()
                log.debug("sent %s (%d bytes)", kind, len(line))
