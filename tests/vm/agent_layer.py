"""Stage 2 of the guest image: vmdiag's agent and the deliberate faults, on top of stage 1.

This layer changes whenever the agent's sources change, so it is cheap: unpack the cached root
tarball, add the agent and its configuration, and let ``mkfs.ext4 -d`` build the disk image
from the folder (no loop mounts, no root-only block devices).

The agent is installed from the packaging engineer's ``dist/vmdiag-guest-agent_*.deb`` when one
exists (``dpkg --root``, as a user would install it); until then ``diag_protocol/`` and
``guest_agent/`` are copied to /opt/vmdiag with a systemd unit of our own.

Faults baked in, which the end-to-end test expects the agent to report:

* ``vmdiag-broken.service`` fails at every boot (a watched unit that is failed);
* ``vmdiag-missing-daemon`` is a watched process that never runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from typing import Dict, List

from .rootfs import enable_unit, run, write_files

AGENT_PACKAGES = ("diag_protocol", "guest_agent")
AGENT_PREFIX = "/opt/vmdiag"
AGENT_UNIT = "vmdiag-agent.service"
BROKEN_UNIT = "vmdiag-broken.service"
MISSING_PROCESS = "vmdiag-missing-daemon"
#: Units and processes the agent is told to watch: one healthy and one faulty of each.
WATCHED_UNITS = ("systemd-journald.service", BROKEN_UNIT)
WATCHED_PROCESSES = ("systemd-journald", MISSING_PROCESS)

DEB_GLOB = "dist/vmdiag-guest-agent_*.deb"


def agent_deb(source_root: str) -> str | None:
    """The newest packaged agent under ``source_root``/dist, or None to install from sources."""
    debs = sorted(glob.glob(os.path.join(source_root, DEB_GLOB)), key=os.path.getmtime)
    return debs[-1] if debs else None


def _source_files(source_root: str) -> List[str]:
    files = []
    for package in AGENT_PACKAGES:
        for folder, dirs, names in os.walk(os.path.join(source_root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files.extend(os.path.join(folder, n) for n in sorted(names) if not n.endswith(".pyc"))
    return files


def layer_key(source_root: str) -> str:
    """Hash of everything this layer puts into the image: agent sources or .deb, and this file."""
    digest = hashlib.sha256()
    deb = agent_deb(source_root)
    inputs = [deb] if deb else _source_files(source_root)
    for path in inputs + [__file__]:
        digest.update(os.path.relpath(path, source_root).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def agent_conf() -> str:
    """/etc/vmdiag/agent.conf for the test guest.

    Probes target only the user-mode network's gateway, which the host's QEMU answers itself,
    so the guest never sends traffic beyond the host.
    """
    return (
        "# vmdiag test guest (tests/vm/agent_layer.py)\n"
        "[watch]\n"
        "units = %s\n"
        "processes = %s\n"
        % (", ".join(WATCHED_UNITS), ", ".join(WATCHED_PROCESSES)))


def fault_files() -> Dict[str, str]:
    """The deliberately failing unit, relative path -> text."""
    return {
        "etc/systemd/system/" + BROKEN_UNIT: (
            "[Unit]\nDescription=vmdiag test fault: a service that always fails\n\n"
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo vmdiag-broken fails on purpose;"
            " exit 3'\n\n[Install]\nWantedBy=multi-user.target\n"),
    }


def source_unit() -> str:
    """The systemd unit that runs the agent from /opt/vmdiag when no .deb is available."""
    return (
        "[Unit]\nDescription=vmdiag guest diagnostics agent (from sources, test image)\n"
        "After=systemd-udevd.service\n\n"
        "[Service]\nEnvironment=PYTHONPATH=%s\nEnvironment=PYTHONDONTWRITEBYTECODE=1\n"
        "ExecStart=/usr/bin/python3 -m guest_agent run\nRestart=always\nRestartSec=2\n\n"
        "[Install]\nWantedBy=multi-user.target\n" % AGENT_PREFIX)


def install_agent(root: str, source_root: str) -> str:
    """Install the agent into the tree at ``root``; return how ("deb:<file>" or "sources")."""
    deb = agent_deb(source_root)
    if deb:
        staged = os.path.join(root, "tmp", os.path.basename(deb))
        shutil.copy(deb, staged)
        run(["chroot", root, "dpkg", "-i", "/tmp/" + os.path.basename(deb)])
        os.unlink(staged)
        enable_unit(root, AGENT_UNIT, unit_dir="lib/systemd/system")
        return "deb:" + os.path.basename(deb)
    for package in AGENT_PACKAGES:
        shutil.copytree(os.path.join(source_root, package),
                        os.path.join(root, AGENT_PREFIX.lstrip("/"), package),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_files(root, {"etc/systemd/system/" + AGENT_UNIT: source_unit()})
    enable_unit(root, AGENT_UNIT)
    return "sources"


def apply(root: str, source_root: str) -> str:
    """Add agent, configuration and faults to the unpacked tree; return how the agent came in."""
    how = install_agent(root, source_root)
    write_files(root, {"etc/vmdiag/agent.conf": agent_conf()})
    write_files(root, fault_files())
    enable_unit(root, BROKEN_UNIT)
    return how
