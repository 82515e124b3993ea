"""Names and clusters of all VMs, as the service's own account sees them.

The health pass runs without any user (after ingest), yet needs a VM's name and cluster: for
``[health:cluster:<name>]`` and ``[health:vm:<name>]`` thresholds and for readable event
texts. The directory lists the VMs with the service account every ``refresh_s`` seconds. If the
account may not list VMs (it then needs a read-only administrator role in addition to adding
events), lookups answer nothing: thresholds fall back to ``[health]`` and ``[health:vm:<id>]``
and events name VMs by id (oVirt still links them to the VM).
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Tuple

from .connection import translate
from .events import ServiceAccount

log = logging.getLogger(__name__)

Entry = Tuple[str, str]  # (vm name, cluster name)


class VmDirectory:
    """vm_id -> (name, cluster name); ``refresh()`` blocks (run it in an executor)."""

    def __init__(self, account: ServiceAccount) -> None:
        self.account = account
        self._entries: Dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def lookup(self, vm_id: str) -> Tuple[str | None, str | None]:
        entry = self._entries.get(vm_id)
        return entry if entry is not None else (None, None)

    def __len__(self) -> int:
        return len(self._entries)

    def refresh(self) -> int:
        """Re-read every VM; return how many are known. Errors are logged once, not raised."""
        with self._lock:
            try:
                service = self.account.connection().system_service().vms_service()
                vms = translate(lambda: service.list(follow="cluster"),
                                "listing VMs for the health pass")
            except Exception as err:  # noqa: BLE001 - any failure keeps the old entries
                if str(err) != self.last_error:
                    log.warning("cannot list VMs with the service account (%s); thresholds by "
                                "VM name or cluster do not apply until it can", err)
                self.last_error = str(err)
                self.account.reset()
                return len(self._entries)
            self.last_error = None
            self._entries = {vm.id: (vm.name, getattr(vm.cluster, "name", None) or "")
                             for vm in vms}
            return len(self._entries)
