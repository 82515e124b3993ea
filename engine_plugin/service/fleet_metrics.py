"""The fleet in ``/vmdiag/metrics``: per VM health and forecast time left (``[metrics] fleet``).

Off by default: ``/vmdiag/metrics`` needs no user token (only ``[metrics] allow``), and with
the fleet it lists every VM's id, whatever oVirt would let the scraper's users see. Built at
each scrape from the stored verdicts, in a registry of its own, appended to the service's own
metrics. Bounds (docs/prometheus.md): at most ``[metrics] max_vms`` VMs (sorted by id) and
``MAX_FORECASTS`` forecasts per VM; what is left out is counted in
``vmdiag_fleet_metrics_omitted``. Forecast metric names carry guest words (a mount point):
cleaned and cut at ``MAX_LABEL`` characters, escaped by prometheus_client.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Set

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from diag_protocol import prometheus_name
from diag_protocol.clean import clean_string
from diag_protocol.units import as_number
from diag_protocol.vocabulary import STATUSES, status_of

MAX_FORECASTS = 16
MAX_LABEL = 128


class _Fleet:
    def __init__(self, verdicts: Mapping[str, Mapping[str, Any]], max_vms: int) -> None:
        self.verdicts = verdicts
        self.max_vms = max_vms

    def collect(self) -> Iterator[Metric]:
        vm_ids = sorted(self.verdicts)
        omitted_vms = max(0, len(vm_ids) - self.max_vms)
        health = GaugeMetricFamily(
            "vmdiag_fleet_vm_health", "Each VM's health verdict on the engine: 1 for its "
            "status, 0 for the others.", labels=["vm_id", "status"])
        left = GaugeMetricFamily(
            prometheus_name("vmdiag_fleet_vm_forecast_time_left", "seconds"),
            "Seconds until a forecast metric of a VM reaches its limit (only forecasts that "
            "reach it).", labels=["vm_id", "metric"])
        omitted_forecasts = 0
        for vm_id in vm_ids[: self.max_vms]:
            verdict = self.verdicts[vm_id] if isinstance(self.verdicts[vm_id], Mapping) else {}
            status = status_of(verdict.get("status"))
            vm = clean_string(str(vm_id), MAX_LABEL)
            for s in STATUSES:
                health.add_metric([vm, s], 1 if s == status else 0)
            seen: Set[str] = set()
            forecasts = verdict.get("forecasts")
            for forecast in forecasts if isinstance(forecasts, list) else ():
                eta = as_number(forecast.get("eta_s")) if isinstance(forecast, Mapping) \
                    else None
                if eta is None:
                    continue
                metric = clean_string(str(forecast.get("metric")), MAX_LABEL)
                if metric in seen:
                    continue
                if len(seen) >= MAX_FORECASTS:
                    omitted_forecasts += 1
                    continue
                seen.add(metric)
                left.add_metric([vm, metric], max(0.0, eta))
        yield health
        yield left
        omitted = GaugeMetricFamily("vmdiag_fleet_metrics_omitted", "Fleet items left out by "
                                    "the bounds ([metrics] max_vms; forecasts per VM).",
                                    labels=["what"])
        omitted.add_metric(["vms"], omitted_vms)
        omitted.add_metric(["forecasts"], omitted_forecasts)
        yield omitted


def fleet_exposition(verdicts: Mapping[str, Mapping[str, Any]], max_vms: int) -> bytes:
    """The fleet metrics of ``verdicts`` (the store's ``verdicts()``) in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fleet(verdicts, max_vms))  # type: ignore[arg-type]
    return generate_latest(registry)
