"""Which service instance does the duties that must run once: health passes, oVirt events,
retention.

Every instance ingests and answers the API; one at a time (the *leader*) evaluates VMs, plans
and delivers oVirt events, sweeps for silent VMs and applies retention. Leadership is a lease
in the store (``Store.acquire_lease``): a row naming the holder and an expiry on the
database's clock, renewed every ``RENEW_S`` seconds for ``LEASE_TTL_S``.

Why a lease rather than a PostgreSQL advisory lock: a session advisory lock lives exactly as
long as one connection. It would pin a connection outside the pool for the life of the
process; a dropped connection (a network blip, a database restart, a pooler in between) loses
the lock without the holder noticing until it asks again; and a holder whose host froze or
lost power keeps its session, and so the lock, until the server's TCP keepalive gives up
(two hours by default). A lease expires by itself after ``LEASE_TTL_S`` of the database's
clock whatever happened to the holder, is renewed through any pooled connection, and can be
read (``Store.leases``, ``/vmdiag/healthz``). The holder's own view is fenced: it counts
itself leader only until ``LEASE_TTL_S - MARGIN_S`` after its last successful renewal began
(monotonic clock), so it stops before anyone else can take the lease over.

So an instance killed outright hands its duties over within ``LEASE_TTL_S + RENEW_S``
(35 s); one stopped cleanly releases the lease and hands over within ``RENEW_S``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import socket
import time
from typing import Any, Callable, List

from ..tasks import cancel_and_wait

log = logging.getLogger("vmdiag.engine.leadership")

#: Name of the lease that carries every once-only duty.
LEASE = "duties"
#: How long a lease lasts without renewal (database clock), seconds.
LEASE_TTL_S = 30.0
#: How often the holder renews it and the others try to take it, seconds.
RENEW_S = 5.0
#: The holder stops this long before its lease can expire for the others, seconds.
MARGIN_S = 10.0


def instance_name() -> str:
    """This process's holder name: host, pid and a random part (a pid may be reused)."""
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), secrets.token_hex(3))


class Leadership:
    """Keeps (or waits for) the duties lease in the background; ``is_leader()`` never
    blocks."""

    def __init__(self, store: Any, holder: str | None = None, ttl_s: float = LEASE_TTL_S,
                 renew_s: float = RENEW_S, margin_s: float = MARGIN_S) -> None:
        if not 0 < margin_s < ttl_s or renew_s >= ttl_s - margin_s:
            raise ValueError("a lease must be renewed well within its time to live")
        self.store = store
        self.holder = holder or instance_name()
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.margin_s = margin_s
        self._valid_until = 0.0
        self._leader = False
        self._error: str | None = None
        self._on_gain: List[Callable[[], None]] = []
        # Its own thread: renewals must not queue behind a busy store executor.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vmdiag-lease")
        self._task: asyncio.Task | None = None

    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def on_gain(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) each time this instance becomes leader."""
        self._on_gain.append(callback)

    async def renew(self) -> bool:
        """Try once to take or renew the lease; return whether this instance leads now."""
        started = time.monotonic()
        try:
            held = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.store.acquire_lease, LEASE, self.holder, self.ttl_s)
        except Exception as err:  # the store is down: the lease runs out on its own
            if self._error is None:
                log.warning("cannot renew the duties lease (%s); %s", err,
                            "stopping the duties before it expires" if self.is_leader()
                            else "not taking the duties over")
            self._error = str(err)
            held = None
        else:
            self._error = None
        if held:
            self._valid_until = started + self.ttl_s - self.margin_s
        elif held is not None:
            self._valid_until = 0.0
        leader = self.is_leader()
        if leader != self._leader:
            self._leader = leader
            if leader:
                log.info("this instance (%s) now runs the health passes, oVirt events and "
                         "retention", self.holder)
                for callback in self._on_gain:
                    callback()
            else:
                log.info("this instance (%s) no longer runs the health passes, oVirt events "
                         "and retention", self.holder)
        return leader

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vmdiag-lease")

    async def _run(self) -> None:
        while True:
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease renewal failed")
            await asyncio.sleep(self.renew_s)

    async def stop(self) -> None:
        """Stop renewing and give the lease up, so another instance takes over at once."""
        await cancel_and_wait(self._task)
        self._task = None
        was_leader = self.is_leader()
        self._valid_until = 0.0
        self._leader = False
        if was_leader:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.store.release_lease, LEASE, self.holder)
            except Exception as err:
                log.info("could not release the duties lease (%s); it expires in %.0f s",
                         err, self.ttl_s)
        self._executor.shutdown(wait=True)
