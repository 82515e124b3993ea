"""Every number is shown in the unit it was measured in (diag_protocol.units).

A report with every field of the schema set, each number distinct, is rendered by the VM page
and by ``vmdiag-agent report`` while every unit formatter records what it was given. A value
that reaches the formatter of another unit than its field's (network bits per second shown as
bytes per second, a size shown as a count) fails the test, naming the field.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Tuple

import pytest

from diag_protocol import make_report, units, validate
from diag_protocol.schema import SECTION_DATA
from diag_protocol.vocabulary import RANK, STATUSES, worst, worst_first
from engine_plugin.storage.extract import extract_samples
from engine_plugin.ui import rendering
from engine_plugin.ui.vm_view import build_vm_view
from guest_agent.cli import render_report
from vdsm_hooks.relay.cli import format_show

NOW = 1_764_000_000.0
VM_ID = "0b6f2d1e-0000-4000-8000-000000000001"


def _numeric_paths(schema: Dict[str, Any], path: str) -> List[str]:
    if "anyOf" in schema:
        return [p for option in schema["anyOf"] for p in _numeric_paths(option, path)]
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
    if "object" in kinds:
        return [p for key, sub in schema.get("properties", {}).items()
                for p in _numeric_paths(sub, "%s.%s" % (path, key))]
    if "array" in kinds:
        return _numeric_paths(schema["items"], path + "[]")
    return [path] if "number" in kinds or "integer" in kinds else []


class FullReport:
    """Sections with every field of the schema set; each number distinct and not a sum of two
    others, so a value seen by a formatter names the one field it came from."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.paths: Dict[float, str] = {}
        self.sections = {name: {"collected_at": NOW - 2, "duration_ms": 12.0, "errors": [],
                                "data": self.fill(SECTION_DATA[name], name)}
                         for name in SECTION_DATA}

    def fill(self, schema: Dict[str, Any], path: str) -> Any:
        if "anyOf" in schema:
            return self.fill(next(o for o in schema["anyOf"] if o.get("type") == "object"), path)
        if "enum" in schema:
            return "warning"
        kinds = schema.get("type")
        kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
        if "object" in kinds:
            return {key: self.fill(sub, "%s.%s" % (path, key))
                    for key, sub in schema.get("properties", {}).items()}
        if "array" in kinds:
            return [self.fill(schema["items"], path + "[]")
                    for _ in range(min(2, schema.get("maxItems", 2)))]
        if "integer" in kinds or "number" in kinds:
            n = next(self.counter)
            value: float = n * 1000 + 7 if "integer" in kinds else n * 1000 + 0.5
            self.paths[value] = path
            return value
        if "boolean" in kinds:
            return True
        return "x%d" % next(self.counter)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[str, float]]:
    """Every (unit, value) any unit formatter is asked to format while the test runs."""
    seen: List[Tuple[str, float]] = []
    for unit, fmt in list(units.FORMATTERS.items()):
        def recording(value: float, unit: str = unit, fmt: Any = fmt) -> str:
            seen.append((unit, value))
            return fmt(value)
        monkeypatch.setitem(units.FORMATTERS, unit, recording)
    return seen


def mismatches(seen: List[Tuple[str, float]], report: FullReport) -> List[str]:
    out = []
    for unit, value in seen:
        path = report.paths.get(value)
        if path is not None and units.unit_of(path) != unit:
            out.append("%s (%s) shown as %s" % (path, units.unit_of(path), unit))
    return sorted(set(out))


def shown(seen: List[Tuple[str, float]], report: FullReport) -> set:
    return {report.paths[v] for _, v in seen if v in report.paths}


#: Fields both renderings must show through the table (the ones whose unit is easy to get wrong).
MUST_SHOW = {"network.interfaces[].rx_bps", "network.interfaces[].tx_bps",
             "resources.disks[].read_bps", "resources.disks[].write_bps",
             "resources.memory.used", "resources.filesystems[].total",
             "network.probes[].latency_ms", "resources.uptime_s"}


def render_vm_page(report: FullReport) -> str:
    message = validate(make_report("b" * 32, "run-1", 1, report.sections, now=NOW))
    doc = {"vm": {"id": VM_ID, "name": "full", "status": "up"},
           "agent": {"state": "reporting", "last_report_at": NOW},
           "health": {"status": "ok", "since": NOW - 60, "findings": []},
           "forecasts": [], "report": message, "received_at": NOW}
    view = build_vm_view(doc, {}, NOW, 86400.0)
    return rendering.render(rendering.make_environment(), "vm_fragment.html", v=view, now=NOW)


def test_every_number_of_the_schema_has_a_unit():
    paths = {p for name, data in SECTION_DATA.items() for p in _numeric_paths(data, name)}
    assert paths == set(units.FIELDS), "add the new field's unit to diag_protocol/units.py"
    assert set(units.FIELDS.values()) <= set(units.UNITS) == set(units.FORMATTERS)


