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
    from . import linux as _impl

    OS_FAMILY = "linux"
else:  # pragma: no cover - exercised only on other operating systems
    from . import unsupported as _impl  # type: ignore[no-redef]

    OS_FAMILY = "unsupported"

# The facade, bound once from the module chosen above (as psutil binds ``_pslinux``); a port
# provides every one of these names (tests/guest_agent/collectors/test_facade.py checks it).
addresses = _impl.addresses
arch = _impl.arch
boot_id = _impl.boot_id
clock_ticks = _impl.clock_ticks
cmdline = _impl.cmdline
cpu_stat = _impl.cpu_stat
default_gateway = _impl.default_gateway
disk_stats = _impl.disk_stats
failed_units = _impl.failed_units
file_handles = _impl.file_handles
fqdn_from_hosts = _impl.fqdn_from_hosts
hostname = _impl.hostname
installed_packages = _impl.installed_packages
interfaces = _impl.interfaces
kernel_release = _impl.kernel_release
listening_sockets = _impl.listening_sockets
load_average = _impl.load_average
logged_in_users = _impl.logged_in_users
meminfo = _impl.meminfo
mounts = _impl.mounts
os_release = _impl.os_release
owner_uid = _impl.owner_uid
package_db_stamp = _impl.package_db_stamp
page_size = _impl.page_size
pressure = _impl.pressure
process_name = _impl.process_name
process_stat = _impl.process_stat
real_filesystems = _impl.real_filesystems
reboot_required = _impl.reboot_required
resolv_conf = _impl.resolv_conf
routes = _impl.routes
scan = _impl.scan
security_modules = _impl.security_modules
socket_owners = _impl.socket_owners
statvfs = _impl.statvfs
sysctl = _impl.sysctl
time_sync = _impl.time_sync
timezone = _impl.timezone
unit_states = _impl.unit_states
units_via = _impl.units_via
uptime = _impl.uptime
user_name = _impl.user_name
vmstat = _impl.vmstat
watch_units = _impl.watch_units

__all__ = [
    "Bus", "BusError", "BusUnavailable", "NoBus",
    "LOCAL", "OS_FAMILY", "CommandError", "CommandFailed", "CommandNotFound",
    "CommandResult", "CommandTimeout", "CpuStat", "DiskStat", "Machine", "Mount", "Package",
    "Paths", "PlatformError", "ProcStat", "Runner", "Unsupported", "subprocess_runner",
]  # and the facade's functions above
