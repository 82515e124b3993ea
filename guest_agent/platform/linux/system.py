"""Identity and configuration of the system: names, OS, kernel, time zone, security, sysctls."""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, List, Tuple

from ..errors import PlatformError, Unsupported
from ..machine import Machine
from .files import read_first_line, read_key_values, read_lines, read_text


def hostname(m: Machine) -> str:
    return read_first_line(m.paths.proc("sys", "kernel", "hostname"))


def fqdn_from_hosts(m: Machine, name: str) -> str | None:
    """The FQDN /etc/hosts gives ``name`` (no DNS query, so it cannot hang); None if it has none."""
    if "." in name:
        return name
    try:
        lines = read_lines(m.paths.etc("hosts"))
    except OSError:
        return None
    for line in lines:
        names = line.partition("#")[0].split()[1:]
        if name in names:
            for candidate in names:
                if candidate.startswith(name + "."):
                    return candidate
    return None


def os_release(m: Machine) -> Dict[str, str | None]:
    for path in (m.paths.etc("os-release"), m.paths.host("/usr/lib/os-release")):
        try:
            info = read_key_values(path)
        except FileNotFoundError:
            continue
        return {"name": info.get("NAME"), "version": info.get("VERSION_ID"),
                "id": info.get("ID"), "pretty": info.get("PRETTY_NAME"),
                "id_like": info.get("ID_LIKE")}
    raise PlatformError("neither /etc/os-release nor /usr/lib/os-release exists; the OS is too "
                        "old or the file was removed")


def kernel_release(m: Machine) -> str:
    return read_first_line(m.paths.proc("sys", "kernel", "osrelease"))


def arch(m: Machine) -> str:
    try:
        value = read_first_line(m.paths.proc("sys", "kernel", "arch"))  # Linux >= 5.8
        if value:
            return value
    except OSError:
        pass
    if m.paths.is_live:
        return os.uname().machine
    raise Unsupported("no /proc/sys/kernel/arch in this tree")


def boot_id(m: Machine) -> str:
    return read_first_line(m.paths.proc("sys", "kernel", "random", "boot_id"))


def timezone(m: Machine) -> str:
    try:
        value = read_first_line(m.paths.etc("timezone"))  # Debian
        if value:
            return value
    except OSError:
        pass
    try:
        target = os.readlink(m.paths.etc("localtime"))
    except OSError as err:
        raise PlatformError("cannot tell the time zone: no /etc/timezone and /etc/localtime is "
                            "not a link into zoneinfo (%s); set it with timedatectl "
                            "set-timezone" % err.strerror) from err
    _, found, zone = target.partition("zoneinfo/")
    if not found:
        raise PlatformError("/etc/localtime points to %s, not into a zoneinfo directory" % target)
    return zone


def security_modules(m: Machine) -> Dict[str, str | None]:
    """SELinux mode and AppArmor state; None means the module is not part of this system."""
    selinux: str | None = None
    try:
        selinux = "enforcing" if read_first_line(
            m.paths.sys("fs", "selinux", "enforce")) == "1" else "permissive"
    except FileNotFoundError:
        if os.path.exists(m.paths.etc("selinux", "config")):
            selinux = "disabled"
    apparmor: str | None = None
    try:
        apparmor = "enabled" if read_first_line(
            m.paths.sys("module", "apparmor", "parameters", "enabled")) == "Y" else "disabled"
    except FileNotFoundError:
        pass
    return {"selinux": selinux, "apparmor": apparmor}


_SYSCTL_NAME = re.compile(r"^[A-Za-z0-9_.:/@-]{1,200}$")


def sysctl(m: Machine, name: str) -> str:
    """Value of one sysctl (``net.ipv4.ip_forward`` or ``net/ipv4/ip_forward``), tabs as spaces."""
    if not _SYSCTL_NAME.match(name) or ".." in name.split("/"):
        raise PlatformError("%r is not a sysctl name; use dotted names like vm.swappiness" % name)
    rel = name if "/" in name else name.replace(".", "/")
    if ".." in rel.split("/"):
        raise PlatformError("%r is not a sysctl name" % name)
    try:
        return " ".join(read_text(m.paths.proc("sys", rel)).split())
    except FileNotFoundError as err:
        raise PlatformError("sysctl %s does not exist on this kernel; remove it from the "
                            "agent's sysctls option" % name) from err


def logged_in_users(m: Machine) -> List[Dict[str, Any]]:
    return [{"name": u.name, "terminal": u.terminal, "host": u.host or None,
             "started": float(u.started)} for u in m.users()]


def reboot_required(m: Machine) -> Tuple[bool, str | None]:
    """Debian's reboot-required flag file, else (EL) a newer kernel in /boot than the running one.

    The kernel test compares modification times of /boot/vmlinuz-* (what the bootloader
    defaults to after an update), so it needs no rpm version comparison.
    """
    for flag in ("/run/reboot-required", "/var/run/reboot-required"):
        if os.path.exists(m.paths.host(flag)):
            try:
                pkgs = sorted(set(read_lines(m.paths.host(flag + ".pkgs"))) - {""})
            except OSError:
                pkgs = []
            reason = "updated packages need a reboot"
            if pkgs:
                reason += ": " + ", ".join(pkgs)
            return True, reason
    if os.path.exists(m.paths.host("/var/lib/dpkg/status")):
        return False, None
    running = kernel_release(m)
    images = [p for p in glob.glob(m.paths.host("/boot/vmlinuz-*")) if "-rescue-" not in p]
    if not images:
        raise Unsupported("cannot tell whether a reboot is needed: no reboot-required flag "
                          "and no /boot/vmlinuz-* images to compare with the running kernel")
    newest = max(images, key=lambda p: os.stat(p).st_mtime)
    newest_release = os.path.basename(newest)[len("vmlinuz-"):]
    if newest_release != running:
        return True, ("kernel %s is installed but %s is running; reboot to use it"
                      % (newest_release, running))
    return False, None
