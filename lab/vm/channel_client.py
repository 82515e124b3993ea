"""A host-side reader of one VM's vmdiag channel socket, for tests and the benchmark.

This is what the relay does for a living, reduced to the part a test needs: connect to the
unix socket QEMU listens on, decode the guest's lines with ``diag_protocol.LineDecoder`` (which
validates and cleans them, so anything that arrives here passed the protocol's checks), keep
the messages, and send ``request`` messages. A reader thread keeps draining the socket, since a
guest write on the port blocks while nobody reads.

QEMU's chardev server accepts one client at a time: while the relay holds the socket, this
client cannot connect, and the other way round.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, List

from diag_protocol import LineDecoder, encode, make_request

Message = Dict[str, Any]


class ChannelTimeout(TimeoutError):
    """The wanted message did not arrive in time. The message says what did arrive."""


class ChannelClient:
    """Connected reader/writer of a vmdiag channel socket. Use as a context manager."""

    def __init__(self, path: str, connect_timeout: float = 30.0) -> None:
        self.path = path
        self.decoder = LineDecoder()
        self.messages: List[Message] = []
        self.received_at: List[float] = []
        self._cond = threading.Condition()
        self._closed = False
        self.sock = self._connect(connect_timeout)
        self._thread = threading.Thread(target=self._read, name="channel-reader", daemon=True)
        self._thread.start()

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                return sock
            except OSError as err:
                sock.close()
                if time.monotonic() > deadline:
                    raise ChannelTimeout("cannot connect to %s within %.0fs (%s); is the VM "
                                         "running with the vmdiag channel, and is another "
                                         "client (the relay) holding it?"
                                         % (self.path, timeout, err)) from err
                time.sleep(0.2)

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            now = time.time()
            with self._cond:
                if not chunk:
                    self._closed = True
                    self._cond.notify_all()
                    return
                for msg in self.decoder.feed(chunk):
                    self.messages.append(msg)
                    self.received_at.append(now)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float,
                 start: int = 0) -> Message:
        """Return the first message at index >= ``start`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.messages):
                    if predicate(self.messages[index]):
                        return self.messages[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    kinds = [m.get("type") for m in self.messages[start:]]
                    raise ChannelTimeout(
                        "no matching message within %.0fs on %s (%s); received since: %s; "
                        "decoder drops: %s" % (timeout, self.path,
                                               "closed" if self._closed else "open",
                                               kinds[-20:] or "nothing",
                                               dict(self.decoder.drops) or "none"))
                self._cond.wait(remaining)

    def mark(self) -> int:
        """Index of the next message to arrive, for ``wait_for(start=...)``."""
        with self._cond:
            return len(self.messages)

    def send(self, msg: Message) -> None:
        self.sock.sendall(encode(msg))

    def request(self, method: str, params: Dict[str, Any] | None = None,
                timeout: float = 60.0) -> Message:
        """Send a request and return the guest's reply to it."""
        request_id = uuid.uuid4().hex
        start = self.mark()
        self.send(make_request(request_id, method, params or {}))
        return self.wait_for(lambda m: m.get("type") == "reply" and m.get("id") == request_id,
                             timeout, start)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)

    def __enter__(self) -> ChannelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
