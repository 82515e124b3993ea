"""Stage 1 of the guest image: a slim Debian root tree, cached as a tarball.

debootstrap is the slow step (minutes), so its result, together with the base configuration
that does not depend on vmdiag's sources, is saved as one tarball keyed by a hash of the
package list and of this file. Stage 2 (``agent_layer``) unpacks it and adds the agent, which
takes seconds.

The tree is made small enough to build every CI run: documentation, locales and apt lists are
removed, the initrd holds only the few virtio and ext4 modules the guest needs, and kernel
modules for hardware a QEMU guest never has are deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from typing import Dict, Iterable, List, Sequence

from .progress import log, step

SUITE = "bookworm"
ARCH = "amd64"
HOSTNAME = "vmdiag-guest"
#: Root password on the serial console, for debugging a guest by hand (see docs/testing-vm.md).
ROOT_PASSWORD = "vmdiag"

PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "iproute2",
    "python3",
    "python3-psutil",
    # the agent's optional D-Bus client (the .deb Recommends it; debootstrap skips Recommends)
    "python3-dbus",
    "qemu-guest-agent",
    "systemd-timesyncd",
    # the peer benchmarks/guest_vs_qga.py scrapes, as Debian packages it
    "prometheus-node-exporter",
)

#: node_exporter's Debian defaults plus the two collectors that cover what vmdiag reports about
#: services and processes (benchmarks/guest_vs_qga.py).
NODE_EXPORTER_ARGS = "--collector.systemd --collector.processes"
NODE_EXPORTER_PORT = 9100

#: Modules loaded from the initrd: enough to find a virtio disk and mount ext4 from it.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "virtio_net", "ext4")

#: Kernel module paths (under lib/modules/<ver>/kernel/) kept in the image; the rest is hardware
#: a q35 QEMU guest does not have.
KEPT_MODULE_PREFIXES = (
    "arch/", "crypto/", "lib/", "virt/", "fs/ext4/", "fs/jbd2/", "fs/mbcache.ko", "net/core/",
    "drivers/virtio/", "drivers/block/virtio_blk.ko", "drivers/char/", "drivers/acpi/",
    "drivers/input/", "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko",
)

#: Removed after installation; none is needed to boot or to run the agent.
STRIPPED_PATHS = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/i18n",
    "usr/share/lintian", "usr/share/zoneinfo/right", "usr/lib/udev/hwdb.d",
    "usr/lib/firmware", "lib/firmware",
    "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old",
    "var/log/bootstrap.log",
)

#: Units that only slow a TCG boot down or wait for a network the guest does not have.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
    "systemd-networkd-wait-online.service", "getty@tty1.service",
)

GUEST_ADDRESS = "10.0.2.15/24"
GUEST_GATEWAY = "10.0.2.2"


def rootfs_key(packages: Sequence[str] = PACKAGES) -> str:
    """Cache key of the stage-1 tarball: the suite, the packages and this recipe's source."""
    digest = hashlib.sha256()
    digest.update(("%s %s %s\n" % (SUITE, ARCH, " ".join(sorted(packages)))).encode())
    with open(__file__, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()[:16]


def base_files() -> Dict[str, str]:
    """Files written into the tree after debootstrap, by path relative to the root."""
    return {
        "etc/hostname": HOSTNAME + "\n",
        "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost\n" % HOSTNAME,
        "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
        # No nameserver: the guest must not reach beyond the host's loopback-backed gateway.
        "etc/resolv.conf": "# vmdiag test guest: no DNS on purpose\n",
        "etc/machine-id": "",
        "etc/initramfs-tools/conf.d/vmdiag.conf": "MODULES=list\nCOMPRESS=gzip\n",
        "etc/initramfs-tools/modules": "\n".join(INITRD_MODULES) + "\n",
        "etc/systemd/network/20-eth0.network": (
            "[Match]\nName=eth0\n\n[Network]\nAddress=%s\nGateway=%s\nLinkLocalAddressing=no\n"
            "IPv6AcceptRA=no\n" % (GUEST_ADDRESS, GUEST_GATEWAY)),
        "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf": (
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud "
            "115200,38400,9600 %I $TERM\n"),
        "etc/systemd/journald.conf.d/vmdiag.conf": "[Journal]\nStorage=volatile\n",
        "etc/default/prometheus-node-exporter": 'ARGS="%s"\n' % NODE_EXPORTER_ARGS,
    }


def write_files(root: str, files: Dict[str, str], mode: int = 0o644) -> None:
    """Write ``files`` (relative path -> text) under ``root``, creating parent folders."""
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.islink(path):
            os.unlink(path)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, mode)


