"""A private libvirtd serving libvirt's test driver, which a test may restart at will.

The relay reaches it through libvirt's remote driver (``test+unix:///<node.xml>?socket=...``),
exactly as it reaches the system libvirtd (``qemu:///system``): a real daemon, a real socket,
keepalives, events, and a restart that drops the connection. Its domains are the node file's
(no QEMU), so simulated guests can own the channel sockets while libvirt is in the loop.

The daemon runs unprivileged (as ``nobody`` when started as root, with its own runtime,
config and cache folders under ``base``), so it never touches the system libvirtd's state or
other people's VMs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from typing import Optional

import libvirt


class LibvirtdUnavailable(RuntimeError):
    """No libvirtd binary, or it did not come up; the message says what."""


class PrivateLibvirtd:
    """``PrivateLibvirtd(base, node_xml).start()``; ``uri``; ``restart()``; ``stop()``."""

    def __init__(self, base: str, node_xml: str, user: str = "nobody") -> None:
        self.base = base
        self.node_xml = node_xml
        self.user = user if os.geteuid() == 0 else None
        self.proc: Optional[subprocess.Popen] = None
        self.restarts = 0
        self.log_path = os.path.join(base, "libvirtd.log")

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "run", "libvirt", "libvirt-sock")

    @property
    def uri(self) -> str:
        return "test+unix://%s?socket=%s" % (self.node_xml, self.socket)

    def start(self, timeout: float = 60.0) -> PrivateLibvirtd:
        binary = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
        if not os.access(binary, os.X_OK):
            raise LibvirtdUnavailable("no libvirtd binary; install libvirt-daemon")
        os.makedirs(self.base, exist_ok=True)
        if self.user is not None:  # the daemon must read the node file and own its folders
            entry = pwd.getpwnam(self.user)
            for path in (self.base, self.node_xml):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin"), "HOME": self.base,
               "XDG_RUNTIME_DIR": os.path.join(self.base, "run"),
               "XDG_CONFIG_HOME": os.path.join(self.base, "config"),
               "XDG_CACHE_HOME": os.path.join(self.base, "cache")}
        command = [binary, "--timeout=0"]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--"] + command
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(command, env=env, cwd=self.base, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LibvirtdUnavailable("libvirtd exited with %s; see %s"
                                          % (self.proc.returncode, self.log_path))
            try:
                libvirt.openReadOnly(self.uri).close()
                return self
            except libvirt.libvirtError:
                pass
            if time.monotonic() > deadline:
                raise LibvirtdUnavailable("libvirtd did not answer on %s within %.0f s; see %s"
                                          % (self.socket, timeout, self.log_path))
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # runuser and the daemon
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, down_s: float = 1.0) -> None:
        """Stop the daemon (its clients lose their connection), wait, start it again."""
        self.stop()
        time.sleep(down_s)
        self.start()
        self.restarts += 1
