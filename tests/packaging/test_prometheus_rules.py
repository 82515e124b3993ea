"""The shipped example alerting rules: valid for promtool, passing their unit tests
(tests/packaging/data/vmdiag-rules.test.yml), and naming only metrics the relay exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from lab.fake_guest import sample_report
from tests.real import unavailable
from vdsm_hooks.relay.cache import ReportCache
from vdsm_hooks.relay.metrics import RelayCollector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "packaging", "prometheus", "vmdiag-rules.yml")
TESTS = os.path.join(ROOT, "tests", "packaging", "data", "vmdiag-rules.test.yml")


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed: scripts/setup-deps installs the Debian package "
                    "prometheus")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(TESTS))


def test_rules_are_valid_and_pass_their_unit_tests():
    check = promtool("check", "rules", RULES)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 rules found" in check.stdout
    run = promtool("test", "rules", os.path.basename(TESTS))
    assert run.returncode == 0, run.stdout + run.stderr


def test_rules_and_their_tests_name_only_metrics_the_relay_exposes():
    cache = ReportCache()
    cache.entry("v", "web").set_report(sample_report(1), 1e9)
    exposed = {m.name for m in RelayCollector(cache).collect()}
    for path in (RULES, TESTS):
        with open(path, encoding="utf-8") as f:
            used = set(re.findall(r"\b(vmdiag_[a-z_]+)", f.read()))
        assert used and used <= exposed, (path, used - exposed)
