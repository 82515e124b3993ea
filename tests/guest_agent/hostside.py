"""A test "host": the other end of the agent's channel, as the relay sees it.

It listens on a Unix stream socket that the agent is pointed at with ``--device`` (QEMU exposes
a virtio-serial chardev to the host the same way) and reads with the real
``diag_protocol.LineDecoder``, so anything the agent sends that the relay would drop shows up
in ``decoder.drops``.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import time
from typing import Any, Callable, Deque, Dict, List

from diag_protocol import LineDecoder, encode

Message = Dict[str, Any]


class HostSide:
    def __init__(self, path: str) -> None:
        self.path = path
        self.server: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.decoder = LineDecoder()
        self.received: List[Message] = []
        self._inbox: Deque[Message] = collections.deque()

    def listen(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)

    def accept(self, timeout: float = 10.0) -> None:
        assert self.server is not None
        self.server.settimeout(timeout)
        self.conn, _ = self.server.accept()
        self.decoder = LineDecoder()
        self._inbox.clear()

    def disconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.disconnect()
        if self.server is not None:
            self.server.close()
            self.server = None

    def send(self, msg: Message) -> None:
        assert self.conn is not None
        self.conn.sendall(encode(msg))

    def send_raw(self, msg: Message) -> None:
        """Send without validation (a request this protocol version would not produce)."""
        assert self.conn is not None
        self.conn.sendall(json.dumps(msg).encode() + b"\n")

    def next_message(self, timeout: float) -> Message | None:
        """The next message, or None if none arrives within ``timeout``; EOF raises."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.conn.settimeout(remaining)
            try:
                data = self.conn.recv(1 << 20)
            except socket.timeout:
                return None
            if not data:
                raise EOFError("the agent closed the connection")
            self._inbox.extend(self.decoder.feed(data))
        msg = self._inbox.popleft()
        self.received.append(msg)
        return msg

    def read_until(self, pred: Callable[[Message], bool], timeout: float = 10.0) -> List[Message]:
        """Read messages until one satisfies ``pred``; return all read, that one last."""
        got: List[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise AssertionError("no matching message within %.1fs; got %s"
                                     % (timeout, [m.get("type") for m in got]))
            got.append(msg)
            if pred(msg):
                return got

    def drain(self, seconds: float) -> List[Message]:
        """Everything that arrives within ``seconds``."""
        got: List[Message] = []
        deadline = time.monotonic() + seconds
        while True:
            msg = self.next_message(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return got
            got.append(msg)
