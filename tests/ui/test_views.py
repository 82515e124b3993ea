"""View models, chart geometry and formatting, without a browser or a server."""

from __future__ import annotations

import math

import pytest

from engine_plugin.service.listing import select
from engine_plugin.ui import charts, formatting
from engine_plugin.ui.fleet_view import build_fleet_view, build_host_view, parse_query
from engine_plugin.ui.vm_view import (
    agent_banner,
    build_vm_view,
    forecasts_view,
    health_view,
    history_metrics,
)

from .documents import (
    HOST_A,
    VM_DOWN,
    VM_FILLING,
    VM_HEALTHY,
    VM_NO_AGENT,
    VM_SILENT,
    Fleet,
)


@pytest.mark.parametrize("value, text", [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (12 * 1024 ** 3, "12 GiB"),
    (None, formatting.MISSING), ("12", formatting.MISSING), (True, formatting.MISSING),
    (float("nan"), formatting.MISSING),
])
def test_human_bytes(value, text):
    assert formatting.human_bytes(value) == text


@pytest.mark.parametrize("seconds, text", [
    (12, "12 s"), (59.6, "1 min"), (3600, "1 h"), (3 * 3600 + 600, "3 h 10 min"),
    (2 * 86400 + 3600, "2 d 1 h"), (2 * 86400, "2 d"),
])
def test_human_duration(seconds, text):
    assert formatting.human_duration(seconds) == text


def test_human_age_past_and_future():
    assert formatting.human_age(100, 400) == "5 min ago"
    assert formatting.human_age(400 + 7200, 400) == "in 2 h"
    assert formatting.human_age(398, 400) == "just now"


def test_clean_points_drops_garbage_and_sorts():
    raw = [[3, 1.0], ["x", 2], [1, None], [2, float("inf")], [1, 5], "nope", [0]]
    assert charts.clean_points(raw) == [(1.0, 5.0), (3.0, 1.0)]
    assert charts.clean_points({"not": "a list"}) == []


def test_downsample_keeps_shape_and_limit():
    points = [(float(t), float(t % 7)) for t in range(10_000)]
    out = charts.downsample(points, 300)
    assert len(out) <= 300
    assert out[0][0] < out[-1][0]
    assert sum(v for _, v in out) / len(out) == pytest.approx(3.0, abs=0.1)


def test_forecast_line_meets_capacity_at_the_eta():
    now = 1_700_000_000.0
    capacity = 100.0
    slope = 10.0 / 86400  # 10 units a day
    fit = {"slope": slope, "intercept": 80.0, "t0": now}
    eta_at = now + 2 * 86400
    points = [(now - 86400 + i * 3600, 70.0 + i * 10 / 24) for i in range(25)]
    chart = charts.line_chart(points, title="t", description="d", since=now - 86400,
                              until=now, unit="bytes", capacity=capacity,
                              forecast={"fit": fit, "eta_at": eta_at})
    forecast = next(line for line in chart.lines if line.kind == "forecast")
    capacity_line = next(line for line in chart.lines if line.kind == "capacity")
    last_x, last_y = map(float, forecast.points.split()[-1].split(","))
    cap_y = float(capacity_line.points.split()[0].split(",")[1])
    eta = next(m for m in chart.markers if m.kind == "eta")
    assert last_x == pytest.approx(eta.x, abs=0.2)
    assert last_y == pytest.approx(cap_y, abs=0.2)
    # the chart extends past "now" to show the ETA, with a "now" marker
    assert any(m.kind == "now" for m in chart.markers)
    assert chart.right > eta.x > chart.left


def test_chart_without_data_is_marked_empty():
    chart = charts.line_chart([], title="t", description="d", since=0, until=10)
    assert chart.empty and chart.lines == []


def test_percent_chart_clamps_and_ticks():
    chart = charts.line_chart([(0, -5), (5, 150), (10, 50)], title="t", description="d",
                              since=0, until=10)
    ys = [float(p.split(",")[1]) for p in chart.lines[0].points.split()]
    assert max(ys) <= chart.bottom and min(ys) >= chart.top
    assert [t.label for t in chart.y_ticks] == ["0%", "25%", "50%", "75%", "100%"]


