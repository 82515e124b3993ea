#!/usr/bin/env python3
"""vmdiag's forecasts beside the usual ways of predicting a full disk, on the same histories.

    python3 benchmarks/forecast_compare.py [--seeds 20]

Every method sees the same series (a 100 GiB filesystem sampled every minute for a week, with
the noise each scenario states) and gives a time left; an alarm is a time left within the
warning horizon (7 days), critical within 24 hours, as vmdiag's defaults. The peers, as they
are commonly deployed:

* Prometheus ``predict_linear(used[6h], ...)``: least squares over the last 6 hours (the
  node_exporter alerting mixin's window);
* Zabbix ``timeleft(/host/vfs.fs.size[/,used],1h,100%)``: least squares over the last hour;
* Netdata ``out_of_disk_space_time``: free space divided by the mean growth rate of the last
  30 minutes (negative or zero growth: no alarm).

Each scenario has a known answer: an alarm with the given time left (a miss is no alarm, or a
time left off by more than the tolerance), or no alarm at all (any alarm is a false one).
Noisy scenarios run with ``--seeds`` different noise seeds; the table counts over all of them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine_plugin.health import forecast  # noqa: E402

Point = Tuple[float, float]
DAY = 86400.0
GIB = float(2**30)
CAP = 100 * GIB
NOW = 7 * DAY
STEP = 60.0
WARNING_S = 7 * DAY
TOLERANCE = 0.25  # a caught fill must have its time left within 25 %


def series(f: Callable[[float], float], noise: float, seed: int) -> List[Point]:
    rnd = random.Random(seed)
    out, t = [], 0.0
    while t <= NOW:
        out.append((t, min(CAP, max(0.0, f(t) + rnd.gauss(0, noise)))))
        t += STEP
    return out


def _least_squares_eta(points: Sequence[Point], window: float) -> Optional[float]:
    pts = [p for p in points if p[0] >= NOW - window]
    n = len(pts)
    if n < 2:
        return None
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in pts) / var
    if slope <= 0:
        return None
    level = mv + slope * (NOW - mt)
    return max(0.0, (CAP - level) / slope)


def prometheus(points: Sequence[Point]) -> Optional[float]:
    return _least_squares_eta(points, 6 * 3600)


def zabbix(points: Sequence[Point]) -> Optional[float]:
    return _least_squares_eta(points, 3600)


def netdata(points: Sequence[Point]) -> Optional[float]:
    pts = [p for p in points if p[0] >= NOW - 1800]
    if len(pts) < 2:
        return None
    rate = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
    return (CAP - pts[-1][1]) / rate if rate > 0 else None


def vmdiag(points: Sequence[Point]) -> Optional[float]:
    return forecast(points, CAP, NOW).eta_s


METHODS: Dict[str, Callable[[Sequence[Point]], Optional[float]]] = {
    "vmdiag": vmdiag, "predict_linear[6h]": prometheus, "zabbix timeleft[1h]": zabbix,
    "netdata 30m rate": netdata}


def _cleanup(t: float) -> float:
    return (20 + 10 * t / DAY) * GIB if t < 5 * DAY else 30 * GIB


def _new_fill_after_cleanup(t: float) -> float:
    return (20 + 10 * t / DAY) * GIB if t < 5 * DAY else (30 + 20 * (t - 5 * DAY) / DAY) * GIB


def _spike(t: float) -> float:
    return 40 * GIB + (50 * GIB if abs(t - (NOW - 600)) < 300 else 0.0)


def _runaway(t: float) -> float:
    # quiet for a week, then a log writing 1 GiB a minute for the last 20 minutes
    return 50 * GIB + max(0.0, t - (NOW - 1200)) / 60.0 * GIB


def _batch_job(t: float) -> float:
    # a nightly job writes 30 GiB of temporary files over an hour and deletes them an hour
    # later; it started 40 minutes ago, so "now" is in the middle of its write
    phase = (t - (NOW - 2400)) % DAY
    return 45 * GIB + (30 * GIB * min(1.0, phase / 3600) if phase < 2 * 3600 else 0.0)


#: name, series, noise (bytes), expected time left (None: no alarm is right)
SCENARIOS: List[Tuple[str, Callable[[float], float], float, Optional[float]]] = [
    ("steady fill, full in 1 day", lambda t: 20 * GIB + 10 * GIB * t / DAY, 0.0, DAY),
    ("noisy fill, full in 9 days (no alarm)", lambda t: 20 * GIB + 5 * GIB * t / DAY,
     2 * GIB, None),
    ("noisy fill, full in 3 days", lambda t: 20 * GIB + 8 * GIB * t / DAY, 2 * GIB, 3 * DAY),
    ("fill, then a cleanup 2 days ago", _cleanup, 0.2 * GIB, None),
    ("cleanup, then a faster fill", _new_fill_after_cleanup, 0.0, 1.5 * DAY),
    ("runaway log since 20 min, full in 30 min", _runaway, 0.05 * GIB, 1800.0),
    ("daily log-rotation sawtooth", lambda t: (60 + 20 * ((t % DAY) / DAY)) * GIB, 0.1 * GIB,
     None),
    ("nightly batch job's temporary files", _batch_job, 0.1 * GIB, None),
    ("one spike in the last 10 minutes", _spike, 0.05 * GIB, None),
    ("40 GiB copied in 10 min, quiet since", lambda t: 40 * GIB + 40 * GIB * min(
        1.0, max(0.0, t - (NOW - 1800)) / 600), 0.05 * GIB, None),
    ("flat, noisy", lambda t: 60 * GIB, 0.5 * GIB, None),
]


def judge(eta: Optional[float], expected: Optional[float]) -> str:
    alarm = eta is not None and eta <= WARNING_S
    if expected is None:
        return "false alarm" if alarm else "ok"
    if not alarm:
        return "missed"
    return "ok" if abs(eta - expected) <= TOLERANCE * expected else "wrong time"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="noise seeds per noisy scenario")
    args = parser.parse_args()
    totals = {name: {"ok": 0, "false alarm": 0, "missed": 0, "wrong time": 0}
              for name in METHODS}
    width = max(len(s[0]) for s in SCENARIOS)
    print("%-*s  %s" % (width, "scenario (outcomes over seeds)",
                        "  ".join("%-22s" % m for m in METHODS)))
    for name, f, noise, expected in SCENARIOS:
        seeds = range(args.seeds) if noise else range(1)
        cells = {m: {"ok": 0, "false alarm": 0, "missed": 0, "wrong time": 0} for m in METHODS}
        for seed in seeds:
            pts = series(f, noise, seed)
            for method, fn in METHODS.items():
                verdict = judge(fn(pts), expected)
                cells[method][verdict] += 1
                totals[method][verdict] += 1
        row = []
        for method in METHODS:
            bad = {k: v for k, v in cells[method].items() if k != "ok" and v}
            row.append("%-22s" % ("ok %d/%d" % (cells[method]["ok"], len(seeds))
                                  + ("".join(", %s %d" % kv for kv in bad.items()))))
        print("%-*s  %s" % (width, name, "  ".join(row)))
    print()
    print("%-*s  %s" % (width, "false alarms (all runs)",
                        "  ".join("%-22d" % totals[m]["false alarm"] for m in METHODS)))
    print("%-*s  %s" % (width, "misses or wrong time left",
                        "  ".join("%-22d" % (totals[m]["missed"] + totals[m]["wrong time"])
                                  for m in METHODS)))
    print("%-*s  %s" % (width, "right answers",
                        "  ".join("%-22d" % totals[m]["ok"] for m in METHODS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
