"""Ingest on every core: processes beside the service's own that take relay connections
(``[ingest] processes``, issue 16).

One Python process decodes, validates and stores on one core at a time (its interpreter
lock), however many cores the machine has. With ``[ingest] processes = N`` (``auto``: the
cores this process may use) the service binds N listening sockets to the ingest address, all
with ``SO_REUSEPORT``, so the kernel hands each new relay connection to one of them: one it
serves itself, the other N-1 it hands to *ingest processes* it starts and supervises::

    service (pid P)                      ingest process 1..N-1 (children of P)
      API, UI, health pass, events,        TLS, decoding, validation, storing: nothing else
      retention, leases, its own ingest    its own store connection, metrics, VM directory
      reads each child's stdout  <-------  {"ready"}, {"stored": [vm ids]}, {"counters": [...]}
      holds the write end of its stdin --> EOF: stop (the service stops or died)

What a child does not do: no lease, no health pass, no events, no retention, no API. VMs it
stored go to the service at once (``stored``), which marks them for the health pass as its own
ingest does (a service that does not lead ignores marks; the leader finds them in the store
every 5 s, as for another instance). Its counters reach the service's ``/vmdiag/metrics``
every ``FORWARD_S`` (``vmdiag_ingest_process_requests`` says which process took a request).

Lifecycle: a child reads its orders (the configuration, which socket descriptors it inherited)
as one JSON line on stdin and then watches stdin: end of file, because the service stops or
died (even by SIGKILL: the kernel closes the pipe), makes it stop accepting, finish the
requests it holds and exit. It ignores SIGINT and SIGTERM (systemd and a terminal send them to
every process of the service; the service stops its children itself, so none is restarted
half-way through a stop). A child that exits unasked is started again (after ``RESTART_S``,
doubling up to ``MAX_RESTART_S`` while it keeps dying young); the service holds every
socket, so connections the kernel queued for it meanwhile wait for the new one instead of
being refused. The SQLite instance lock (``claim_instance``) stays with the service;
children open the store without it (and without migrating: the service did).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

from .cores import usable_cores
from .metrics import ServiceMetrics

log = logging.getLogger("vmdiag.engine.ingest")

#: How often a child sends its counters to the service, seconds.
FORWARD_S = 1.0
#: Delay before a child that ended unasked is started again, and the most it grows to.
RESTART_S = 0.5
MAX_RESTART_S = 30.0
#: A child that ran this long before it died counts as healthy (its restart delay resets).
HEALTHY_S = 60.0
#: How long the service waits for a child to listen at start, and to finish at stop, seconds.
START_WAIT_S = 60.0
STOP_WAIT_S = 90.0
#: Longest message line from a child (a batch's stored VM ids are a few KB).
LINE_LIMIT = 16 * 1024 * 1024
BACKLOG = 128
#: What the child runs: this module's ``child_main``; the folder holding ``engine_plugin`` is
#: appended to its path (after the standard library) when it is not importable otherwise.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD_CODE = ("import sys\nr = %r\nif r not in sys.path: sys.path.append(r)\n"
              "from engine_plugin.service.ingest_processes import child_main\nchild_main()\n"
              % PACKAGE_ROOT)


def process_count(setting: int) -> int:
    """``[ingest] processes``: -1 (auto) is one per core this process may use."""
    return setting if setting >= 1 else usable_cores()


def _addresses(host: str, port: int) -> List[Tuple[int, int, int, Any]]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    seen: set = set()
    out: List[Tuple[int, int, int, Any]] = []
    for family, kind, proto, _, addr in infos:
        if (family, addr) not in seen:
            seen.add((family, addr))
            out.append((family, kind, proto, addr))
    return out


def _listen_error(host: str, port: int, err: OSError) -> OSError:
    return OSError(err.errno, "cannot listen on %s:%d (%s); is another vmdiag-engine running, "
                   "or is the address wrong?" % (host, port, err.strerror))


def bind_sockets(host: str, port: int, processes: int, exclusive: bool
                 ) -> List[List[socket.socket]]:
    """``processes`` groups of listening sockets on ``host:port`` (one socket per address of
    ``host`` in each group), every one with ``SO_REUSEPORT``; port 0 picks one free port for
    all. ``exclusive`` (``[ingest] reuse_port = no``): refuse an address something else
    already listens on, as a single process without ``SO_REUSEPORT`` would."""
    addresses = _addresses(host, port)
    if exclusive and port:
        for family, kind, proto, addr in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(addr)
                except OSError as err:
                    raise _listen_error(host, port, err) from err
    groups: List[List[socket.socket]] = []
    try:
        for _ in range(processes):
            group: List[socket.socket] = []
            groups.append(group)
            for family, kind, proto, addr in addresses:
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and groups[0] and groups[0][0] is not sock:
                    addr = (addr[0], groups[0][0].getsockname()[1]) + tuple(addr[2:])
                try:
                    sock.bind(addr)
                except OSError as err:
                    raise _listen_error(host, port, err) from err
                sock.listen(BACKLOG)
                sock.setblocking(False)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def counter_deltas(metrics: ServiceMetrics, last: Dict[Tuple[str, str], float]
                   ) -> List[List[Any]]:
    """``[name, labels, increase]`` of every counter sample that grew since ``last`` (which
    is updated)."""
    out: List[List[Any]] = []
    for name, counter in metrics.counters().items():
        for family in counter.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = (name, json.dumps(sample.labels, sort_keys=True))
                grown = sample.value - last.get(key, 0.0)
                if grown > 0:
                    last[key] = sample.value
                    out.append([name, sample.labels, grown])
    return out


def add_counters(metrics: ServiceMetrics, deltas: Iterable[Any]) -> None:
    """Add a child's ``counter_deltas`` to the service's counters."""
    counters = metrics.counters()
    for name, labels, grown in deltas:
        counter = counters.get(name)
        if counter is None or not isinstance(grown, (int, float)) or grown <= 0:
            continue
        try:
            (counter.labels(**labels) if labels else counter).inc(grown)
        except (TypeError, ValueError):  # labels of another version of the service
            log.debug("ingest process counter %s%s not added", name, labels)


class _Child:
    def __init__(self, index: int, sockets: List[socket.socket]) -> None:
        self.index = index
        self.sockets = sockets
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self.task: asyncio.Task | None = None


class IngestProcesses:
    """Starts, watches and stops the ingest processes of one service (in its event loop)."""

    def __init__(self, config: Any, groups: List[List[socket.socket]],
                 metrics: ServiceMetrics, on_stored: Callable[[Iterable[str]], None]) -> None:
        self.config = config
        self.metrics = metrics
        self.on_stored = on_stored
        self.children = [_Child(index, group) for index, group in enumerate(groups, 1)]
        self._stopping = False

    def pids(self) -> List[int]:
        """Process ids of the children running now."""
        return [c.proc.pid for c in self.children
                if c.proc is not None and c.proc.returncode is None]

    async def start(self) -> None:
        """Start every child; return once each listens (raises if one cannot start)."""
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.task = loop.create_task(self._keep(child),
                                          name="vmdiag-ingest-%d" % child.index)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in self.children)),
                                   START_WAIT_S)
        except asyncio.TimeoutError:
            raise RuntimeError("an ingest process did not start listening within %.0f s; "
                               "its log is above, or set [ingest] processes = 1"
                               % START_WAIT_S) from None
        failed = [c.failed for c in self.children if c.failed]
        if failed:
            raise RuntimeError("%s; its log is above, or set [ingest] processes = 1"
                               % failed[0])

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        fds = [sock.fileno() for sock in child.sockets]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD_CODE, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, pass_fds=fds, limit=LINE_LIMIT)
        orders = {"config": self.config.as_dict(), "sources": self.config.sources,
                  "process": child.index, "fds": fds,
                  "log_level": logging.getLogger().getEffectiveLevel()}
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(orders, default=str).encode("utf-8") + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once: its exit is handled by the caller
        return proc

    async def _keep(self, child: _Child) -> None:
        delay = RESTART_S
        while not self._stopping:
            started = time.monotonic()
            try:
                proc = child.proc = await self._spawn(child)
            except OSError as err:
                child.failed = "cannot start ingest process %d: %s" % (child.index, err)
                child.ready.set()
                log.error("%s", child.failed)
                return
            if self._stopping and proc.stdin is not None:
                proc.stdin.close()  # stop() came while it started
            await self._follow(child, proc)
            code = await proc.wait()
            if self._stopping:
                return
            if not child.ready.is_set():
                child.failed = ("ingest process %d (pid %d) exited with %s before it listened"
                                % (child.index, proc.pid, code))
                child.ready.set()
                return
            delay = RESTART_S if time.monotonic() - started > HEALTHY_S \
                else min(delay * 2, MAX_RESTART_S)
            self.metrics.ingest_process_restarts.inc()
            log.error("ingest process %d (pid %d) ended with %s; starting a new one in %.1f s",
                      child.index, proc.pid, code, delay)
            await asyncio.sleep(delay)

    async def _follow(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        """Act on the child's messages until its stdout closes (it ended)."""
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.error("ingest process %d sent a line longer than %d bytes; stopping it",
                          child.index, LINE_LIMIT)
                proc.kill()
                return
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("ingest process %d wrote something that is no message: %r",
                            child.index, line[:200])
                continue
            if not isinstance(message, dict):
                continue
            try:
                self._act(child, proc, message)
            except Exception:  # a bug here must not end the supervision of this child
                log.exception("ingest process %d: a message could not be acted on",
                              child.index)

    def _act(self, child: _Child, proc: asyncio.subprocess.Process,
             message: Dict[str, Any]) -> None:
        """One message of a child: it listens, it stored VMs, its counters grew."""
        if message.get("ready"):
            log.info("ingest process %d (pid %d) takes relay connections", child.index,
                     proc.pid)
            child.ready.set()
        stored = message.get("stored")
        if isinstance(stored, list) and stored:
            self.on_stored([vm for vm in stored if isinstance(vm, str)])
        counters = message.get("counters")
        if isinstance(counters, list):
            add_counters(self.metrics, (c for c in counters
                                        if isinstance(c, list) and len(c) == 3))

    async def stop(self) -> None:
        """Tell every child to stop (end of its stdin), wait for them, kill what is left."""
        self._stopping = True
        for child in self.children:
            proc = child.proc
            if proc is not None and proc.stdin is not None:
                proc.stdin.close()
            if child.task is not None and (proc is None or proc.returncode is not None):
                child.task.cancel()  # waiting to start one again
        tasks = [c.task for c in self.children if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for child in self.children:
                if (child.task in pending and child.proc is not None
                        and child.proc.returncode is None):
                    log.warning("ingest process %d did not stop within %.0f s; killing it",
                                child.index, STOP_WAIT_S)
                    child.proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=10)
            for task in pending:
                task.cancel()
        for child in self.children:
            for sock in child.sockets:
                sock.close()


