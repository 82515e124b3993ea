"""The unit of every number in a report, and how each unit is shown and named.

``FIELDS`` maps each numeric field of the report sections (a path such as
``network.interfaces[].rx_bps``: section, keys, ``[]`` for a list's items) to its unit;
``UNITS`` maps each unit to its formatter and its Prometheus suffix. The agent's CLI, the
relay's CLI, the engine's pages and the metric names all format through here, so a value is
never shown in another unit than the one it was measured in (DESIGN.md: network rates are
bits per second on the wire, disk rates bytes per second). tests/protocol/test_units.py walks
a report with every field set and fails when a field is shown with another unit's formatter,
or when the schema gains a number this table does not know.

Formatters take a finite number and return a short text; ``format_value`` also takes
anything else (a field a collector left out, a hostile string) and returns ``missing``.
"""

import math
from typing import Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional, Tuple

MISSING = "\u2014"

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_BYTE_RATES = ("B/s", "kB/s", "MB/s", "GB/s", "TB/s")
_BIT_RATES = ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")


def _trim(value: float) -> str:
    """One decimal, without a trailing ".0"."""
    return ("%.1f" % value).rstrip("0").rstrip(".")


def fmt_bytes(value: float) -> str:
    """1536 -> '1.5 KiB': binary units, like df -h and the oVirt disk views."""
    sign = "-" if value < 0 else ""
    number = abs(float(value))
    unit = 0
    while number >= 1024 and unit < len(_BINARY) - 1:
        number /= 1024
        unit += 1
    if unit == 0:
        return "%s%d B" % (sign, round(number))
    return "%s%s %s" % (sign, _trim(number), _BINARY[unit])


def _decimal(value: float, names: Tuple[str, ...]) -> str:
    number = float(value)
    unit = 0
    while abs(number) >= 1000 and unit < len(names) - 1:
        number /= 1000
        unit += 1
    if unit == 0:
        return "%d %s" % (round(number), names[0])
    return "%.1f %s" % (number, names[unit])


def fmt_bytes_per_second(value: float) -> str:
    """1200000 -> '1.2 MB/s' (decimal units, as iostat and network tools show them)."""
    return _decimal(value, _BYTE_RATES)


def fmt_bits_per_second(value: float) -> str:
    """1250000 -> '1.2 Mbit/s' (decimal units, as link speeds are quoted)."""
    return _decimal(value, _BIT_RATES)


def fmt_megabits_per_second(value: float) -> str:
    """A link speed in Mbit/s (ethtool's unit): 10000 -> '10.0 Gbit/s'."""
    return _decimal(float(value) * 1e6, _BIT_RATES)


def fmt_percent(value: float) -> str:
    """96%, 0.5%: whole percent unless below 10."""
    value = float(value)
    if abs(value) >= 10 or value.is_integer():
        return "%.0f%%" % value
    return "%.1f%%" % value


def fmt_ratio(value: float) -> str:
    """A share from 0 to 1, shown as percent: 0.005 -> '0.5%'."""
    return fmt_percent(float(value) * 100.0)


def fmt_seconds(value: float) -> str:
    """Seconds -> '2 d 4 h', '35 min', '12 s': two units at most, the way people say it."""
    seconds = int(round(abs(float(value))))
    if seconds < 60:
        return "%d s" % seconds
    minutes = seconds // 60
    if minutes < 60:
        return "%d min" % minutes
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%d h %d min" % (hours, minutes) if minutes else "%d h" % hours
    days, hours = divmod(hours, 24)
    return "%d d %d h" % (days, hours) if hours else "%d d" % days


def fmt_milliseconds(value: float) -> str:
    """Latency in ms -> '12.3 ms' or '340 ms'."""
    value = float(value)
    return "%d ms" % round(value) if abs(value) >= 100 else "%.1f ms" % value


