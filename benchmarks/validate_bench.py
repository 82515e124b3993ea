#!/usr/bin/env python3
"""Validation benchmark: microseconds per message through diag_protocol (prints figures).

Times, on the same realistic report the relay benchmark sends (~20 KB encoded, schema-valid):

- ``validate``: a decoded report -> cleaned, checked copy (what the relay does per message);
- ``decode_line``: one encoded line -> message (JSON decoding plus ``validate``);
- ``validate_envelope``: the relay-to-engine envelope around that report (spool replay, ingest);
- ``reject_deep``: a report whose last section holds one wrong field deep inside, so a
  rejection walks nearly the whole message before it fails.

Each figure is the median of ``--repeat`` rounds of ``--number`` calls, with the fastest and
slowest round beside it; the machine may be shared, so the median is the figure to quote.

Usage: python3 benchmarks/validate_bench.py [--number 200] [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import timeit
from typing import Any, Callable, Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from diag_protocol import (  # noqa: E402
    ProtocolError,
    decode_line,
    encode,
    make_envelope,
    validate,
    validate_envelope,
)
from lab.fake_guest import sample_report  # noqa: E402


def rejecting(call: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except ProtocolError:
            return
        raise AssertionError("expected a rejection")
    return run


def measure(call: Callable[[], Any], number: int, repeat: int) -> Dict[str, float]:
    rounds = [t / number * 1e6 for t in timeit.repeat(call, number=number, repeat=repeat)]
    return {"median_us": round(statistics.median(rounds), 1), "min_us": round(min(rounds), 1),
            "max_us": round(max(rounds), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=200, help="calls per round")
    parser.add_argument("--repeat", type=int, default=15, help="rounds")
    parser.add_argument("--processes", type=int, default=50, help="processes per report")
    parser.add_argument("--units", type=int, default=80, help="units per report")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    report = sample_report(seq=1, processes=args.processes, units=args.units,
                           rng=random.Random(1), now=1700000000.0)
    line = encode(report)[:-1]
    envelope = make_envelope("host-1", "00000000-0000-4000-8000-000000000001", report,
                             received_at=1700000001.0)
    bad = copy.deepcopy(report)
    bad["sections"]["checks"]["data"]["results"][-1]["status"] = "fine"
    cases = {
        "validate": lambda: validate(report),
        "decode_line": lambda: decode_line(line),
        "validate_envelope": lambda: validate_envelope(envelope),
        "reject_deep": rejecting(lambda: validate(bad)),
    }
    result: Dict[str, Any] = {"report_bytes": len(line)}
    for name, call in cases.items():
        result[name] = measure(call, args.number, args.repeat)
    result["python"] = sys.version.split()[0]
    result["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            if isinstance(value, dict):
                value = "%(median_us)9.1f us/message (min %(min_us)s, max %(max_us)s)" % value
            print("%-*s  %s" % (width, key, value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
