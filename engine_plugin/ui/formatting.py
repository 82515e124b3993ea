"""Turn numbers from reports into the short strings an administrator reads.

Units and their formatters are diag_protocol.units' (the template filters are named for them);
what is here is only about times relative to now.

Every helper accepts ``None`` (and anything that is not a number) and returns an em dash, because
report fields are optional: a collector that could not read a value leaves it out, and the page
must still render.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from diag_protocol import units

MISSING = units.MISSING
as_number = units.as_number


def human_bytes(value: Any) -> str:
    """1536 -> '1.5 KiB' (the ``bytes`` unit of diag_protocol.units)."""
    return units.format_value("bytes", value)


def human_duration(value: Any) -> str:
    """Seconds -> '2 d 4 h' (the ``seconds`` unit of diag_protocol.units)."""
    return units.format_value("seconds", value)


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
    return units.format_value("timestamp", timestamp)
