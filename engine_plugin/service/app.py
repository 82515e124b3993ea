"""Assembles the running service: store, oVirt access, both listeners, background tasks.

::

    service = EngineService(config.load())
    await service.start()       # API on [api] listen:port, TLS ingest on [ingest] listen:port
    ...
    await service.stop()

Ports 0 bind ephemeral ports (tests); ``api_port`` / ``ingest_port`` tell which.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from typing import Any, Callable, Dict, List, Tuple

from aiohttp import web

from diag_protocol import STATUSES

from ..config import Config
from ..ovirt import Visibility
from ..ovirt.connection import EngineEndpoint
from ..ovirt.directory import VmDirectory
from ..ovirt.events import EventDispatcher, EventOutbox, ServiceAccount
from ..tasks import cancel_and_wait
from .api import ApiRoutes, make_middleware
from .documents import DocumentSource
from .evaluation import HealthPass
from .ingest import IngestHandler, configured_handler, make_ingest_app, server_ssl_context
from .ingest_processes import IngestProcesses, bind_sockets, process_count
from .leadership import Leadership
from .metrics import NetworkAllowList, ServiceMetrics
from .pattern_events import PatternWatch
from .workers import EvaluationPool, worker_count

log = logging.getLogger("vmdiag.engine")

SWEEP_INTERVAL_S = 60.0
#: Most seconds of roll-up work per minute (an hour of 10,000 VMs' samples needs a few
#: minutes of it; docs/storage.md).
ROLL_UP_BUDGET_S = 20.0
DIRECTORY_REFRESH_S = 300.0


def open_configured_store(config: Config, migrate: bool = True) -> Any:
    """The store of ``[storage]``, migrated (unless ``migrate`` is false: an ingest process
    opens the store its service migrated)."""
    from ..storage import StorageConfig, open_store

    store = open_store(StorageConfig(
        url=config.storage.url, raw_retention_s=config.storage.raw_retention,
        rollup_retention_s=config.storage.rollup_retention,
        vm_retention_s=config.storage.vm_retention,
        max_series_per_vm=config.storage.max_series_per_vm))
    if migrate:
        store.migrate()
    return store


def read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip()
    except OSError as err:
        raise ValueError("%s %s cannot be read (%s); fix the path or its permissions"
                         % (what, path, err.strerror)) from err


def service_account(config: Config, endpoint: EngineEndpoint) -> ServiceAccount:
    o = config.ovirt
    token = read_secret(o.token_file, "[ovirt] token_file") if o.token_file else ""
    password = o.password
    if o.password_file:
        password = read_secret(o.password_file, "[ovirt] password_file")
    return ServiceAccount(endpoint, user=o.user, password=password, token=token)


class EngineService:
    """The whole service; tests drive it directly, ``vmdiag-engine serve`` runs it forever."""

    def __init__(self, config: Config, store: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.metrics = ServiceMetrics()
        self.store = store
        self._own_store = store is None
        self.store_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="vmdiag-store")
        self.engine_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, int(config.ovirt.workers)), thread_name_prefix="vmdiag-ovirt")
        self.endpoint = EngineEndpoint(config.ovirt.url, config.ovirt.ca_file or None,
                                       config.ovirt.timeout)
        self.visibility = Visibility(self.endpoint, self.engine_executor,
                                     ttl=config.ovirt.visibility_cache_ttl,
                                     max_age=config.ovirt.visibility_max_age,
                                     observe=self.metrics.observe_engine)
        self.directory: VmDirectory | None = None
        self.ingest_handler: IngestHandler | None = None
        #: the other ingest processes ([ingest] processes), None when there are none
        self.ingest_processes: IngestProcesses | None = None
        self.outbox: EventOutbox | None = None
        self.dispatcher: EventDispatcher | None = None
        self.health: HealthPass | None = None
        self.leadership: Leadership | None = None
        #: worker processes of the health pass ([evaluation] workers)
        self.pool: EvaluationPool | None = None
        self.source: DocumentSource | None = None
        self._runners: List[web.AppRunner] = []
        self._tasks: List[asyncio.Task] = []
        self.api_port = 0
        self.ingest_port = 0
        self._stopped = False

    async def _store_call(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_executor, getattr(self.store, method),
                                          *args)

    def names(self, vm_id: str) -> Tuple[str | None, str | None]:
        """(name, cluster) of a VM from the service account's directory, if it knows it."""
        return self.directory.lookup(vm_id) if self.directory is not None else (None, None)

    def thresholds(self, vm_id: str | None = None, vm_name: str | None = None,
                   cluster: str | None = None) -> Any:
        """Thresholds of a VM; names not given come from the directory."""
        if vm_id and not (vm_name or cluster):
            vm_name, cluster = self.names(vm_id)
        return self.config.thresholds_for(vm_id=vm_id, vm_name=vm_name, cluster=cluster)

    async def refresh_directory(self) -> int:
        if self.directory is None:
            return 0
        loop = asyncio.get_running_loop()
        known = await loop.run_in_executor(self.engine_executor, self.directory.refresh)
        if self.source is not None:
            # administrators' fleet lists are the directory's: prepare them now, not on the
            # first administrator's request
            await self.source.prepare_shared()
        return known

    async def fleet_verdicts(self) -> Dict[str, Dict[str, Any]]:
        """Every stored verdict, by vm_id (the fleet metrics)."""
        verdicts: Dict[str, Dict[str, Any]] = await self._store_call("verdicts")
        return verdicts

    async def health_counts(self) -> Dict[str, int]:
        verdicts = await self._store_call("verdicts")
        counts = {status: 0 for status in STATUSES}
        for verdict in verdicts.values():
            status = verdict.get("status")
            counts[status if status in counts else "unknown"] += 1
        return counts

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        ssl_ctx = server_ssl_context(cfg.ingest.cert, cfg.ingest.key, cfg.ingest.ca)
        if self.store is None:
            self.store = await loop.run_in_executor(self.store_executor,
                                                    open_configured_store, cfg)
            # A SQLite file serves one instance: a second one refuses to start here.
            await loop.run_in_executor(self.store_executor, self.store.claim_instance)
        leadership = self.leadership = Leadership(self.store)
        try:
            self.directory = VmDirectory(service_account(cfg, self.endpoint),
                                         cfg.ingest.migration_window, self.clock)
            # administrators' fleet lists come from the same directory (visibility.py)
            self.visibility.directory = self.directory
        except ValueError:
            if cfg.events.enabled:
                raise
            log.info("no [ovirt] service account: VM names and cluster thresholds unknown to "
                     "the health pass")
        if cfg.events.enabled:
            self.outbox = EventOutbox(self.store, cfg.events.min_status, self.clock)
            account = service_account(cfg, self.endpoint)
            self.dispatcher = EventDispatcher(
                self.outbox, account, self.engine_executor, cfg.events.retry_interval,
                on_result=lambda outcome: self.metrics.events.labels(outcome).inc(),
                may_run=leadership.is_leader)
        watch = (PatternWatch(self.store, self.directory, self.outbox)
                 if self.outbox is not None and self.directory is not None else None)
        workers = worker_count(cfg.evaluation.workers)
        if workers and self._own_store:
            self.pool = EvaluationPool(self.store.config, workers)
        self.health = HealthPass(self.store, self.thresholds, self.store_executor,
                                 self.metrics, self.outbox,
                                 self.dispatcher.wake if self.dispatcher else None, self.clock,
                                 self.names, watch.check if watch is not None else None,
                                 may_run=leadership.is_leader, pool=self.pool)
        self.source = DocumentSource(self.store, self.visibility, self.store_executor,
                                     self.thresholds, self.clock)

        api_app = web.Application(middlewares=[make_middleware(self.metrics)])
        ApiRoutes(self.source, self.metrics, NetworkAllowList(cfg.metrics.allow),
                  functools.partial(self._store_call, "leases"), self.health_counts, self.clock,
                  fleet_verdicts=self.fleet_verdicts if cfg.metrics.fleet else None,
                  fleet_max_vms=cfg.metrics.max_vms).register(api_app, cfg.api.prefix)
        self._setup_ui(api_app)
        if cfg.ingest.ownership != "ovirt" or self.directory is None:
            log.info("ingest accepts every VM's reports from every host with an engine-CA "
                     "certificate ([ingest] ownership = %s%s)", cfg.ingest.ownership,
                     ", no [ovirt] service account" if self.directory is None else "")
        ingest = configured_handler(cfg, self._store_call, self.metrics, self.health.mark,
                                    self.store_executor, self.directory,
                                    self.refresh_directory, self.clock)
        self.ingest_handler = ingest
        ingest_app = make_ingest_app(ingest, cfg.ingest.max_body_bytes)

        leadership.on_gain(self.health.restart_polling)
        leadership.on_gain(lambda: self.metrics.duties_leader.set(1))
        if self.dispatcher is not None:
            # deliver what an earlier run (or a leader that died) left in the outbox
            leadership.on_gain(self.dispatcher.wake)
        await leadership.renew()  # decided before serving: the first instance leads at once
        # Read oVirt's VM directory before serving too (as each ingest process does): until
        # it is read, ingest can place no VM and answers every report "retry", while /healthz
        # already told load balancers (and relays behind them) to send. A read that fails
        # (engine down) is logged, and ingest answers "retry" until one succeeds, as before.
        await self.refresh_directory()

        self.api_port = await self._listen(api_app, cfg.api.listen, cfg.api.port, None)
        # A store object handed in (tests) cannot be shared with other processes.
        processes = process_count(cfg.ingest.processes) if self._own_store else 1
        if processes > 1:
            groups = bind_sockets(cfg.ingest.listen, cfg.ingest.port, processes,
                                  exclusive=not cfg.ingest.reuse_port)
            self.ingest_processes = IngestProcesses(cfg, groups[1:], self.metrics,
                                                    self.health.mark)
            self.ingest_port = await self._listen(ingest_app, cfg.ingest.listen,
                                                  cfg.ingest.port, ssl_ctx, sockets=groups[0])
        else:
            self.ingest_port = await self._listen(ingest_app, cfg.ingest.listen,
                                                  cfg.ingest.port, ssl_ctx,
                                                  bool(cfg.ingest.reuse_port))
        if self.ingest_processes is not None:
            try:
                await self.ingest_processes.start()  # each refreshes its own directory first
            except BaseException:
                await self.ingest_processes.stop()
                raise
        health, dispatcher = self.health, self.dispatcher
        leadership.start()
        health.start()
        if dispatcher is not None:
            dispatcher.start()
        self._tasks.append(loop.create_task(self._periodic(), name="vmdiag-periodic"))
        self._tasks.append(loop.create_task(self.source.keep_fresh(),
                                            name="vmdiag-fleet-lists"))
        log.info("vmdiag-engine: API on %s:%d%s, ingest (TLS) on %s:%d in %d process(es), "
                 "store %s", cfg.api.listen, self.api_port, cfg.api.prefix, cfg.ingest.listen,
                 self.ingest_port, processes, getattr(self.store, "backend", "?"))

    def _setup_ui(self, app: web.Application) -> None:
        try:
            from .. import ui
        except ImportError as err:
            log.warning("the Diagnostics pages are not available: %s", err)
            return
        ui.setup_ui(app, self.source)

    async def _listen(self, app: web.Application, host: str, port: int, ssl_ctx: Any,
                      reuse_port: bool = False, sockets: List[Any] | None = None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        if sockets:  # bound already (bind_sockets)
            for sock in sockets:
                await web.SockSite(runner, sock, ssl_context=ssl_ctx).start()
            return int(runner.addresses[-1][1])
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True,
                           reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as err:
            raise OSError(err.errno, "cannot listen on %s:%d (%s); is another vmdiag-engine "
                          "running, or is the address wrong?" % (host, port, err.strerror)
                          ) from err
        return int(runner.addresses[-1][1])

    async def _periodic(self) -> None:
        """Silence sweep every minute and retention every ``[storage] retention_interval``."""
        next_retention = time.monotonic() + 60.0
        next_directory = time.monotonic() + DIRECTORY_REFRESH_S
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                if time.monotonic() >= next_directory:
                    next_directory = time.monotonic() + DIRECTORY_REFRESH_S
                    await self.refresh_directory()
                leader = self.leadership is None or self.leadership.is_leader()
                self.metrics.duties_leader.set(1 if leader else 0)
                if self.health is not None and leader:
                    await self.health.sweep()
                if leader:
                    # closed hours into rollups now, so the retention pass only drops them
                    rolled = await self._store_call("roll_up", self.clock(), ROLL_UP_BUDGET_S)
                    if rolled.get("steps"):
                        log.info("roll-up: %s", rolled)
                if leader and time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + self.config.storage.retention_interval
                    stats = await self._store_call("apply_retention", self.clock())
                    log.info("retention: %s", stats)
                if self.outbox is not None:
                    pending = await asyncio.get_running_loop().run_in_executor(
                        self.store_executor, self.outbox.pending)
                    self.metrics.event_outbox.set(len(pending))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic maintenance failed; retrying in a minute")

    async def stop(self) -> None:
        """Stop listening, finish background work and release the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

        async def stop_listening() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()
            self._runners.clear()
        # the ingest processes finish their requests meanwhile
        await asyncio.gather(stop_listening(), *(
            [self.ingest_processes.stop()] if self.ingest_processes is not None else []))
        await self.visibility.close()
        if self.ingest_handler is not None:
            await self.ingest_handler.close()
        if self.health is not None:
            await self.health.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.leadership is not None:
            await self.leadership.stop()  # after the duties stopped: hand over at once
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown)
        if self.directory is not None:
            await asyncio.get_running_loop().run_in_executor(self.engine_executor,
                                                             self.directory.account.close)
        if self.store is not None and self._own_store:
            await asyncio.get_running_loop().run_in_executor(self.store_executor,
                                                             self.store.close)
        self.store_executor.shutdown(wait=True)
        self.engine_executor.shutdown(wait=True)
