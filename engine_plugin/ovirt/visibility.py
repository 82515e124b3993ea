"""What a user may see, asked of the engine with the user's own token and ``Filter: true``.

vmdiag holds no permission model of its own: oVirt's is authoritative (roles, groups,
inheritance from data center and cluster, quota...). For each API request the service asks
the engine "can this token see VM x?" (``GET /vms/x?follow=host,cluster``; 404 = no) or
"which VMs can it see?" (``GET /vms?follow=host,cluster``). The names of VM, host and cluster
come from those same answers. Answers are cached for ``ttl`` seconds per token, so a UI page
that makes several calls costs the engine one request; a permission the administrator removes
therefore takes up to ``ttl`` seconds to take effect.

Why ovirtsdk4 and not aiohttp against the REST API: the SDK is the engine's supported client,
it parses the XML the engine returns and maps its faults; the price is that it blocks, so
calls run in the thread pool given to ``Visibility`` (bounded, so a slow engine cannot exhaust
the service's threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import ovirtsdk4

from .connection import (
    EngineEndpoint,
    enum_value,
    link_id,
    link_name,
    translate,
    user_connection,
)
from .errors import NotAuthenticated

Observer = Callable[[str, float, str], None]

MAX_CACHE_ENTRIES = 20000
#: A token the engine refused is refused again without asking for this long, so a client
#: retrying a bad token cannot turn vmdiag into a load generator against the engine.
DENIED_TTL_S = 5.0


class _Denied:
    def __init__(self, error: NotAuthenticated) -> None:
        self.error = error


@dataclass(frozen=True)
class VmInfo:
    """A VM as the engine describes it to one user."""

    id: str
    name: str | None
    status: str | None
    host_id: str | None
    host_name: str | None
    cluster_id: str | None
    cluster_name: str | None

    @classmethod
    def from_sdk(cls, vm: Any) -> VmInfo:
        return cls(id=vm.id, name=vm.name, status=enum_value(vm.status),
                   host_id=link_id(vm.host), host_name=link_name(vm.host),
                   cluster_id=link_id(vm.cluster), cluster_name=link_name(vm.cluster))


@dataclass(frozen=True)
class HostInfo:
    id: str
    name: str | None
    address: str | None


def token_key(token: str) -> str:
    """Tokens are never kept as cache keys in clear (they would show up in memory dumps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Visibility:
    """Cached answers of the engine about what a token may see."""

    def __init__(self, endpoint: EngineEndpoint, executor: concurrent.futures.Executor,
                 ttl: float = 30.0, observe: Observer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.executor = executor
        self.ttl = ttl
        self.observe = observe
        self.clock = clock
        self._cache: Dict[Tuple[str, str, str], Tuple[float, Any]] = {}
        self._inflight: Dict[Tuple[str, str, str], asyncio.Future] = {}

    async def identity(self, token: str) -> str:
        """The engine's id of the token's user; raises NotAuthenticated for a bad token."""
        return await self._cached("identity", token, "", lambda: self._identity(token))

    async def vm(self, token: str, vm_id: str) -> VmInfo | None:
        """The VM if the token may see it, else None (it does not exist or is not visible)."""
        return await self._cached("vm", token, vm_id, lambda: self._get_vm(token, vm_id))

    async def vms(self, token: str) -> List[VmInfo]:
        """Every VM the token may see."""
        return await self._cached("vms", token, "", lambda: self._list_vms(token))

    async def host(self, token: str, host_id: str) -> HostInfo | None:
        return await self._cached("host", token, host_id, lambda: self._get_host(token, host_id))

    def forget(self, token: str | None = None) -> None:
        """Drop cached answers (of one token, or all)."""
        if token is None:
            self._cache.clear()
            return
        digest = token_key(token)
        for key in [k for k in self._cache if k[1] == digest]:
            del self._cache[key]

    async def _cached(self, kind: str, token: str, arg: str, fetch: Callable[[], Any]) -> Any:
        key = (kind, token_key(token), arg)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], _Denied):
                raise NotAuthenticated(str(hit[1].error))
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._inflight[key] = future
        started = time.monotonic()
        outcome = "error"
        try:
            value = await loop.run_in_executor(self.executor, fetch)
            outcome = "ok"
            self._store(key, value, now)
            future.set_result(value)
            return value
        except NotAuthenticated as err:
            # The engine no longer accepts the token (revoked, expired): forget every answer
            # cached for it, so no route keeps serving it, and refuse it at once for a while.
            self.forget(token)
            denied = _Denied(err)
            self._store(key, denied, now, min(self.ttl, DENIED_TTL_S))
            self._store(("identity", key[1], ""), denied, now, min(self.ttl, DENIED_TTL_S))
            future.set_exception(err)
            future.exception()
            raise
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved here, so a future nobody awaited does not warn
            raise
        finally:
            del self._inflight[key]
            if self.observe is not None:
                self.observe(kind, time.monotonic() - started, outcome)

    def _store(self, key: Tuple[str, str, str], value: Any, now: float,
               ttl: float | None = None) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            for old in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                del self._cache[old]
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()
        self._cache[key] = (now + (self.ttl if ttl is None else ttl), value)

    # -- blocking parts, run in the executor ------------------------------------------------

    def _identity(self, token: str) -> str:
        with user_connection(self.endpoint, token) as conn:
            api = translate(conn.system_service().get, "checking the SSO token")
            user = api.authenticated_user
            return str(getattr(user, "id", None) or "")

    def _get_vm(self, token: str, vm_id: str) -> VmInfo | None:
        with user_connection(self.endpoint, token) as conn:
            service = conn.system_service().vms_service().vm_service(vm_id)
            try:
                vm = translate(lambda: service.get(follow="host,cluster"),
                               "checking access to VM %s" % vm_id)
            except ovirtsdk4.NotFoundError:
                return None
            return VmInfo.from_sdk(vm)

    def _list_vms(self, token: str) -> List[VmInfo]:
        with user_connection(self.endpoint, token) as conn:
            service = conn.system_service().vms_service()
            vms = translate(lambda: service.list(follow="host,cluster"), "listing VMs")
            return [VmInfo.from_sdk(vm) for vm in vms]

    def _get_host(self, token: str, host_id: str) -> HostInfo | None:
        with user_connection(self.endpoint, token) as conn:
            service = conn.system_service().hosts_service().host_service(host_id)
            try:
                host = translate(service.get, "checking access to host %s" % host_id)
            except ovirtsdk4.NotFoundError:
                return None
            return HostInfo(id=host.id, name=host.name, address=host.address)
