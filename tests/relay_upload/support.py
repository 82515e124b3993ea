"""Helpers of the upload tests: a real aiohttp ingest server over mutual TLS, the test PKI
shape, envelope factories."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from diag_protocol import make_envelope, make_report
from vdsm_hooks.config import UploadConfig

HOST_CN = "host-7.lab.example"
VMS = ("6f1c2a8e-0b7d-4c55-9e1a-3b2f8d4c7a10", "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d")


@dataclasses.dataclass
class Pki:
    ca: str
    cert: str
    key: str
    other_cert: str
    other_key: str
    other_ca: str
    server_ctx: ssl.SSLContext


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Responder = Callable[[List[Dict[str, Any]]], Optional[Tuple[int, Dict[str, str]]]]


Decider = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]


class IngestServer:
    """Stand-in for vmdiag-engine's ingest: dedups on (vm_id, run_id, seq) like the real one,
    and answers per envelope as the ingest contract says (docs/design.md).

    ``respond`` may return (status, headers) to override the 200; it sees the batch first, and
    ``process_before_fail`` makes a failing reply still store the batch (a lost reply).
    ``decide(envelope)`` may return a result (``{"outcome": "refused", ...}`` or ``retry``)
    instead of storing that envelope. ``legacy`` answers as engines before per-envelope
    outcomes did (``{"accepted": N}``).
    """

    def __init__(self, ssl_ctx: ssl.SSLContext) -> None:
        self.ssl_ctx = ssl_ctx
        self.port = free_port()
        self.url = "https://localhost:%d/ingest/v1/reports" % self.port
        self.requests: List[List[Dict[str, Any]]] = []
        self.unique: List[Dict[str, Any]] = []
        self.seen: set = set()
        self.peers: List[str] = []
        self.respond: Responder | None = None
        self.process_before_fail = False
        self.decide: Decider | None = None
        self.legacy = False
        #: Seconds the engine's clock (its Date header) is ahead of this machine's.
        self.clock_ahead = 0.0
        self._runner: web.AppRunner | None = None

    async def _ingest(self, request: web.Request) -> web.Response:
        body = await request.json()
        batch = body["envelopes"]
        self.requests.append(batch)
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        self.peers.append(dict(x[0] for x in cert["subject"]).get("commonName", "") if cert else "")
        override = self.respond(batch) if self.respond else None
        results = []
        if override is None or self.process_before_fail:
            for env in batch:
                decided = self.decide(env) if self.decide else None
                if decided is not None:
                    results.append(decided)
                    continue
                key = (env["vm_id"], env["report"]["run_id"], env["report"]["seq"])
                if key not in self.seen:
                    self.seen.add(key)
                    self.unique.append(env)
                    results.append({"outcome": "stored"})
                else:
                    results.append({"outcome": "duplicate"})
        if override is not None:
            status, headers = override
            return web.Response(status=status, headers=headers, text="refused by test")
        headers = {}
        if self.clock_ahead:
            headers["Date"] = email.utils.formatdate(time.time() + self.clock_ahead,
                                                     usegmt=True)
        if self.legacy:
            return web.json_response({"accepted": len(batch)}, headers=headers)
        counts = {o: sum(r["outcome"] == o for r in results)
                  for o in ("stored", "duplicate", "refused", "retry")}
        return web.json_response({"results": results, "stored": counts["stored"],
                                  "duplicates": counts["duplicate"],
                                  "refused": counts["refused"], "retry": counts["retry"]},
                                 headers=headers)

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/ingest/v1/reports", self._ingest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_ctx,
                           reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def keys(self) -> List[Tuple[str, str, int]]:
        return [(e["vm_id"], e["report"]["run_id"], e["report"]["seq"]) for e in self.unique]


def upload_cfg(tmp_path: Path, url: str, pki: Pki, **overrides: Any) -> UploadConfig:
    values = dict(enabled=True, url=url, cert=pki.cert, key=pki.key, ca=pki.ca,
                  batch_size=500, batch_interval=0.05, timeout=5.0,
                  spool_dir=str(tmp_path / "spool"), spool_max_bytes=64 << 20,
                  retry_max_backoff=0.2)
    values.update(overrides)
    return UploadConfig(**values)


def envelopes(count: int, run_id: str = "run-a", start: int = 0,
              padding: int = 0) -> List[Dict[str, Any]]:
    """Reports of two VMs interleaved, seq growing per VM, optionally padded to a size."""
    out = []
    for i in range(start, start + count):
        vm = VMS[i % 2]
        report = make_report("boot-1", run_id, i, {"checks": {
            "collected_at": 1700000000.0 + i, "duration_ms": 1.5, "errors": [],
            "data": {"results": [{"id": "fs.fill:/", "name": "Root file system",
                                  "status": "ok", "message": "x" * padding,
                                  "value": 41.0, "threshold": 90.0}]}}},
            now=1700000000.0 + i)
        out.append(make_envelope(HOST_CN, vm, report, received_at=1700000001.0 + i))
    return out


def keys_of(envs: List[Dict[str, Any]]) -> List[Tuple[str, str, int]]:
    return [(e["vm_id"], e["report"]["run_id"], e["report"]["seq"]) for e in envs]


async def until(condition: Callable[[], bool], timeout: float = 30.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        await asyncio.sleep(0.02)


def spool_files(cfg: UploadConfig) -> List[Path]:
    return sorted(Path(cfg.spool_dir).glob("*.seg"))

