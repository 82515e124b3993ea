"""Choose KVM or TCG for the test guest by trying KVM, not by trusting /dev/kvm.

On nested CI machines /dev/kvm can exist and open fine while the nested hypervisor cannot run
a stock Debian kernel: QEMU aborts, or the guest hangs in real mode right after "Probing EDD".
So the probe boots the guest's own kernel under KVM with no root disk and waits for the
kernel's panic about the missing root: if that message arrives, the kernel ran to the end of
its init and KVM works. Anything else (abort, hang, no /dev/kvm) means TCG.

$VMDIAG_TEST_ACCEL=kvm|tcg skips the probe.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Tuple

from .progress import log

ACCEL_ENV = "VMDIAG_TEST_ACCEL"
PROBE_TIMEOUT_S = 30.0
QEMU = "qemu-system-x86_64"
#: The kernel printed this, so it got through early boot and its whole init.
SUCCESS_MARKERS = ("Kernel panic", "VFS: Unable to mount root")


def probe_kvm(kernel: str, timeout: float = PROBE_TIMEOUT_S,
              kvm_device: str = "/dev/kvm") -> Tuple[bool, str]:
    """Boot ``kernel`` under KVM until it panics for want of a root disk.

    Returns (works, reason); ``reason`` quotes the console's last line when it does not work.
    """
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return False, "%s is missing or not accessible" % kvm_device
    with tempfile.NamedTemporaryFile(prefix="kvm-probe-", suffix=".log") as console:
        cmd = [QEMU, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256", "-nodefaults",
               "-display", "none", "-no-reboot", "-serial", "file:" + console.name,
               "-kernel", kernel,
               "-append", "console=ttyS0 panic=-1 root=/dev/vmdiag-no-such-disk"]
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
            return False, "no kernel panic within %.0fs under KVM; console ended with %r" % (
                timeout, _last(text))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "(nothing)"


def choose_accel(kernel: str, env: dict | None = None) -> str:
    """Return "kvm" or "tcg" for booting ``kernel``, logging why."""
    env = os.environ if env is None else env
    forced = env.get(ACCEL_ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        log("accelerator %s (from $%s)" % (forced, ACCEL_ENV))
        return forced
    works, reason = probe_kvm(kernel)
    accel = "kvm" if works else "tcg"
    log("accelerator %s: %s" % (accel, reason))
    return accel
