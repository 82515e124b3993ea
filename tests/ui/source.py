"""A data source for ``setup_ui`` backed by the realistic documents in ``documents.py``.

It keeps the service's contract: ``authenticate`` maps a Bearer token to a user or raises
``HTTPUnauthorized``; every lookup returns None for what that user may not see, exactly as the
service does after asking the engine with ``Filter: true``. Calls are recorded so tests can assert
what the pages asked for, and with whose identity.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Tuple

from aiohttp import web

from engine_plugin.service.listing import ListQuery, select

from .documents import Fleet


@dataclass(frozen=True)
class User:
    name: str
    vm_ids: FrozenSet[str] | None  # None: may see every VM

    def may_see(self, vm_id: str) -> bool:
        return self.vm_ids is None or vm_id in self.vm_ids


class FleetSource:
    def __init__(self, fleet: Fleet, users: Dict[str, User]) -> None:
        self.fleet = fleet
        self.users = users
        self.calls: List[Tuple[str, str, Any]] = []

    def visible(self, user: User) -> List[str]:
        return [vm_id for vm_id in self.fleet.docs if user.may_see(vm_id)]

    async def authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = self.users.get(token) if scheme.lower() == "bearer" else None
        if user is None:
            self.calls.append(("authenticate", "", header[:16]))
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
        return user

    async def vm_document(self, user: User, vm_id: str) -> dict | None:
        self.calls.append(("vm_document", user.name, vm_id))
        if not user.may_see(vm_id) or vm_id not in self.fleet.docs:
            return None
        return copy.deepcopy(self.fleet.docs[vm_id])

    async def fleet_list(self, user: User, query: ListQuery) -> dict:
        # The service's own selection (listing.select) over what this user may see.
        self.calls.append(("fleet_list", user.name, query))
        return select(self.fleet.summary(self.visible(user))["vms"], query)

    async def host_list(self, user: User, host_id: str, query: ListQuery) -> dict | None:
        self.calls.append(("host_list", user.name, host_id))
        on_host = [vm_id for vm_id in self.visible(user)
                   if self.fleet.docs[vm_id]["vm"]["host_id"] == host_id]
        known_hosts = {doc["vm"]["host_id"] for doc in self.fleet.docs.values()}
        if host_id not in known_hosts:
            return None
        return select(self.fleet.summary(on_host)["vms"], query)

    async def history(self, user: User, vm_id: str, metric: str, since: float,
                      until: float) -> dict | None:
        self.calls.append(("history", user.name, (vm_id, metric, since, until)))
        if not user.may_see(vm_id):
            return None
        series = self.fleet.histories.get(vm_id, {}).get(metric)
        if series is None:
            return {"vm_id": vm_id, "metric": metric, "resolution": "raw", "points": [],
                    "forecast": None}
        out = dict(series)
        out["points"] = [p for p in series["points"] if since <= p[0] <= until]
        return out
