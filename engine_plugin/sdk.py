"""vmdiag for oVirt SDK users: diagnostics of VMs through an ``ovirtsdk4.Connection``.

The helpers reuse the connection's SSO token (``connection.authenticate()``), so the caller
sees exactly what oVirt lets that user see, and find the vmdiag service from the connection's
URL (``https://engine/ovirt-engine/api`` -> ``https://engine/vmdiag/api/v1/``). They need
nothing beyond the SDK and the Python standard library.

Usage::

    import ovirtsdk4
    from engine_plugin import sdk

    connection = ovirtsdk4.Connection(
        url="https://engine.example.com/ovirt-engine/api",
        username="admin@internal", password="...", ca_file="ca.pem")
    diag = sdk.vm_diagnostics(connection, "5f1c...-vm-id")
    print(diag.health.status, [f.message for f in diag.health.findings])
    for fc in diag.forecasts:
        print(fc.label, fc.status, fc.eta_s)
    fleet = sdk.fleet_summary(connection, health="critical")
    for vm in sdk.iter_fleet(connection, q="fs.fill", sort="health"):   # page by page
        print(vm.name, vm.health)
    series = sdk.history(connection, vm_id, "fs.used:/", since=time.time() - 86400,
                         until=time.time())
    diag = sdk.wait_for_report(connection, vm_id, deadline=time.time() + 120)

Errors::

    VmdiagError            anything that went wrong; ``str()`` says what to do
     +-- NotAuthorized     the engine's token is not accepted (log in again)       HTTP 401
     +-- NotFound          no such VM or host, or the user may not see it           HTTP 404
     +-- ServiceUnavailable  vmdiag or the engine did not answer (retry later)  503, network
     +-- DeadlineExceeded  wait_for_report ran out of time
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Tuple

from diag_protocol.vocabulary import findings_of

API_PATH = "/vmdiag/api/v1/"


class VmdiagError(Exception):
    """Base class of the helpers' errors; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotAuthorized(VmdiagError):
    """vmdiag did not accept the connection's SSO token."""


class NotFound(VmdiagError):
    """The VM or host does not exist, or the connection's user may not see it."""


class ServiceUnavailable(VmdiagError):
    """vmdiag (or the engine behind it) did not answer; retrying later may work."""


class DeadlineExceeded(VmdiagError):
    """``wait_for_report`` saw no new report before its deadline."""


# -- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VmRef:
    id: str
    name: str | None
    host_id: str | None
    host_name: str | None
    cluster: str | None
    status: str | None


@dataclass(frozen=True)
class AgentState:
    state: str  # reporting | silent | not_installed | vm_down
    version: str | None
    last_report_at: float | None
    silent_for_s: float | None


@dataclass(frozen=True)
class Finding:
    """One thing judged not ok (diag_protocol.vocabulary)."""

    code: str
    status: str  # warning | critical | unknown
    message: str
    metric: str | None = None

    @property
    def severity(self) -> str:
        """The old name of ``status`` (kept for existing scripts)."""
        return self.status


#: The old name of ``Finding`` (kept for existing scripts).
Reason = Finding


@dataclass(frozen=True)
class Health:
    status: str  # ok | warning | critical | unknown
    since: float | None
    findings: Tuple[Finding, ...]

    @property
    def reasons(self) -> Tuple[Finding, ...]:
        """The old name of ``findings`` (kept for existing scripts)."""
        return self.findings


@dataclass(frozen=True)
class Fit:
    slope: float
    intercept: float
    t0: float


@dataclass(frozen=True)
class Forecast:
    metric: str
    label: str
    kind: str
    status: str
    eta_s: float | None
    eta_at: float | None
    confidence: float
    trend_per_day: float
    capacity: float | None
    current: float
    fit: Fit | None


@dataclass(frozen=True)
class VmDiagnostics:
    vm: VmRef
    agent: AgentState
    health: Health
    forecasts: Tuple[Forecast, ...]
    report: Dict[str, Any] | None  # the latest report message (see diag_protocol)
    received_at: float | None


@dataclass(frozen=True)
class FleetVm:
    id: str
    name: str | None
    host_id: str | None
    host_name: str | None
    cluster: str | None
    health: str
    last_report_at: float | None
    findings: Tuple[Finding, ...]  # the most severe few, worst first

    @property
    def worst_findings(self) -> Tuple[Finding, ...]:
        """The old name of ``findings`` (kept for existing scripts)."""
        return self.findings


@dataclass(frozen=True)
class FleetSummary:
    counts: Dict[str, int]
    vms: Tuple[FleetVm, ...] = field(default_factory=tuple)
    #: VMs in scope (all the user may see, or all on the host), and those matching the filters
    total: int | None = None
    matched: int | None = None