def test_byte_ticks_are_round_binary_units():
    gib = 1024 ** 3
    chart = charts.line_chart([(0, 9 * gib), (10, 9.3 * gib)], title="t", description="d",
                              since=0, until=10, unit="bytes", capacity=20 * gib)
    labels = [t.label for t in chart.y_ticks]
    assert labels[0] == "0 B"
    assert all(label.endswith(" GiB") and "." not in label for label in labels[1:]), labels


@pytest.fixture
def fleet():
    return Fleet(1_750_000_000.0)


def test_health_reasons_worst_first_and_unknown_severity(fleet):
    doc = fleet.docs[VM_FILLING]
    doc["health"]["reasons"].append({"code": "odd", "severity": "bogus", "message": "x"})
    view = health_view(doc, fleet.now)
    # the document uses API 1's old names (reasons, severity); the view reads either
    assert [r["status"] for r in view["findings"]] == ["critical", "warning", "unknown"]
    assert view["status"] == "critical" and view["since_age"] == "3 h ago"


def test_forecast_eta_text(fleet):
    (forecast,) = forecasts_view(fleet.docs[VM_FILLING], fleet.now)
    assert forecast["eta_text"] == "full in 2 d"
    assert forecast["trend_text"] == "+4.5 GiB per day"
    assert forecast["confidence_text"] == "93%"


@pytest.mark.parametrize("vm_id, state", [
    (VM_SILENT, "silent"), (VM_DOWN, "vm_down"), (VM_NO_AGENT, "not_installed"),
    (VM_HEALTHY, None),
])
def test_agent_banner_per_state(fleet, vm_id, state):
    banner = agent_banner(fleet.docs[vm_id], fleet.now)
    assert (banner or {}).get("state") == state
    if state == "silent":
        assert banner["since"] == fleet.now - 7200 and banner["duration"] == "2 h"


def test_missing_agent_state_is_inferred_from_the_report(fleet):
    doc = fleet.docs[VM_NO_AGENT]
    doc["agent"] = {}
    assert build_vm_view(doc, {}, fleet.now, 86400)["agent"]["state"] == "not_installed"


def test_history_metrics_cover_cpu_memory_and_each_filesystem(fleet):
    assert history_metrics(fleet.docs[VM_FILLING]) == [
        "cpu.percent", "memory.percent", "fs.used:/", "fs.used:/var/lib/pgsql"]
    assert history_metrics(fleet.docs[VM_NO_AGENT]) == ["cpu.percent", "memory.percent"]


def test_vm_view_survives_a_report_of_wrong_shapes(fleet):
    doc = fleet.docs[VM_HEALTHY]
    doc["report"] = {"sections": {"resources": {"data": {"filesystems": "nope", "cpu": [1]}},
                                  "network": ["x"], "checks": {"data": {"results": [1, None]}}}}
    doc["forecasts"] = "nope"
    view = build_vm_view(doc, {"cpu.percent": {"points": "bad"}}, fleet.now, 86400)
    assert view["resources"]["filesystems"] == []
    assert view["checks"]["results"] == []
    assert view["resources"]["cpu_chart"].empty


def fleet_view(fleet, **query):
    parsed = parse_query(query)
    return build_fleet_view(select(fleet.summary(list(fleet.docs))["vms"], parsed), parsed,
                            fleet.now)


def test_fleet_filters_sort_and_counts(fleet):
    view = fleet_view(fleet)
    assert [r["health"] for r in view["rows"]] == ["critical", "warning", "unknown", "unknown",
                                                   "unknown", "ok"]
    assert dict((s, n) for s, _, n in view["counts"]) == {
        "critical": 1, "warning": 1, "unknown": 3, "ok": 1}
    by_name = fleet_view(fleet, sort="name", dir="desc")
    names = [r["name"] for r in by_name["rows"]]
    assert names == sorted(names, key=str.casefold, reverse=True)
    on_host = fleet_view(fleet, host=HOST_A)
    assert sorted(r["name"] for r in on_host["rows"]) == ["db-01", "web-01"]
    found = fleet_view(fleet, q="JOURNALCTL")
    assert [r["name"] for r in found["rows"]] == ["db-01"]
    by_report = fleet_view(fleet, sort="last_report")
    assert by_report["rows"][-1]["name"] == "legacy-04"  # never reported: last
    assert by_report["rows"][-1]["last_report_age"] == "never"


