"""Fake guests for relay tests and the benchmark: the test plays QEMU's side of the channel.

QEMU binds the channel's unix socket (``mode='bind'``) and the relay connects, so a fake guest
is a real unix stream server that accepts the relay and writes protocol lines, or garbage.
``sample_report`` builds schema-valid reports of a realistic size (10-30 KB).

A guest given a ``hello`` that lists the capability ``ack`` follows the agent's rule for
acknowledged reports with the agent's own bookkeeping (``diag_protocol.Unacked``, which
``guest_agent.channel`` uses): it writes the hello first on every connection, keeps each
report it wrote until the relay acknowledges it, writes the unacknowledged ones again on the
next connection before anything newer, and queues reports while no relay is connected
(bounded like the agent's queue).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
import uuid
from typing import Any, Deque, Dict, List, Tuple

from diag_protocol import (
    ACK_CAPABILITY,
    LineDecoder,
    Unacked,
    encode,
    make_hello,
    make_reply,
    make_report,
)

Message = Dict[str, Any]


#: Reports a guest queues while no relay is connected (the agent's default queue_max_messages).
QUEUE_MAX_MESSAGES = 16


def hello(version: str = "1.0.0", boot_id: str = "boot-1", acks: bool = False) -> Message:
    """An agent's hello; ``acks``: it keeps reports until acknowledged (diag_protocol.acks)."""
    return make_hello(version, {"name": "Fedora", "version": "40", "kernel": "6.8.5",
                                "arch": "x86_64"}, "guest.example", boot_id,
                      capabilities=["report.now"] + ([ACK_CAPABILITY] if acks else []))