@dataclass(frozen=True)
class FleetPage:
    """One page of a fleet or host list (``fleet_page``); ``next_cursor`` is None on the
    last page."""

    counts: Dict[str, int]
    total: int
    matched: int
    vms: Tuple[FleetVm, ...]
    first: int
    last: int
    next_cursor: str | None


@dataclass(frozen=True)
class History:
    vm_id: str
    metric: str
    resolution: str  # raw | 5m
    points: Tuple[Tuple[float, float], ...]
    forecast: Forecast | None
    unit: str | None = None  # a unit of diag_protocol.units (bytes, percent, bits_per_second)


def _forecast(doc: Mapping[str, Any] | None) -> Forecast | None:
    if not doc:
        return None
    fit = doc.get("fit")
    return Forecast(
        metric=doc["metric"], label=doc.get("label") or doc["metric"], kind=doc.get("kind", ""),
        status=doc.get("status", "ok"), eta_s=doc.get("eta_s"), eta_at=doc.get("eta_at"),
        confidence=float(doc.get("confidence") or 0.0),
        trend_per_day=float(doc.get("trend_per_day") or 0.0), capacity=doc.get("capacity"),
        current=float(doc.get("current") or 0.0),
        fit=Fit(float(fit["slope"]), float(fit["intercept"]), float(fit["t0"])) if fit else None)


def _diagnostics(doc: Mapping[str, Any]) -> VmDiagnostics:
    vm, agent, health = doc["vm"], doc["agent"], doc["health"]
    return VmDiagnostics(
        vm=VmRef(vm["id"], vm.get("name"), vm.get("host_id"), vm.get("host_name"),
                 vm.get("cluster"), vm.get("status")),
        agent=AgentState(agent["state"], agent.get("version"), agent.get("last_report_at"),
                         agent.get("silent_for_s")),
        health=Health(health["status"], health.get("since"), _findings(health)),
        forecasts=tuple(f for f in (_forecast(d) for d in doc.get("forecasts") or ()) if f),
        report=doc.get("report"), received_at=doc.get("received_at"))


def _fleet_vms(doc: Mapping[str, Any]) -> Tuple[FleetVm, ...]:
    return tuple(
        FleetVm(v["id"], v.get("name"), v.get("host_id"), v.get("host_name"), v.get("cluster"),
                v.get("health", "unknown"), v.get("last_report_at"), _findings(v))
        for v in doc.get("vms") or ())


def _fleet(doc: Mapping[str, Any]) -> FleetSummary:
    return FleetSummary(counts=dict(doc.get("counts") or {}), vms=_fleet_vms(doc),
                        total=doc.get("total"), matched=doc.get("matched"))


def _fleet_page(doc: Mapping[str, Any]) -> FleetPage:
    page = doc.get("page") or {}
    vms = _fleet_vms(doc)
    return FleetPage(counts=dict(doc.get("counts") or {}), total=int(doc.get("total") or 0),
                     matched=int(doc.get("matched") or 0), vms=vms,
                     first=int(page.get("first") or 0), last=int(page.get("last") or 0),
                     next_cursor=page.get("next_cursor"))


def _findings(doc: Mapping[str, Any]) -> Tuple[Finding, ...]:
    """A document's findings, whether the service names them the current way or API 1's old
    way (``reasons``/``worst_findings`` with ``severity``)."""
    return tuple(Finding(str(f.get("code") or ""), f["status"], str(f.get("message") or ""),
                         f.get("metric")) for f in findings_of(doc))


# -- transport --------------------------------------------------------------------------------

def service_url(connection: Any, base_url: str | None = None) -> str:
    """The vmdiag API base for a connection: same scheme and host, path /vmdiag/api/v1/."""
    if base_url:
        return base_url.rstrip("/") + "/"
    parts = urllib.parse.urlsplit(connection.url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, API_PATH, "", ""))


def _ssl_context(connection: Any, ca_file: str | None) -> ssl.SSLContext:
    # ovirtsdk4 has no public accessor for its TLS settings; read them, as its own helpers do.
    if getattr(connection, "_insecure", False):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file or getattr(connection, "_ca_file", None))


