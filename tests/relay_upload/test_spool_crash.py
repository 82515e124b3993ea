"""The spool survives SIGKILL at any instant: a real process appending, reading and committing
with small segments is killed 100 times at random moments (benchmarks/spool_crash.py, which
runs longer on its own); nothing appended is lost and nothing committed comes back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "spool_crash.py"


def test_100_sigkills_during_heavy_spooling_lose_nothing():
    done = subprocess.run([sys.executable, str(BENCH), "--kills", "100", "--max-delay", "0.1",
                           "--seed", "7", "--json"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    assert result["kills"] == 100
    assert result["appended"] > 1000  # heavy spooling, with many segments rolled and deleted
    assert result["lost"] == 0, result["lost_ids"]
    assert result["committed_twice"] == 0
    assert done.returncode == 0
