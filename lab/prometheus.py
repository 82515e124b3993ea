"""A real Prometheus server for the lab: scrapes given targets, loads rule files, answers its
HTTP API. Debian's ``prometheus`` package (scripts/setup-deps installs it).

    with PrometheusServer(run_dir, targets=["127.0.0.1:9791"], rule_files=[rules]) as prom:
        prom.wait(lambda: prom.alerts("VmdiagWatchedUnitFailed", state="firing"), 60)

Storage goes to a folder in ``run_dir``, its log to ``prometheus.log`` there; scrape and rule
evaluation every second, so a test waits seconds. ``shortened_rules`` copies a rule file with
its ``for:`` durations shortened, keeping every expression and label as shipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Sequence

#: A rule's hold time: ``for: 2m`` and the like, one per rule.
_FOR = re.compile(r"^(\s+for:\s*)(\S+)\s*$", re.MULTILINE)


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or did not answer; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shortened_rules(source: str, target: str, hold: str = "5s") -> int:
    """Copy the rule file ``source`` to ``target`` with every ``for:`` set to ``hold``;
    return how many were changed."""
    with open(source, encoding="utf-8") as handle:
        text = handle.read()
    text, count = _FOR.subn(lambda m: m.group(1) + hold, text)
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(text)
    return count


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second with ``rule_files`` loaded."""

    def __init__(self, run_dir: str, targets: Sequence[str], rule_files: Sequence[str] = (),
                 job: str = "vmdiag-relay") -> None:
        self.binary = shutil.which("prometheus")
        if self.binary is None:
            raise PrometheusError("prometheus is not installed: apt-get install prometheus "
                                  "(scripts/setup-deps does)")
        self.dir = run_dir
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(run_dir, "prometheus.log")
        self.config = os.path.join(run_dir, "prometheus.yml")
        with open(self.config, "w", encoding="utf-8") as handle:
            json.dump({  # YAML is a superset of JSON
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": list(rule_files),
                "scrape_configs": [{"job_name": job,
                                    "static_configs": [{"targets": list(targets)}]}]}, handle)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--config.file", self.config,
                 "--storage.tsdb.path", os.path.join(self.dir, "db"),
                 "--web.listen-address", "127.0.0.1:%d" % self.port, "--log.level", "warn"],
                stdout=subprocess.DEVNULL, stderr=log, cwd=self.dir)
        self.wait(lambda: self._ready(), timeout, "Prometheus ready on %s" % self.url)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except OSError as err:
            return "(no log: %s)" % err

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + "/api/v1/" + path + query, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise PrometheusError("%s: %s" % (path, body))
        return body["data"]

    def alerts(self, name: str | None = None, state: str | None = None,
               **labels: str) -> List[Dict[str, Any]]:
        """Active alerts (pending or firing), filtered by name, state and label values."""
        out = []
        for alert in self.api("alerts")["alerts"]:
            have = alert.get("labels") or {}
            if name is not None and have.get("alertname") != name:
                continue
            if state is not None and alert.get("state") != state:
                continue
            if any(have.get(k) != v for k, v in labels.items()):
                continue
            out.append(alert)
        return out

    def wait(self, probe: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise PrometheusError("prometheus exited %s; log:\n%s"
                                      % (self.proc.returncode, self.log_tail()))
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise PrometheusError("%s: not within %.0f s; prometheus log:\n%s"
                                      % (what, timeout, self.log_tail()))
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
