"""What the store takes out of a report at ingest: metric samples, hostname and worst checks.

Metric names are a contract with the health pass and the charts (docs/storage.md). A sample's
time is the collection time of the section it came from (falling back to the report time), so
a report that waited in the relay's spool still lands at the right place in the time series.
Fields a collector could not read are simply absent, and produce no sample.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Tuple

from diag_protocol.vocabulary import RANK, worst, worst_first

Sample = Tuple[str, float, float]

#: Longest metric name stored; longer names (absurd mountpoints) are skipped, not cut, so two
#: different long names can never collide.
MAX_METRIC_NAME = 200
#: Most non-ok checks kept on a VM's summary row.
MAX_WORST_CHECKS = 5

_RESOURCE_FIELDS = (
    ("cpu", "percent", "cpu.percent"),
    ("cpu", "steal", "cpu.steal"),
    ("cpu", "iowait", "cpu.iowait"),
    ("memory", "percent", "memory.percent"),
    ("memory", "used", "memory.used"),
    ("memory", "total", "memory.total"),
    ("memory", "swap_used", "swap.used"),
    ("memory", "swap_total", "swap.total"),
)
_FS_FIELDS = (("used", "fs.used:"), ("total", "fs.total:"),
              ("inodes_used", "fs.inodes_used:"), ("inodes_total", "fs.inodes_total:"))
_NET_FIELDS = (("rx_bps", "net.rx_bps:"), ("tx_bps", "net.tx_bps:"))


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (bools are not numbers here)."""
    kind = type(value)  # decoded JSON: exact types, and bool is not a number here
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double, from a relay that let it through
            return None
    return None


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def _section(report: Mapping[str, Any], name: str) -> Tuple[float | None, Dict[str, Any]]:
    """(sample time, data) of one section; time None when neither it nor the report has one."""
    section = _dict(_dict(report.get("sections")).get(name))
    when = _number(section.get("collected_at"))
    if when is None:
        when = _number(report.get("time"))
    return when, _dict(section.get("data"))


def extract_samples(report: Mapping[str, Any]) -> List[Sample]:
    """Every (metric, time, value) the report carries, in a stable order, names unique."""
    found: Dict[str, Tuple[float, float]] = {}

    def add(name: str, when: float | None, value: Any) -> None:
        number = _number(value)
        if when is None or number is None or len(name) > MAX_METRIC_NAME:
            return
        found[name] = (when, number)

    when, data = _section(report, "resources")
    if data:
        for group, key, name in _RESOURCE_FIELDS:
            add(name, when, _dict(data.get(group)).get(key))
        load = _list(_dict(data.get("cpu")).get("load"))
        if load:
            add("load.1", when, load[0])
        for fs in _list(data.get("filesystems")):
            mountpoint = _dict(fs).get("mountpoint")
            if isinstance(mountpoint, str) and mountpoint:
                for key, prefix in _FS_FIELDS:
                    add(prefix + mountpoint, when, fs.get(key))
        rss: Dict[str, float] = {}
        for item in _list(data.get("top_memory")):
            proc = _dict(item)
            pname, rss_value = proc.get("name"), _number(proc.get("rss"))
            if isinstance(pname, str) and pname and rss_value is not None:
                # Several processes may share a name (workers); their memory adds up.
                rss[pname] = rss.get(pname, 0.0) + rss_value
        for pname, total in rss.items():
            add("proc.rss:" + pname, when, total)

    when, data = _section(report, "network")
    for iface in _list(data.get("interfaces")):
        iface = _dict(iface)
        ifname = iface.get("name")
        if isinstance(ifname, str) and ifname:
            for key, prefix in _NET_FIELDS:
                add(prefix + ifname, when, iface.get(key))

    return [(name, when, value) for name, (when, value) in found.items()]


def hostname_of(report: Mapping[str, Any]) -> str | None:
    """The guest's hostname from the settings section, or None when that section failed."""
    _, data = _section(report, "settings")
    name = data.get("hostname")
    return name if isinstance(name, str) and name else None


def agent_version_of(envelope: Mapping[str, Any]) -> str | None:
    """The agent version if the relay passed one along (the report itself does not carry it)."""
    for source in (envelope, _dict(envelope.get("report"))):
        version = source.get("agent_version")
        if isinstance(version, str) and version:
            return version
    return None


def worst_checks(report: Mapping[str, Any]) -> Tuple[str, List[Dict[str, Any]]] | None:
    """(worst status, up to five non-ok results most severe first) of the checks section.

    None when the report has no checks section, so the caller keeps the previous findings
    instead of showing a failed collector as "all clear".
    """
    section = _dict(report.get("sections")).get("checks")
    if not isinstance(section, dict) or not isinstance(_dict(section.get("data")).get("results"),
                                                        list):
        return None
    results = [r for r in _list(section["data"]["results"])
               if isinstance(r, dict) and r.get("status") in RANK]
    bad = worst_first(sorted((r for r in results if r["status"] != "ok"),
                             key=lambda r: str(r.get("id", ""))))
    return worst(r["status"] for r in results), [
        {"status": r["status"], "id": r.get("id"), "message": r.get("message")}
        for r in bad[:MAX_WORST_CHECKS]]


def prefix_match(name: str, prefixes: Iterable[str]) -> bool:
    """True when ``name`` starts with any prefix (``"fs.used:"`` matches every mountpoint)."""
    return any(name.startswith(prefix) for prefix in prefixes)
