"""Synthetic histories whose answer is known: the forecast must find the fill, within a
tolerance, and stay silent on sawtooth, spikes, cleanups and flat lines."""

import math
import random

import pytest

from diag_protocol.units import fmt_seconds
from engine_plugin.health import Thresholds, forecast
from engine_plugin.health.verdict import forecast_vm

DAY = 86400.0
CAP = 100.0 * 2**30   # a 100 GiB filesystem
NOW = 7 * DAY
GIB = 2**30


def series(f, days=7.0, step=60.0, noise=0.0, seed=7):
    rnd = random.Random(seed)
    out, t = [], NOW - days * DAY
    while t <= NOW:
        out.append((t, f(t - (NOW - days * DAY)) + rnd.gauss(0, noise)))
        t += step
    return out


def eta_days(points, cap=CAP):
    f = forecast(points, cap, NOW)
    return None if f.eta_s is None else f.eta_s / DAY


def test_steady_linear_fill_is_caught_with_the_right_time_left():
    # 20 GiB + 10 GiB/day: at 90 GiB now, full in exactly one day
    assert eta_days(series(lambda t: 20 * GIB + 10 * GIB * t / DAY)) == pytest.approx(1.0, rel=0.02)


def test_noisy_fill_is_caught_within_ten_percent():
    pts = series(lambda t: 20 * GIB + 5 * GIB * t / DAY, noise=2 * GIB)
    assert eta_days(pts) == pytest.approx(9.0, rel=0.1)


def test_fill_is_caught_early_from_a_day_of_history():
    pts = series(lambda t: 70 * GIB + 3 * GIB * t / DAY, days=1.0)
    assert eta_days(pts) == pytest.approx(9.0, rel=0.1)


def test_fill_then_cleanup_raises_no_alarm():
    pts = series(lambda t: (20 + 10 * t / DAY) * GIB if t < 5 * DAY else 30 * GIB, noise=0.2 * GIB)
    f = forecast(pts, CAP, NOW)
    assert f.resets == 1 and f.trend.method == "after_reset"
    assert f.eta_s is None


def test_cleanup_then_new_fill_uses_only_the_new_data():
    pts = series(lambda t: (20 + 10 * t / DAY) * GIB if t < 5 * DAY
                 else (30 + 20 * (t - 5 * DAY) / DAY) * GIB)
    # 70 GiB now, 20 GiB/day after the cleanup: 1.5 days left (the old rate would say 3)
    assert eta_days(pts) == pytest.approx(1.5, rel=0.05)


def test_daily_log_rotation_sawtooth_raises_no_alarm():
    pts = series(lambda t: (60 + 20 * ((t % DAY) / DAY)) * GIB, noise=0.1 * GIB)
    f = forecast(pts, CAP, NOW)
    assert f.resets >= 5 and f.trend.method == "cleanup_cycle"
    assert f.eta_s is None


def test_sawtooth_whose_peaks_grow_is_caught():
    pts = series(lambda t: (40 + 5 * t / DAY + 10 * ((t % DAY) / DAY)) * GIB)
    assert eta_days(pts) == pytest.approx(3.0, rel=0.1)


def test_sawtooth_whose_ramp_reaches_the_limit_before_the_rotation_is_caught():
    # rotation every day, but today's ramp is steeper and will hit 100 GiB before midnight
    def f(t):
        if t < 6 * DAY:
            return (50 + 20 * ((t % DAY) / DAY)) * GIB
        return (50 + 80 * ((t - 6 * DAY) / DAY)) * GIB
    days = eta_days(series(f))
    assert days is not None and days < 0.5


def test_single_spike_raises_no_alarm():
    pts = series(lambda t: 40 * GIB + (50 * GIB if abs(t - 6.5 * DAY) < 90 else 0),
                 noise=0.05 * GIB)
    assert eta_days(pts) is None


def test_spike_at_the_latest_sample_raises_no_alarm():
    pts = series(lambda t: 40 * GIB, noise=0.05 * GIB)
    pts[-1] = (pts[-1][0], 95 * GIB)
    assert eta_days(pts) is None


def test_flat_raises_no_alarm():
    assert eta_days(series(lambda t: 60 * GIB, noise=0.5 * GIB)) is None


def test_short_history_is_not_enough_to_alarm():
    f = forecast(series(lambda t: 20 * GIB + 100 * GIB * t / DAY, days=0.04), CAP, NOW)
    assert f.eta_s is None and "too far ahead" in f.trend.reason


def test_slow_leak_of_a_process_is_suspected():
    mem = 8 * GIB
    hist = {"proc.rss:java": series(lambda t: 1 * GIB + 0.08 * GIB * t / DAY, noise=0.01 * GIB),
            "memory.total": [(NOW, mem)]}
    [doc] = forecast_vm(None, hist, Thresholds(), {}, NOW)
    assert doc["kind"] == "process_memory" and doc["status"] == "warning"
    assert "leak" in doc["message"] and "56%" in doc["message"]


