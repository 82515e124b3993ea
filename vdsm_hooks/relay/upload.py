"""Upload envelopes to the engine's ingest listener over TLS with this host's certificate.

Flow (DESIGN.md, "Relay -> engine")::

    submit(envelope) --validate--> memory queue --batch_size / batch_interval--> POST
    submit_report(vm_id, report) --wrap--^
                                        |                                          |
                                        +--- engine down, or spool not empty ---> Spool
                                                                                   |
                                   engine back: oldest spooled batches first <-----+

Order is kept by one rule: nothing is sent from memory while the spool holds anything; memory
goes behind it instead. Replies decide what happens to a batch:

- 2xx: delivered.
- 408, 429, 5xx, connection or TLS errors: retried after an exponential backoff with jitter
  (``Retry-After`` honoured, capped by ``retry_max_backoff``); meanwhile everything is spooled.
- any other 4xx: the engine will never take it, so it is rejected, logged and counted, never
  retried. For 400/413/422 the batch is first split in halves, within a small request budget,
  so that one envelope the engine refuses does not take its 499 neighbours with it.

The engine deduplicates on (vm_id, run_id, seq), so a batch retried after a lost reply, or
re-read from the spool after a crash, is harmless: delivery is exactly once on the engine side.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import ssl
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Tuple

import aiohttp

from diag_protocol import ProtocolError, validate_envelope, wrap_report

from ..config import UploadConfig
from .spool import Spool, SpoolError

log = logging.getLogger(__name__)

#: Most bytes in one request body; the engine's ingest must accept at least this much.
MAX_BATCH_BYTES = 8 * 1024 * 1024
#: Bytes of envelopes kept in memory before the oldest are dropped. Normally the loop moves
#: them to the spool long before; this bounds a broken disk or a stalled loop.
MAX_MEMORY_BYTES = 64 * 1024 * 1024
#: Extra requests one rejected batch may spend on finding the envelopes the engine refuses.
SPLIT_BUDGET = 32
SPLIT_STATUSES = (400, 413, 422)
RETRY_STATUSES = (408, 429)
FIRST_BACKOFF = 0.5
USER_AGENT = "vmdiag-relay"


class _Outcome:
    """What one delivery attempt left: ``settled`` leading lines are done (sent or rejected);
    ``retry`` is set when the rest must wait for the engine."""

    __slots__ = ("settled", "retry")

    def __init__(self, settled: int, retry: bool) -> None:
        self.settled = settled
        self.retry = retry


class Uploader:
    """Batching, retrying, spooling client of ``POST /ingest/v1/reports``.

    Usage inside the relay::

        uploader = Uploader(cfg.upload, cfg.relay.host_id)
        task = asyncio.create_task(uploader.run())
        uploader.submit_report(vm_id, report)   # a session's validated report
        uploader.submit(envelope)               # anything else: validated here
        ...
        await uploader.close()          # stops run(), spools what is still in memory
    """

    def __init__(self, cfg: UploadConfig, host_id: str, *,
                 max_batch_bytes: int = MAX_BATCH_BYTES,
                 max_memory_bytes: int = MAX_MEMORY_BYTES,
                 rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.host_id = host_id
        self.max_batch_bytes = max_batch_bytes
        self._rand = rand
        self._pending: Deque[bytes] = collections.deque()
        self._first_pending_at = 0.0
        self._max_memory_bytes = max(max_memory_bytes, max_batch_bytes)
        self._pending_bytes = 0
        self._popped = 0  # lines ever removed from the front of _pending
        self._counters = collections.Counter({
            "sent": 0, "batches": 0, "retries": 0, "rejected": 0, "invalid": 0,
            "dropped_memory": 0})
        self._last_error: str | None = None
        self._last_success_at: float | None = None
        self._attempt = 0
        self._retry_at = 0.0
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._spool: Spool | None = None
        try:
            self._spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, validate=validate_envelope)
        except SpoolError as err:
            self._set_error("no spool, reports wait in memory only: %s" % err)

    # --- producer side ---------------------------------------------------------------------

    def submit(self, envelope: Mapping[str, Any]) -> bool:
        """Queue one envelope for upload; never blocks, never raises for a down engine.

        A missing ``host_id`` is filled in. Returns False (and counts ``invalid``) when the
        envelope does not validate or cannot fit in a request.
        """
        if "host_id" not in envelope:
            envelope = dict(envelope, host_id=self.host_id)
        try:
            checked = validate_envelope(dict(envelope))
        except (ProtocolError, ValueError, TypeError) as err:
            return self._invalid(envelope.get("vm_id"), err)
        return self._queue(checked)

    def submit_report(self, vm_id: str, report: Mapping[str, Any],
                      received_at: float | None = None,
                      agent_version: str | None = None) -> bool:
        """Wrap a guest report that ``diag_protocol`` already validated (a session's, from its
        ``LineDecoder``) in an envelope from this host and submit it, like ``submit``.

        Only the envelope's own fields are checked: the report is not walked a second time.
        Anything not validated that way goes through ``submit``.
        """
        try:
            checked = wrap_report(self.host_id, vm_id, dict(report), received_at,
                                  agent_version)
        except (ProtocolError, ValueError, TypeError) as err:
            return self._invalid(vm_id, err)
        return self._queue(checked)

    def _invalid(self, vm_id: Any, err: Exception) -> bool:
        self._counters["invalid"] += 1
        log.warning("not uploading an invalid envelope for VM %s: %s", str(vm_id)[:64], err)
        return False

    def _queue(self, checked: Dict[str, Any]) -> bool:
        try:
            # validated envelopes are trees: no cycle check needed (a fifth of the encoding time)
            line = json.dumps(checked, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False, check_circular=False).encode("utf-8") + b"\n"
        except (ValueError, TypeError) as err:
            return self._invalid(checked.get("vm_id"), err)
        if len(line) > self.max_batch_bytes:
            self._counters["invalid"] += 1
            log.warning("not uploading a %d byte envelope for VM %s: over the %d byte request "
                        "limit", len(line), checked["vm_id"], self.max_batch_bytes)
            return False
        if not self._pending:
            self._first_pending_at = time.monotonic()
        self._pending.append(line)
        self._pending_bytes += len(line)
        while self._pending_bytes > self._max_memory_bytes:
            self._pop_front(1)
            self._counters["dropped_memory"] += 1
        # Wake the loop when a batch is full, and when the queue stops being empty: an idle
        # loop sleeps without a deadline and must start the batch_interval clock.
        if self._wake is not None and (len(self._pending) == 1
                                       or len(self._pending) >= self.cfg.batch_size):
            self._wake.set()
        return True

    def stats(self) -> Dict[str, Any]:
        """Counters for ``vmdiag-relay status`` and the logs."""
        spool = self._spool.stats() if self._spool is not None else {
            "spool_bytes": 0, "spool_pending": 0, "spool_segments": 0, "spooled": 0,
            "dropped_oldest": 0, "spool_corrupt": 0}
        out: Dict[str, Any] = dict(self._counters)
        out.update(spool)
        out["dropped_oldest"] = spool["dropped_oldest"] + self._counters["dropped_memory"]
        out.update(queued=len(self._pending), queued_bytes=self._pending_bytes,
                   last_error=self._last_error,
                   last_success_at=self._last_success_at,
                   retry_in=max(0.0, round(self._retry_at - time.monotonic(), 3)))
        return out

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``close()``; survives any engine or disk trouble."""
        self._task = asyncio.current_task()
        self._wake = asyncio.Event()
        try:
            while not self._closing:
                delay = self._next_action_in()
                if delay is None or delay > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                    continue
                try:
                    await self._step()
                except (SpoolError, OSError) as err:
                    self._set_error(str(err))
                    await asyncio.sleep(1.0)
                except Exception as err:  # noqa: BLE001 - the loop must outlive any bug
                    log.exception("upload step failed")
                    self._set_error("internal error: %s" % err)
                    await asyncio.sleep(1.0)
        finally:
            await self._close_session()

    async def close(self) -> None:
        """Stop ``run()`` (waiting for a request in flight), then spool what is in memory."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.cfg.timeout + 1)
            except asyncio.TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:  # noqa: BLE001 - run() logged it already
                pass
        if self._pending and self._spool is not None:
            try:
                await self._spool_pending()
            except SpoolError as err:
                self._set_error(str(err))
                log.error("%d envelopes lost at shutdown: %s", len(self._pending), err)
        await self._close_session()

    def _next_action_in(self) -> float | None:
        """Seconds until something is due (0: now), None when only a submit can wake us."""
        now = time.monotonic()
        due: List[float] = []
        if self._pending:
            full = len(self._pending) >= self.cfg.batch_size
            flush = now if full else self._first_pending_at + self.cfg.batch_interval
            # Without a spool, memory can only wait for the engine.
            due.append(flush if self._spool is not None else max(flush, self._retry_at))
        if self._spool is not None and self._spool.pending:
            due.append(self._retry_at)
        if not due:
            return None
        return max(0.0, min(due) - now)

    async def _step(self) -> None:
        now = time.monotonic()
        flush_due = bool(self._pending) and (
            len(self._pending) >= self.cfg.batch_size
            or now >= self._first_pending_at + self.cfg.batch_interval)
        backlog = self._spool is not None and self._spool.pending > 0
        waiting = now < self._retry_at
        if flush_due and (backlog or waiting) and self._spool is not None:
            await self._spool_pending()
            backlog = True
        if waiting:
            return
        if backlog:
            await self._send_from_spool()
        elif flush_due:
            await self._send_from_memory()

    def _pop_front(self, count: int) -> None:
        """Drop ``count`` lines from the front of the memory queue (event loop thread only)."""
        for _ in range(min(count, len(self._pending))):
            self._pending_bytes -= len(self._pending.popleft())
            self._popped += 1

    def _settle_front(self, head: int, count: int) -> None:
        """The ``count`` lines that were at the front when ``_popped`` was ``head`` are done;
        some may have been dropped for memory meanwhile."""
        self._pop_front(head + count - self._popped)

    async def _spool_pending(self) -> None:
        """Move the memory queue behind the spool; the file work runs in a thread, the queue is
        only touched here, in the event loop, because submit() may run meanwhile."""
        assert self._spool is not None
        head, lines = self._popped, list(self._pending)
        await asyncio.to_thread(self._spool.append, lines)
        self._settle_front(head, len(lines))

    async def _send_from_memory(self) -> None:
        head = self._popped
        lines = _take(self._pending, self.cfg.batch_size, self.max_batch_bytes)
        outcome = await self._deliver(lines, [SPLIT_BUDGET])
        self._settle_front(head, outcome.settled)
        if self._pending:
            self._first_pending_at = time.monotonic()
        if outcome.retry and self._pending and self._spool is not None:
            await self._spool_pending()

    async def _send_from_spool(self) -> None:
        assert self._spool is not None
        batch = await asyncio.to_thread(self._spool.read, self.cfg.batch_size,
                                        self.max_batch_bytes)
        if batch is None:
            return
        if batch.corrupt:
            log.warning("skipped %d corrupt lines in the spool", batch.corrupt)
        if not batch.lines:
            await asyncio.to_thread(self._spool.commit, batch)
            return
        outcome = await self._deliver(batch.lines, [SPLIT_BUDGET])
        if outcome.settled:
            await asyncio.to_thread(self._spool.commit, batch, outcome.settled)

    # --- one batch -------------------------------------------------------------------------

    async def _deliver(self, lines: List[bytes], budget: List[int]) -> _Outcome:
        status, error, retry_after = await self._post(lines)
        if status is not None and 200 <= status < 300:
            self._counters["sent"] += len(lines)
            self._counters["batches"] += 1
            self._last_success_at = time.time()
            self._attempt = 0
            self._retry_at = 0.0
            return _Outcome(len(lines), False)
        if status is not None and 400 <= status < 500 and status not in RETRY_STATUSES:
            if len(lines) > 1 and status in SPLIT_STATUSES and budget[0] >= 2:
                budget[0] -= 2
                half = len(lines) // 2
                first = await self._deliver(lines[:half], budget)
                if first.retry:
                    return first
                second = await self._deliver(lines[half:], budget)
                return _Outcome(first.settled + second.settled, second.retry)
            self._counters["rejected"] += len(lines)
            self._set_error("engine rejected %d envelopes: %s" % (len(lines), error))
            return _Outcome(len(lines), False)
        self._counters["retries"] += 1
        self._schedule_retry(error, retry_after)
        return _Outcome(0, True)

    def _schedule_retry(self, error: str, retry_after: float | None) -> None:
        backoff = min(self.cfg.retry_max_backoff, FIRST_BACKOFF * (2 ** min(self._attempt, 30)))
        delay = backoff * (0.5 + 0.5 * self._rand())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.retry_max_backoff))
        self._attempt += 1
        self._retry_at = time.monotonic() + delay
        self._set_error("%s; retry %d in %.1f s, spooling meanwhile"
                        % (error, self._attempt, delay))

    async def _post(self, lines: List[bytes]) -> Tuple[int | None, str, float | None]:
        """POST one batch: (status or None, what went wrong, Retry-After seconds)."""
        body = b'{"envelopes":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        try:
            session = self._get_session()
        except (OSError, ssl.SSLError, ValueError) as err:
            return None, ("cannot load the TLS files ([upload] cert=%s key=%s ca=%s): %s"
                          % (self.cfg.cert, self.cfg.key, self.cfg.ca, err)), None
        try:
            async with session.post(self.cfg.url, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                text = (await resp.content.read(2048)).decode("utf-8", "replace")
                return resp.status, "HTTP %d %s" % (resp.status, text.strip()[:300]), \
                    _retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as err:
            return None, ("the engine's certificate is not trusted (%s); check [upload] ca=%s "
                          "and that the url's host name matches the certificate"
                          % (err.certificate_error, self.cfg.ca)), None
        except (aiohttp.ClientSSLError, ssl.SSLError) as err:
            return None, ("TLS handshake with %s failed (%s); is this host's certificate "
                          "([upload] cert=%s) signed by the engine's CA?"
                          % (self.cfg.url, err, self.cfg.cert)), None
        except aiohttp.ClientConnectorError as err:
            return None, ("cannot connect to %s (%s); is vmdiag-engine running and port 8791 "
                          "open?" % (self.cfg.url, err.os_error or err)), None
        except asyncio.TimeoutError:
            return None, "no answer from %s within %g s" % (self.cfg.url, self.cfg.timeout), None
        except (aiohttp.ServerDisconnectedError, ConnectionResetError,
                aiohttp.ClientOSError) as err:
            # With TLS 1.3 a server that refuses the client certificate just drops the
            # connection after the handshake, so say so.
            return None, ("the engine at %s closed the connection (%s); if this persists it "
                          "refuses this host's certificate: [upload] cert=%s must be signed by "
                          "the engine's CA" % (self.cfg.url, err or type(err).__name__,
                                               self.cfg.cert or "(none)")), None
        except (aiohttp.ClientError, OSError) as err:
            return None, "upload to %s failed: %s: %s" % (self.cfg.url, type(err).__name__,
                                                          err), None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = ssl.create_default_context(cafile=self.cfg.ca or None)
            if self.cfg.cert:
                context.load_cert_chain(self.cfg.cert, self.cfg.key or None)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=2),
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                headers={"User-Agent": USER_AGENT}, trust_env=False)
        return self._session

    async def _close_session(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _set_error(self, message: str) -> None:
        if message != self._last_error:
            log.warning("upload: %s", message)
        self._last_error = message


def _take(queue: Deque[bytes], count: int, max_bytes: int) -> List[bytes]:
    """The first lines of ``queue`` that fit ``count`` and ``max_bytes`` (at least one)."""
    lines: List[bytes] = []
    size = 0
    for line in queue:
        if len(lines) >= count or (lines and size + len(line) > max_bytes):
            break
        lines.append(line)
        size += len(line)
    return lines


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the exponential backoff is good enough
