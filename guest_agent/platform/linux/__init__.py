"""Linux implementation of the platform facade: /proc, /sys, /etc and a few helper commands."""

from .kernel import (
    CpuStat,
    DiskStat,
    Mount,
    clock_ticks,
    cpu_stat,
    disk_stats,
    file_handles,
    load_average,
    meminfo,
    mounts,
    page_size,
    pressure,
    real_filesystems,
    statvfs,
    uptime,
    vmstat,
)
from .net import (
    addresses,
    default_gateway,
    interfaces,
    listening_sockets,
    resolv_conf,
    routes,
    socket_owners,
)
from .packages import Package, installed_packages, package_db_stamp
from .processes import (
    ProcStat,
    cmdline,
    owner_uid,
    process_name,
    process_stat,
    scan,
    user_name,
)
from .services import failed_units, unit_states, units_via
from .system import (
    arch,
    boot_id,
    fqdn_from_hosts,
    hostname,
    kernel_release,
    logged_in_users,
    os_release,
    reboot_required,
    security_modules,
    sysctl,
    timezone,
)
from .timesync import time_sync
from .unit_events import watch_units

__all__ = [
    "CpuStat", "DiskStat", "Mount", "Package", "ProcStat", "addresses", "arch", "boot_id",
    "clock_ticks", "cmdline", "cpu_stat", "default_gateway", "disk_stats", "failed_units",
    "file_handles", "fqdn_from_hosts", "hostname", "installed_packages", "interfaces",
    "kernel_release", "listening_sockets", "load_average", "logged_in_users", "meminfo",
    "mounts", "os_release", "owner_uid", "package_db_stamp", "page_size", "pressure",
    "process_name", "real_filesystems", "reboot_required", "resolv_conf", "routes", "scan",
    "security_modules", "socket_owners", "statvfs", "sysctl", "time_sync", "timezone",
    "unit_states", "units_via", "uptime", "process_stat", "watch_units",
    "user_name", "vmstat",
]
