"""A real ``vmdiag-engine serve`` process for benchmarks: its own engine.conf, TLS ingest with
a certificate of the test engine CA, any store URL (SQLite file or PostgreSQL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import List

from lab.ovirt_standin import TestPKI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EngineProcess:
    """One ``vmdiag-engine serve`` process, events off, with its log under ``folder``; started
    by the constructor, ready when it returns. ``nice`` lowers its CPU priority below its
    parent's (a benchmark of something else on the same cores); ``storage`` and ``ingest`` add
    lines to those sections, ``sections`` whole sections (``[evaluation]``, ``[ovirt]``: without
    an ``[ovirt]`` service account it runs standalone). ``processes``: ``[ingest] processes``
    (1, the service's own process only, unless asked: what benchmarks measured before it)."""

    def __init__(self, folder: str, name: str, pki: TestPKI, url: str, ingest_port: int,
                 reuse_port: bool, nice: int = 0, storage: str = "", ingest: str = "",
                 sections: str = "", processes: int | str = 1) -> None:
        self.url = url
        self.api_port = free_port()
        self.ingest_port = ingest_port
        self.log = os.path.join(folder, name + ".log")
        server = pki.server("ingest-" + name)
        self.config = os.path.join(folder, name + ".conf")
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(
                "[api]\nlisten = 127.0.0.1\nport = %d\n"
                "[ingest]\nlisten = 127.0.0.1\nport = %d\ncert = %s\nkey = %s\nca = %s\n"
                "reuse_port = %s\nprocesses = %s\n%s[storage]\nurl = %s\n%s%s[events]\n"
                "enabled = no\n"
                % (self.api_port, ingest_port, server.cert, server.key, pki.ca_file,
                   "yes" if reuse_port else "no", processes, ingest, url, storage, sections))
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.log, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine_plugin.service.cli", "--log-level", "WARNING",
                 "--config", self.config, "serve"], env=env, cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=(lambda: os.nice(nice)) if nice else None)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("vmdiag-engine exited (%s); %s:\n%s"
                                 % (self.proc.returncode, self.log, self.tail()))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/vmdiag/healthz"
                                            % self.api_port, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("vmdiag-engine did not start; %s:\n%s" % (self.log,
                                                                           self.tail()))
            time.sleep(0.2)

    def tail(self) -> str:
        with open(self.log, errors="replace") as handle:
            return "\n".join(handle.read().splitlines()[-30:])

    def ingest_children(self) -> List[int]:
        """Process ids of its ingest processes ([ingest] processes) running now."""
        out = []
        for pid in children_of(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    if b"ingest_processes" in handle.read():
                        out.append(pid)
            except OSError:
                pass
        return out

    def cpu_seconds(self) -> float:
        """CPU seconds of the service and of its ingest processes running now (not of its
        health pass workers, as before those existed)."""
        total = cpu_seconds(self.proc.pid)
        for pid in self.ingest_children():
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def children_of(pid: int) -> List[int]:
    """Process ids whose parent is ``pid`` now, whichever of its threads started them."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    stat = handle.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