# -- the child ----------------------------------------------------------------------------

class _Parent:
    """The child's line to the service: blocking writes on stdout (one writer per pipe)."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self.gone = False

    def send(self, message: Dict[str, Any]) -> None:
        if self.gone:
            return
        data = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as err:
            if err.errno not in (errno.EPIPE, errno.EBADF):
                raise
            self.gone = True


def _read_orders(fd: int = 0) -> Dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    orders: Dict[str, Any] = json.loads(data)
    return orders


def child_main() -> None:
    """Entry point of an ingest process (``CHILD_CODE``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    orders = _read_orders()
    if orders is None:  # the service ended before it said what to do
        return
    logging.basicConfig(level=int(orders.get("log_level", logging.INFO)), stream=sys.stderr,
                        format="%%(levelname)s %%(name)s[ingest %d]: %%(message)s"
                        % int(orders["process"]))
    try:
        asyncio.run(_serve(orders))
    except Exception:
        log.exception("ingest process %s failed", orders.get("process"))
        sys.exit(1)


async def _serve(orders: Dict[str, Any]) -> None:
    from aiohttp import web

    from ..config import Config
    from ..ovirt.connection import EngineEndpoint
    from ..ovirt.directory import VmDirectory
    from .app import DIRECTORY_REFRESH_S, open_configured_store, service_account
    from .cli import tune_gc
    from .ingest import configured_handler, make_ingest_app, server_ssl_context

    cfg = Config(orders["config"], orders.get("sources", ()))
    index = int(orders["process"])
    loop = asyncio.get_running_loop()
    parent = _Parent()
    stop = asyncio.Event()

    def on_stdin() -> None:
        try:
            gone = not os.read(0, 4096)
        except OSError:
            gone = True
        if gone:
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, on_stdin)
    metrics = ServiceMetrics()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                     thread_name_prefix="vmdiag-store")
    engine_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                            thread_name_prefix="vmdiag-ovirt")
    ssl_ctx = server_ssl_context(cfg.ingest.cert, cfg.ingest.key, cfg.ingest.ca)
    store = await loop.run_in_executor(executor, open_configured_store, cfg, False)

    async def store_call(method: str, *args: Any) -> Any:
        return await loop.run_in_executor(executor, getattr(store, method), *args)

    directory: VmDirectory | None = None
    if cfg.ingest.ownership == "ovirt":
        endpoint = EngineEndpoint(cfg.ovirt.url, cfg.ovirt.ca_file or None, cfg.ovirt.timeout)
        try:
            directory = VmDirectory(service_account(cfg, endpoint), cfg.ingest.migration_window)
        except ValueError:
            directory = None

    async def refresh_directory() -> int:
        if directory is None:
            return 0
        return int(await loop.run_in_executor(engine_executor, directory.refresh))

    handler = configured_handler(
        cfg, store_call, metrics, lambda vms: parent.send({"stored": sorted(vms)}), executor,
        directory, refresh_directory if directory is not None else None, process=str(index))
    runner = web.AppRunner(make_ingest_app(handler, cfg.ingest.max_body_bytes),
                           access_log=None)
    await runner.setup()
    # placements known before it takes connections (the kernel queues them meanwhile)
    await refresh_directory()
    for fd in orders["fds"]:
        await web.SockSite(runner, socket.socket(fileno=int(fd)), ssl_context=ssl_ctx).start()
    tune_gc()
    parent.send({"ready": os.getpid()})
    last: Dict[Tuple[str, str], float] = {}

    async def keep_directory() -> None:
        while True:
            await asyncio.sleep(DIRECTORY_REFRESH_S)
            try:
                await refresh_directory()
            except Exception:
                log.exception("VM directory refresh failed; retrying in %.0f s",
                              DIRECTORY_REFRESH_S)

    refresher = loop.create_task(keep_directory()) if directory is not None else None
    try:
        while not stop.is_set() and not parent.gone:
            try:
                await asyncio.wait_for(stop.wait(), FORWARD_S)
            except asyncio.TimeoutError:
                pass
            deltas = counter_deltas(metrics, last)
            if deltas:
                parent.send({"counters": deltas})
    finally:
        if refresher is not None:
            refresher.cancel()
        await runner.cleanup()  # stops accepting, finishes the requests it holds
        await handler.close()
        parent.send({"counters": counter_deltas(metrics, last)})
        await loop.run_in_executor(executor, store.close)
        if directory is not None:
            await loop.run_in_executor(engine_executor, directory.account.close)
        executor.shutdown(wait=True)
        engine_executor.shutdown(wait=True)