def enable_unit(root: str, unit: str, target: str = "multi-user.target",
                unit_dir: str = "etc/systemd/system") -> None:
    """Enable ``unit`` offline, as ``systemctl enable`` would, with a .wants symlink."""
    wants = os.path.join(root, "etc/systemd/system", target + ".wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, unit)
    if not os.path.lexists(link):
        os.symlink("/" + unit_dir.strip("/") + "/" + unit, link)


def mask_units(root: str, units: Iterable[str]) -> None:
    """Mask ``units`` offline: a symlink to /dev/null in /etc/systemd/system."""
    for unit in units:
        link = os.path.join(root, "etc/systemd/system", unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)


def prune_modules(root: str, keep: Sequence[str] = KEPT_MODULE_PREFIXES) -> int:
    """Delete kernel modules outside ``keep``; return how many were removed. Runs depmod after."""
    removed = 0
    base = os.path.join(root, "lib/modules")
    for version in os.listdir(base):
        kernel_dir = os.path.join(base, version, "kernel")
        for folder, _dirs, names in os.walk(kernel_dir):
            for name in names:
                relative = os.path.relpath(os.path.join(folder, name), kernel_dir)
                if not relative.startswith(tuple(keep)):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
        subprocess.run(["depmod", "-b", root, version], check=True)
    return removed


def run(cmd: List[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise with the tail of its output so the log says what broke."""
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise RuntimeError("command failed (exit %d): %s\n%s"
                           % (result.returncode, " ".join(cmd), tail))
    return result


def debootstrap(target: str, mirror: str, packages: Sequence[str] = PACKAGES) -> None:
    """Install a minbase ``SUITE`` with ``packages`` into ``target`` (which must not exist)."""
    cmd = ["debootstrap", "--variant=minbase", "--arch=" + ARCH,
           "--include=" + ",".join(packages), SUITE, target, mirror]
    with step("debootstrap %s (%d extra packages) from the apt mirror" % (SUITE, len(packages))):
        run(cmd)


def configure(root: str) -> None:
    """Apply the base configuration, rebuild a small initrd and strip the tree."""
    write_files(root, base_files())
    enable_unit(root, "systemd-networkd.service", unit_dir="lib/systemd/system")
    enable_unit(root, "serial-getty@ttyS0.service", target="getty.target",
                unit_dir="lib/systemd/system")
    mask_units(root, MASKED_UNITS)
    run(["chroot", root, "chpasswd"], input="root:%s\n" % ROOT_PASSWORD)
    with step("update-initramfs with modules %s" % ", ".join(INITRD_MODULES)):
        run(["chroot", root, "update-initramfs", "-u", "-k", "all"])
    with step("strip documentation, locales, firmware and unused kernel modules"):
        for relative in STRIPPED_PATHS:
            path = os.path.join(root, relative)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
                os.makedirs(path)
        log("removed %d kernel modules" % prune_modules(root))
    # A fixed, offline package state: no apt runs in the guest.
    for stale in ("var/lib/dpkg/status-old", "var/cache/ldconfig/aux-cache",
                  "usr/lib/udev/hwdb.bin", "etc/udev/hwdb.bin"):
        path = os.path.join(root, stale)
        if os.path.exists(path):
            os.unlink(path)


def tree_size(root: str) -> int:
    """Bytes used by regular files under ``root`` (symlinks not followed)."""
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def build_tarball(tarball: str, work_dir: str, mirror: str) -> None:
    """Debootstrap and configure a tree in ``work_dir``, then save it as ``tarball``."""
    target = os.path.join(work_dir, "rootfs")
    if os.path.exists(target):
        shutil.rmtree(target)
    debootstrap(target, mirror)
    configure(target)
    log("root tree is %.0f MiB" % (tree_size(target) / 2**20))
    partial = tarball + ".partial"
    with step("save root tree as %s" % tarball):
        run(["tar", "--numeric-owner", "--xattrs", "-C", target, "-cf", partial, "."])
        os.replace(partial, tarball)
    shutil.rmtree(target)
