"""What the agent process loads: heavy stdlib modules stay out unless a feature needs them.

The agent must stay small (RSS target 20 MB), and most of a Python process's memory is the
modules it imported. urllib.request brings http.client, email and ssl (about 8 MiB), hashlib
brings OpenSSL's libcrypto (over 3 MiB), dataclasses brings inspect and ast. Each test runs a
fresh interpreter and looks at ``sys.modules``; it asserts what is loaded, not a timing or an
RSS figure, so it is stable on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Never needed by an agent without http_targets.
HEAVY = ("urllib.request", "http.client", "email", "ssl", "_ssl", "hashlib", "_hashlib",
         "dataclasses", "inspect", "encodings.idna")


def _modules_after(code: str) -> List[str]:
    """sys.modules of a fresh interpreter (no site, so the venv adds nothing) after ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), check=True, timeout=60)
    modules: List[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def test_starting_the_daemon_imports_no_heavy_module():
    loaded = _modules_after("import guest_agent.cli, guest_agent.daemon, guest_agent.collectors")
    assert [m for m in HEAVY if m in loaded] == []


def test_a_full_collection_imports_no_heavy_module():
    """Every section on a recorded el9 guest, package list and FQDN lookup included."""
    loaded = _modules_after(
        "from guest_agent.collectors import CollectorOptions, CollectorState, collect_section\n"
        "from guest_agent.report import ReportBuilder\n"
        "from tests.guest_agent.collectors.fakes import machine\n"
        "options = CollectorOptions(machine=machine('el9'), probe_gateway=False,\n"
        "                           resolve_fqdn=False)\n"
        "state = CollectorState()\n"
        "sections = {name: collect_section(name, options, state)\n"
        "            for name in ('network', 'resources', 'applications', 'settings')}\n"
        "assert 'list' in sections['applications']['data']['packages'], sections\n"
        "ReportBuilder.encode('boot', 'run', 0, sections)\n")
    assert [m for m in HEAVY if m in loaded] == []


def test_an_http_probe_still_loads_urllib_when_configured():
    loaded = _modules_after(
        "from guest_agent.collectors.probes import http_probe, ProbeFailed\n"
        "try:\n"
        "    http_probe('http://127.0.0.1:9/', 0.5)\n"
        "except (ProbeFailed, OSError):\n"
        "    pass\n")
    assert "urllib.request" in loaded


#: What the daemon needs only after its first report, or never: the unit's plain ``run`` is
#: parsed without argparse (which loads gettext), run ids are made without uuid (which loads
#: platform), datetime only shows times, the event watcher starts after the first report, and
#: psutil (some thirty named tuples) is for the logged-in users of the full reports only: the
#: interface addresses come over netlink.
#: Under emulation each costs a guest's agent start a noticeable part of a second.
AFTER_FIRST_REPORT = ("argparse", "gettext", "uuid", "platform", "datetime",
                      "guest_agent.events", "psutil")


def test_the_units_run_command_reaches_its_first_report_without_the_late_modules(tmp_path):
    """``vmdiag-agent run`` as the unit starts it, on this machine, until the first (lean)
    report is queued: what is loaded then is what every agent start pays before the host
    sees the guest."""
    conf = tmp_path / "agent.conf"
    conf.write_text("[agent]\ndevice = %s\n[watch]\nprocesses = init\n"
                    % (tmp_path / "no-port"))
    code = (
        "import logging, os, signal, sys\n"
        "from guest_agent import cli\n"
        "seen = []\n"
        "class AtFirstReport(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        if record.getMessage().startswith('first report') and not seen:\n"
        "            seen.append(sorted(sys.modules))\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "logging.getLogger('guest_agent.daemon').addHandler(AtFirstReport())\n"
        "assert cli.main(['run']) == 0\n"
        "import json\n"
        "print(json.dumps(seen[0]))\n")
    done = subprocess.run([sys.executable, "-S", "-c", code],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO,
                                   VMDIAG_AGENT_CONFIG=str(conf)))
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "guest_agent.daemon" in loaded and "guest_agent.collectors" in loaded
    assert [m for m in AFTER_FIRST_REPORT + HEAVY if m in loaded] == []
