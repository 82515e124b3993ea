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