def fmt_timestamp(value: float) -> str:
    """Unix time -> '2025-11-25 22:04 UTC'."""
    import datetime  # only for showing a time; not on the guest agent's start path

    moment = datetime.datetime.fromtimestamp(float(value), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def fmt_count(value: float) -> str:
    """How many of something: 12345 -> '12,345'."""
    value = float(value)
    return "{:,}".format(int(value)) if value.is_integer() else "{:,.1f}".format(value)


def fmt_number(value: float) -> str:
    """A plain number with its unit given by context (a load average, a port, a pid)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return "%d" % value
    return "%.2f" % value


def fmt_pages_per_second(value: float) -> str:
    return "%s pages/s" % fmt_count(round(float(value)))


def fmt_operations_per_second(value: float) -> str:
    return "%s IO/s" % fmt_count(round(float(value)))


class Unit(NamedTuple):
    name: str
    #: Suffix of a Prometheus metric in this unit ("" for plain numbers): base units only.
    prometheus_suffix: str
    #: Multiply by this to get the Prometheus base unit (milliseconds -> seconds).
    to_base: float
    doc: str


UNITS: Dict[str, Unit] = {u.name: u for u in (
    Unit("bytes", "_bytes", 1.0, "a size in bytes"),
    Unit("bytes_per_second", "_bytes_per_second", 1.0, "a rate in bytes per second"),
    Unit("bits_per_second", "_bits_per_second", 1.0, "a rate in bits per second (on the wire)"),
    Unit("megabits_per_second", "_bits_per_second", 1e6, "a link speed in Mbit/s"),
    Unit("percent", "_percent", 1.0, "percent, 0 to 100 (a process's CPU: of one CPU)"),
    Unit("ratio", "_ratio", 1.0, "a share from 0 to 1"),
    Unit("seconds", "_seconds", 1.0, "a duration in seconds"),
    Unit("milliseconds", "_seconds", 0.001, "a duration in milliseconds"),
    Unit("timestamp", "_timestamp_seconds", 1.0, "a Unix time in seconds"),
    Unit("count", "", 1.0, "how many of something"),
    Unit("number", "", 1.0, "a number whose meaning the field gives (load, port, pid)"),
    Unit("pages_per_second", "_pages_per_second", 1.0, "memory pages per second"),
    Unit("operations_per_second", "_operations_per_second", 1.0, "I/O operations per second"),
)}

#: The formatter of each unit. ``format_value`` looks it up at every call.
FORMATTERS: Dict[str, Callable[[float], str]] = {
    "bytes": fmt_bytes,
    "bytes_per_second": fmt_bytes_per_second,
    "bits_per_second": fmt_bits_per_second,
    "megabits_per_second": fmt_megabits_per_second,
    "percent": fmt_percent,
    "ratio": fmt_ratio,
    "seconds": fmt_seconds,
    "milliseconds": fmt_milliseconds,
    "timestamp": fmt_timestamp,
    "count": fmt_count,
    "number": fmt_number,
    "pages_per_second": fmt_pages_per_second,
    "operations_per_second": fmt_operations_per_second,
}

_PROCESS = {"pid": "number", "cpu_percent": "percent", "rss": "bytes",
            "memory_percent": "percent"}

#: The unit of every numeric field of the report sections (``[]``: each item of a list).
FIELDS: Dict[str, str] = {}


def _add(prefix: str, units: Mapping[str, str]) -> None:
    for key, unit in units.items():
        FIELDS[prefix + key] = unit


_add("network.interfaces[].", {
    "mtu": "number", "speed_mbps": "megabits_per_second",
    "rx_bytes": "bytes", "tx_bytes": "bytes", "rx_packets": "count", "tx_packets": "count",
    "rx_errors": "count", "tx_errors": "count", "rx_dropped": "count", "tx_dropped": "count",
    "rx_bps": "bits_per_second", "tx_bps": "bits_per_second",
    "error_rate": "ratio", "drop_rate": "ratio"})
_add("network.interfaces[].addresses[].", {"prefixlen": "number"})
_add("network.routes[].", {"metric": "number"})
_add("network.probes[].", {"latency_ms": "milliseconds"})
_add("network.listening[].", {"port": "number", "pid": "number"})
_add("resources.cpu.", {"count": "count", "percent": "percent", "user": "percent",
                        "system": "percent", "iowait": "percent", "steal": "percent",
                        "idle": "percent", "per_cpu[].percent": "percent",
                        "per_cpu[].iowait": "percent", "per_cpu[].steal": "percent",
                        "load[]": "number"})
_add("resources.memory.", {"total": "bytes", "available": "bytes", "used": "bytes",
                           "percent": "percent", "swap_total": "bytes", "swap_used": "bytes",
                           "swap_percent": "percent", "swap_in_per_s": "pages_per_second",
                           "swap_out_per_s": "pages_per_second"})
for _kind in ("cpu", "memory", "io"):
    _add("resources.pressure.%s." % _kind, {k: "percent" for k in (
        "some_avg10", "some_avg60", "full_avg10", "full_avg60")})
_add("resources.filesystems[].", {"total": "bytes", "used": "bytes", "free": "bytes",
                                  "percent": "percent", "inodes_total": "count",
                                  "inodes_used": "count", "inodes_percent": "percent"})
_add("resources.disks[].", {"read_bps": "bytes_per_second", "write_bps": "bytes_per_second",
                            "read_iops": "operations_per_second",
                            "write_iops": "operations_per_second",
                            "await_ms": "milliseconds", "util_percent": "percent"})
_add("resources.top_cpu[].", _PROCESS)
_add("resources.top_memory[].", _PROCESS)
_add("resources.fds.", {"open": "count", "max": "count"})
_add("resources.", {"uptime_s": "seconds", "boot_time": "timestamp", "oom_kills": "count"})
_add("applications.processes[].", {"count": "count"})
_add("applications.packages.", {"count": "count"})
_add("settings.time_sync.", {"offset_ms": "milliseconds"})
_add("settings.users[].", {"started": "timestamp"})
# A check's value and threshold are in the unit of what that check measures (its message says).
_add("checks.results[].", {"value": "number", "threshold": "number"})
del _kind


#: The engine's stored metrics (docs/storage.md) and the report field each is taken from; a name
#: ending in ":" is a prefix (``fs.used:/var``, ``net.rx_bps:eth0``).
METRICS: Dict[str, str] = {
    "cpu.percent": "resources.cpu.percent", "cpu.steal": "resources.cpu.steal",
    "cpu.iowait": "resources.cpu.iowait", "load.1": "resources.cpu.load[]",
    "memory.percent": "resources.memory.percent", "memory.used": "resources.memory.used",
    "memory.total": "resources.memory.total", "swap.used": "resources.memory.swap_used",
    "swap.total": "resources.memory.swap_total",
    "fs.used:": "resources.filesystems[].used", "fs.total:": "resources.filesystems[].total",
    "fs.inodes_used:": "resources.filesystems[].inodes_used",
    "fs.inodes_total:": "resources.filesystems[].inodes_total",
    "proc.rss:": "resources.top_memory[].rss",
    "net.rx_bps:": "network.interfaces[].rx_bps", "net.tx_bps:": "network.interfaces[].tx_bps",
}


def metric_unit(name: str) -> Optional[str]:
    """The unit of a stored metric (``fs.used:/var`` -> bytes), or None for an unknown name."""
    field = METRICS.get(name)
    if field is None and ":" in name:
        field = METRICS.get(name.split(":", 1)[0] + ":")
    return FIELDS.get(field) if field is not None else None


def unit_of(path: str) -> Optional[str]:
    """The unit of a report field (``network.interfaces[].rx_bps``), or None if not numeric."""
    return FIELDS.get(path)


def as_number(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None for missing, bool, NaN or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def format_value(unit: str, value: Any, missing: str = MISSING) -> str:
    """``value`` shown in ``unit`` (a key of ``UNITS``); ``missing`` for anything not a number."""
    number = as_number(value)
    if number is None:
        return missing
    return FORMATTERS[unit](number)


def format_field(path: str, value: Any, missing: str = MISSING) -> str:
    """A report field's value in its own unit (``FIELDS``)."""
    return format_value(FIELDS[path], value, missing)


def prometheus_name(base: str, unit: str, counter: bool = False) -> str:
    """``vmdiag_http_request_duration`` + seconds -> ``vmdiag_http_request_duration_seconds``:
    the unit in the name, as Prometheus' naming conventions ask (``_total`` for counters is
    added by the client library when it exposes them)."""
    name = base + UNITS[unit].prometheus_suffix
    return name + "_total" if counter else name


def walk(sections: Mapping[str, Any]) -> Iterator[Tuple[str, Any]]:
    """Every (field path, value) of the sections' data whose path is in ``FIELDS``."""
    def visit(path: str, value: Any) -> Iterator[Tuple[str, Any]]:
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from visit("%s.%s" % (path, key), item)
        elif isinstance(value, list):
            for item in value:
                yield from visit(path + "[]", item)
        elif path in FIELDS:
            yield path, value

    for name, section in sections.items():
        data = section.get("data") if isinstance(section, Mapping) else None
        if isinstance(data, Mapping):
            for key, item in data.items():
                yield from visit("%s.%s" % (name, key), item)
