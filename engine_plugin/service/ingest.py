"""The relay upload endpoint: TLS with required client certificates, validation, storage.

Who is the host? The relay's TLS client certificate is the only *authenticated* fact about
it: in oVirt every host holds a certificate signed by the engine CA whose subject CN is the
host's address (``/etc/pki/vdsm/certs/vdsmcert.pem``). An envelope's ``host_id`` is only a
claim. With ``[ingest] host_identity = certificate`` (the default) each envelope is recorded
under the certificate's CN, whatever it claimed (a difference is counted in
``vmdiag_ingest_host_id_mismatch`` and logged once per host an hour), so a relay cannot
attribute data to another host. With ``strict`` such envelopes are refused instead (reason
``host_mismatch``), for sites that want misconfigured relays to fail loudly.

Which VMs? With ``[ingest] ownership = ovirt`` and a service account, a host may report only
the VMs oVirt runs on it, or ran on it within ``migration_window`` (``ovirt.directory``); the
rest is refused (``not_this_host``, counted per host). A placement the directory does not know
yet (a VM that migrated or started since its last refresh) is answered ``retry`` and the
directory refreshed, so the relay sends it again a little later; a report is refused only on
a directory read at least ``max_clock_skew`` after the relay received it. Without a service account
(standalone) every certified host may report every VM: docs/design.md says what holds then.

Whose clock? The engine's: each batch is stored with the engine's receive time, which orders
reports across agent runs and measures silence; a relay's ``received_at`` is kept only up to
the engine's clock (``max_clock_skew`` beyond it is counted and logged).

Reply: one outcome per envelope (``diag_protocol.ingest``), 200 whenever the body is a batch.
Only a body that is no batch is 400, too big 413; a store that fails for the whole batch is
503, so the relay keeps its spool and retries; a report the store cannot hold is refused alone.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import ssl
import threading
import time
from typing import Any, Awaitable, Callable, Coroutine, Dict, Iterable, List, Tuple, Union

from aiohttp import web

from diag_protocol import ProtocolError, validate_envelope
from diag_protocol.ingest import (
    DUPLICATE,
    HOST_MISMATCH,
    INVALID,
    NOT_THIS_HOST,
    OUT_OF_RANGE,
    PLACEMENT_PENDING,
    REFUSED,
    RETRY,
    ROUTE,
    STORED,
    UNSTORABLE,
)

from .. import fastjson
from ..ovirt.directory import NOT_OWN, OWN, UNENFORCED, UNKNOWN, VmDirectory
from ..storage.errors import Unstorable
from .metrics import ServiceMetrics

log = logging.getLogger("vmdiag.engine.ingest")

Result = Dict[str, str]
#: Distinct (kind, host, detail) log lines remembered to log each once an hour; the oldest is
#: forgotten first, so peers cannot grow it.
MAX_LOGGED = 1024
LOG_EVERY_S = 3600.0


class OncePerHour:
    """Decides whether a warning keyed by peer input is logged now; bounded in size."""

    def __init__(self, size: int = MAX_LOGGED, every: float = LOG_EVERY_S) -> None:
        self.size = size
        self.every = every
        self._last: collections.OrderedDict[Tuple[str, ...], float] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, now: float, *key: str) -> bool:
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                return False
            self._last[key] = now
            self._last.move_to_end(key)
            while len(self._last) > self.size:
                self._last.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._last)


def refused(reason: str, message: str) -> Result:
    return {"outcome": REFUSED, "reason": reason, "message": message[:300]}


def server_ssl_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """A TLS server context that demands a client certificate signed by ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    for name, path in (("cert", cert), ("key", key), ("ca", ca)):
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise ValueError("[ingest] %s = %s cannot be read (%s); point it at the right PEM "
                             "file" % (name, path, err.strerror)) from err
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as err:
        raise ValueError("[ingest] cert = %s and key = %s do not form a usable key pair: %s"
                         % (cert, key, err)) from err
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as err:
        raise ValueError("[ingest] ca = %s holds no usable CA certificate: %s"
                         % (ca, err)) from err
    return ctx


