"""The one place that knows which operating system the agent runs on (psutil's layout).

The implementation module is chosen once, at import: ``linux`` on Linux, else ``unsupported``
(every function raises ``Unsupported``, so collectors still produce reports whose errors say
what is missing). Collectors call only the names below and never test ``sys.platform``;
a Windows port adds ``windows.py`` exporting the same names and one branch here.

Every function takes a ``Machine`` (root path, command runner, getifaddrs/utmp sources) as
its first argument; ``LOCAL`` is the running system. Functions return plain data or the
records in ``records``; they raise ``PlatformError`` (or ``OSError``/``ValueError`` from a
kernel file) when a value cannot be read, and the caller records that per field.

The facade:

    resources:  cpu_stat, load_average, meminfo, vmstat, pressure, mounts,
                real_filesystems, statvfs, disk_stats, file_handles, uptime,
                page_size, clock_ticks
    processes:  scan, process_name, process_stat, cmdline, owner_uid, user_name
    network:    interfaces, addresses, routes, default_gateway, resolv_conf,
                listening_sockets, socket_owners
    services:   failed_units, unit_states, units_via (dbus or systemctl),
                watch_units (state changes as systemd announces them)
    packages:   installed_packages, package_db_stamp
    settings:   hostname, fqdn_from_hosts, os_release, kernel_release, arch, boot_id,
                timezone, time_sync, security_modules, sysctl, logged_in_users,
                reboot_required
"""

import sys

from .bus import Bus, BusError, BusUnavailable, NoBus
from .errors import (
    CommandError,
    CommandFailed,
    CommandNotFound,
    CommandTimeout,
    PlatformError,
    Unsupported,
)
from .machine import LOCAL, CommandResult, Machine, Paths, Runner, subprocess_runner
from .records import CpuStat, DiskStat, Mount, Package, ProcStat

if sys.platform.startswith("linux"):
    from .linux import (
        addresses,
        arch,
        boot_id,
        clock_ticks,
        cmdline,
        cpu_stat,
        default_gateway,
        disk_stats,
        failed_units,
        file_handles,
        fqdn_from_hosts,
        hostname,
        installed_packages,
        interfaces,
        kernel_release,
        listening_sockets,
        load_average,
        logged_in_users,
        meminfo,
        mounts,
        os_release,
        owner_uid,
        package_db_stamp,
        page_size,
        pressure,
        process_name,
        process_stat,
        real_filesystems,
        reboot_required,
        resolv_conf,
        routes,
        scan,
        security_modules,
        socket_owners,
        statvfs,
        sysctl,
        time_sync,
        timezone,
        unit_states,
        units_via,
        uptime,
        user_name,
        vmstat,
        watch_units,
    )

    OS_FAMILY = "linux"
else:  # pragma: no cover - exercised only on other operating systems
    from .unsupported import (  # type: ignore[assignment]
        addresses,
        arch,
        boot_id,
        clock_ticks,
        cmdline,
        cpu_stat,
        default_gateway,
        disk_stats,
        failed_units,
        file_handles,
        fqdn_from_hosts,
        hostname,
        installed_packages,
        interfaces,
        kernel_release,
        listening_sockets,
        load_average,
        logged_in_users,
        meminfo,
        mounts,
        os_release,
        owner_uid,
        package_db_stamp,
        page_size,
        pressure,
        process_name,
        process_stat,
        real_filesystems,
        reboot_required,
        resolv_conf,
        routes,
        scan,
        security_modules,
        socket_owners,
        statvfs,
        sysctl,
        time_sync,
        timezone,
        unit_states,
        units_via,
        uptime,
        user_name,
        vmstat,
        watch_units,
    )

    OS_FAMILY = "unsupported"

__all__ = [
    "Bus", "BusError", "BusUnavailable", "NoBus",
    "LOCAL", "OS_FAMILY", "CommandError", "CommandFailed", "CommandNotFound", "CommandResult",
    "CommandTimeout", "CpuStat", "DiskStat", "Machine", "Mount", "Package", "Paths",
    "PlatformError", "ProcStat", "Runner", "Unsupported", "addresses", "arch", "boot_id",
    "clock_ticks", "cmdline", "cpu_stat", "default_gateway", "disk_stats", "failed_units",
    "file_handles", "fqdn_from_hosts", "hostname", "installed_packages", "interfaces",
    "kernel_release", "listening_sockets", "load_average", "logged_in_users", "meminfo",
    "mounts", "os_release", "owner_uid", "package_db_stamp", "page_size", "pressure",
    "process_name", "real_filesystems", "reboot_required", "resolv_conf", "routes", "scan",
    "security_modules", "socket_owners", "statvfs", "subprocess_runner", "sysctl", "time_sync",
    "timezone", "unit_states", "units_via", "uptime", "process_stat", "watch_units",
    "user_name", "vmstat",
]