def test_stable_process_is_not_a_leak():
    hist = {"proc.rss:nginx": series(lambda t: 1 * GIB, noise=0.01 * GIB),
            "memory.total": [(NOW, 8 * GIB)]}
    [doc] = forecast_vm(None, hist, Thresholds(), {}, NOW)
    assert doc["status"] == "ok"


def test_filesystem_forecast_document_for_the_api():
    hist = {"fs.used:/var": series(lambda t: 21 * GIB + 10 * GIB * t / DAY),
            "fs.total:/var": [(NOW, CAP)]}
    [doc] = forecast_vm(None, hist, Thresholds(), {}, NOW)
    assert doc["status"] == "critical" and doc["kind"] == "filesystem_bytes"
    assert doc["eta_at"] == pytest.approx(NOW + 0.9 * DAY, rel=1e-3)
    assert doc["trend_per_day"] == pytest.approx(10 * GIB, rel=0.01)
    # durations and sizes in the one humaniser's words (diag_protocol.units)
    assert doc["message"].startswith("/var will be full in about %s (growing 10 GiB a day)"
                                     % fmt_seconds(doc["eta_s"]))
    fit = doc["fit"]
    assert fit["intercept"] + fit["slope"] * (NOW - fit["t0"]) == pytest.approx(91 * GIB, rel=0.01)
    # why: the whole week was fitted, as one line, with a tiny error
    assert doc["method"] == "linear" and doc["confidence"] == 1.0
    assert (fit["start"], fit["end"]) == (0.0, NOW) and fit["reason"] is None
    assert fit["slope_error"] < 1e-3 * fit["slope"]


def test_minutes_of_a_disk_filling_in_minutes_are_enough_to_warn():
    # Five minutes of a disk filling by 16 MiB every 10 s (the demo's filling VM): full in
    # about six minutes, so five minutes of history are plenty, two hours are not needed.
    cap, step = 1.5 * GIB, 10.0
    pts = [(NOW - 300 + i * step, 0.5 * GIB + i * 16 * 2**20) for i in range(31)]
    hist = {"fs.used:/": pts, "fs.total:/": [(NOW, cap)]}
    [doc] = forecast_vm(None, hist, Thresholds(), {}, NOW)
    left = (cap - pts[-1][1]) / (16 * 2**20 / step)
    assert doc["status"] == "critical"
    assert doc["eta_at"] == pytest.approx(NOW + left, rel=0.05)
    assert doc["confidence"] > 0.9
    assert "(growing 5.6 GiB an hour)" in doc["message"]  # 16 MiB / 10 s


def test_minutes_of_a_boot_ramp_do_not_predict_the_day():
    # Memory climbing for the first three minutes after boot: extrapolated, full in hours,
    # far more than ten times the history, so no forecast until the history is long enough.
    mem, step = 1.0 * GIB, 10.0
    pts = [(NOW - 180 + i * step, 100 * 2**20 + i * 2 * 2**20) for i in range(19)]
    f = forecast(pts, mem, NOW)
    assert f.eta_s is None
    # a slow growth (full in about three days) for three hours: alone, three hours say
    # nothing about three days; after a quiet day, a rise covering [health]
    # forecast_min_span_s does
    quiet = [(NOW - DAY + i * 60.0, 100 * 2**20 + (i % 3) * 2**16) for i in range(1260)]
    slow = [(NOW - 10800 + i * 60.0, 100 * 2**20 + i * 0.2 * 2**20) for i in range(181)]
    left = (1024 - 136) / 0.2 * 60
    assert forecast(slow, mem, NOW, min_span_s=7200).eta_s is None
    assert forecast(quiet + slow, mem, NOW, min_span_s=7200).eta_s == pytest.approx(left,
                                                                                 rel=0.1)
    assert forecast(quiet + slow, mem, NOW, min_span_s=4 * 7200).eta_s is None


def test_runaway_fill_after_a_quiet_week_is_caught_within_minutes():
    # a week flat at 50 GiB, then a log writing 1 GiB a minute for the last 20 minutes
    pts = series(lambda t: 50 * GIB + max(0.0, t - (7 * DAY - 1200)) / 60.0 * GIB,
                 noise=0.05 * GIB)
    f = forecast(pts, CAP, NOW)
    assert f.trend.method == "recent" and f.trend.start >= NOW - 1200
    assert f.eta_s == pytest.approx(1800, rel=0.1)


def test_noise_and_a_recent_spike_are_no_surge():
    for seed in range(10):
        flat = series(lambda t: 60 * GIB, noise=0.5 * GIB, seed=seed)
        assert forecast(flat, CAP, NOW).eta_s is None
        spiked = series(lambda t: 40 * GIB + (50 * GIB if t > 7 * DAY - 600 else 0.0),
                        noise=0.05 * GIB, seed=seed)
        assert forecast(spiked, CAP, NOW).eta_s is None


