"""Stand-in for operating systems without an implementation yet (the shape a port fills in).

Every facade function raises ``Unsupported`` naming itself and the platform, so an agent
started on such a system still sends reports, with one error per field saying what is missing.
"""

import sys
from typing import Any, Callable

from .errors import Unsupported


def _missing(name: str) -> Callable[..., Any]:
    def function(*_args: Any, **_kwargs: Any) -> Any:
        raise Unsupported("%s is not implemented for %s yet; vmdiag's agent supports Linux"
                          % (name, sys.platform))

    function.__name__ = name
    return function


addresses = _missing("addresses")
arch = _missing("arch")
boot_id = _missing("boot_id")
clock_ticks = _missing("clock_ticks")
cmdline = _missing("cmdline")
cpu_stat = _missing("cpu_stat")
default_gateway = _missing("default_gateway")
disk_stats = _missing("disk_stats")
failed_units = _missing("failed_units")
file_handles = _missing("file_handles")
fqdn_from_hosts = _missing("fqdn_from_hosts")
hostname = _missing("hostname")
installed_packages = _missing("installed_packages")
interfaces = _missing("interfaces")
kernel_release = _missing("kernel_release")
listening_sockets = _missing("listening_sockets")
load_average = _missing("load_average")
logged_in_users = _missing("logged_in_users")
meminfo = _missing("meminfo")
mounts = _missing("mounts")
os_release = _missing("os_release")
owner_uid = _missing("owner_uid")
package_db_stamp = _missing("package_db_stamp")
page_size = _missing("page_size")
pressure = _missing("pressure")
process_name = _missing("process_name")
real_filesystems = _missing("real_filesystems")
reboot_required = _missing("reboot_required")
resolv_conf = _missing("resolv_conf")
routes = _missing("routes")
scan = _missing("scan")
security_modules = _missing("security_modules")
socket_owners = _missing("socket_owners")
statvfs = _missing("statvfs")
sysctl = _missing("sysctl")
time_sync = _missing("time_sync")
timezone = _missing("timezone")
unit_states = _missing("unit_states")
units_via = _missing("units_via")
process_stat = _missing("process_stat")
watch_units = _missing("watch_units")
uptime = _missing("uptime")
user_name = _missing("user_name")
vmstat = _missing("vmstat")
