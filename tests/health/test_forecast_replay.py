"""Forecasts as a person receives them: histories replayed through the service's own health
pass (a pass every 15 minutes, state carried, default thresholds), counting oVirt events.

The first four tests are the failures reported against the first forecasting method (issue
13): each one raised, or missed, events in such a replay. The fifth checks that the fastest
fills are still raised in time. The last replays a slice of the held-out corpus; the whole
corpus and its figures: ``benchmarks/forecast_replay.py`` and docs/engine.md.
"""

import math
import random

from engine_plugin.health import Thresholds, forecast
from engine_plugin.service.workers import raw_since
from lab.forecast_corpus import (
    DAY,
    GIB,
    HOUR,
    MINUTE,
    REPORT_SEEDS,
    T0,
    Case,
    StoreView,
    Truth,
    corpus,
    make_case,
    replay,
    score,
)

START = T0 + 7 * DAY            # the replayed week starts here (7 days of history before)


def case(values, capacity, metric="fs.used:/data", full_at=None, truths=()):
    """A case from a function of time (1-minute samples over the 14 days)."""
    points = [(T0 + i * 60.0, min(capacity, max(0.0, values(T0 + i * 60.0))))
              for i in range(14 * 1440)]
    cap_metric = "fs.total:/data" if metric.startswith("fs.") else "memory.total"
    return Case("regression", 0, {metric: points}, {cap_metric: capacity}, {metric: full_at},
                list(truths))


def noise(seed, sigma):
    rnd = random.Random(seed)
    return lambda: rnd.gauss(0.0, sigma)


def test_a_step_two_days_ago_then_flat_raises_nothing():
    # a package upgrade or a restored data set: +20 GiB at once, flat before and after
    at = START + 5 * DAY
    n = noise(1, 0.02 * GIB)
    result = replay(case(lambda t: (40 + (20 if t >= at else 0)) * GIB + n(), 100 * GIB))
    assert result.events == [] and result.raised == {}


def test_memory_sawtooth_of_minutes_raises_no_critical():
    # a job that starts and ends several times an hour: memory ramps 30 -> 75 % in 12 minutes
    cap = 8 * GIB
    n = noise(2, 0.003 * cap)
    result = replay(case(lambda t: cap * (0.30 + 0.45 * (((t - T0) / 720.0) % 1.0)) + n(), cap,
                         metric="memory.used"))
    assert result.events == []


def test_usage_wandering_around_a_level_raises_nothing():
    # mean-reverting noise (Ornstein-Uhlenbeck, 5 % deviation, 2 h memory), no trend
    cap, rnd = 100 * GIB, random.Random(3)
    a = math.exp(-60.0 / (2 * HOUR))
    state = [0.0]

    def wander(t):
        state[0] = a * state[0] + 0.05 * math.sqrt(1 - a * a) * rnd.gauss(0.0, 1.0)
        return cap * (0.6 + state[0] + rnd.gauss(0.0, 0.002))
    for seed in range(3):
        rnd.seed(seed)
        result = replay(case(wander, cap))
        assert result.events == [], seed


def test_a_noisy_slow_writer_is_raised_with_hours_left():
    # 4 % an hour for three hours now, under 2 % minute-to-minute noise (larger than a
    # minute's rise): at that rate the disk is full 15 h after the start
    cap = 100 * GIB
    begin = START + 3 * DAY
    full = begin + 60 / 4 * HOUR
    n = noise(4, 0.02 * cap)
    result = replay(case(lambda t: cap * (0.4 + 0.04 * max(0.0, t - begin) / HOUR) + n(), cap,
                         full_at=full, truths=[Truth("fs.used:/data", "fill", begin, full)]))
    raised_at, eta = result.raised["fs.used:/data"]
    assert raised_at - begin <= 4 * HOUR          # while 11 of the 15 hours were left
    assert abs(eta - (full - raised_at)) <= 0.3 * (full - raised_at)
    assert all(e.justified for e in result.events)


