"""Verdicts: checks, silence, minimum duration and hysteresis."""

from engine_plugin.health import Thresholds, evaluate_vm

T = Thresholds(warning_min_duration_s=300, silence_s=300)


def report(checks=(), memory=None, steal=None):
    res = {}
    if memory is not None:
        res["memory"] = {"percent": memory}
    if steal is not None:
        res["cpu"] = {"steal": steal}
    return {"sections": {"checks": {"data": {"results": [
        {"id": i, "status": s, "message": m} for i, s, m in checks]}},
        "resources": {"data": res}}}


def test_no_report_yet_is_unknown_with_a_reason():
    verdict, _ = evaluate_vm(None, {}, T, None, 1000.0, None)
    assert verdict["status"] == "unknown"
    assert verdict["findings"][0]["code"] == "agent.not_reporting"


def test_silent_agent_is_unknown_with_how_long():
    verdict, _ = evaluate_vm(report(), {}, T, None, 10000.0, 10000.0 - 7200)
    assert verdict["status"] == "unknown"
    assert "silent for 2 h" in verdict["findings"][0]["message"]


def test_critical_check_is_raised_at_once_warning_after_min_duration():
    rep = report(checks=[("units.failed", "critical", "1 unit failed: app.service"),
                         ("fs.fill:/", "warning", "/ is 88% full")])
    v1, s1 = evaluate_vm(rep, {}, T, None, 1000.0, 1000.0)
    assert v1["status"] == "critical"
    assert [r["code"] for r in v1["findings"]] == ["check:units.failed"]
    v2, s2 = evaluate_vm(rep, {}, T, s1, 1200.0, 1200.0)
    assert [r["code"] for r in v2["findings"]] == ["check:units.failed"]
    v3, _ = evaluate_vm(rep, {}, T, s2, 1301.0, 1301.0)
    assert [r["code"] for r in v3["findings"]] == ["check:units.failed", "check:fs.fill:/"]
    assert v3["since"] == 1000.0  # critical since the first pass


def test_a_warning_that_comes_and_goes_never_raises():
    state = None
    for i in range(20):
        rep = report(checks=[("fs.fill:/", "warning" if i % 2 else "ok", "x")])
        verdict, state = evaluate_vm(rep, {}, T, state, 1000.0 + 120 * i, 1000.0 + 120 * i)
        assert verdict["status"] == "ok"


def test_memory_hovering_at_the_threshold_does_not_flap():
    state, statuses = None, []
    t = 1000.0
    for value in [91, 91, 91, 91, 89, 91, 88, 90.5, 86, 84]:
        verdict, state = evaluate_vm(report(memory=value), {}, T, state, t, t)
        statuses.append(verdict["status"])
        t += 100
    # raised once it held 300 s, kept while above 85 (90 - 5 of hysteresis), cleared at 84
    assert statuses == ["ok", "ok", "ok", "warning", "warning", "warning", "warning",
                        "warning", "warning", "ok"]


def test_steal_is_judged_once_by_the_guest_check():
    # the engine no longer judges the metric itself (one judge per finding, issue 12) ...
    verdict, _ = evaluate_vm(report(steal=40.0), {}, T, None, 1000.0, 1000.0)
    assert verdict["status"] == "ok" and verdict["findings"] == []
    # ... it passes the guest's cpu.steal check on, once
    both = report(checks=[("cpu.steal", "critical", "The hypervisor withheld 40% of CPU time")],
                  steal=40.0)
    verdict, _ = evaluate_vm(both, {}, T, None, 1000.0, 1000.0)
    assert verdict["status"] == "critical"
    assert [f["code"] for f in verdict["findings"]] == ["check:cpu.steal"]


def test_steady_state_keeps_since():
    rep = report(checks=[("units.failed", "critical", "x")])
    v1, s1 = evaluate_vm(rep, {}, T, None, 1000.0, 1000.0)
    v2, _ = evaluate_vm(rep, {}, T, s1, 5000.0, 5000.0)
    assert v1["since"] == v2["since"] == 1000.0


def test_forecasts_are_reused_when_no_history_is_given():
    day = 86400.0
    hist = {"fs.used:/": [(t * 600.0, 50e9 + t * 600.0 * 1e5) for t in range(300)],
            "fs.total:/": [(180000.0, 100e9)]}
    v1, s1 = evaluate_vm(report(), hist, T, None, 180000.0, 180000.0)
    assert v1["forecasts"][0]["metric"] == "fs.used:/"
    v2, s2 = evaluate_vm(report(), None, T, s1, 180000.0 + day / 24, 180000.0 + day / 24)
    assert v2["forecasts"] == v1["forecasts"] and s2["forecasts_at"] == 180000.0