def peer_common_name(request: web.Request) -> str | None:
    """The subject CN of the verified client certificate, or None."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class IngestHandler:
    """``POST /ingest/v1/reports``: one batch of envelopes from one relay."""

    def __init__(self, store_call: Callable[..., Awaitable[Any]], metrics: ServiceMetrics,
                 on_stored: Callable[[Iterable[str]], None],
                 executor: concurrent.futures.Executor, max_envelopes: int = 500,
                 host_identity: str = "certificate", directory: VmDirectory | None = None,
                 refresh_directory: Callable[[], Coroutine[Any, Any, Any]] | None = None,
                 max_clock_skew: float = 60.0,
                 clock: Callable[[], float] = time.time, process: str = "0") -> None:
        self.store_call = store_call
        self.executor = executor
        self.metrics = metrics
        self.on_stored = on_stored
        self.max_envelopes = max_envelopes
        self.host_identity = host_identity
        self.directory = directory
        self.refresh_directory = refresh_directory
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        #: which of the service's ingest processes this is ("0": the service's own)
        self.process = process
        self.log_once = OncePerHour()
        self._refreshing: asyncio.Task | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.metrics.ingest_process_requests.labels(self.process).inc()
        cn = peer_common_name(request)
        if cn is None:  # CERT_REQUIRED makes this unreachable; keep the guard explicit
            return self._error(403, "no_client_certificate",
                               "present a client certificate signed by the engine CA")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.ingest_requests.labels("too_large").inc()
            raise
        now = self.clock()
        # Decoding and validating a large batch is CPU work: keep it off the event loop so
        # the API stays responsive while relays upload.
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(self.executor, self.parse, raw, cn, now)
        if isinstance(parsed, web.Response):
            return parsed
        results, valid = parsed
        if any(r.get("reason") == PLACEMENT_PENDING for r in results if r):
            self._kick_refresh(now)
        try:
            stored = await self._store(valid, now)
        except Exception as err:
            log.exception("storing %d envelopes from %s failed", len(valid), cn)
            self.metrics.ingest_requests.labels("store_error").inc()
            return self._error(503, "store_unavailable",
                               "the store failed (%s); keep the batch and retry later"
                               % type(err).__name__)
        for (index, _), result in zip(valid, stored):
            results[index] = result
        counts = collections.Counter(r["outcome"] for r in results)
        self.metrics.ingest_requests.labels("ok").inc()
        for outcome, count in counts.items():
            self.metrics.ingest_envelopes.labels(outcome).inc(count)
        for result in stored:
            if result["outcome"] == REFUSED:
                self.metrics.ingest_rejected.labels(result["reason"]).inc()
        new_vms = {env["vm_id"] for (_, env), r in zip(valid, stored) if r["outcome"] == STORED}
        if new_vms:
            self.on_stored(new_vms)
        return web.json_response({
            "results": results, "stored": counts[STORED], "duplicates": counts[DUPLICATE],
            "refused": counts[REFUSED], "retry": counts[RETRY],
            # the answer before per-envelope results, for relays that read it
            "accepted": counts[STORED], "rejected": counts[REFUSED]})

    async def _store(self, valid: List[Tuple[int, Dict[str, Any]]], now: float
                     ) -> List[Result]:
        """Store ``valid``; a report the store cannot hold is isolated (halving the batch)
        and refused alone. Any other failure propagates: the store is unavailable."""
        if not valid:
            return []
        try:
            result = await self.store_call("ingest", [env for _, env in valid], now)
        except Unstorable as err:
            if len(valid) == 1:
                log.warning("the store cannot hold the report of VM %s: %s",
                            valid[0][1]["vm_id"], err)
                return [refused(UNSTORABLE, str(err))]
            half = len(valid) // 2
            return await self._store(valid[:half], now) + await self._store(valid[half:], now)
        self._count_dropped(result, now)
        return [{"outcome": outcome} for outcome in result.outcomes]

    def _count_dropped(self, result: Any, now: float) -> None:
        """Count the samples the store did not keep; a VM over its series cap is logged
        once an hour."""
        if result.stale_samples:
            self.metrics.samples_dropped.labels("stale").inc(result.stale_samples)
        if result.capped_samples:
            self.metrics.samples_dropped.labels("series_cap").inc(result.capped_samples)
        for vm_id in result.capped_vms:
            if self.log_once(now, "series_cap", vm_id):
                log.warning("VM %s reports more time series (mountpoints, interfaces, process "
                            "names) than [storage] max_series_per_vm allows; samples of its "
                            "new series are dropped (its reports are stored)", vm_id)

    async def close(self) -> None:
        """Wait for a directory refresh this handler started (the service is stopping)."""
        task = self._refreshing
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=30)

    def _kick_refresh(self, now: float) -> None:
        if (self.refresh_directory is None or self.directory is None
                or (self._refreshing is not None and not self._refreshing.done())
                or not self.directory.wanted(now)):
            return
        self._refreshing = asyncio.get_running_loop().create_task(self.refresh_directory())

    # -- CPU work, in the executor ----------------------------------------------------------

    def parse(self, raw: bytes, cn: str, now: float
              ) -> Union[web.Response, Tuple[List[Any], List[Tuple[int, Dict[str, Any]]]]]:
        """The batch in ``raw`` from the host ``cn``, received at ``now``: (a result per
        envelope, None where still to be stored; the (index, envelope) pairs to store), or
        the error response for a body that is no batch."""
        try:
            # diag_protocol.loads' result or error (numbers beyond 64 bits are refused), faster;
            # plain: the native gate found every envelope valid and clean as decoded
            body, plain = fastjson.loads_batch(raw)
        except RecursionError:
            self.metrics.ingest_requests.labels("bad_body").inc()
            return self._error(400, "too_deep", "the body nests deeper than JSON decoding "
                               "allows; send {\"envelopes\": [...]}")
        except (ValueError, UnicodeDecodeError) as err:
            self.metrics.ingest_requests.labels("bad_body").inc()
            return self._error(400, "bad_json", "the body is not JSON: %s" % str(err)[:200])
        envelopes = body.get("envelopes") if isinstance(body, dict) else None
        if not isinstance(envelopes, list):
            self.metrics.ingest_requests.labels("bad_body").inc()
            return self._error(400, "bad_body", 'send {"envelopes": [...]}')
        if len(envelopes) > self.max_envelopes:
            self.metrics.ingest_requests.labels("too_many").inc()
            return self._error(413, "too_many_envelopes",
                               "at most %d envelopes per request; split the batch"
                               % self.max_envelopes)
        results: List[Any] = []
        valid: List[Tuple[int, Dict[str, Any]]] = []
        for index, item in enumerate(envelopes):
            checked = self._check(item, cn, now, plain)
            if isinstance(checked, dict) and "outcome" in checked:
                results.append(checked)
                if checked["outcome"] == REFUSED:
                    self.metrics.ingest_rejected.labels(checked["reason"]).inc()
            else:
                results.append(None)
                valid.append((index, checked))
        return results, valid

    def _check(self, item: Any, cn: str, now: float, plain: bool = False) -> Dict[str, Any]:
        """The validated envelope, or its result (refused / retry). ``plain``: ``item`` is
        what ``validate_envelope`` would return (``fastjson.loads_batch``)."""
        try:
            # just decoded from the body: cleaned in place when the gate did not pass it
            env = item if plain else validate_envelope(item, owned=True)
        except ProtocolError as err:
            reason = OUT_OF_RANGE if err.reason == OUT_OF_RANGE else INVALID
            return refused(reason, "%s: %s" % (err.reason, err))
        if env["host_id"] != cn:
            self.metrics.host_id_mismatch.inc()
            if self.log_once(now, "host_id", cn, env["host_id"][:64]):
                log.warning("relay with certificate CN %r sends host_id %r; %s. Make the "
                            "relay use its certificate's CN as host_id.", cn,
                            env["host_id"][:64], "refusing" if self.host_identity == "strict"
                            else "recording the CN")
            if self.host_identity == "strict":
                return refused(HOST_MISMATCH, "host_id %r is not this certificate's CN %r"
                               % (env["host_id"][:64], cn))
            env["host_id"] = cn
        if self.directory is not None:
            placed = self.directory.placement(cn, env["vm_id"], now)
            # Refused only on a directory read after the report left the guest (and any
            # relay clock error): a VM that migrated here since the last read waits instead.
            sent = min(env["received_at"], now)
            if placed == NOT_OWN and self.directory.refreshed_since(sent + self.max_clock_skew):
                self.metrics.count_not_this_host(cn)
                if self.log_once(now, "not_this_host", cn):
                    log.warning("host %s sends reports of VMs oVirt does not run on it (e.g. "
                                "%s); refusing them", cn, env["vm_id"])
                return refused(NOT_THIS_HOST, "oVirt does not run VM %s on host %s"
                               % (env["vm_id"], cn))
            if placed == UNENFORCED:
                if self.log_once(now, "placement_unenforced"):
                    log.warning("the [ovirt] service account may not list VMs, so ingest "
                                "cannot check that a host reports only its own VMs and "
                                "accepts every host; give the account a read-only "
                                "administrator role, or set [ingest] ownership = any")
            elif placed != OWN:
                if placed == UNKNOWN and self.log_once(now, "placement_unknown"):
                    log.warning("the VM directory could not be read yet (%s); reports wait "
                                "in the relays' spools until it can",
                                self.directory.last_error or "not refreshed yet")
                return {"outcome": RETRY, "reason": PLACEMENT_PENDING}
        if env["received_at"] > now + self.max_clock_skew:
            self.metrics.clock_ahead.inc()
            if self.log_once(now, "clock", cn):
                log.warning("relay %s sends receive times %.0f s ahead of the engine's clock; "
                            "storing the engine's time instead. Check its time sync (chrony).",
                            cn, env["received_at"] - now)
        return env

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)


def configured_handler(cfg: Any, store_call: Callable[..., Awaitable[Any]],
                       metrics: ServiceMetrics, on_stored: Callable[[Iterable[str]], None],
                       executor: concurrent.futures.Executor, directory: VmDirectory | None,
                       refresh_directory: Callable[[], Coroutine[Any, Any, Any]] | None,
                       clock: Callable[[], float] = time.time, process: str = "0"
                       ) -> IngestHandler:
    """The handler ``[ingest]`` of ``cfg`` describes (the service's and each ingest
    process's); ``directory`` checks ownership with ``[ingest] ownership = ovirt``."""
    ownership = directory if cfg.ingest.ownership == "ovirt" else None
    return IngestHandler(store_call, metrics, on_stored, executor, cfg.ingest.max_envelopes,
                         cfg.ingest.host_identity, ownership, refresh_directory,
                         cfg.ingest.max_clock_skew, clock, process)


def make_ingest_app(handler: IngestHandler, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(ROUTE, handler.handle)
    return app