def test_the_vm_page_shows_every_field_in_its_own_unit(recorded):
    report = FullReport()
    html = render_vm_page(report)
    assert mismatches(recorded, report) == []
    assert shown(recorded, report) >= MUST_SHOW, MUST_SHOW - shown(recorded, report)
    # network rates are bits per second on the wire: 1000.5 bit/s, never "kB/s"
    rx = next(v for v, p in report.paths.items() if p == "network.interfaces[].rx_bps")
    assert units.fmt_bits_per_second(rx) in html


def test_the_agent_cli_shows_every_field_in_its_own_unit(recorded):
    report = FullReport()
    text = render_report(report.sections)
    assert "cannot format" not in text
    assert mismatches(recorded, report) == []
    assert shown(recorded, report) >= MUST_SHOW, MUST_SHOW - shown(recorded, report)


def test_the_relay_cli_shows_every_field_in_its_own_unit(recorded):
    report = FullReport()
    message = validate(make_report("b" * 32, "run-1", 1, report.sections, now=NOW))
    text = format_show({"vm_id": VM_ID, "name": "full", "vm_state": "running",
                        "session_state": "connected", "report": message,
                        "last_report_age": 3.0})
    assert mismatches(recorded, report) == []
    assert {"resources.filesystems[].percent", "network.probes[].latency_ms"} <= \
        shown(recorded, report), text


def test_the_check_fails_when_a_unit_is_shown_with_another_units_formatter(recorded):
    """The check itself: network rates pushed through the bytes-per-second filter are caught."""
    report = FullReport()
    nic = report.sections["network"]["data"]["interfaces"][0]
    env = rendering.make_environment()
    env.from_string("{{ i.rx_bps|bytes_per_second }} {{ i.rx_bytes|bytes }}").render(i=nic)
    assert mismatches(recorded, report) == [
        "network.interfaces[].rx_bps (bits_per_second) shown as bytes_per_second"]


def test_every_stored_metric_has_the_unit_of_the_field_it_comes_from():
    report = FullReport()
    message = validate(make_report("b" * 32, "run-1", 1, report.sections, now=NOW))
    samples = extract_samples(message)
    assert samples
    for name, _, value in samples:
        assert units.metric_unit(name) is not None, name
        if value in report.paths:
            assert units.metric_unit(name) == units.unit_of(report.paths[value]), name
    assert units.metric_unit("net.rx_bps:eth0") == "bits_per_second"
    assert units.metric_unit("no.such") is None


@pytest.mark.parametrize("unit, value, text", [
    ("bits_per_second", 1_250_000, "1.2 Mbit/s"), ("bytes_per_second", 1_250_000, "1.2 MB/s"),
    ("bytes", 1536, "1.5 KiB"), ("bytes", 12 * 1024 ** 3, "12 GiB"),
    ("megabits_per_second", 10_000, "10.0 Gbit/s"), ("percent", 96.4, "96%"),
    ("percent", 0.54, "0.5%"), ("ratio", 0.005, "0.5%"), ("seconds", 129_600, "1 d 12 h"),
    ("milliseconds", 3.21, "3.2 ms"), ("count", 12345, "12,345"), ("number", 0.5, "0.50"),
    ("timestamp", 0, "1970-01-01 00:00 UTC"), ("pages_per_second", 120.4, "120 pages/s"),
])
def test_formatters(unit, value, text):
    assert units.format_value(unit, value) == text


@pytest.mark.parametrize("value", [None, "12", True, float("nan"), float("inf"), 10 ** 400])
def test_anything_but_a_number_shows_as_missing(value):
    assert units.format_value("bytes", value) == units.MISSING
    assert units.format_value("bytes", value, missing="-") == "-"


def test_prometheus_names_carry_base_units():
    assert units.prometheus_name("vmdiag_http_request_duration", "seconds") == \
        "vmdiag_http_request_duration_seconds"
    assert units.prometheus_name("x_latency", "milliseconds") == "x_latency_seconds"
    assert units.prometheus_name("x_received", "bytes", counter=True) == "x_received_bytes_total"


def test_severity_order_and_worst():
    assert worst([]) == "ok"
    assert worst(["ok", "unknown"]) == "unknown"
    assert worst(["unknown", "warning", "ok"]) == "warning"
    assert worst(["critical", "warning"]) == "critical"
    # a string that is not a status ranks as unknown: it can never look better than that
    assert worst(["ok", "fine"]) == "unknown" and worst(["critical", "fine"]) == "critical"
    items = [{"status": s, "n": i} for i, s in enumerate(STATUSES * 2)]
    ordered = worst_first(items)
    assert [i["status"] for i in ordered] == ["critical"] * 2 + ["warning"] * 2 + \
        ["unknown"] * 2 + ["ok"] * 2
    assert [i["n"] for i in ordered[:2]] == [2, 6]  # stable among equals
    assert sorted(RANK, key=RANK.get) == ["ok", "unknown", "warning", "critical"]

