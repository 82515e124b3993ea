"""The real relay daemon as the VM tests' report feed.

Runs ``python3 -m vdsm_hooks.relay.cli run`` from the source tree with a throw-away
relay.conf (this machine's libvirtd, the real channel folder, a private control socket, upload
off) and reads what it received with ``vmdiag-relay show VM --json``, the command an operator
uses. Its log goes to a file that the failure messages point to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

from .feeds import Message, Predicate
from .libvirt_env import CHANNELS_DIR, URI
from .progress import log, step

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELAY_CLI = "vdsm_hooks.relay.cli"


def relay_available() -> bool:
    """True once the relay's CLI is in the tree."""
    return os.path.exists(os.path.join(SOURCE_ROOT, "vdsm_hooks", "relay", "cli.py"))


class RelayError(RuntimeError):
    """The relay did not start, or did not deliver; the message quotes its log."""


class RelayFeed:
    """A running relay; :meth:`wait_report` polls its ``show`` answer for the VM."""

    name = "relay"

    def __init__(self, vm_id: str, log_path: str | None = None,
                 host_id: str = "vmdiag-test-host", upload: str = "enabled = off\n",
                 parent: str | None = None, metrics_port: int | None = None) -> None:
        """``upload`` is the body of relay.conf's [upload] section (off: keep reports local);
        the relay's config and socket go to a new folder in ``parent`` (default: /tmp);
        ``metrics_port``: serve /metrics on 127.0.0.1 there (``metrics_address``)."""
        self.vm_id = vm_id
        self.dir = tempfile.mkdtemp(prefix="vmdiag-relay-", dir=parent)
        self.socket = os.path.join(self.dir, "relay.sock")
        self.config = os.path.join(self.dir, "relay.conf")
        self.log_path = log_path or os.path.join(self.dir, "relay.log")
        self.metrics_address = None if metrics_port is None else "127.0.0.1:%d" % metrics_port
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write("[relay]\nhost_id = %s\nlibvirt_uri = %s\nchannels_dir = %s\n"
                         "control_socket = %s\n\n[upload]\n%s"
                         % (host_id, URI, CHANNELS_DIR, self.socket, upload))
            if self.metrics_address:
                handle.write("\n[metrics]\nlisten = %s\n" % self.metrics_address)
        self.proc: subprocess.Popen | None = None
        self.last: Dict[str, Any] = {}
        self.start()

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        return env

    def start(self, timeout: float = 30.0) -> None:
        with step("start the relay (log %s)" % self.log_path):
            logfile = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - child owns it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", RELAY_CLI, "run", "--config", self.config, "--foreground"],
                env=self._env(), cwd=SOURCE_ROOT, stdout=logfile, stderr=subprocess.STDOUT,
                start_new_session=True)  # Ctrl-C reaches the test or demo, which stops it
            logfile.close()
            deadline = time.monotonic() + timeout
            while not os.path.exists(self.socket):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RelayError("relay did not open its control socket %s (exit %s); log:\n%s"
                                     % (self.socket, self.proc.poll(), self.log_tail()))
                time.sleep(0.2)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """``vmdiag-relay ARGS --config <this relay's>``, as an operator runs it."""
        return subprocess.run([sys.executable, "-m", RELAY_CLI, *args, "--config", self.config],
                              env=self._env(), cwd=SOURCE_ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except OSError as err:
            return "(no relay log: %s)" % err

    def show(self, vm_id: str | None = None) -> Dict[str, Any] | None:
        """The relay's ``show VM --json`` answer, or None while it does not know the VM."""
        result = subprocess.run(
            [sys.executable, "-m", RELAY_CLI, "show", vm_id or self.vm_id, "--json", "--config",
             self.config, "--socket", self.socket], env=self._env(), cwd=SOURCE_ROOT,
            capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            self.last = {"error": result.stderr.strip()}
            return None
        self.last = json.loads(result.stdout)
        return self.last

    def wait_report(self, predicate: Predicate = lambda _m: True,
                    timeout: float = 120.0) -> Message:
        """The VM's latest report as the relay holds it, once it matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RelayError("the relay exited (%s); log:\n%s"
                                 % (self.proc and self.proc.returncode, self.log_tail()))
            shown = self.show()
            report = (shown or {}).get("report")
            if report and predicate(report):
                return report
            time.sleep(1.0)
        summary = {k: v for k, v in self.last.items() if k != "report"}
        raise RelayError("no matching report from VM %s through the relay within %.0fs; last "
                         "'show': %s\nrelay log:\n%s" % (self.vm_id, timeout,
                                                        json.dumps(summary)[:2000],
                                                        self.log_tail()))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log("relay ignored SIGTERM for 15s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start the relay, as an operator (or systemd) would."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
