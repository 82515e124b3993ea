"""Installed packages through rpm or dpkg-query, plus a cheap stamp of the package database.

Listing packages costs a subprocess and tens of milliseconds, so collectors first compare
``package_db_stamp`` (a stat of the database file) and query only when it moved.
"""

from __future__ import annotations

import os
from typing import List, Tuple

from ..errors import Unsupported
from ..machine import Machine
from ..records import Package

RPM_DBS = ("/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db",
           "/usr/lib/sysimage/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/Packages.db")
DPKG_DB = "/var/lib/dpkg/status"
RPM_QUERY = ["rpm", "-qa", "--qf",
             "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"]
DPKG_QUERY = ["dpkg-query", "-W", "-f",
              "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n"]




def package_manager(m: Machine) -> Tuple[str, str]:
    """("rpm"|"dpkg", database path) of this system; dpkg wins on Debian, where rpm may exist."""
    if os.path.exists(m.paths.host(DPKG_DB)):
        return "dpkg", DPKG_DB
    for db in RPM_DBS:
        if os.path.exists(m.paths.host(db)):
            return "rpm", db
    raise Unsupported("no rpm or dpkg package database found (looked in /var/lib/rpm, "
                      "/usr/lib/sysimage/rpm, /var/lib/dpkg)")


def package_db_stamp(m: Machine) -> Tuple[str, int, int] | None:
    """(path, mtime_ns, size) of the package database; changes whenever packages change."""
    try:
        _, db = package_manager(m)
        st = os.stat(m.paths.host(db))
    except (Unsupported, OSError):
        return None
    return db, st.st_mtime_ns, st.st_size


def installed_packages(m: Machine) -> Tuple[str, List[Package]]:
    manager, _ = package_manager(m)
    out: List[Package] = []
    if manager == "rpm":
        for line in m.run(RPM_QUERY, timeout=60).stdout.splitlines():
            f = line.split("\t")
            if len(f) == 3 and not f[0].startswith("gpg-pubkey"):
                out.append(Package(f[0], f[1], f[2]))
    else:
        for line in m.run(DPKG_QUERY, timeout=60).stdout.splitlines():
            f = line.split("\t")
            if len(f) == 4 and f[3].strip().startswith("ii"):
                out.append(Package(f[0], f[1], f[2]))
    out.sort()
    return manager, out
