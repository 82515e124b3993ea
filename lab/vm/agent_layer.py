"""Stage 2 of the guest image: vmdiag's agent and the deliberate faults, on top of stage 1.

This layer changes whenever the agent's sources change, so it is cheap: unpack the cached root
tarball, add the agent and its configuration, and let ``mkfs.ext4 -d`` build the disk image
from the folder (no loop mounts, no root-only block devices).

The agent is installed from the packaging engineer's ``dist/vmdiag-guest-agent_*.deb`` when one
exists and is not older than the agent's sources (``dpkg -i`` in a chroot, as a user would
install it, so the packaged unit, udev rule and maintainer scripts are tested too); otherwise
``diag_protocol/`` and ``guest_agent/`` are copied to /opt/vmdiag with a systemd unit of our own.
$VMDIAG_TEST_AGENT_FROM=deb|sources forces one way.

Faults baked in, which the end-to-end test expects the agent to report:

* ``vmdiag-broken.service`` fails at every boot (a watched unit that is failed);
* ``vmdiag-missing-daemon`` is a watched process that never runs.

``vmdiag-sleeper.service`` is a healthy watched unit (``sleep infinity``) that the tests stop
with ``systemctl stop`` to see the agent report it at once.

One image serves several roles, chosen per VM on the kernel command line (``Guest(...,
cmdline_extra="vmdiag.role=...")``), so the demo's VMs cost no extra image build:

* no role: the test guest, with the faults above;
* ``vmdiag.role=healthy``: no faults (the broken unit does not run, nothing missing is watched);
* ``vmdiag.role=filling``: the faults, and ``vmdiag-fill.service`` filling the root
  filesystem by ``FILL_STEP_MIB`` every ``FILL_EVERY_S`` seconds up to ``FILL_STOP_PERCENT``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from typing import Dict, List

from . import guest_net
from .progress import log
from .rootfs import enable_unit, run, write_files

AGENT_PACKAGES = ("diag_protocol", "guest_agent")
AGENT_PREFIX = "/opt/vmdiag"
AGENT_UNIT = "vmdiag-agent.service"
BROKEN_UNIT = "vmdiag-broken.service"
ROLE_UNIT = "vmdiag-role-healthy.service"
FILL_UNIT = "vmdiag-fill.service"
SLEEPER_UNIT = "vmdiag-sleeper.service"
FILL_STEP_MIB = 16
FILL_EVERY_S = 10
FILL_STOP_PERCENT = 96
MISSING_PROCESS = "vmdiag-missing-daemon"
#: Units and processes the agent is told to watch: one healthy and one faulty of each.
WATCHED_UNITS = ("systemd-journald.service", BROKEN_UNIT, SLEEPER_UNIT)
WATCHED_PROCESSES = ("systemd-journald", MISSING_PROCESS)

DEB_GLOB = "dist/vmdiag-guest-agent_*.deb"
AGENT_FROM_ENV = "VMDIAG_TEST_AGENT_FROM"
#: The test configuration, as a drop-in so a packaged /etc/vmdiag/agent.conf stays untouched.
CONF_DROPIN = "etc/vmdiag/agent.conf.d/50-vmdiag-test.conf"
#: What the faulty roles watch; the healthy role deletes it before the agent starts.
FAULTS_DROPIN = "etc/vmdiag/agent.conf.d/60-vmdiag-test-faults.conf"


def agent_deb(source_root: str, env: dict[str, str] | None = None) -> str | None:
    """The packaged agent to install, or None to install from sources.

    A .deb older than any agent source file is stale (built before the last edit): it is
    ignored with a warning rather than silently testing old code.
    """
    env = os.environ if env is None else env
    how = env.get(AGENT_FROM_ENV, "").strip()
    debs = sorted(glob.glob(os.path.join(source_root, DEB_GLOB)), key=os.path.getmtime)
    if how == "sources":
        return None
    if how == "deb":
        if not debs:
            raise FileNotFoundError("%s=deb but no %s: run packaging/build deb"
                                    % (AGENT_FROM_ENV, DEB_GLOB))
        return debs[-1]
    if not debs:
        return None
    newest_source = max((os.path.getmtime(p) for p in _source_files(source_root)), default=0.0)
    if os.path.getmtime(debs[-1]) < newest_source:
        log("WARNING: %s is older than the agent sources; installing from sources instead "
            "(run packaging/build deb to test the package)" % os.path.relpath(debs[-1],
                                                                          source_root))
        return None
    return debs[-1]


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
    for path in inputs + [__file__, guest_net.__file__]:
        digest.update(os.path.relpath(path, source_root).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


#: Seconds between reports in the test guest: short, so a test waits seconds, not a minute.
REPORT_INTERVAL_S = 10


def agent_conf() -> str:
    """The agent configuration drop-in of the test guest.

    The probes are the default gateway, which QEMU's user-mode network answers itself, and a
    name of the lab's zone, which the lab's resolver on the host answers (``guest_net``): the
    guest never sends traffic beyond the host.
    """
    return (
        "# vmdiag test guest (lab/vm/agent_layer.py)\n"
        "[agent]\ninterval = %d\nheartbeat_interval = 5\n\n"
        "[probes]\ngateway = yes\ndns_names = %s\n"
        % (REPORT_INTERVAL_S, guest_net.PROBED_NAME))


def faults_conf() -> str:
    """The watch lists of the faulty roles: one healthy and one faulty unit and process."""
    return ("# vmdiag test guest faults (lab/vm/agent_layer.py)\n"
            "[watch]\nunits = %s\nprocesses = %s\n"
            % (", ".join(WATCHED_UNITS), ", ".join(WATCHED_PROCESSES)))


def fault_files() -> Dict[str, str]:
    """The faults and the role units, relative path -> text."""
    fill = ("set -u; i=0; "
            "while [ \"$(df --output=pcent / | tail -n 1 | tr -dc 0-9)\" -lt %d ]; do "
            "fallocate -l %dM /var/tmp/vmdiag-fill.$i || exit 1; i=$((i+1)); sleep %d; done; "
            "echo vmdiag-fill: root filesystem at %d%%, holding; exec sleep infinity"
            % (FILL_STOP_PERCENT, FILL_STEP_MIB, FILL_EVERY_S, FILL_STOP_PERCENT))
    return {
        FAULTS_DROPIN: faults_conf(),
        "etc/systemd/system/" + BROKEN_UNIT: (
            "[Unit]\nDescription=vmdiag test fault: a service that always fails\n"
            "ConditionKernelCommandLine=!vmdiag.role=healthy\n\n"
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo vmdiag-broken fails on purpose;"
            " exit 3'\n\n[Install]\nWantedBy=multi-user.target\n"),
        "etc/systemd/system/" + SLEEPER_UNIT: (
            "[Unit]\nDescription=vmdiag test: a healthy watched unit the tests stop\n\n"
            "[Service]\nExecStart=/bin/sleep infinity\n\n"
            "[Install]\nWantedBy=multi-user.target\n"),
        "etc/systemd/system/" + ROLE_UNIT: (
            "[Unit]\nDescription=vmdiag test role: a healthy guest watches no faults\n"
            "ConditionKernelCommandLine=vmdiag.role=healthy\nBefore=%s\n\n"
            "[Service]\nType=oneshot\nExecStart=/bin/rm -f /%s\n\n"
            "[Install]\nWantedBy=multi-user.target\n" % (AGENT_UNIT, FAULTS_DROPIN)),
        "etc/systemd/system/" + FILL_UNIT: (
            "[Unit]\nDescription=vmdiag test role: a disk filling up\n"
            "ConditionKernelCommandLine=vmdiag.role=filling\n\n"
            "[Service]\nExecStart=/bin/sh -c '%s'\n\n"
            "[Install]\nWantedBy=multi-user.target\n" % fill),
    }


def source_unit() -> str:
    """The systemd unit that runs the agent from /opt/vmdiag when no .deb is available."""
    return (
        "[Unit]\nDescription=vmdiag guest diagnostics agent (from sources, test image)\n"
        "After=systemd-udevd.service\n\n"
        "[Service]\nEnvironment=PYTHONPATH=%s\nEnvironment=PYTHONDONTWRITEBYTECODE=1\n"
        "ExecStart=/usr/bin/python3 -m guest_agent run\nRestart=always\nRestartSec=2\n"
        "CacheDirectory=vmdiag\n\n"
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
    write_files(root, {CONF_DROPIN: agent_conf()})
    write_files(root, guest_net.guest_files())
    write_files(root, fault_files())
    for unit in (BROKEN_UNIT, ROLE_UNIT, FILL_UNIT, SLEEPER_UNIT):
        enable_unit(root, unit)
    return how
