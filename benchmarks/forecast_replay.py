#!/usr/bin/env python3
"""Forecasts judged as users live them: a corpus of VM-weeks replayed through the health pass.

    python3 benchmarks/forecast_replay.py                 # 20 held-out seeds x 15 families
    python3 benchmarks/forecast_replay.py --seeds 2 --cadence 1800    # a quick look
    python3 benchmarks/forecast_replay.py --tune          # the seeds the method was tuned on
    python3 benchmarks/forecast_replay.py --fresh         # the second held-out range
    python3 benchmarks/forecast_replay.py --unseen        # the third (9000..9019)
    python3 benchmarks/forecast_replay.py --last          # the fourth (13000..13019)
    python3 benchmarks/forecast_replay.py --held 17000    # the fifth round's: 17000.., 21000..
    python3 benchmarks/forecast_replay.py --held 25000    # the sixth round's: 25000.., 29000..
    python3 benchmarks/forecast_replay.py --held 33000    # the seventh round's: 33000.., 37000..
    python3 benchmarks/forecast_replay.py --held 41000    # the eighth round's: 41000.., 45000..
    python3 benchmarks/forecast_replay.py --start 100     # any seeds: 100..119 (more tuning)
    python3 benchmarks/forecast_replay.py --built --seeds 40   # sawtooth cases built to tune

Every case (``lab/forecast_corpus.py``: families, truth, replay and scoring are described
there) is replayed for each method through the same evaluation (``evaluate_vm`` every
``--cadence`` seconds, state carried, default thresholds, then ``events.plan``); only the
forecaster differs. The peers, as commonly deployed, give a time left that the same verdict
rules turn into warning/critical: Prometheus ``predict_linear`` over 6 h, Zabbix ``timeleft``
over 1 h, Netdata's free space over the 30-minute rate.

Columns per method: false alarms (warning/critical events not justified by the truth) per
1,000 VM-days (goal <= 1); fills raised while at least half of their true time left remained
(goal >= 95 %); the time-left error at the first raise, 90th percentile (goal <= 30 %).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.forecast_corpus import (  # noqa: E402
    BUILT_FAMILIES,
    CADENCE_S,
    FAMILIES,
    FRESH_SEEDS,
    HELD_OUT_RANGES,
    LAST_SEEDS,
    METHODS,
    REPORT_SEEDS,
    TUNE_SEEDS,
    UNSEEN_SEEDS,
    Score,
    make_case,
    replay,
    score_one,
)


def _job(args: Tuple[str, int, str, float, bool]) -> Tuple[str, str, Score, float, List[str]]:
    family, seed, method, cadence, raw_week = args
    case = make_case(family, seed)
    start = time.process_time()
    result = replay(case, method, METHODS[method], cadence_s=cadence, raw_week=raw_week)
    spent = time.process_time() - start
    false = []
    for ev in result.events:
        if not ev.justified:
            left = [case.full_at.get(m) for m in ev.metrics]
            true = ", ".join("%.1f d" % ((f - ev.at) / 86400) if f else "never" for f in left)
            false.append("%s %s seed %d: %s at day %.2f of the week (%s), true time left %s"
                         % (method, family, seed, ev.status, (ev.at - case.start) / 86400,
                            ",".join(ev.metrics) or "-", true or "-"))
    return method, family, score_one(result), spent, false


def _cell(s: Optional[Score]) -> str:
    if s is None:
        return "-"
    parts = ["%6.1f" % s.false_per_1000_vm_days]
    parts.append("%3d/%-3d" % (s.in_time, s.fills) if s.fills else "   -   ")
    p90 = s.error_p90
    parts.append("%4.0f%%" % (100 * p90) if p90 is not None else "    -")
    return " ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds per family (default 20)")
    ap.add_argument("--tune", action="store_true", help="use the tuning seeds instead")
    ap.add_argument("--fresh", action="store_true",
                    help="use the second held-out range (never looked at while tuning)")
    ap.add_argument("--unseen", action="store_true",
                    help="use the third held-out range (picked before the last changes)")
    ap.add_argument("--last", action="store_true",
                    help="use the fourth held-out range (picked before the sawtooth change)")
    ap.add_argument("--held", type=int,
                    choices=[r[0] for r in HELD_OUT_RANGES],
                    help="one of the fifth to eighth rounds' held-out ranges, by its first seed")
    ap.add_argument("--start", type=int, help="seeds from this one (e.g. more tuning seeds)")
    ap.add_argument("--built", action="store_true",
                    help="the sawtooth cases built to tune the cleanup cycle (seeds from 0), "
                         "instead of the corpus")
    ap.add_argument("--cadence", type=float, default=CADENCE_S, help="seconds between passes")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--false", action="store_true",
                    help="list the false alarms (case, moment, status, true time left)")
    ap.add_argument("--raw-week", action="store_true",
                    help="refits see raw samples back to the raw retention (48 h), as before "
                    "they read 5-minute means older than workers.raw_since")
    args = ap.parse_args()
    seeds = list(TUNE_SEEDS if args.tune else FRESH_SEEDS if args.fresh
                 else UNSEEN_SEEDS if args.unseen else LAST_SEEDS if args.last
                 else REPORT_SEEDS)[:args.seeds]
    if args.held is not None:
        seeds = list([r for r in HELD_OUT_RANGES
                      if r[0] == args.held][0])[:args.seeds]
    if args.start is not None:
        seeds = list(range(args.start, args.start + args.seeds))
    methods = [m for m in args.methods.split(",") if m]
    families = [f for f in args.families.split(",") if f]
    if args.built:
        seeds = list(range(args.seeds))
        families = list(BUILT_FAMILIES)
    jobs = [(f, s, m, args.cadence, args.raw_week) for f in families for s in seeds
            for m in methods]
    cells: Dict[Tuple[str, str], Score] = {}
    cpu: Dict[str, float] = {m: 0.0 for m in methods}
    wall = time.perf_counter()
    false: List[str] = []
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for method, family, s, spent, listed in pool.map(_job, jobs, chunksize=4):
            cells.setdefault((method, family), Score()).add(s)
            cells.setdefault((method, "all"), Score()).add(s)
            cpu[method] += spent
            false += listed
    wall = time.perf_counter() - wall
    vm_weeks = len(families) * len(seeds)
    print("Forecast replay: %d VM-weeks (%s seeds %s), a pass every %d s over each week"
          % (vm_weeks, "built" if args.built else "tuning" if args.tune or args.start is not None
             else "held-out",
             _seed_text(seeds), args.cadence))
    print("(vmdiag keeps a fit between passes while new samples agree with it; the peers "
          "refit on every pass, as deployed)")
    print("cell: false alarms per 1,000 VM-days | fills raised in time | time-left error p90")
    width = max(len(f) for f in families + ["all"]) + 2
    print("%-*s%s" % (width, "family", "".join("%-24s" % m for m in methods)))
    for family in families + ["all"]:
        print("%-*s%s" % (width, family,
                          "".join("%-24s" % _cell(cells.get((m, family))) for m in methods)))
    print("%-*s%s" % (width, "events (all)",
                      "".join("%-24d" % cells[(m, "all")].events for m in methods)))
    print("%-*s%s" % (width, "CPU s (replay)",
                      "".join("%-24.1f" % cpu[m] for m in methods)))
    print("wall %.0f s with %d worker(s)" % (wall, args.jobs))
    if args.false:
        print("false alarms:" if false else "false alarms: none")
        for line in false:
            print("  " + line)
    return 0


def _seed_text(seeds: List[int]) -> str:
    return "%d..%d" % (seeds[0], seeds[-1]) if seeds else "none"


if __name__ == "__main__":
    sys.exit(main())
