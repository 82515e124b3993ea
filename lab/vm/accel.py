"""Choose KVM or TCG for every QEMU this project boots, by trying KVM, not by trusting /dev/kvm.

The one place that decides: the real-guest tests, the demo, the benchmarks and the relay's
libvirtd tests all call :func:`choose_accel`, and the answer is kept for the process.

Two ways /dev/kvm lies on CI machines:

- it exists and root opens it, but libvirt starts QEMU as its own user (``user`` in
  ``/etc/libvirt/qemu.conf``, ``libvirt-qemu`` on Debian), who may not ("Could not access KVM
  kernel module: Permission denied" when the domain starts); so the device's mode is checked
  for that user too;
- it opens fine while the nested hypervisor cannot run a stock Debian kernel: QEMU aborts, or
  the guest hangs in real mode right after "Probing EDD". So the probe boots the guest's own
  kernel under KVM with no root disk and waits for the kernel's panic about the missing root:
  if that message arrives, the kernel ran to the end of its init and KVM works. Without a
  kernel (domains that need not boot), QEMU must at least stay up under KVM for a few seconds.

Anything else (abort, hang, no access) means TCG. $VMDIAG_TEST_ACCEL=kvm|tcg skips the probe.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
import tempfile
import time
from typing import Dict, Optional, Tuple

from .progress import log

ACCEL_ENV = "VMDIAG_TEST_ACCEL"
PROBE_TIMEOUT_S = 30.0
QEMU = "qemu-system-x86_64"
#: The kernel printed this, so it got through early boot and its whole init.
SUCCESS_MARKERS = ("Kernel panic", "VFS: Unable to mount root")
QEMU_CONF = "/etc/libvirt/qemu.conf"
#: Without a kernel to boot, QEMU under KVM must stay up this long.
NO_KERNEL_ALIVE_S = 3.0
_chosen: Dict[Optional[str], str] = {}


def libvirt_qemu_user(conf: str = QEMU_CONF) -> str:
    """The user libvirt's system instance runs QEMU as (qemu.conf ``user``, else the default)."""
    try:
        with open(conf, encoding="utf-8", errors="replace") as f:
            for line in f:
                found = re.match(r'\s*user\s*=\s*"([^"]+)"', line)
                if found:
                    return found.group(1)
    except OSError:
        pass
    for name in ("libvirt-qemu", "qemu"):  # Debian's default, then Fedora/EL's
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "root"


def user_may_open(path: str, user: str) -> bool:
    """Whether ``user`` may read and write ``path`` by its mode bits (ACLs are not looked at)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    uid = int(user[1:]) if user.startswith("+") else None
    try:
        pw = pwd.getpwuid(uid) if uid is not None else pwd.getpwnam(user)
    except KeyError:
        return False
    if pw.pw_uid == 0:
        return True
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    if st.st_uid == pw.pw_uid:
        need = stat.S_IRUSR | stat.S_IWUSR
    elif st.st_gid in gids:
        need = stat.S_IRGRP | stat.S_IWGRP
    else:
        need = stat.S_IROTH | stat.S_IWOTH
    return st.st_mode & need == need


def probe_kvm(kernel: Optional[str], timeout: float = PROBE_TIMEOUT_S,
              kvm_device: str = "/dev/kvm", qemu_user: Optional[str] = None) -> Tuple[bool, str]:
    """Boot ``kernel`` under KVM until it panics for want of a root disk.

    Returns (works, reason); ``reason`` quotes the console's last line when it does not work.
    ``kernel`` None: QEMU must only stay up under KVM for a few seconds.
    """
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return False, "%s is missing or not accessible" % kvm_device
    user = qemu_user or libvirt_qemu_user()
    if not user_may_open(kvm_device, user):
        return False, "libvirt runs QEMU as %r, who may not open %s (mode %o)" % (
            user, kvm_device, stat.S_IMODE(os.stat(kvm_device).st_mode))
    with tempfile.NamedTemporaryFile(prefix="kvm-probe-", suffix=".log") as console:
        cmd = [QEMU, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256", "-nodefaults",
               "-display", "none", "-no-reboot", "-serial", "file:" + console.name]
        if kernel is not None:
            cmd += ["-kernel", kernel,
                    "-append", "console=ttyS0 panic=-1 root=/dev/vmdiag-no-such-disk"]
        else:
            timeout = NO_KERNEL_ALIVE_S
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        text = ""
        try:
            while time.monotonic() - began < timeout:
                with open(console.name, errors="replace") as handle:
                    text = handle.read()
                if any(marker in text for marker in SUCCESS_MARKERS):
                    return True, "kernel ran under KVM in %.1fs" % (time.monotonic() - began)
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else "").strip()
                    return False, "qemu exited %s under KVM: %s" % (proc.returncode,
                                                                   err[-300:] or _last(text))
                time.sleep(0.2)
            if kernel is None:
                return True, "QEMU stayed up under KVM for %.0fs" % timeout
            return False, "no kernel panic within %.0fs under KVM; console ended with %r" % (
                timeout, _last(text))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "(nothing)"


def choose_accel(kernel: Optional[str] = None, env: Optional[dict] = None) -> str:
    """Return "kvm" or "tcg" for booting ``kernel`` (None: a domain that need not boot).

    Decided once per kernel and process, and logged with the reason.
    """
    env = os.environ if env is None else env
    forced = env.get(ACCEL_ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        log("accelerator %s (from $%s)" % (forced, ACCEL_ENV))
        return forced
    if kernel not in _chosen:
        works, reason = probe_kvm(kernel)
        _chosen[kernel] = "kvm" if works else "tcg"
        log("accelerator %s: %s" % (_chosen[kernel], reason))
    return _chosen[kernel]


def libvirt_domain_type(accel: str) -> str:
    """The ``<domain type=...>`` for an accelerator: "kvm" or "qemu" (TCG)."""
    return "kvm" if accel == "kvm" else "qemu"