def test_fleet_view_pages_and_says_which_part_it_shows(fleet):
    first = fleet_view(fleet, per_page="4", sort="name")
    second = fleet_view(fleet, per_page="4", sort="name", page="2")
    assert first["pagination"] == {
        "page": 1, "pages": 2, "per_page": 4, "matched": 6, "first": 1, "last": 4,
        "prev": None, "next": 2, "choices": [4, 10, 20, 50, 100, 200]}
    assert (second["pagination"]["first"], second["pagination"]["last"]) == (5, 6)
    names = [r["name"] for r in first["rows"] + second["rows"]]
    assert names == sorted(names, key=str.casefold) and len(set(names)) == 6
    # A page past the end shows the last page, not an empty list.
    assert fleet_view(fleet, per_page="4", page="99")["pagination"]["page"] == 2


def test_parse_query_rejects_unknown_values():
    query = parse_query({"sort": "evil()", "dir": "sideways", "health": "<b>", "q": "x" * 999,
                         "per_page": "1e9", "page": "-3"})
    assert (query.sort, query.dir, query.health) == ("health", "asc", ())
    assert len(query.q) == 200
    assert query.per_page == 50 and query.page == 1


def test_host_view_takes_the_name_from_the_rows(fleet):
    query = parse_query({})
    rows = fleet.summary([VM_FILLING, VM_HEALTHY])["vms"]
    view = build_host_view(select(rows, query), HOST_A, query, fleet.now)
    assert view["host"] == {"id": HOST_A, "name": "hv-01.lab.example"}
    assert [r["name"] for r in view["rows"]] == ["db-01", "web-01"]
    empty = build_host_view(select([], query), HOST_A, query, fleet.now)
    assert empty["host"]["name"] == HOST_A and empty["rows"] == []


def test_nice_step():
    assert charts.nice_step(100) == 25
    assert charts.nice_step(9.3) == 2.5
    assert charts.nice_step(0) == 1.0
    assert math.isclose(charts.nice_step(0.07), 0.02)


def test_forecast_says_what_was_fitted_and_how_sure():
    now = 1_700_000_000.0
    doc = {"forecasts": [{"metric": "fs.used:/var", "kind": "filesystem_bytes",
                          "status": "warning", "eta_s": 3 * 86400, "method": "recent",
                          "fit": {"slope": 2**30 / 86400, "slope_error": 2**26 / 86400,
                                  "start": now - 3 * 3600, "end": now - 30,
                                  "reason": None}},
                         {"metric": "fs.used:/", "kind": "filesystem_bytes", "status": "ok",
                          "method": "linear", "held": True,
                          "fit": {"slope": 0.0, "start": now - 7 * 86400, "end": now,
                                  "reason": "growth within the noise"}}]}
    rising, flat = forecasts_view(doc, now)
    assert rising["why_text"] == ("Fitted the last 3 h (only the latest rise): "
                                  "+1 GiB \u00b1 64 MiB per day.")
    assert flat["why_text"].startswith("Fitted the last 7 d (the whole history, as one line)")
    assert "no forecast: growth within the noise" in flat["why_text"]
    assert "held from an earlier pass" in flat["why_text"]
    # a fit kept from an earlier pass (the samples since agreed with it) says so
    kept = dict(doc["forecasts"][0], fit=dict(doc["forecasts"][0]["fit"], end=now - 2 * 3600))
    [kept_view] = forecasts_view({"forecasts": [kept]}, now)
    assert "fitted 2 h ago; the samples since agree with it" in kept_view["why_text"]
    # how long its data has supported it (persistence counts in the data's time)
    pending = dict(doc["forecasts"][0], since=now - 40 * 60)
    [pending_view] = forecasts_view({"forecasts": [pending]}, now)
    assert pending_view["why_text"].endswith("the data has supported it for 40 min.")
