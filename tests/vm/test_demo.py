"""The README's main job, end to end: ``python3 -m lab.demo --check``.

Two real guests through libvirtd and the VDSM hook, the real relay uploading over TLS with the
host certificate, the real vmdiag-engine on SQLite behind the stand-in oVirt engine, read back
with the SDK helpers. ``--check`` exits 0 only when the healthy VM reached the engine calm and
the filling VM shows its failed unit and a filesystem forecast in its health verdict.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from lab.vm.image import SOURCE_ROOT, GuestImage

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]


def test_demo_shows_both_guests_and_forecasts_the_filling_disk(guest_image: GuestImage,
                                                                tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=SOURCE_ROOT)
    out = subprocess.run([sys.executable, "-m", "lab.demo", "--check", "--timeout", "420"],
                         cwd=SOURCE_ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    (tmp_path / "demo.log").write_text(log)
    assert out.returncode == 0, "demo --check failed (exit %d); its output ends with:\n%s" % (
        out.returncode, "\n".join(log.splitlines()[-60:]))
    # what a newcomer reads: both VMs' diagnostics and where the pages are
    assert "demo-web on demo-host:" in out.stdout
    assert "demo-filling on demo-host: CRITICAL" in out.stdout
    assert "/vmdiag/ui/fleet#token=" in out.stdout
    assert "forecast: / full in about" in out.stdout
    assert "shut down the guests, the relay and the engine done" in out.stderr


def test_demo_stops_everything_on_ctrl_c(guest_image: GuestImage, libvirt_conn) -> None:
    """Ctrl-C as soon as both guests exist (mid start-up, before their first reports: the
    hardest moment to stop cleanly, and it spares CI two full boots)."""
    env = dict(os.environ, PYTHONPATH=SOURCE_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "lab.demo", "--timeout", "420"],
                            cwd=SOURCE_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the second guest's domain is created
            seen.append(line)
            if re.search(r"create domain demo-filling .* done in", line):
                break
        else:
            pytest.fail("the demo ended before its guests existed:\n" + "".join(seen[-60:]))
        store = re.search(r"start vmdiag-engine .*log (\S+)/engine\.log", "".join(seen))
        assert store, "".join(seen[-40:])
        run_dir = store.group(1)
        names = {d.name() for d in libvirt_conn.listAllDomains()}
        assert {"demo-web", "demo-filling"} <= names
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(seen[-30:]) + rest
    assert "shut down the guests, the relay and the engine done" in rest
    assert not {"demo-web", "demo-filling"} & {d.name() for d in libvirt_conn.listAllDomains()}
    left = subprocess.run(["pgrep", "-f", run_dir], capture_output=True, text=True).stdout
    assert left == "", "processes of the demo still run: " + left
