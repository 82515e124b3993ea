"""The chaos benchmark's short variant: 40 simulated guests (6 hostile) through a real relay
process to a real vmdiag-engine process over TLS, on SQLite and on a real PostgreSQL server,
for 45 s each, with the engine stopped for 8 s, libvirtd restarted (a real, private libvirtd
serving the relay the guests' domains through libvirt's remote driver) and the relay killed
with SIGKILL twice and restarted (benchmarks/chaos_bench.py runs 200 guests for 10 minutes).
The well-behaved guests follow the agent's acknowledgement rule (diag_protocol.acks), so
every report they made arrives, once, kills included. Before acknowledgements, what the
killed relay had read but not yet spooled was lost (chaos_bench.py --old-guests shows it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.pg_cluster import PgUnavailable, find_bindir
from tests.real import unavailable

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos_bench.py"

pytestmark = pytest.mark.libvirt  # the relay discovers its VMs on libvirt's test driver


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_outage_kills_and_hostile_guests_lose_nothing(store):
    if store == "postgresql":
        try:
            find_bindir()
        except PgUnavailable as err:
            unavailable(str(err))
    done = subprocess.run([sys.executable, str(BENCH), "--guests", "40", "--hostile", "6",
                           "--duration", "45", "--outage", "8", "--interval", "4",
                           "--kills", "2", "--store", store, "--json"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])[store]["hostile"]
    assert run["drained"], run
    assert run["kills"] == 2
    assert run["sent"] >= 34 * 45 / 4 * 0.8, run  # the well-behaved guests kept reporting
    assert run["lost"] == 0, run  # the outage and both kills cost nothing
    assert run["duplicates_stored"] == 0, run
    assert run["acked"] >= run["sent"] * 0.9, run  # the relay acknowledged what it took
    assert run["relay_drops"]["dropped_oldest"] == 0
    # libvirtd restarted under the relay: it reconnected and kept every session and its cache
    before, after = run["libvirt_before_restart"], run["libvirt_after_restart"]
    assert run["libvirtd_restarts"] == 1
    assert before["libvirt_connected"] and after["libvirt_connected"], run
    assert after["libvirt_generation"] > before["libvirt_generation"], run
    assert after["relay_pid"] == before["relay_pid"]
    assert after["vms_followed"] == before["vms_followed"] == 40, run
    assert after["vms_with_a_report"] >= before["vms_with_a_report"] >= 34, run
    assert after["channel_connections"] == before["channel_connections"], run  # none reopened
