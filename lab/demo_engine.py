"""The engine side of the demo: a test engine CA, the stand-in oVirt engine, vmdiag-engine.

``vmdiag-engine serve`` runs for real, as a separate process with its own engine.conf, on its
embedded SQLite store. What oVirt itself would provide comes from the stand-in
(``tests/ovirt_standin``): SSO tokens, the VMs and hosts a user may see, the events API, and the
Apache-like ``/vmdiag`` proxy the SDK goes through. Certificates are issued the way oVirt does:
the engine CA signs the ingest listener's certificate and the host's (VDSM's) certificate, whose
subject CN is the host's address and which the relay presents when it uploads.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Dict, Optional

from lab.ovirt_standin import StandinEngine, TestPKI

from .vm.image import SOURCE_ROOT
from .vm.progress import log, step

CLUSTER_ID = "00000000-0000-4000-8000-00000000dc01"
HOST_ID = "00000000-0000-4000-8000-00000000d401"
HOST_NAME = "demo-host"
HOST_CN = "demo-host.vmdiag.test"
ADMIN = "admin@internal"
SERVICE_USER = "vmdiag@internal"
#: The installed defaults' ports when they are free, so the printed address is the usual one.
PREFERRED_PORTS = (8790, 8791)

#: Shorter waits than production's: a guest warning shows after 20 s instead of 5 min, and a
#: guest silent for a minute is "unknown". Forecasts keep their defaults: a disk filling in
#: minutes is forecast from minutes of history anyway.
DEMO_HEALTH = {"warning_min_duration_s": "20", "silence_s": "60"}


class EngineError(RuntimeError):
    """vmdiag-engine did not start or stopped; the message quotes its log."""


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it on loopback, else a free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise EngineError("no free TCP port on 127.0.0.1")


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "\n".join(handle.read().splitlines()[-lines:])
    except OSError as err:
        return "(no log: %s)" % err


class DemoEngine:
    """Stand-in oVirt engine plus a real ``vmdiag-engine serve`` under ``run_dir``.

    ``vms`` maps VM ids to names; they run on one host, in one cluster, visible to
    admin@internal (whose password is :attr:`admin_password`).
    """

    def __init__(self, run_dir: str, vms: Dict[str, str],
                 storage_url: Optional[str] = None) -> None:
        """``storage_url``: the engine's ``[storage] url`` (default: SQLite at ``db_path``)."""
        self.run_dir = run_dir
        self.vms = vms
        self.pki = TestPKI(os.path.join(run_dir, "pki"))
        self.admin_password = secrets.token_urlsafe(12)
        self.standin: Optional[StandinEngine] = None
        self.proc: Optional[subprocess.Popen] = None
        self.config = os.path.join(run_dir, "engine.conf")
        self.log_path = os.path.join(run_dir, "engine.log")
        self.db_path = os.path.join(run_dir, "vmdiag.db")
        self.storage_url = storage_url or "sqlite:///" + self.db_path
        self.api_port = 0
        self.ingest_port = 0

    # -- what the other parts need -------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return "http://127.0.0.1:%d/vmdiag" % self.api_port

    def relay_upload(self) -> str:
        """The [upload] section of the relay's config: the host certificate, the engine CA."""
        host = self.pki.host(HOST_CN)
        return ("enabled = on\nurl = https://localhost:%d/ingest/v1/reports\ncert = %s\n"
                "key = %s\nca = %s\nbatch_interval = 0.5\nspool_dir = %s\n"
                % (self.ingest_port, host.cert, host.key, self.pki.ca_file,
                   os.path.join(self.run_dir, "spool")))

    def pages_url(self, page: str = "fleet") -> str:
        """The Diagnostics pages for admin@internal, with a fresh SSO token in the fragment."""
        assert self.standin is not None
        from urllib.parse import quote

        token = self.standin.issue_token(ADMIN)
        return "%s/ui/%s#token=%s" % (self.api_base, page, quote(token, safe=""))

    def connection(self):  # -> ovirtsdk4.Connection
        """An ovirtsdk4 connection to the stand-in as admin@internal (what SDK users hold)."""
        import ovirtsdk4

        assert self.standin is not None
        return ovirtsdk4.Connection(url=self.standin.url, username=ADMIN,
                                    password=self.admin_password, ca_file=self.pki.ca_file)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        with step("start the stand-in oVirt engine (SSO, REST, events)"):
            self.standin = StandinEngine(self.pki.server("standin"), self.pki.ca_file)
            self.standin.add_cluster(CLUSTER_ID, "Default")
            self.standin.add_host(HOST_ID, HOST_NAME, CLUSTER_ID, address=HOST_CN)
            for vm_id, name in self.vms.items():
                self.standin.add_vm(vm_id, name, HOST_ID, CLUSTER_ID)
            self.standin.add_user(ADMIN, self.admin_password, admin=True)
            service_password = secrets.token_urlsafe(12)
            self.standin.add_user(SERVICE_USER, service_password, admin=True,
                                  can_add_events=True)
            self.standin.start()
        self.api_port = free_port(PREFERRED_PORTS[0])
        self.ingest_port = free_port(PREFERRED_PORTS[1])
        self._write_config(service_password)
        with step("start vmdiag-engine (store %s, log %s)" % (self.storage_url.split("?")[0],
                                                             self.log_path)):
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (SOURCE_ROOT, env.get("PYTHONPATH")) if p)
            with open(self.log_path, "a", encoding="utf-8") as logfile:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "engine_plugin.service.cli", "--config", self.config,
                     "serve"], env=env, cwd=SOURCE_ROOT, stdout=logfile,
                    stderr=subprocess.STDOUT,
                    # its own session: a Ctrl-C in the terminal reaches the demo, which stops
                    # the engine after the guests and the relay, not everything at once
                    start_new_session=True)
            self._wait_ready(timeout)
        self.standin.proxy_vmdiag("http://127.0.0.1:%d" % self.api_port)

    def _write_config(self, service_password: str) -> None:
        server = self.pki.server("ingest")
        password_file = os.path.join(self.run_dir, "ovirt-password")
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                  "w", encoding="utf-8") as handle:
            handle.write(service_password + "\n")
        assert self.standin is not None
        health = "".join("%s = %s\n" % kv for kv in DEMO_HEALTH.items())
        text = (
            "# vmdiag-engine for the demo (tests/vm/demo_engine.py)\n"
            "[api]\nlisten = 127.0.0.1\nport = %d\n\n"
            "[ingest]\nlisten = 127.0.0.1\nport = %d\ncert = %s\nkey = %s\nca = %s\n\n"
            "[storage]\nurl = %s\n\n"
            "[ovirt]\nurl = %s\nca_file = %s\nuser = %s\npassword_file = %s\n\n"
            "[health]\n%s"
            % (self.api_port, self.ingest_port, server.cert, server.key, self.pki.ca_file,
               self.storage_url, self.standin.url, self.pki.ca_file, SERVICE_USER, password_file,
               health))
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(text)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = self.api_base + "/healthz"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise EngineError("vmdiag-engine exited with %s; %s ends with:\n%s"
                                  % (self.proc.returncode, self.log_path,
                                     _tail(self.log_path)))
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EngineError("vmdiag-engine did not answer %s within %.0fs; log:\n%s"
                                  % (url, timeout, _tail(self.log_path)))
            time.sleep(0.3)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise EngineError("vmdiag-engine stopped (exit %s); %s ends with:\n%s"
                              % (self.proc.returncode, self.log_path, _tail(self.log_path)))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                log("vmdiag-engine ignored SIGTERM for 20s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
