"""A short run of the fuzz benchmark (benchmarks/fuzz_ingest.py, a million inputs per side on
its own): hostile bodies through the engine's ingest parsing and validation, hostile guest
lines through real relay sessions; nothing may crash, and the inputs must reach every kind of
refusal (so the run cannot pass by feeding nothing hostile)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_ingest.py"


def test_hostile_inputs_crash_nothing(tmp_path):
    out = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(BENCH), "--inputs", "3000", "--vms", "4",
                           "--seed", "11", "--store-every", "10", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(out.read_text())
    engine, relay = result["engine"], result["relay"]
    assert engine["crashes"] == 0, engine["crash_samples"]
    assert relay["crashes"] == 0, relay["logged_tracebacks"]
    assert done.returncode == 0
    # the inputs were hostile in every way the benchmark claims, and still some got through
    assert {"400", "200"} <= set(engine["answers"])
    assert engine["outcomes"]["refused:out_of_range"] > 0
    assert engine["outcomes"]["refused:invalid"] > 0
    assert engine["stored_in_sqlite"] > 0
    assert engine["peer_json_loads_crashes"] > 0  # plain json.loads would have crashed
    assert {"too_deep", "bad_utf8", "bad_json", "out_of_range", "invalid",
            "stale_seq"} <= set(relay["drops"])
    assert relay["sessions_still_connected"] == 4 and relay["reports_cached"] > 0
