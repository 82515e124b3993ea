"""Upload envelopes to the engine's ingest listener over TLS with this host's certificate.

Flow (DESIGN.md, "Relay -> engine")::

    submit(envelope) --validate--> memory queue --batch_size / batch_interval--> POST
    submit_report(vm_id, report) --wrap--^
                                        |                                          |
                                        +--- engine down, or spool not empty ---> Spool
                                                                                   |
                                   engine back: oldest spooled batches first <-----+

Order is kept by one rule: nothing is sent from memory while the spool holds anything; memory
goes behind it instead. The answer decides what happens (the ingest contract, docs/design.md,
"Relay -> engine: per-envelope outcomes"; outcomes.py reads it):

- 200 with ``results``: each envelope on its own. ``stored`` and ``duplicate`` are done;
  ``refused`` is dropped for good, counted per VM and logged once per VM per hour; ``retry``
  goes back to the end of the queue (only it: the others of its batch are settled). When
  every envelope of a batch says ``retry``, the next attempt waits for the back-off.
- 200 without ``results`` (an engine before per-envelope outcomes): all delivered.
- 400 (the body as a whole refused): the batch is split in halves, within a small request
  budget, and only an envelope refused *alone* is dropped (counted like ``refused``).
- 413 (too large): split the same way; an envelope too large alone is kept.
- 408, 429, 5xx, connection or TLS errors: transient; retried after an exponential back-off
  with jitter (``Retry-After`` honoured, capped by ``retry_max_backoff``), spooling meanwhile.
- 401, 403, 404 and any other 4xx: the engine will not take anything from this relay as
  configured (wrong url, a proxy, an expired or foreign certificate). Everything stays
  spooled, the relay backs off (capped) and says so loudly: an error in the log, and
  ``blocked`` in ``vmdiag-relay status``, until a batch goes through.

The engine deduplicates on (vm_id, run_id, seq), so a batch retried after a lost reply, or
re-read from the spool after a crash, is harmless: delivery is exactly once on the engine side.
An envelope answered ``retry`` may reach the engine after newer ones of its VM.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import ssl
import time
from typing import Any, AsyncIterator, Callable, Deque, Dict, List, Mapping, Tuple

import aiohttp

from diag_protocol import ProtocolError, validate_envelope, wrap_report
from diag_protocol.framing import dumps_tree
from diag_protocol.ingest import DUPLICATE, REFUSED, RETRY, STORED

from ..config import UploadConfig
from .engine_clock import EngineClock
from .outcomes import (
    MAX_ANSWER_BYTES,
    RefusalLedger,
    parse_results,
    vm_of,
)
from .spool import Spool, SpoolError

log = logging.getLogger(__name__)

#: Most bytes in one request body; the engine's ingest must accept at least this much.
MAX_BATCH_BYTES = 8 * 1024 * 1024
#: Bytes of envelopes kept in memory before the oldest are dropped. Normally the loop moves
#: them to the spool long before; this bounds a broken disk or a stalled loop.
MAX_MEMORY_BYTES = 64 * 1024 * 1024
#: Extra requests one rejected batch may spend on finding the envelopes the engine refuses.
SPLIT_BUDGET = 32
#: The batch as a whole refused: split to find the envelope, drop it only when refused alone.
BAD_REQUEST = 400
#: Too large: split; one envelope too large alone is kept (the engine's limit is wrong).
TOO_LARGE = 413
#: Transient, like 5xx and network errors.
RETRY_STATUSES = (408, 429)
#: What a blocking answer most likely means, for the log and ``status``.
BLOCKED_HINTS = {
    401: "the engine does not accept this host's certificate ([upload] cert)",
    403: "the engine refuses this host ([upload] cert, or the engine's [ingest] settings)",
    404: "nothing answers at [upload] url; check the path (/ingest/v1/reports) and any proxy",
    413: "the engine refuses a single envelope as too large; its body limit is below the "
         "relay's",
}
FIRST_BACKOFF = 0.5
#: Once the spool holds this fraction of ``[upload] spool_max_bytes``, each VM may hold at most
#: its share (the bound divided by the VMs with envelopes there); see ``Spool``.
SHARE_PRESSURE = 0.5
USER_AGENT = "vmdiag-relay"


class _Outcome:
    """What one delivery attempt left: ``settled`` leading lines are done (delivered, dropped,
    or handed back to the queue to retry); ``retry`` is set when the rest must wait."""

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
            "sent": 0, "stored": 0, "duplicates": 0, "batches": 0, "retries": 0,
            "retried_envelopes": 0, "rejected": 0, "invalid": 0, "dropped_memory": 0})
        self.refusals = RefusalLedger()
        self.share_drops = RefusalLedger(
            says="the spool is under pressure and %d report(s) of VM %s were over its share")
        self.engine_clock = EngineClock()
        #: Envelopes the engine asked to retry, queued again once their batch is settled.
        self._again: List[bytes] = []
        #: Per queued line (by identity; the line is held, so its id is not reused): what to
        #: call once it is safe from a relay crash (delivered, refused for good, or spooled),
        #: which acknowledges the report to its agent (diag_protocol.acks).
        self._on_safe: Dict[int, Tuple[bytes, Callable[[], None]]] = {}
        self._last_error: str | None = None
        #: Set while the engine refuses every batch as configured (401, 403, 404, ...).
        self._blocked: str | None = None
        self._blocked_logged_at = float("-inf")
        self._last_success_at: float | None = None
        self._attempt = 0
        self._retry_at = 0.0
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._spool: Spool | None = None
        try:
            self._spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, validate=validate_envelope,
                                share_pressure=SHARE_PRESSURE, on_share_drop=self._share_drop)
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
                      agent_version: str | None = None,
                      on_safe: Callable[[], None] | None = None,
                      encoded_report: bytes | None = None) -> bool:
        """Wrap a guest report that ``diag_protocol`` already validated (a session's, from its
        ``LineDecoder``) in an envelope from this host and submit it, like ``submit``.

        Only the envelope's own fields are checked: the report is not walked a second time.
        Anything not validated that way goes through ``submit``. ``on_safe`` is called once
        the envelope survives a relay crash: the engine stored it, called it a duplicate or
        refused it for good, or it is fsynced in the spool. Never for one dropped by accident
        (memory bound, a spool that cannot be written, shutdown without a spool).
        ``encoded_report``, the report's compact JSON (``diag_protocol.framing.dumps_tree``, as
        the relay's cache keeps it), saves encoding it a second time.
        """
        if received_at is not None:
            received_at = self.engine_clock.correct(received_at)
        try:
            # with its encoding given, the report is only read here: no copy of it
            own = (report if encoded_report is not None and isinstance(report, dict)
                   else dict(report))
            checked = wrap_report(self.host_id, vm_id, own, received_at, agent_version)
        except (ProtocolError, ValueError, TypeError) as err:
            return self._invalid(vm_id, err)
        if encoded_report is None:
            return self._queue(checked, on_safe)
        del checked["report"]  # the envelope's own fields: validated, so a plain JSON tree
        encoded_head = dumps_tree(checked)
        # the envelope's own fields first (the spool reads vm_id from a line's head)
        return self._queue_line(encoded_head[:-1] + b',"report":' + encoded_report + b"}\n",
                                vm_id, on_safe)

    def _invalid(self, vm_id: Any, err: Exception) -> bool:
        self._counters["invalid"] += 1
        log.warning("not uploading an invalid envelope for VM %s: %s", str(vm_id)[:64], err)
        return False

    def _queue(self, checked: Dict[str, Any],
               on_safe: Callable[[], None] | None = None) -> bool:
        try:
            # validated envelopes are trees: no cycle check needed (a fifth of the encoding time)
            line = json.dumps(checked, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False, check_circular=False).encode("utf-8") + b"\n"
        except (ValueError, TypeError) as err:
            return self._invalid(checked.get("vm_id"), err)
        return self._queue_line(line, checked["vm_id"], on_safe)

    def _queue_line(self, line: bytes, vm_id: str,
                    on_safe: Callable[[], None] | None = None) -> bool:
        if len(line) > self.max_batch_bytes:
            self._counters["invalid"] += 1
            log.warning("not uploading a %d byte envelope for VM %s: over the %d byte request "
                        "limit", len(line), vm_id, self.max_batch_bytes)
            return False
        if on_safe is not None:
            self._on_safe[id(line)] = (line, on_safe)
        self._enqueue(line)
        return True

    def _enqueue(self, line: bytes) -> None:
        """Append one encoded envelope line to the memory queue (event loop thread only)."""
        if not self._pending:
            self._first_pending_at = time.monotonic()
        self._pending.append(line)
        self._pending_bytes += len(line)
        while self._pending_bytes > self._max_memory_bytes:
            self._on_safe.pop(id(self._pending[0]), None)
            self._pop_front(1)
            self._counters["dropped_memory"] += 1
        # Wake the loop when a batch is full, and when the queue stops being empty: an idle
        # loop sleeps without a deadline and must start the batch_interval clock.
        if self._wake is not None and (len(self._pending) == 1
                                       or len(self._pending) >= self.cfg.batch_size):
            self._wake.set()

    def _requeue_retries(self) -> None:
        """Envelopes the engine asked to retry go to the end of the queue."""
        again, self._again = self._again, []
        for line in again:
            self._enqueue(line)

    def stats(self) -> Dict[str, Any]:
        """Counters for ``vmdiag-relay status`` and the logs."""
        spool = self._spool.stats() if self._spool is not None else {
            "spool_bytes": 0, "spool_pending": 0, "spool_segments": 0, "spooled": 0,
            "dropped_oldest": 0, "dropped_share": 0, "spool_vms": 0, "spool_corrupt": 0}
        out: Dict[str, Any] = dict(self._counters)
        out.update(spool)
        out["dropped_oldest"] = spool["dropped_oldest"] + self._counters["dropped_memory"]
        out.update(queued=len(self._pending), queued_bytes=self._pending_bytes,
                   last_error=self._last_error, blocked=self._blocked,
                   engine_clock_offset_s=(None if self.engine_clock.offset is None
                                          else round(self.engine_clock.offset, 1)),
                   refused_vms=self.refusals.as_dict(),
                   over_share_vms={vm: e["count"] for vm, e in self.share_drops.as_dict().items()},
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
        self._safe(lines)  # fsynced (or dropped for good over the VM's share)

    async def _send_from_memory(self) -> None:
        head = self._popped
        lines = _take(self._pending, self.cfg.batch_size, self.max_batch_bytes)
        outcome = await self._deliver(lines, [SPLIT_BUDGET])
        self._settle_front(head, outcome.settled)
        self._requeue_retries()
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
        self._requeue_retries()

    # --- one batch -------------------------------------------------------------------------

    async def _deliver(self, lines: List[bytes], budget: List[int]) -> _Outcome:
        status, error, retry_after, body = await self._post(lines)
        if status is not None and 200 <= status < 300:
            self._delivered(lines, body)
            return _Outcome(len(lines), False)
        if status in (BAD_REQUEST, TOO_LARGE) and len(lines) > 1 and budget[0] >= 2:
            budget[0] -= 2
            half = len(lines) // 2
            first = await self._deliver(lines[:half], budget)
            if first.retry:
                return first
            second = await self._deliver(lines[half:], budget)
            return _Outcome(first.settled + second.settled, second.retry)
        if status == BAD_REQUEST and len(lines) == 1:
            self._refuse(lines[0], "bad_request", error)
            return _Outcome(1, False)
        if (status is not None and 400 <= status < 500 and status not in RETRY_STATUSES
                and status != BAD_REQUEST):
            self._block(status, error, retry_after)
            return _Outcome(0, True)
        # 5xx, 408, 429, network trouble, or a 400 the split budget could not isolate
        self._counters["retries"] += 1
        self._schedule_retry(error, retry_after)
        return _Outcome(0, True)

    def _delivered(self, lines: List[bytes], body: bytes) -> None:
        """Settle each envelope of a batch the engine answered 2xx."""
        self._counters["batches"] += 1
        self._last_success_at = time.time()
        if self._blocked is not None:
            log.warning("upload: the engine takes reports again")
            self._blocked = None
        results = parse_results(body, len(lines))
        if results is None:  # an engine before per-envelope outcomes
            self._counters["sent"] += len(lines)
            self._counters["stored"] += len(lines)
            self._safe(lines)
            self._reset_backoff()
            return
        retried = []
        for line, result in zip(lines, results):
            if result.outcome == STORED:
                self._counters["sent"] += 1
                self._counters["stored"] += 1
            elif result.outcome == DUPLICATE:
                self._counters["sent"] += 1
                self._counters["duplicates"] += 1
            elif result.outcome == REFUSED:
                self._refuse(line, result.reason, result.message)
            else:
                assert result.outcome == RETRY
                retried.append(result.reason)
                self._again.append(line)
                continue
            self._safe((line,))
        self._counters["retried_envelopes"] += len(retried)
        if retried and len(retried) == len(lines):
            # nothing moved: wait before asking again, as for a 503
            self._counters["retries"] += 1
            reasons = ", ".join(sorted(set(r or "no reason" for r in retried)))
            self._schedule_retry("the engine asked to retry all %d envelopes (%s)"
                                 % (len(lines), reasons), None)
        else:
            self._reset_backoff()

    def _reset_backoff(self) -> None:
        self._attempt = 0
        self._retry_at = 0.0

    def _share_drop(self, vm_id: str) -> None:
        """The spool dropped one of ``vm_id``'s envelopes: that VM is over its share."""
        said = self.share_drops.add(vm_id, "over_share",
                                    "it sends more than its share of [upload] spool_max_bytes")
        if said is not None:
            log.warning("upload: %s", said)

    def _safe(self, lines: Any) -> None:
        """These lines cannot be lost by a relay crash any more: acknowledge their reports."""
        if not self._on_safe:
            return
        for line in lines:
            entry = self._on_safe.pop(id(line), None)
            if entry is not None and entry[0] is line:
                try:
                    entry[1]()
                except Exception:  # noqa: BLE001 - an acknowledgement must not stop uploads
                    log.exception("acknowledging a report failed")

    def _refuse(self, line: bytes, reason: str, message: str) -> None:
        """Drop one envelope the engine refused for good; count it for its VM."""
        self._counters["rejected"] += 1
        self._safe((line,))  # refused for good: sending it again would change nothing
        said = self.refusals.add(vm_of(line), reason, message)
        if said is not None:
            log.warning("upload: %s", said)

    def _block(self, status: int, error: str, retry_after: float | None) -> None:
        """The engine refuses this relay as configured: keep everything, back off, be loud."""
        hint = BLOCKED_HINTS.get(status, "the engine refuses uploads from this relay")
        message = "%s: %s; reports stay spooled until this is fixed" % (error, hint)
        now = time.monotonic()
        if message != self._blocked or now - self._blocked_logged_at >= 600:
            log.error("upload BLOCKED: %s", message)
            self._blocked_logged_at = now
        self._blocked = message
        self._counters["retries"] += 1
        self._schedule_retry(error, retry_after)

    def _schedule_retry(self, error: str, retry_after: float | None) -> None:
        backoff = min(self.cfg.retry_max_backoff, FIRST_BACKOFF * (2 ** min(self._attempt, 30)))
        delay = backoff * (0.5 + 0.5 * self._rand())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.retry_max_backoff))
        self._attempt += 1
        self._retry_at = time.monotonic() + delay
        self._set_error("%s; retry %d in %.1f s, spooling meanwhile"
                        % (error, self._attempt, delay))

    async def _post(self, lines: List[bytes]
                    ) -> Tuple[int | None, str, float | None, bytes]:
        """POST one batch: (status or None, what went wrong, Retry-After seconds, body)."""
        length = _body_length(lines)
        try:
            session = self._get_session()
        except (OSError, ssl.SSLError, ValueError) as err:
            return None, ("cannot load the TLS files ([upload] cert=%s key=%s ca=%s): %s"
                          % (self.cfg.cert, self.cfg.key, self.cfg.ca, err)), None, b""
        try:
            sent_at = time.time()
            # Streamed in slices with a Content-Length: building and encrypting a 10 MB body
            # in one go holds the event loop every session shares for tens of ms.
            async with session.post(self.cfg.url, data=_body_slices(lines),
                                    headers={"Content-Type": "application/json",
                                             "Content-Length": str(length)}) as resp:
                self.engine_clock.observe(resp.headers.get("Date"), sent_at, time.time())
                body = await resp.content.read(MAX_ANSWER_BYTES)
                text = body[:2048].decode("utf-8", "replace")
                return (resp.status, "HTTP %d %s" % (resp.status, text.strip()[:300]),
                        _retry_after(resp.headers.get("Retry-After")), body)
        except aiohttp.ClientConnectorCertificateError as err:
            return None, ("the engine's certificate is not trusted (%s); check [upload] ca=%s "
                          "and that the url's host name matches the certificate"
                          % (err.certificate_error, self.cfg.ca)), None, b""
        except (aiohttp.ClientSSLError, ssl.SSLError) as err:
            return None, ("TLS handshake with %s failed (%s); is this host's certificate "
                          "([upload] cert=%s) signed by the engine's CA?"
                          % (self.cfg.url, err, self.cfg.cert)), None, b""
        except aiohttp.ClientConnectorError as err:
            return None, ("cannot connect to %s (%s); is vmdiag-engine running and port 8791 "
                          "open?" % (self.cfg.url, err.os_error or err)), None, b""
        except asyncio.TimeoutError:
            return (None, "no answer from %s within %g s" % (self.cfg.url, self.cfg.timeout),
                    None, b"")
        except (aiohttp.ServerDisconnectedError, ConnectionResetError,
                aiohttp.ClientOSError) as err:
            # With TLS 1.3 a server that refuses the client certificate just drops the
            # connection after the handshake, so say so.
            return None, ("the engine at %s closed the connection (%s); if this persists it "
                          "refuses this host's certificate: [upload] cert=%s must be signed by "
                          "the engine's CA" % (self.cfg.url, err or type(err).__name__,
                                               self.cfg.cert or "(none)")), None, b""
        except (aiohttp.ClientError, OSError) as err:
            return None, "upload to %s failed: %s: %s" % (self.cfg.url, type(err).__name__,
                                                          err), None, b""

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


#: Bytes of request body built and handed to TLS per turn of the event loop.
SLICE_BYTES = 256 * 1024
_HEAD = b'{"envelopes":['
_TAIL = b"]}"


def _strip(line: bytes) -> memoryview:
    """The envelope without its newline, without copying it."""
    view = memoryview(line)
    return view[:-1] if line.endswith(b"\n") else view


def _body_length(lines: List[bytes]) -> int:
    """Bytes of ``{"envelopes":[line,line,...]}`` for these lines."""
    return (len(_HEAD) + len(_TAIL) + max(0, len(lines) - 1)
            + sum(len(line) - line.endswith(b"\n") for line in lines))


async def _body_slices(lines: List[bytes]) -> AsyncIterator[bytes]:
    """The request body in slices of about ``SLICE_BYTES``, yielding to the loop between
    them so the sessions' reads are not held up by a large batch."""
    parts: List[Any] = [_HEAD]
    size = 0
    for index, line in enumerate(lines):
        if index:
            parts.append(b",")
        parts.append(_strip(line))
        size += len(line)
        if size >= SLICE_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
            await asyncio.sleep(0)
    parts.append(_TAIL)
    yield b"".join(parts)


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
