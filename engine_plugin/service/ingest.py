"""The relay upload endpoint: TLS with required client certificates, validation, storage.

Who is the host? The relay's TLS client certificate is the only *authenticated* fact about
it: in oVirt every host holds a certificate signed by the engine CA whose subject CN is the
host's address (``/etc/pki/vdsm/certs/vdsmcert.pem``). An envelope's ``host_id`` is only a
claim. With ``[ingest] host_identity = certificate`` (the default) each envelope is recorded
under the certificate's CN, whatever it claimed (a difference is counted in
``vmdiag_ingest_host_id_mismatch`` and logged once per host), so a relay cannot attribute data
to another host. With ``strict`` such envelopes are rejected instead (reason
``host_mismatch``), for sites that want misconfigured relays to fail loudly.

What it cannot prevent: a host's relay can still send reports for any VM id (the store keeps
the recorded host with each report; comparing it with oVirt's host of the VM is future work).

Reply: ``{"accepted", "duplicates", "rejected"}``; invalid envelopes are dropped and counted,
the valid ones stored (ingest is idempotent on (vm_id, run_id, seq), so the relay may resend
a whole batch). A store failure answers 503 so the relay keeps its spool and retries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Set, Tuple, Union

from aiohttp import web

from diag_protocol import ProtocolError, loads, validate_envelope

from .metrics import ServiceMetrics

log = logging.getLogger("vmdiag.engine.ingest")

ROUTE = "/ingest/v1/reports"


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
                 host_identity: str = "certificate") -> None:
        self.store_call = store_call
        self.executor = executor
        self.metrics = metrics
        self.on_stored = on_stored
        self.max_envelopes = max_envelopes
        self.host_identity = host_identity
        self._mismatch_logged: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    async def handle(self, request: web.Request) -> web.Response:
        cn = peer_common_name(request)
        if cn is None:  # CERT_REQUIRED makes this unreachable; keep the guard explicit
            return self._error(403, "no_client_certificate",
                               "present a client certificate signed by the engine CA")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.ingest_requests.labels("too_large").inc()
            raise
        # Decoding and validating a large batch is CPU work: keep it off the event loop so
        # the API stays responsive while relays upload.
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(self.executor, self._parse, raw, cn)
        if isinstance(parsed, web.Response):
            return parsed
        valid, rejected = parsed
        try:
            result = await self.store_call("ingest", valid) if valid else None
        except Exception as err:
            log.exception("storing %d envelopes from %s failed", len(valid), cn)
            self.metrics.ingest_requests.labels("store_error").inc()
            return self._error(503, "store_unavailable",
                               "the store failed (%s); keep the batch and retry later"
                               % type(err).__name__)
        accepted = result.accepted if result is not None else 0
        duplicates = result.duplicates if result is not None else 0
        self.metrics.ingest_requests.labels("ok").inc()
        self.metrics.ingest_envelopes.labels("accepted").inc(accepted)
        self.metrics.ingest_envelopes.labels("duplicate").inc(duplicates)
        self.metrics.ingest_envelopes.labels("rejected").inc(rejected)
        if accepted:
            self.on_stored({env["vm_id"] for env in valid})
        return web.json_response({"accepted": accepted, "duplicates": duplicates,
                                  "rejected": rejected})

    def _parse(self, raw: bytes, cn: str) -> Union[web.Response, Tuple[List[Dict[str, Any]], int]]:
        try:
            body = loads(raw)  # diag_protocol's: numbers out of range are refused here
        except (ValueError, UnicodeDecodeError) as err:
            return self._error(400, "bad_json", "the body is not JSON: %s" % err)
        envelopes = body.get("envelopes") if isinstance(body, dict) else None
        if not isinstance(envelopes, list):
            return self._error(400, "bad_body", 'send {"envelopes": [...]}')
        if len(envelopes) > self.max_envelopes:
            self.metrics.ingest_requests.labels("too_many").inc()
            return self._error(413, "too_many_envelopes",
                               "at most %d envelopes per request; split the batch"
                               % self.max_envelopes)
        return self._validate(envelopes, cn)

    def _validate(self, envelopes: List[Any], cn: str) -> Tuple[List[Dict[str, Any]], int]:
        valid: List[Dict[str, Any]] = []
        rejected = 0
        for raw in envelopes:
            try:
                env = validate_envelope(raw)
            except ProtocolError as err:
                rejected += 1
                self.metrics.ingest_rejected.labels(err.reason).inc()
                continue
            if env["host_id"] != cn:
                self.metrics.host_id_mismatch.inc()
                with self._lock:
                    first = (cn, env["host_id"]) not in self._mismatch_logged
                    self._mismatch_logged.add((cn, env["host_id"]))
                if first:
                    log.warning("relay with certificate CN %r sends host_id %r; %s. Make the "
                                "relay use its certificate's CN as host_id.", cn,
                                env["host_id"], "rejecting" if self.host_identity == "strict"
                                else "recording the CN")
                if self.host_identity == "strict":
                    rejected += 1
                    self.metrics.ingest_rejected.labels("host_mismatch").inc()
                    continue
                env["host_id"] = cn
            valid.append(env)
        return valid, rejected

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)


def make_ingest_app(handler: IngestHandler, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(ROUTE, handler.handle)
    return app