def test_a_burst_of_minutes_after_a_quiet_week_is_raised_in_time():
    # 1 % of the disk a minute from 50 %: full in 50 minutes, raised with 25 or more left
    cap = 50 * GIB
    begin = START + 2 * DAY + 7 * MINUTE
    full = begin + 50 * MINUTE
    n = noise(5, 0.001 * cap)
    result = replay(case(lambda t: cap * (0.5 + 0.01 * max(0.0, t - begin) / MINUTE) + n(), cap,
                         full_at=full, truths=[Truth("fs.used:/data", "fill", begin, full)]))
    raised_at, _ = result.raised["fs.used:/data"]
    assert full - raised_at >= 25 * MINUTE
    assert [e.status for e in result.events][:1] == ["critical"]


def test_a_fill_on_a_cycle_is_raised_before_it_rises_above_the_cycle_s_peaks():
    # a cycle of 5 hours (45 % +- 10 %: a batch load), and from day 2 a writer adding 2 % an
    # hour: the peaks (55 %) reach the limit 22.5 hours later. The raw series leaves the band
    # the cycle has always drawn only after 10 hours; each part of the cycle is higher than
    # at the same phase of the earlier cycles from the first (issue 13, sixth round)
    cap = 100 * GIB
    begin = START + 2 * DAY + 3 * HOUR
    full = begin + 0.45 / 0.02 * HOUR
    n = noise(6, 0.005 * cap)
    def cycle(t):
        return 0.45 + 0.1 * math.sin(2 * math.pi * (t - T0) / (5 * HOUR))
    result = replay(case(lambda t: cap * (cycle(t) + 0.02 * max(0.0, t - begin) / HOUR) + n(),
                         cap, full_at=full,
                         truths=[Truth("fs.used:/data", "fill", begin, full)]))
    raised_at, eta = result.raised["fs.used:/data"]
    assert full - raised_at >= 0.5 * (full - begin)    # while half of its time was left
    assert abs(eta - (full - raised_at)) <= 0.3 * (full - raised_at)
    assert result.events and all(e.justified for e in result.events)


def test_a_plain_cycle_raises_nothing():
    # the same cycle, no writer
    cap = 100 * GIB
    n = noise(6, 0.005 * cap)
    result = replay(case(lambda t: cap * (0.45 + 0.1 * math.sin(
        2 * math.pi * (t - T0) / (5 * HOUR))) + n(), cap))
    assert result.events == [] and result.raised == {}


def test_a_slow_fill_on_a_cycle_is_given_its_time_left_and_raised_critical_in_time():
    # the corpus's fill on a cycle 25016 (tuning data since the sixth round): 2.7 % a day
    # under a cycle of 14 hours (+-6.5 %) and a level that wanders. The cycle's period was
    # refined to 13.5 hours on the filling series (a fill's rise over a lag adds to every
    # difference a lag apart, so the shorter lag differed less), the profile drifted a third
    # of a period over the week, and the peaks it left brought the limit a day nearer: a
    # critical "full within a day" three times with 1.5 to 2.1 days truly left
    c = make_case("fill on a cycle", 25016)
    metric = "fs.used:/data"
    view, cap, full = StoreView(c.series[metric]), c.constants["fs.total:/data"], \
        c.full_at[metric]
    t = Thresholds()
    for day in (2, 3, 4):
        now = c.start + day * DAY
        f = forecast(view.at(now, now - t.forecast_window_s, raw_since(t, now)), cap, now)
        assert f.trend.method == "seasonal"
        assert abs(f.eta_s - (full - now)) <= 0.25 * (full - now), day
    result = replay(c)
    assert [(e.at, e.status) for e in result.events if not e.justified] == []
    assert full - result.raised[metric][0] >= 3.5 * DAY


def test_held_out_corpus_slice():
    # two held-out seeds of every family (15 VM-weeks each), a pass every 30 minutes
    results = [replay(c, cadence_s=30 * MINUTE) for c in corpus(REPORT_SEEDS[:2])]
    total = score(results)["all"]
    assert total.vm_days == 210
    # goals met on this slice: fills raised while half their time was left, time left right
    assert total.fills >= 5 and total.in_time_ratio >= 0.95
    assert total.error_p90 <= 0.3
    # and no false alarm (goal: at most 1 per 1,000 VM-days; the whole corpus: docs/engine.md)
    false = [(r.case.family, r.case.seed, e.status) for r in results for e in r.events
             if not e.justified]
    assert false == []