def sample_report(seq: int = 0, run_id: str = "run-1", boot_id: str = "boot-1",
                  processes: int = 30, units: int = 40, now: float | None = None,
                  rng: random.Random | None = None, worst: str = "warning") -> Message:
    """A schema-valid report shaped like a real one; the defaults give about 20 KB."""
    rng = rng or random.Random(seq)
    now = time.time() if now is None else now

    def sec(data: Message) -> Message:
        return {"collected_at": now, "duration_ms": rng.uniform(1, 50), "errors": [],
                "data": data}

    procs = [{"pid": 1000 + i, "name": "proc-%d" % i, "user": "root",
              "cpu_percent": rng.uniform(0, 100), "rss": rng.randrange(1 << 20, 1 << 30),
              "memory_percent": rng.uniform(0, 10)} for i in range(processes)]
    network = {
        "interfaces": [{"name": "eth%d" % i, "up": True, "mtu": 1500,
                        "mac": "52:54:00:00:00:%02x" % i, "speed_mbps": 10000.0,
                        "addresses": [{"family": "inet", "address": "10.0.%d.5" % i,
                                       "prefixlen": 24}],
                        "rx_bytes": rng.randrange(1 << 40), "tx_bytes": rng.randrange(1 << 40),
                        "rx_packets": rng.randrange(1 << 30), "tx_packets": rng.randrange(1 << 30),
                        "rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0,
                        "rx_bps": rng.uniform(0, 1e6), "tx_bps": rng.uniform(0, 1e6),
                        "error_rate": 0.0, "drop_rate": 0.0} for i in range(2)],
        "routes": [{"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "interface": "eth0",
                    "metric": 100}],
        "default_gateway": {"address": "10.0.0.1", "interface": "eth0"},
        "dns": {"nameservers": ["10.0.0.1"], "search": ["example"]},
        "probes": [{"kind": "gateway", "target": "10.0.0.1", "ok": True,
                    "latency_ms": rng.uniform(0.1, 2), "error": None}],
        "listening": [{"proto": "tcp", "address": "0.0.0.0", "port": 22 + i, "pid": 900 + i,
                       "process": "sshd"} for i in range(10)],
    }
    resources = {
        "cpu": {"count": 4, "percent": rng.uniform(0, 100), "user": 10.0, "system": 5.0,
                "iowait": 1.0, "steal": 0.0, "idle": 84.0,
                "per_cpu": [{"percent": rng.uniform(0, 100), "iowait": 0.5, "steal": 0.0}
                            for _ in range(4)],
                "load": [0.5, 0.4, 0.3]},
        "memory": {"total": 8 << 30, "available": 4 << 30, "used": 4 << 30, "percent": 50.0,
                   "swap_total": 1 << 30, "swap_used": 0, "swap_percent": 0.0,
                   "swap_in_per_s": 0.0, "swap_out_per_s": 0.0},
        "filesystems": [{"mountpoint": "/mnt/%d" % i, "device": "/dev/vda%d" % i,
                         "fstype": "xfs", "total": 50 << 30, "used": 20 << 30, "free": 30 << 30,
                         "percent": 40.0, "inodes_total": 1 << 20, "inodes_used": 1 << 16,
                         "inodes_percent": 6.25, "readonly": False} for i in range(6)],
        "disks": [{"name": "vd%s" % c, "read_bps": 1e5, "write_bps": 2e5, "read_iops": 10.0,
                   "write_iops": 20.0, "await_ms": 1.5, "util_percent": 3.0} for c in "ab"],
        "top_cpu": procs[: processes // 2], "top_memory": procs[processes // 2:],
        "fds": {"open": 1200, "max": 65536}, "uptime_s": 3600.0, "boot_time": now - 3600,
        "oom_kills": 0,
    }
    applications = {
        "failed_units": [],
        "units": [{"name": "unit-%d.service" % i, "active_state": "active",
                   "sub_state": "running", "expected": "active"} for i in range(units)],
        "processes": [{"name": "sshd", "present": True, "count": 1}],
        "packages": {"manager": "rpm", "count": 612, "digest": "%064x" % rng.getrandbits(256),
                     "changed": False},
    }
    settings = {"hostname": "guest", "fqdn": "guest.example",
                "os": {"name": "Fedora", "version": "40", "id": "fedora", "pretty": "Fedora 40"},
                "kernel": "6.8.5", "arch": "x86_64", "timezone": "UTC",
                "time_sync": {"service": "chronyd", "synchronized": True, "offset_ms": 0.2,
                              "source": "10.0.0.1"},
                "security": {"selinux": "enforcing", "apparmor": None},
                "sysctls": {"vm.swappiness": "30"}, "users": [], "reboot_required": False,
                "reboot_reason": None}
    results = [{"id": "fs.fill:/mnt/%d" % i, "name": "filesystem fill", "status": "ok",
                "message": "/mnt/%d is 40%% full." % i, "value": 40.0, "threshold": 90.0}
               for i in range(6)]
    results.append({"id": "mem.available", "name": "memory", "status": worst,
                    "message": "Only 12% of memory is available; stop or resize something.",
                    "value": 12.0, "threshold": 15.0})
    checks = {"results": results}
    return make_report(boot_id, run_id, seq, {
        "network": sec(network), "resources": sec(resources), "applications": sec(applications),
        "settings": sec(settings), "checks": sec(checks)}, now=now)


class FakeGuest:
    """QEMU's end of one channel socket: accepts the relay, records what it sends.

    ``auto_reply`` answers each request with ``ok: true`` and ``{"method": ...}`` as result,
    the way a real agent would answer ``ping``.
    """

    def __init__(self, path: str, auto_reply: bool = False,
                 greeting: Message | None = None) -> None:
        self.path = path
        self.vm_id = str(uuid.uuid4())
        self.auto_reply = auto_reply
        #: Written first on every connection, as the agent does; with ACK_CAPABILITY in it,
        #: ``send_report`` keeps reports until the relay acknowledges them.
        self.greeting = greeting
        self.acks = ACK_CAPABILITY in ((greeting or {}).get("capabilities") or ())
        self.unacked = Unacked()
        self.waiting: Deque[Tuple[Tuple[str, int], bytes]] = collections.deque()
        self.dropped_waiting = 0
        #: (run_id, seq) -> when its acknowledgement arrived
        self.acked_at: Dict[Tuple[str, int], float] = {}
        self.requests: List[Message] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()

    async def start(self) -> FakeGuest:
        self._server = await asyncio.start_unix_server(self._accept, self.path)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writer = writer
        if self.greeting is not None:
            writer.write(encode(self.greeting))
        if self.acks:  # unacknowledged first, oldest first, then what waited meanwhile
            for key, line in self.unacked.take() + list(self.waiting):
                self._write_report(writer, key, line)
            self.waiting.clear()
        self._connected.set()
        decoder = LineDecoder()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for msg in decoder.feed(chunk):
                    if msg["type"] == "ack":
                        if self.unacked.ack(msg["run_id"], msg["seq"]):
                            self.acked_at[(msg["run_id"], msg["seq"])] = time.time()
                        continue
                    self.requests.append(msg)
                    if self.auto_reply and msg["type"] == "request":
                        writer.write(encode(make_reply(msg["id"], True,
                                                       {"method": msg["method"]})))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                self._connected = asyncio.Event()
            writer.close()

    async def connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _write_report(self, writer: asyncio.StreamWriter, key: Tuple[str, int],
                      line: bytes) -> None:
        writer.write(line)
        self.unacked.written(key, line)

    async def send_report(self, report: Message) -> bool:
        """Send a report the agent's way (needs a greeting with ACK_CAPABILITY): written now
        and kept until acknowledged, or queued until a relay connects. False when it only
        waits."""
        assert self.acks, "send_report follows the ack rule: give a greeting that asks for it"
        key, line = (report["run_id"], report["seq"]), encode(report)
        writer = self._writer
        if writer is None or writer.is_closing():
            self.waiting.append((key, line))
            while len(self.waiting) > QUEUE_MAX_MESSAGES:
                self.waiting.popleft()
                self.dropped_waiting += 1
            return False
        self.unacked.expire()
        self._write_report(writer, key, line)
        try:
            await asyncio.wait_for(writer.drain(), 10)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass  # kept in unacked: written again on the next connection
        return True

    async def send(self, *msgs: Message) -> None:
        await self.write(b"".join(encode(m) for m in msgs))

    async def write(self, data: bytes) -> None:
        await self.connected()
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def drop(self) -> None:
        """Close the current connection, as QEMU does when it exits."""
        writer, self._writer = self._writer, None
        self._connected = asyncio.Event()
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def close(self) -> None:
        await self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if os.path.exists(self.path):
            os.unlink(self.path)
