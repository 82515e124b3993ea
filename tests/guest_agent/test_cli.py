"""vmdiag-agent report/check/config against this machine's real /proc and /sys."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from diag_protocol import validate
from guest_agent.cli import main

QUIET = "[probes]\ngateway = no\n"


def conf(tmp_path: Path, text: str = "") -> str:
    path = tmp_path / "agent.conf"
    path.write_text(QUIET + text)
    return str(path)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_report_json_is_a_valid_report(tmp_path: Path) -> None:
    code, text = run("--config", conf(tmp_path), "report", "--json", "--sample", "0.2")
    assert code == 0
    doc = json.loads(text)
    assert validate(doc)["type"] == "report"
    assert doc["seq"] == 0
    assert doc["sections"]["resources"]["data"]["cpu"]["percent"] is not None  # two samples


def test_report_tables(tmp_path: Path) -> None:
    code, text = run("--config", conf(tmp_path), "report", "--sample", "0")
    assert code == 0
    for head in ("== network", "== resources", "== applications", "== settings", "== checks"):
        assert head in text
    assert "MOUNT" in text and "fs.fill:/" in text


@pytest.mark.parametrize("thresholds,fs_status", [
    ("fs_warning_percent = 1\nfs_critical_percent = 100\n", "WARNING"),
    ("fs_warning_percent = 1\nfs_critical_percent = 1\n", "CRITICAL"),
])
def test_check_exit_code_follows_the_worst_result(tmp_path: Path, thresholds: str,
                                                  fs_status: str) -> None:
    path = conf(tmp_path, "[thresholds]\n" + thresholds)
    code, text = run("--config", path, "check", "--sample", "0")
    head, *lines = text.splitlines()
    statuses = {line.split()[0] for line in lines}
    assert "%-8s fs.fill:/: / is " % fs_status in text
    worst = next(s for s in ("CRITICAL", "WARNING", "UNKNOWN", "OK") if s in statuses)
    assert code == {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}[worst]
    assert head.startswith("VMDIAG %s - " % worst)
    assert code in (1, 2)  # the forced fs result can only be outranked by critical


def test_bad_config_exits_3_and_says_where(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = conf(tmp_path, "[agent]\ninterval = soon\n")
    assert run("--config", path, "check")[0] == 3
    err = capsys.readouterr().err
    assert "configuration error: %s: [agent] interval: 'soon' is not a number" % path in err


def test_config_shows_effective_values(tmp_path: Path) -> None:
    code, text = run("--config", conf(tmp_path, "[watch]\nunits = sshd.service\n"), "config")
    assert code == 0
    assert json.loads(text)["options"]["watch"]["units"] == ["sshd.service"]