# -- forecasts persist in the data's time ------------------------------------------------------

GiB = 2**30
NOW = 1_700_000_000.0


def disk(rise, until=NOW, cap=100 * GiB, seed=1):
    """A week of 1-minute samples of a 100 GiB disk at 50 % (small noise) up to ``until``,
    plus ``rise(t)`` (fraction of capacity)."""
    import random
    rnd = random.Random(seed)
    first = NOW - 7 * 86400
    pts = [(t, (0.5 + rnd.gauss(0.0, 0.0005) + rise(t)) * cap)
           for t in (first + 60.0 * i for i in range(int((until - first) / 60) + 1))]
    return {"fs.used:/data": pts, "fs.total:/data": [(until, cap)]}


def raised(verdict):
    return [f["code"] for f in verdict["findings"] if f["code"].startswith("forecast:")]


def test_a_backfilled_fill_is_raised_at_once_as_it_would_have_been_live():
    # a fill of 2 % an hour for the last 10 hours arrives at once (a spool drained after an
    # outage, a VM first seen): it held over far more than an hour of its data, so the first
    # pass raises it instead of waiting an hour of the service's time
    start = NOW - 10 * 3600
    hist = disk(lambda t: 0.02 * max(0.0, t - start) / 3600)
    verdict, state = evaluate_vm(None, hist, Thresholds(), None, NOW, NOW)
    assert raised(verdict) == ["forecast:fs.used:/data"]
    [fc] = verdict["forecasts"]
    assert fc["status"] == "critical" and 20 * 3600 * 0.7 < fc["eta_s"] < 20 * 3600 * 1.3
    assert fc["since"] == NOW - 3600          # held over the data's last hour (the persistence)
    assert state["pending"] == {}


def test_a_backfilled_rise_that_stops_is_never_raised():
    # 10 % an hour for the last 30 minutes of the backfill: the forecast at its end says full
    # in hours, but the data before it did not (too short a rise): pending, not raised; then
    # the rise stops, live passes every 5 minutes for two hours raise nothing
    start = NOW - 1800
    stop = NOW + 600

    def rise(t):
        return 0.1 * (min(t, stop) - start) / 3600 if t > start else 0.0
    verdict, state = evaluate_vm(None, disk(rise), Thresholds(), None, NOW, NOW)
    [fc] = verdict["forecasts"]
    assert fc["status"] != "ok" and raised(verdict) == []
    assert NOW - fc["since"] < 0.5 * 3600     # held over less of its data than it needs
    for k in range(1, 25):
        now = NOW + 300 * k
        hist = disk(rise, until=now)
        verdict, state = evaluate_vm(None, hist, Thresholds(), state, now, now)
        assert raised(verdict) == [], k


def test_persistence_waits_for_data_not_for_the_service_clock():
    # a rise of 10 % an hour that began 30 minutes ago: forecast, pending; then no sample
    # arrives for two hours (the relay holds them), passes run: the forecast's data did not
    # hold any longer, so it is not raised; once the held 40 minutes of the same rise arrive,
    # it is (they cover the persistence it needs, about half an hour)
    start = NOW - 1800

    def rise(t):
        return 0.1 * max(0.0, t - start) / 3600
    hist = disk(rise)
    verdict, state = evaluate_vm(None, hist, Thresholds(), None, NOW, NOW)
    since = verdict["forecasts"][0]["since"]
    assert raised(verdict) == [] and since >= NOW - 600
    for k in range(1, 9):
        verdict, state = evaluate_vm(None, hist, Thresholds(), state, NOW + 900 * k, NOW)
        assert raised(verdict) == [] and verdict["forecasts"][0]["since"] == since, k
    later = NOW + 2 * 3600
    hist = disk(rise, until=NOW + 2400)
    verdict, state = evaluate_vm(None, hist, Thresholds(), state, later, NOW + 2400)
    assert raised(verdict) == ["forecast:fs.used:/data"]


# -- a raised warning turns critical only once the critical forecast held ---------------------

