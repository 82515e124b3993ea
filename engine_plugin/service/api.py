"""JSON API routes under ``/vmdiag/``: VM, fleet, host and history documents, health, metrics.

Errors are JSON ``{"error": {"code", "message"}}``: 400 for a bad query, 401 without a valid
oVirt SSO token, 404 for a VM/host that does not exist *or* that the user may not see, 503
when the engine or the store does not answer (retry later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..ovirt import EngineUnavailable, NotAuthenticated, OvirtError
from .documents import SIGNED_OUT, BadRequest, DocumentSource, unauthorized
from .export import filename as export_filename
from .export import fleet_csv
from .fleet_metrics import fleet_exposition
from .leadership import LEASE
from .listing import PAGING_PARAMS
from .metrics import CONTENT_TYPE, NetworkAllowList, ServiceMetrics

log = logging.getLogger("vmdiag.engine.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_HISTORY_S = 86400.0
#: Methods that label request metrics as themselves; any other is "other", so a client
#: inventing methods cannot add series without bound.
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def unauthorized_json() -> web.Response:
    exc = unauthorized(SIGNED_OUT)
    return web.Response(status=401, text=exc.text, content_type="application/json",
                        headers={"WWW-Authenticate": exc.headers["WWW-Authenticate"]})


def make_middleware(metrics: ServiceMetrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except BadRequest as err:
            status = 400
            return error(400, "bad_request", str(err))
        except NotAuthenticated:
            # the engine stopped accepting the token after it was checked (revoked, expired)
            status = 401
            return unauthorized_json()
        except EngineUnavailable as err:
            status = 503
            log.warning("engine unavailable: %s", err)
            return error(503, "engine_unavailable", "the oVirt engine did not answer; retry "
                         "in a minute (%s)" % err)
        except OvirtError as err:
            status = 502
            log.warning("engine error: %s", err)
            return error(502, "engine_error", str(err))
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal", "vmdiag failed; see the vmdiag-engine journal")
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            # the method is the client's word: only known ones become label values
            method = request.method if request.method in HTTP_METHODS else "other"
            metrics.http_latency.labels(name, method, str(status)).observe(
                time.monotonic() - started)
    return middleware


class ApiRoutes:
    """Handlers of the JSON API, bound to one ``DocumentSource``."""

    def __init__(self, source: DocumentSource, metrics: ServiceMetrics,
                 allow: NetworkAllowList, leases: Callable[[], Awaitable[Any]],
                 health_counts: Callable[[], Awaitable[Any]],
                 clock: Callable[[], float] = time.time,
                 fleet_verdicts: Callable[[], Awaitable[Any]] | None = None,
                 fleet_max_vms: int = 5000) -> None:
        """``leases`` reads the store's leases (a few rows: what ``/healthz`` asks the store);
        ``health_counts`` counts VMs per health status (every verdict: for ``/metrics``);
        ``fleet_verdicts`` gives the stored verdicts for [metrics] fleet."""
        self.source = source
        self.metrics = metrics
        self.allow = allow
        self.leases = leases
        self.health_counts = health_counts
        self.clock = clock
        self.fleet_verdicts = fleet_verdicts
        self.fleet_max_vms = fleet_max_vms

    def register(self, app: web.Application, prefix: str) -> None:
        r = app.router
        r.add_get(prefix + "/api/v1/vms", self.fleet)
        r.add_get(prefix + "/api/v1/vms.csv", self.fleet_csv)
        r.add_get(prefix + "/api/v1/vms/{vm_id}", self.vm)
        r.add_get(prefix + "/api/v1/vms/{vm_id}/history", self.history)
        r.add_get(prefix + "/api/v1/hosts/{host_id}/vms", self.host)
        r.add_get(prefix + "/healthz", self.healthz)
        r.add_get(prefix + "/metrics", self.metrics_page)

    async def fleet(self, request: web.Request) -> web.Response:
        user = await self.source.authenticate(request)
        return web.json_response(await self.source.fleet_summary(
            user, request.query, complete=not wants_partial(request)))

    async def fleet_csv(self, request: web.Request) -> web.Response:
        """The fleet list with the request's filters and sort, every matching VM, as CSV."""
        user = await self.source.authenticate(request)
        query = {k: v for k, v in request.query.items() if k not in PAGING_PARAMS}
        doc = await self.source.fleet_summary(user, query, complete=True)
        return web.Response(
            text=fleet_csv(doc["vms"]), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="%s"'
                     % export_filename(self.clock()),
                     "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    async def vm(self, request: web.Request) -> web.Response:
        user = await self.source.authenticate(request)
        doc = await self.source.vm_document(user, request.match_info["vm_id"])
        if doc is None:
            return not_found("VM")
        return web.json_response(doc)

    async def host(self, request: web.Request) -> web.Response:
        user = await self.source.authenticate(request)
        doc = await self.source.host_summary(user, request.match_info["host_id"],
                                             request.query,
                                             complete=not wants_partial(request))
        if doc is None:
            return not_found("host")
        return web.json_response(doc)

    async def history(self, request: web.Request) -> web.Response:
        user = await self.source.authenticate(request)
        now = self.clock()
        until = query_float(request, "until", now)
        since = query_float(request, "since", until - DEFAULT_HISTORY_S)
        metric = request.query.get("metric", "")
        doc = await self.source.history(user, request.match_info["vm_id"], metric, since, until)
        if doc is None:
            return not_found("VM")
        return web.json_response(doc)

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the store answers a query of a few rows (its leases, never every verdict:
        load balancers poll this), and which instance holds the once-only duties."""
        try:
            leases = await asyncio.wait_for(self.leases(), 10)
        except Exception as err:
            return web.json_response({"status": "error", "store": "unavailable: %s"
                                      % type(err).__name__}, status=503)
        duties = leases.get(LEASE) if isinstance(leases, dict) else None
        leader = duties["holder"] if duties and duties["expires_in"] > 0 else None
        return web.json_response({"status": "ok", "store": "ok", "leader": leader})

    async def metrics_page(self, request: web.Request) -> web.Response:
        # Behind Apache the peer is the proxy; its X-Forwarded-For (last entry, the one Apache
        # appended) is the real client. The API listener is on loopback, so nobody else can
        # set that header without going through Apache.
        forwarded = request.headers.get("X-Forwarded-For")
        client = forwarded.split(",")[-1].strip() if forwarded else request.remote
        if not self.allow.allows(client):
            return error(403, "forbidden", "metrics are served only to [metrics] allow; add "
                         "the scraper's address there")
        try:
            counts = await self.health_counts()
        except Exception:  # the store's state is itself in the metrics (healthz too)
            counts = None
        if isinstance(counts, dict):
            self.metrics.set_health_counts(counts)
        body = self.metrics.exposition()
        if self.fleet_verdicts is not None:
            try:
                verdicts = await self.fleet_verdicts()
            except Exception:  # noqa: BLE001 - the service's own metrics still answer
                verdicts = None
            if isinstance(verdicts, dict):
                body += fleet_exposition(verdicts, self.fleet_max_vms)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def wants_partial(request: web.Request) -> bool:
    """``partial=yes``: answer at once from the VMs read so far while a user's first list is
    still being read from the engine (``visible.complete`` false), instead of waiting for it
    (the default: a script's counts then cover everything the user may see)."""
    return request.query.get("partial", "").lower() in ("1", "yes", "true")


def not_found(what: str) -> web.Response:
    return error(404, "not_found", "no such %s, or your oVirt account may not see it" % what)


def query_float(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadRequest("%s=%r is not a Unix time in seconds" % (name, raw)) from None
