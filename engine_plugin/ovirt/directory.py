"""Names, clusters and hosts of all VMs, as the service's own account sees them.

The health pass runs without any user (after ingest), yet needs a VM's name and cluster: for
``[health:cluster:<name>]`` and ``[health:vm:<name>]`` thresholds and for readable event
texts. Ingest needs to know which host runs a VM, to accept a host's reports only for its own
VMs. The directory lists the VMs with the service account (``follow=cluster,host``: one
request; oVirt links a running VM to its host, ``<host href=... id=...>``, and the inlined
host carries its ``address``) every few minutes, and at once when ingest meets a placement it
does not know (``wanted()``), at most every ``MIN_REFRESH_GAP_S``.

Placement keeps, per VM, every host oVirt showed it on within the migration window
(``[ingest] migration_window``), with the last time it did: a VM that migrated keeps being
accepted from the host it left for that long (the relay there may still deliver what it
spooled), and a VM that stopped is accepted from its last host for that long. The host of a
relay is its certificate's CN, which in oVirt is the host's address (``vdsmcert.pem``); it is
matched, case-insensitively, with the host's address or name.

If the account may not list VMs (it then needs a read-only administrator role in addition to
adding events), lookups answer nothing: thresholds fall back to ``[health]`` and
``[health:vm:<id>]``, events name VMs by id, and ``placement`` answers ``UNENFORCED`` (the
site chose an events-only account; ingest then accepts every host, as standalone, and says so
in the log). While the engine cannot be reached and was never read, it answers ``UNKNOWN``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, FrozenSet, List, Tuple

from .connection import get_xml
from .errors import EngineRefused, NotAuthenticated
from .events import ServiceAccount
from .visibility import VmInfo

log = logging.getLogger(__name__)

Entry = Tuple[str, str]  # (vm name, cluster name)

#: answers of ``VmDirectory.placement``
OWN = "own"                      # the host holds the VM, or held it within the window
NOT_OWN = "not_own"              # oVirt places the VM elsewhere (or knows no such VM)
UNKNOWN = "unknown"              # the directory has never been read (yet)
UNENFORCED = "unenforced"        # the service account may not list VMs: nobody can tell
#: Refreshes asked for by ingest are at least this far apart (a host sending reports for VMs
#: that are not its own cannot make the service list every VM all the time).
MIN_REFRESH_GAP_S = 10.0


class VmDirectory:
    """vm_id -> (name, cluster name) and placement; ``refresh()`` blocks (run it in an
    executor)."""

    def __init__(self, account: ServiceAccount, migration_window: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.migration_window = migration_window
        self.clock = clock
        self._entries: Dict[str, Entry] = {}
        self._vms: List[VmInfo] = []
        self._cluster_ids: Dict[str, str] = {}
        # vm_id -> {host_id: when oVirt last showed the VM on it}; vm_id -> current host_id
        self._placement: Dict[str, Dict[str, float]] = {}
        self._current: Dict[str, str] = {}
        # host_id -> lower-case address and name
        self._host_names: Dict[str, FrozenSet[str]] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None
        #: the engine refused the account the VM list (401/403): an events-only account
        self.forbidden = False
        #: engine time of the last successful refresh, None before the first
        self.refreshed_at: float | None = None
        self._last_attempt = float("-inf")

    def vm_ids(self) -> List[str]:
        """Every VM the last refresh listed."""
        return list(self._entries)

    def vms(self) -> List[VmInfo]:
        """Every VM the last refresh listed, as the service account sees it (all of them):
        what the fleet view shows a user whom the engine lets see every VM. The same list
        object until the next refresh (callers keep what they derive from it by identity;
        they must not change it)."""
        return self._vms

    def where(self, vm_id: str) -> Tuple[str | None, str | None]:
        """(host id, cluster id) oVirt last showed the VM on, for fleet patterns' events."""
        return self._current.get(vm_id), self._cluster_ids.get(vm_id)

    def lookup(self, vm_id: str) -> Tuple[str | None, str | None]:
        entry = self._entries.get(vm_id)
        return entry if entry is not None else (None, None)

    def __len__(self) -> int:
        return len(self._entries)

    def placement(self, host: str, vm_id: str, now: float) -> str:
        """Whether the host whose certificate CN is ``host`` may report ``vm_id`` now:
        ``OWN``, ``NOT_OWN``, ``UNKNOWN`` (never read) or ``UNENFORCED``."""
        if self.refreshed_at is None:
            return UNENFORCED if self.forbidden else UNKNOWN
        wanted = host.lower()
        current = self._current.get(vm_id)
        for host_id, seen in self._placement.get(vm_id, {}).items():
            if wanted in self._host_names.get(host_id, ()) and (
                    host_id == current or now - seen <= self.migration_window):
                return OWN
        return NOT_OWN

    def refreshed_since(self, when: float) -> bool:
        """Whether oVirt was last read successfully at ``when`` or later."""
        return self.refreshed_at is not None and self.refreshed_at >= when

    def wanted(self, now: float) -> bool:
        """Whether ingest may ask for a refresh now (marks the attempt when it may)."""
        with self._lock:
            if now - self._last_attempt < MIN_REFRESH_GAP_S:
                return False
            self._last_attempt = now
            return True

    def refresh(self) -> int:
        """Re-read every VM; return how many are known. Errors are logged once, not raised."""
        with self._lock:
            try:
                # A lean read (ElementTree, not ovirtsdk4's objects): at 10,000 VMs the SDK's
                # parser alone took 8-12 s of this process's CPU on every refresh.
                root = get_xml(self.account.connection(), "/vms",
                               "listing VMs for the health pass, ingest and the fleet view",
                               {"follow": "cluster,host"})
                listed = root.findall("vm") if root is not None else []
            except Exception as err:  # noqa: BLE001 - any failure keeps the old entries
                if str(err) != self.last_error:
                    log.warning("cannot list VMs with the service account (%s); thresholds by "
                                "VM name or cluster do not apply, and reports of VMs whose "
                                "host is not known wait, until it can", err)
                self.last_error = str(err)
                self.forbidden = isinstance(err, NotAuthenticated) or (
                    isinstance(err, EngineRefused) and err.code == 403)
                self.account.reset()
                return len(self._entries)
            now = self.clock()
            self.last_error = None
            self.forbidden = False
            entries: Dict[str, Entry] = {}
            infos: Dict[str, VmInfo] = {}
            current: Dict[str, str] = {}
            cluster_ids: Dict[str, str] = {}
            names = dict(self._host_names)
            for element in listed:
                vm = VmInfo.from_xml(element)
                if not vm.id:
                    continue
                infos[vm.id] = vm
                entries[vm.id] = (vm.name or "", vm.cluster_name or "")
                if vm.cluster_id:
                    cluster_ids[vm.id] = vm.cluster_id
                if vm.host_id:
                    current[vm.id] = vm.host_id
                    host = element.find("host")
                    address = host.findtext("address") if host is not None else None
                    known = {str(v).lower() for v in (address, vm.host_name) if v}
                    if known:
                        names[vm.host_id] = frozenset(known)
            placement: Dict[str, Dict[str, float]] = {}
            horizon = now - self.migration_window
            for vm_id in set(self._placement) | set(current):
                hosts = {h: t for h, t in self._placement.get(vm_id, {}).items()
                         if t >= horizon}
                if vm_id in current:
                    hosts[current[vm_id]] = now
                if hosts:
                    placement[vm_id] = hosts
            in_use = {h for hosts in placement.values() for h in hosts}
            self._host_names = {h: n for h, n in names.items() if h in in_use}
            self._entries, self._current, self._placement = entries, current, placement
            listed_now = list(infos.values())
            if listed_now != self._vms:  # unchanged: the same list object (vms())
                self._vms = listed_now
            self._cluster_ids = cluster_ids
            self.refreshed_at = now
            return len(self._entries)
