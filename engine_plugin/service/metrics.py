"""Prometheus metrics of the service, in a registry of its own (no process-global state).

``/vmdiag/metrics`` needs no user token, so it exposes counts only (no VM names or ids) and
answers only the networks in ``[metrics] allow``.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Set

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from diag_protocol import STATUSES, prometheus_name
from diag_protocol.ingest import OUTCOMES, REFUSED_REASONS

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Distinct host labels of per-host counters.
MAX_HOST_LABELS = 1000


class ServiceMetrics:
    """Every metric the service exports; one instance per running service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_requests = Counter(
            "vmdiag_ingest_requests", "Upload requests from relays, by outcome.",
            ["outcome"], registry=r)
        self.ingest_process_requests = Counter(
            "vmdiag_ingest_process_requests", "Upload requests taken by each ingest process of "
            "this service ('0' the service's own, '1'... the others of [ingest] processes).",
            ["process"], registry=r)
        self.ingest_process_restarts = Counter(
            "vmdiag_ingest_process_restarts", "Ingest processes ([ingest] processes) that "
            "ended unasked and were started again.", registry=r)
        self.ingest_envelopes = Counter(
            "vmdiag_ingest_envelopes", "Envelopes received, by result "
            "(stored, duplicate, refused, retry).", ["result"], registry=r)
        self.ingest_rejected = Counter(
            "vmdiag_ingest_rejected", "Envelopes refused for good, by reason.", ["reason"],
            registry=r)
        self.ingest_not_this_host = Counter(
            "vmdiag_ingest_not_this_host", "Envelopes refused because oVirt does not run "
            "the VM on the sending host, by host (certificate CN; at most %d hosts, the "
            "rest as \"other\")." % MAX_HOST_LABELS, ["host"], registry=r)
        self.samples_dropped = Counter(
            "vmdiag_ingest_samples_dropped", "Metric samples of stored reports that were not "
            "kept, by reason: series_cap (a new series of a VM that has [storage] "
            "max_series_per_vm already), stale (older than what retention rolled up).",
            ["reason"], registry=r)
        for reason in ("series_cap", "stale"):
            self.samples_dropped.labels(reason)
        self.clock_ahead = Counter(
            "vmdiag_ingest_clock_ahead", "Envelopes whose relay receive time was ahead of "
            "the engine's clock by more than [ingest] max_clock_skew (stored with the "
            "engine's time).", registry=r)
        self._host_labels: Set[str] = set()
        self.host_id_mismatch = Counter(
            "vmdiag_ingest_host_id_mismatch", "Envelopes whose host_id differed from the "
            "client certificate's CN.", registry=r)
        self.health_evaluations = Counter(
            "vmdiag_health_evaluations", "Health evaluations, by outcome.", ["outcome"],
            registry=r)
        self.vms_by_health = Gauge(
            "vmdiag_vms", "VMs with a stored verdict, by health status.", ["health"],
            registry=r)
        self.events = Counter(
            "vmdiag_events", "oVirt event delivery attempts, by outcome "
            "(sent, duplicate, rejected, failed).", ["outcome"], registry=r)
        self.events_planned = Counter(
            "vmdiag_events_planned", "oVirt events planned from health changes.", registry=r)
        self.event_outbox = Gauge(
            "vmdiag_event_outbox", "oVirt events waiting for delivery.", registry=r)
        self.duties_leader = Gauge(
            "vmdiag_duties_leader", "1 while this instance holds the duties lease (runs the "
            "health passes, oVirt events and retention for every instance), else 0.",
            registry=r)
        self.http_latency = Histogram(
            prometheus_name("vmdiag_http_request_duration", "seconds"), "API/UI request latency.",
            ["route", "method", "status"], registry=r)
        self.engine_latency = Histogram(
            prometheus_name("vmdiag_engine_request_duration", "seconds"),
            "Requests to the oVirt engine on behalf of users (permission checks), by kind and "
            "outcome.", ["kind", "outcome"],
            registry=r)
        for status in STATUSES:
            self.vms_by_health.labels(status).set(0)
        for outcome in ("sent", "duplicate", "rejected", "failed"):
            self.events.labels(outcome)
        for result in OUTCOMES:
            self.ingest_envelopes.labels(result)
        for reason in REFUSED_REASONS:
            self.ingest_rejected.labels(reason)

    def count_not_this_host(self, host: str) -> None:
        """Count a not_this_host refusal; labels stay bounded whatever hosts send."""
        if host not in self._host_labels:
            if len(self._host_labels) >= MAX_HOST_LABELS:
                host = "other"
            else:
                self._host_labels.add(host)
        self.ingest_not_this_host.labels(host).inc()

    def counters(self) -> Dict[str, Counter]:
        """Every counter, by its name without ``_total`` (to add an ingest process's
        counts)."""
        return {next(iter(c.describe())).name: c for c in vars(self).values()
                if isinstance(c, Counter)}

    def observe_engine(self, kind: str, seconds: float, outcome: str) -> None:
        self.engine_latency.labels(kind, outcome).observe(seconds)

    def set_health_counts(self, counts: Dict[str, int]) -> None:
        for status in STATUSES:
            self.vms_by_health.labels(status).set(counts.get(status, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class NetworkAllowList:
    """Is a peer address inside one of the configured CIDRs?"""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: List[ipaddress._BaseNetwork] = [
            ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)