def _get(connection: Any, path: str, params: Mapping[str, Any] | None = None,
         base_url: str | None = None, ca_file: str | None = None,
         timeout: float = 30.0) -> Any:
    url = service_url(connection, base_url) + path
    query = {k: v for k, v in (params or {}).items() if v is not None}
    if query:
        url += "?" + urllib.parse.urlencode(query)
    ctx = _ssl_context(connection, ca_file) if url.startswith("https:") else None
    for attempt in (1, 2):
        request = urllib.request.Request(url, headers={
            "Authorization": "Bearer %s" % connection.authenticate(),
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            message = _error_message(err)
            if err.code == 401 and attempt == 1:
                # The SSO token may have expired: any SDK call renews it when the connection
                # has credentials; then try once more with the new token.
                connection.test()
                continue
            if err.code == 401:
                raise NotAuthorized("vmdiag refused the SSO token (%s); create the connection "
                                    "again with valid credentials" % message, 401) from err
            if err.code == 404:
                raise NotFound(message, 404) from err
            if err.code in (502, 503, 504):
                raise ServiceUnavailable("vmdiag is unavailable (%s); retry later" % message,
                                         err.code) from err
            raise VmdiagError("vmdiag answered %d: %s" % (err.code, message), err.code) from err
        except (urllib.error.URLError, OSError) as err:
            raise ServiceUnavailable("cannot reach vmdiag at %s (%s); check that "
                                     "vmdiag-engine runs and Apache proxies /vmdiag/"
                                     % (url, getattr(err, "reason", err))) from err
    raise AssertionError("unreachable")


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read().decode("utf-8"))["error"]["message"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return err.reason if isinstance(err.reason, str) else str(err)


# -- helpers ----------------------------------------------------------------------------------

def vm_diagnostics(connection: Any, vm_id: str, **kw: Any) -> VmDiagnostics:
    """Latest diagnostics, health verdict and forecasts of one VM.

    ``diag = vm_diagnostics(connection, vm.id)``; raises NotFound for a VM the user may not
    see. Keyword ``base_url`` overrides the service URL, ``ca_file`` the CA bundle.
    """
    return _diagnostics(_get(connection, "vms/%s" % urllib.parse.quote(vm_id, safe=""), **kw))


def fleet_summary(connection: Any, health: str | None = None, host: str | None = None,
                  **kw: Any) -> FleetSummary:
    """Health of every VM the user may see; ``health`` ("critical" or "warning,critical")
    and ``host`` (id or name) narrow the list (``counts`` always covers all of them)."""
    return _fleet(_get(connection, "vms", {"health": health, "host": host}, **kw))


def fleet_page(connection: Any, host_id: str | None = None, cursor: str | None = None,
               per_page: int = 500, **filters: Any) -> FleetPage:
    """One page of the VMs the user may see (on ``host_id`` if given).

    ``filters``: ``health`` ("critical" or "warning,critical"), ``host``, ``cluster``, ``q``
    (text in names and findings), ``sort`` (health, name, cluster, host, last_report,
    finding), ``dir`` (asc, desc). Pass the page's ``next_cursor`` as ``cursor`` (with the
    same filters) for the next page; ``per_page`` is at most 500.
    """
    path = ("hosts/%s/vms" % urllib.parse.quote(host_id, safe="")) if host_id else "vms"
    params = dict(filters, per_page=per_page, cursor=cursor)
    kw = {k: params.pop(k) for k in ("base_url", "ca_file", "timeout") if k in params}
    return _fleet_page(_get(connection, path, params, **kw))


def iter_fleet(connection: Any, host_id: str | None = None, per_page: int = 500,
               **filters: Any) -> Iterator[FleetVm]:
    """Every VM the user may see (on ``host_id`` if given) that matches ``filters`` (as
    ``fleet_page``), fetched a page at a time::

        critical = [vm.name for vm in iter_fleet(connection, health="critical")]
    """
    cursor: str | None = None
    while True:
        page = fleet_page(connection, host_id, cursor, per_page, **filters)
        yield from page.vms
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def history(connection: Any, vm_id: str, metric: str, since: float, until: float,
            **kw: Any) -> History:
    """One metric's time series, e.g. ``history(c, vm_id, "fs.used:/", t - 86400, t)``."""
    doc = _get(connection, "vms/%s/history" % urllib.parse.quote(vm_id, safe=""),
               {"metric": metric, "since": since, "until": until}, **kw)
    return History(doc["vm_id"], doc["metric"], doc["resolution"],
                   tuple((float(t), float(v)) for t, v in doc.get("points") or ()),
                   _forecast(doc.get("forecast")), doc.get("unit"))


def wait_for_report(connection: Any, vm_id: str, deadline: float,
                    newer_than: float | None = None, poll_interval: float = 5.0,
                    **kw: Any) -> VmDiagnostics:
    """Wait until vmdiag has a report of the VM received after ``newer_than`` (default: now).

    ``deadline`` is a Unix time (``time.time() + 120``); DeadlineExceeded after it. Use it
    after starting a VM or installing the agent::

        vms_service.vm_service(vm_id).start()
        diag = wait_for_report(connection, vm_id, deadline=time.time() + 300)
    """
    since = time.time() if newer_than is None else newer_than
    while True:
        diag = vm_diagnostics(connection, vm_id, **kw)
        if diag.received_at is not None and diag.received_at > since:
            return diag
        remaining = deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded(
                "no report of VM %s reached vmdiag before the deadline (agent: %s); check the "
                "agent in the guest and the relay on the host" % (vm_id, diag.agent.state))
        time.sleep(min(poll_interval, remaining))
