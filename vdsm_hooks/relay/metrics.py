"""Prometheus exposition of the relay: ``GET /metrics`` on ``[metrics] listen`` (off by default).

A custom collector reads the relay's cache at every scrape (no state kept between scrapes but
a memo of the numbers of each VM's latest report, so an unchanged report is not decoded again).
Names follow Prometheus' conventions through the vocabulary's units table
(``diag_protocol.units.prometheus_name``): base units (bytes, seconds, ratios from 0 to 1 where
the guest reports percent), ``_total`` on counters, and a status as one 0/1 series per
``status`` label (the enum pattern), so ``vmdiag_vm_health{status="critical"} == 1`` selects
the critical VMs. docs/prometheus.md lists every metric.

Bounds (docs/prometheus.md): at most ``[metrics] max_vms`` VMs (the first by name, the rest
counted in ``vmdiag_relay_metrics_omitted{what="vms"}``); per VM at most ``MAX_CHECKS`` checks,
``MAX_FILESYSTEMS`` filesystems and ``MAX_DROP_REASONS`` drop reasons, the rest counted in the
same gauge. Label values that come from a guest (check ids, mount points, agent version) are
cleaned of control characters and cut at ``MAX_LABEL`` characters; prometheus_client escapes
quotes, backslashes and line breaks.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from diag_protocol.clean import clean_string
from diag_protocol.units import as_number, prometheus_name
from diag_protocol.vocabulary import STATUSES, UNKNOWN, status_of, worst

from ..config import split_listen
from .cache import ReportCache, VMEntry

log = logging.getLogger("vmdiag.relay.metrics")

MAX_CHECKS = 32
MAX_FILESYSTEMS = 16
MAX_DROP_REASONS = 16
MAX_LABEL = 128


def label(value: Any) -> str:
    """A label value from a guest: printable, at most ``MAX_LABEL`` characters."""
    return clean_string(str(value), MAX_LABEL) if value is not None else ""


def _ratio(percent: Any) -> Optional[float]:
    number = as_number(percent)
    return None if number is None else number / 100.0


class ReportNumbers:
    """What the metrics need from one report, extracted once per report."""

    __slots__ = ("key", "health", "checks", "cpu", "memory", "filesystems", "omitted")

    def __init__(self, key: Tuple[Any, ...], report: Mapping[str, Any]) -> None:
        self.key = key
        sections = report.get("sections") or {}
        self.omitted = 0
        results = ((sections.get("checks") or {}).get("data") or {}).get("results") or []
        self.health = worst(r.get("status") for r in results) if results else UNKNOWN
        self.checks: List[Tuple[str, str]] = []
        seen = set()
        for result in results:
            check = label(result.get("id"))
            if check in seen:
                continue
            if len(self.checks) >= MAX_CHECKS:
                self.omitted += 1
                continue
            seen.add(check)
            self.checks.append((check, status_of(result.get("status"))))
        data = (sections.get("resources") or {}).get("data") or {}
        cpu = data.get("cpu") or {}
        memory = data.get("memory") or {}
        self.cpu = _ratio(cpu.get("percent"))
        self.memory = {key: as_number(memory.get(key)) for key in
                       ("total", "available", "swap_total", "swap_used")}
        self.filesystems: List[Tuple[str, Dict[str, Optional[float]]]] = []
        mounts = set()
        for fs in data.get("filesystems") or ():
            mount = label(fs.get("mountpoint"))
            if mount in mounts:
                continue
            if len(self.filesystems) >= MAX_FILESYSTEMS:
                self.omitted += 1
                continue
            mounts.add(mount)
            values = {key: as_number(fs.get(key)) for key in
                      ("total", "used", "free", "inodes_total", "inodes_used")}
            values["readonly"] = 1.0 if fs.get("readonly") is True else 0.0
            self.filesystems.append((mount, values))


class RelayCollector:
    """A prometheus_client collector over the relay's cache."""

    def __init__(self, cache: ReportCache, max_vms: int = 1000,
                 status: Any = None) -> None:
        """``status`` is a callable returning the daemon's ``status()`` extras (libvirt
        connection); optional, for tests."""
        self.cache = cache
        self.max_vms = max_vms
        self.status = status
        self._memo: Dict[str, ReportNumbers] = {}

    def numbers(self, entry: VMEntry) -> Optional[ReportNumbers]:
        summary = entry.summary
        if summary is None:
            return None
        key = (summary.run_id, summary.seq, summary.received_at)
        memo = self._memo.get(entry.vm_id)
        if memo is None or memo.key != key:
            report = entry.report()
            if report is None:
                return None
            memo = self._memo[entry.vm_id] = ReportNumbers(key, report)
        return memo

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        entries = sorted(self.cache, key=lambda e: (e.name or "", e.vm_id))
        omitted_vms = max(0, len(entries) - self.max_vms)
        entries = entries[: self.max_vms]
        for vm_id in set(self._memo) - {e.vm_id for e in entries}:
            del self._memo[vm_id]

        def gauge(base: str, unit: str, doc: str, labels: Iterable[str] = ("vm_id",)
                  ) -> GaugeMetricFamily:
            return GaugeMetricFamily(prometheus_name(base, unit), doc, labels=list(labels))

        def counter(base: str, doc: str, labels: Iterable[str] = ("vm_id",)
                    ) -> CounterMetricFamily:
            return CounterMetricFamily(base, doc, labels=list(labels))

        info = gauge("vmdiag_vm_info", "count", "One series per VM the relay follows (value "
                     "1): libvirt name and the agent's version.",
                     ("vm_id", "name", "agent_version"))
        up = gauge("vmdiag_vm_agent_up", "count", "1 when the VM's agent channel is connected "
                   "and the agent talks, else 0.")
        health = gauge("vmdiag_vm_health", "count", "The VM's health on this host, the worst "
                       "of its agent's checks (unknown without a report): 1 for the current "
                       "status, 0 for the others.", ("vm_id", "status"))
        check_status = gauge("vmdiag_vm_check_status", "count", "Each check of the latest "
                             "report: 1 for its status, 0 for the others.",
                             ("vm_id", "check", "status"))
        report_ts = gauge("vmdiag_vm_last_report_timestamp", "timestamp",
                          "When the relay received the VM's latest report.")
        report_age = gauge("vmdiag_vm_last_report_age", "seconds",
                           "Age of the VM's latest report, at scrape time.")
        cpu = gauge("vmdiag_vm_cpu_usage", "ratio", "Guest CPU use, all CPUs, 0 to 1.")
        mem_total = gauge("vmdiag_vm_memory_total", "bytes", "Guest memory.")
        mem_avail = gauge("vmdiag_vm_memory_available", "bytes", "Guest memory available.")
        swap_total = gauge("vmdiag_vm_swap_total", "bytes", "Guest swap.")
        swap_used = gauge("vmdiag_vm_swap_used", "bytes", "Guest swap in use.")
        fs_labels = ("vm_id", "mountpoint")
        fs_size = gauge("vmdiag_vm_filesystem_size", "bytes", "Filesystem size.", fs_labels)
        fs_used = gauge("vmdiag_vm_filesystem_used", "bytes", "Filesystem space used.",
                        fs_labels)
        fs_free = gauge("vmdiag_vm_filesystem_free", "bytes", "Filesystem space free for "
                        "unprivileged users.", fs_labels)
        fs_files = gauge("vmdiag_vm_filesystem_files", "count", "Filesystem inodes.",
                         fs_labels)
        fs_files_used = gauge("vmdiag_vm_filesystem_files_used", "count",
                              "Filesystem inodes in use.", fs_labels)
        fs_ro = gauge("vmdiag_vm_filesystem_readonly", "count", "1 when mounted read-only.",
                      fs_labels)
        reports = counter("vmdiag_vm_reports", "Reports taken from the VM's channel since "
                          "the relay started following it.")
        messages = counter("vmdiag_vm_messages", "Messages read from the VM's channel.")
        received = counter(prometheus_name("vmdiag_vm_received", "bytes"),
                           "Bytes read from the VM's channel.")
        dropped = counter("vmdiag_vm_dropped_messages", "Lines or messages from the VM "
                          "thrown away, by reason.", ("vm_id", "reason"))
        omitted = 0
        for entry in entries:
            vm = entry.vm_id
            info.add_metric([vm, label(entry.name), label(entry.agent_version)], 1)
            up.add_metric([vm], 1 if entry.session_state == "connected"
                          and entry.responsive else 0)
            numbers = self.numbers(entry)
            current = numbers.health if numbers is not None else UNKNOWN
            for status in STATUSES:
                health.add_metric([vm, status], 1 if status == current else 0)
            counters = entry.counters
            reports.add_metric([vm], counters.reports)
            messages.add_metric([vm], counters.messages)
            received.add_metric([vm], counters.bytes)
            reasons = sorted(counters.drops.items())
            omitted += max(0, len(reasons) - MAX_DROP_REASONS)
            for reason, count in reasons[:MAX_DROP_REASONS]:
                dropped.add_metric([vm, label(reason)], count)
            if numbers is None or entry.summary is None:
                continue
            omitted += numbers.omitted
            report_ts.add_metric([vm], entry.summary.received_at)
            report_age.add_metric([vm], max(0.0, now - entry.summary.received_at))
            for check, status in numbers.checks:
                for s in STATUSES:
                    check_status.add_metric([vm, check, s], 1 if s == status else 0)
            if numbers.cpu is not None:
                cpu.add_metric([vm], numbers.cpu)
            for family, key in ((mem_total, "total"), (mem_avail, "available"),
                                (swap_total, "swap_total"), (swap_used, "swap_used")):
                value = numbers.memory.get(key)
                if value is not None:
                    family.add_metric([vm], value)
            for mount, values in numbers.filesystems:
                for family, key in ((fs_size, "total"), (fs_used, "used"), (fs_free, "free"),
                                    (fs_files, "inodes_total"),
                                    (fs_files_used, "inodes_used"), (fs_ro, "readonly")):
                    value = values.get(key)
                    if value is not None:
                        family.add_metric([vm, mount], value)
        yield from (info, up, health, check_status, report_ts, report_age, cpu, mem_total,
                    mem_avail, swap_total, swap_used, fs_size, fs_used, fs_free, fs_files,
                    fs_files_used, fs_ro, reports, messages, received, dropped)
        vms = GaugeMetricFamily("vmdiag_relay_vms", "VMs the relay follows.")
        vms.add_metric([], len(entries) + omitted_vms)
        yield vms
        left = GaugeMetricFamily("vmdiag_relay_metrics_omitted", "Items left out of this "
                                 "exposition by its bounds (VMs beyond [metrics] max_vms; "
                                 "checks, filesystems and drop reasons beyond the per-VM "
                                 "caps).", labels=["what"])
        left.add_metric(["vms"], omitted_vms)
        left.add_metric(["per_vm_items"], omitted)
        yield left
        if self.status is not None:
            connected = GaugeMetricFamily("vmdiag_relay_libvirt_connected",
                                          "1 when the relay is connected to libvirt.")
            connected.add_metric([], 1 if self.status() else 0)
            yield connected


class MetricsServer:
    """``GET /metrics`` (and nothing else) on one address, in the relay's event loop."""

    def __init__(self, cache: ReportCache, listen: str, max_vms: int = 1000,
                 status: Any = None) -> None:
        self.host, self.port = split_listen(listen)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RelayCollector(cache, max_vms, status)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        self.scrapes = 0
        self._runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(err.errno, "cannot listen on %s:%d for [metrics] listen: %s"
                          % (self.host, self.port, err.strerror)) from err
        self._runner = runner
        address = runner.addresses[0]
        self.port = address[1]
        log.info("Prometheus metrics at http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
