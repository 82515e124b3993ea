"""Turn numbers from reports into the short strings an administrator reads.

Every helper accepts ``None`` (and anything that is not a number) and returns an em dash, because
report fields are optional: a collector that could not read a value leaves it out, and the page
must still render.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

MISSING = "\u2014"

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DECIMAL_RATE_UNITS = ("B/s", "kB/s", "MB/s", "GB/s", "TB/s")


def as_number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None for missing, bool, NaN or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def human_bytes(value: Any) -> str:
    """1536 -> '1.5 KiB'. Sizes use binary units, like df -h and the oVirt disk views."""
    number = as_number(value)
    if number is None:
        return MISSING
    sign = "-" if number < 0 else ""
    number = abs(number)
    unit = 0
    while number >= 1024 and unit < len(_BINARY_UNITS) - 1:
        number /= 1024
        unit += 1
    if unit == 0:
        return "%s%d B" % (sign, round(number))
    text = ("%.1f" % number).rstrip("0").rstrip(".")
    return "%s%s %s" % (sign, text, _BINARY_UNITS[unit])


def human_rate(value: Any) -> str:
    """Bytes per second -> '1.2 MB/s' (decimal units, as network tools show them)."""
    number = as_number(value)
    if number is None:
        return MISSING
    unit = 0
    while abs(number) >= 1000 and unit < len(_DECIMAL_RATE_UNITS) - 1:
        number /= 1000
        unit += 1
    if unit == 0:
        return "%d B/s" % round(number)
    return "%.1f %s" % (number, _DECIMAL_RATE_UNITS[unit])


def human_duration(value: Any) -> str:
    """Seconds -> '2 d 4 h', '35 min', '12 s': two units at most, the way people say it."""
    number = as_number(value)
    if number is None:
        return MISSING
    seconds = int(round(abs(number)))
    if seconds < 60:
        return "%d s" % seconds
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return "%d min" % minutes
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%d h %d min" % (hours, minutes) if minutes else "%d h" % hours
    days, hours = divmod(hours, 24)
    return "%d d %d h" % (days, hours) if hours else "%d d" % days


def human_age(timestamp: Any, now: float) -> str:
    """A past unix time -> '3 min ago'; a future one -> 'in 2 d 4 h'."""
    number = as_number(timestamp)
    if number is None:
        return MISSING
    delta = now - number
    if abs(delta) < 5:
        return "just now"
    if delta > 0:
        return "%s ago" % human_duration(delta)
    return "in %s" % human_duration(-delta)


def iso_utc(timestamp: Any) -> str:
    """Unix time -> ISO 8601 in UTC, for <time datetime=...> (the page shows it in local time)."""
    number = as_number(timestamp)
    if number is None:
        return ""
    moment = _dt.datetime.fromtimestamp(number, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(timestamp: Any) -> str:
    """Unix time -> '2025-11-25 22:04 UTC': what shows before the page's script localises it."""
    number = as_number(timestamp)
    if number is None:
        return MISSING
    moment = _dt.datetime.fromtimestamp(number, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def percent(value: Any, digits: int = 0) -> str:
    """87.25 -> '87 %'."""
    number = as_number(value)
    if number is None:
        return MISSING
    return "%.*f %%" % (digits, number)


def number(value: Any, digits: int = 1) -> str:
    """A plain number with at most ``digits`` decimals; integers stay integers."""
    parsed = as_number(value)
    if parsed is None:
        return MISSING
    if parsed == int(parsed) and abs(parsed) < 1e15:
        return "%d" % int(parsed)
    return "%.*f" % (digits, parsed)


def milliseconds(value: Any) -> str:
    """Latency in ms -> '12.3 ms' or '0.4 ms'."""
    parsed = as_number(value)
    if parsed is None:
        return MISSING
    if parsed >= 100:
        return "%d ms" % round(parsed)
    return "%.1f ms" % parsed