def test_fill_on_a_cleanup_sawtooth_is_fitted_across_the_cleanups():
    # rotation every 6 hours (a 20 GiB ramp from 40 GiB), and for the last 1.5 days a fill of
    # 8 GiB a day on top: the peaks reach 100 GiB 5 days after the fill began, 3.5 days from now
    begin = 5.5 * DAY

    def f(t):
        return (40 + 20 * ((t % (6 * 3600)) / (6 * 3600)) + 8 * max(0.0, t - begin) / DAY) * GIB
    fc = forecast(series(f, noise=0.05 * GIB), CAP, NOW)
    assert fc.trend.method == "cleanup_cycle" and fc.resets >= 20
    assert fc.eta_s / DAY == pytest.approx(3.5, rel=0.15)
    assert fc.trend.slope * DAY == pytest.approx(8 * GIB, rel=0.15)


# -- a routine job's bursts are no cleanup cycle ---------------------------------------------

HOUR = 3600.0
#: a routine job: writes 30 GiB in an hour, holds it for hours, deletes it; its runs end at
#: random moments (half a day to two days apart), each after 4 to 7 hours
RUNS = [(0.35, 6.0), (0.9, 4.5), (2.6, 7.0), (3.1, 5.0), (5.2, 6.5), (6.3, 4.0)]


def job(t):
    v = 30.0
    for end, hours in RUNS:
        if end * DAY - hours * HOUR <= t < end * DAY:
            v += 30.0 * min(1.0, (t - end * DAY + hours * HOUR) / HOUR)
    return v * GIB


def test_a_fast_fill_on_a_routine_job_s_bursts_is_caught():
    # the bursts' deletions come six times, at random moments: before, they made a cleanup
    # cycle (whose "shape", the bursts' blur, hid the earlier bursts); now the bursts are
    # compared as they are, and a fill writing 75 GiB an hour (2.5 times the job's rate) for
    # the last 40 minutes is still caught, with its time left: 20 GiB at 75 GiB an hour
    def f(t):
        return job(t) + 75 * GIB * max(0.0, t - (NOW - 2400)) / HOUR
    fc = forecast(series(f, noise=0.05 * GIB), CAP, NOW)
    assert fc.trend.method == "recent"
    assert fc.eta_s / 60 == pytest.approx(16, rel=0.3)


def test_a_routine_job_s_bursts_make_no_cleanup_cycle():
    # the same job alone: its deletions are resets, but they come at no regular period
    fc = forecast(series(job, noise=0.05 * GIB), CAP, NOW)
    assert fc.resets >= 4 and fc.trend.method != "cleanup_cycle" and fc.eta_s is None


# -- a fill on a cycle (issue 13, sixth round) -------------------------------------------------

def rolled(pts, now=NOW, raw_s=3 * HOUR):
    """``pts`` up to ``now`` as the health pass reads them: 5-minute means (stamped at their
    bucket's start) older than ``raw_s``, raw samples after."""
    pts = [p for p in pts if p[0] <= now]
    cut = now - raw_s
    cut -= cut % 300
    buckets = {}
    for t, v in pts:
        if t < cut:
            buckets.setdefault(t - t % 300, []).append(v)
    return sorted((b, sum(vs) / len(vs)) for b, vs in buckets.items()) + \
        [p for p in pts if p[0] >= cut]


def cycle(shape, period):
    """A cycle of +-8 GiB around 60 GiB (a daily load, an hourly job): a sine, or a ramp and a
    fall (a job's files, written then deleted)."""
    if shape == "sine":
        return lambda t: (60 + 8 * math.sin(2 * math.pi * t / period)) * GIB
    return lambda t: (60 + 8 * (2 * ((t / period) % 1.0) - 1)) * GIB


@pytest.mark.parametrize("shape,period", [("sine", 2400), ("sine", 5400), ("sine", 9 * HOUR),
                                          ("sine", DAY), ("ramp", 2400)])
def test_a_fill_on_a_cycle_is_caught_before_it_rises_above_the_cycle_s_peaks(shape, period):
    # a writer adding 1.5 GiB an hour for the last 6 hours (9 GiB) under a cycle of 16 GiB
    # from trough to peak: the series is still inside the band the cycle has always drawn,
    # but each part of the cycle is higher than at the same phase of the earlier cycles; the
    # peaks (68 GiB, 77 now) reach 100 GiB in 15.3 hours
    base = cycle(shape, period)

    def f(t):
        return base(t) + 1.5 * GIB * max(0.0, t - (NOW - 6 * HOUR)) / HOUR
    fc = forecast(rolled(series(f, noise=0.3 * GIB)), CAP, NOW)
    assert fc.trend.method == "seasonal"
    assert fc.eta_s / HOUR == pytest.approx(15.3, rel=0.15)
    assert fc.trend.slope * HOUR == pytest.approx(1.5 * GIB, rel=0.2)


@pytest.mark.parametrize("shape", ["sine", "ramp"])
def test_a_plain_cycle_raises_nothing_at_any_phase(shape):
    for period in (2400, 5400, 4 * HOUR, 9 * HOUR, DAY):
        for k in range(6):
            end = NOW - k * period / 6   # the pass falls anywhere in the cycle
            pts = rolled(series(cycle(shape, period), noise=0.3 * GIB, seed=k), end)
            assert forecast(pts, CAP, end).eta_s is None, (period, k)