def _passes(rise, passes=12, step=900.0):
    """Passes every ``step`` over a disk at 50 % plus ``rise(t)``; the forecast's raised
    status at each pass."""
    import bisect
    import random
    rnd = random.Random(1)
    cap = 100 * GiB
    first = NOW - 7 * 86400
    end = NOW + passes * step
    pts = [(t, (0.5 + rnd.gauss(0.0, 0.0005) + rise(t)) * cap)
           for t in (first + 60.0 * i for i in range(int((end - first) / 60) + 1))]
    state, out = None, []
    for k in range(passes + 1):
        now = NOW + k * step
        upto = pts[:bisect.bisect_right(pts, (now, float("inf")))]
        verdict, state = evaluate_vm(None, {"fs.used:/data": upto, "fs.total:/data": [(now, cap)]},
                                     Thresholds(), state, now, now)
        out.append((verdict["forecasts"][0]["status"], [
            f["status"] for f in verdict["findings"] if f["code"].startswith("forecast:")]))
    return out


BURST_AT = NOW + 4 * 900 + 60


def _steady(t):
    return 0.1 * max(0.0, t - (NOW - 3 * 86400)) / 86400     # 10 % a day for 3 days: warning


def test_a_warning_forecast_critical_for_one_pass_stays_a_warning():
    # a steady fill (full in two days: a raised warning) and, for a quarter of an hour, a job
    # writing 5 % more (which it keeps): one pass forecasts "full in 40 minutes" from that
    # quarter of an hour, the next the two days again. Before, that pass raised a critical
    # event at once (a raised warning escalated without persistence): the false criticals of
    # fills on a cycle and on a cleanup sawtooth in the replay (issue 13, fifth round)
    passes = _passes(lambda t: _steady(t) + 0.05 * min(1.0, max(0.0, t - BURST_AT) / 900))
    assert passes[5] == ("critical", ["warning"])      # forecast critical, raised as a warning
    assert all(raised == ["warning"] for _, raised in passes)


def test_a_warning_forecast_that_stays_critical_is_raised_critical():
    # the same fill, but the writer goes on at 4 % an hour: critical from the first pass that
    # sees it, raised critical once it held its persistence (an eighth of its time left)
    # (about 35 minutes here: the first critical pass and the next are raised as warnings)
    passes = _passes(lambda t: _steady(t) + 0.04 * max(0.0, t - BURST_AT) / 3600)
    first = [status for status, _ in passes].index("critical")
    assert 5 <= first <= 6 and passes[first][1] == ["warning"]
    assert all(raised == ["critical"] for _, raised in passes[first + 2:])


# -- a raised forecast on a cycle is held while its series falls along the cycle --------------

def test_a_raised_forecast_on_a_cycle_is_held_along_the_cycle_s_fall_not_past_a_drop():
    # a fill raised as a warning on a cycle of 2 hours (+-5 GiB, its profile as the seasonal
    # fit found it, kept with the raised forecast); the next pass's fit finds too little
    # evidence (noise hides a slow fill now and then): the series fell 1.5 GiB in the quarter
    # hour since, along the cycle's falling half. Before, any fall of 1 % let the forecast go,
    # and the next rising half raised it again, one more event each cycle; a drop of 5 GiB
    # below the cycle (a cleanup) still lets it go
    import math

    from engine_plugin.health.verdict import _held, _less_cycle
    period = 7200.0
    profile = [5 * GiB * math.sin(2 * math.pi * (k + 0.5) / 64) for k in range(64)]
    cycle = [NOW - 10 * period, period, profile]

    def pts(end, drop=0.0):
        return [(t, 60 * GiB + 5 * GiB * math.sin(2 * math.pi * (t - cycle[0]) / period) - drop)
                for t in (end - 60.0 * i for i in range(10, -1, -1))]
    then, now = NOW + period / 4, NOW + period / 4 + 900        # the peak, a quarter hour on
    before = {"status": "warning", "confirmed_at": then, "eta_at": then + 5 * 86400,
              "current": pts(then)[-1][1], "cycle": cycle, "level": _less_cycle(pts(then), cycle)}
    fell = pts(now)
    assert fell[-1][1] < 0.98 * before["current"]
    doc = {"status": "ok", "current": fell[-1][1]}
    held = _held(doc, before, Thresholds(), now, "warning", fell)
    assert held is not None and held["status"] == "warning" and held["held"]
    dropped = pts(now, drop=5 * GiB)
    assert _held({"status": "ok", "current": dropped[-1][1]}, before, Thresholds(), now,
                 "warning", dropped) is None
    # without a cycle (a fit that found none), any fall of 1 % lets it go, as before
    plain = {k: v for k, v in before.items() if k not in ("cycle", "level")}
    assert _held(doc, plain, Thresholds(), now, "warning", fell) is None
