"""The relay's local control socket: one JSON line in, one JSON line out, per connection.

Requests (see ``RelayDaemon.handle``)::

    {"cmd": "status"}                                     fleet table of this host
    {"cmd": "show", "vm": "<uuid or name>"}               latest diagnostics of one VM
    {"cmd": "vm_destroyed", "vm_id": "<uuid>"}            sent by the after_vm_destroy hook
    {"cmd": "request", "vm": "<uuid or name>", "method": "report.now"}

Responses are ``{"ok": true, ...}`` or ``{"ok": false, "error": "<what to do>"}``. The socket is
a unix stream socket with mode 0660 (owner and group only) in group ``[relay] control_group``
(default ``kvm``: vdsm's primary group on oVirt hosts, and one of the relay's supplementary
groups in its unit), so the after_vm_destroy hook (run by vdsm) and administrators in that
group can use it and nobody else can; a peer that sends more
than ``MAX_REQUEST`` bytes or nothing within ``timeout`` is cut off. A client that closes
without reading the answer (the hook does, it only notifies) is fine.

Errors::

    ControlError        a request failed; the message says what to do next
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
from typing import Any, Awaitable, Callable, Dict

log = logging.getLogger("vmdiag.relay.control")

MAX_REQUEST = 64 << 10
MAX_RESPONSE = 64 << 20

Handler = Callable[[Dict[str, Any]], Awaitable[Dict[str, Any]]]


class ControlError(Exception):
    """A control request failed; the message is meant for the person at the terminal."""


class ControlServer:
    """Serves ``handler`` on a unix socket at ``path``."""

    def __init__(self, path: str, handler: Handler, *, mode: int = 0o660,
                 group: str | None = None, timeout: float = 30.0) -> None:
        self.path = path
        self.handler = handler
        self.mode = mode
        self.group = group
        self.timeout = timeout
        self.requests = 0
        self.errors = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        self._remove_stale()
        # Bind under a private name, set mode and group, then rename into place: the socket
        # is never reachable with looser permissions than configured.
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        self._server = await asyncio.start_unix_server(self._serve, tmp, limit=MAX_REQUEST)
        try:
            os.chmod(tmp, self.mode)
            if self.group:
                try:
                    gid = grp.getgrnam(self.group).gr_gid
                except KeyError:
                    raise ControlError("group %r does not exist; set [relay] control_group to "
                                       "a group of this host (empty: the relay's own group)"
                                       % self.group) from None
                try:
                    os.chown(tmp, -1, gid)
                except PermissionError as err:
                    raise ControlError("cannot give the control socket to group %r: the "
                                       "relay's user must be a member (the unit's "
                                       "SupplementaryGroups=), or change [relay] control_group"
                                       % self.group) from err
            os.rename(tmp, self.path)
        except ControlError:
            await self.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        except OSError as err:
            await self.close()
            raise ControlError("cannot set up the control socket %s: %s" % (self.path, err)
                               ) from err
        log.info("control socket at %s", self.path)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError("%s exists and is not a socket; remove it or set another "
                               "[relay] control_socket" % self.path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # left over by a relay that died
                return
        raise ControlError("another vmdiag-relay is serving %s; stop it first" % self.path)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            response = await asyncio.wait_for(self._answer(reader), self.timeout)
        except asyncio.TimeoutError:
            response = {"ok": False, "error": "request timed out after %.0f s" % self.timeout}
        try:
            writer.write(json.dumps(response, separators=(",", ":"), default=str).encode()
                         + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client did not wait for the answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> Dict[str, Any]:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            line = err.partial
        except asyncio.LimitOverrunError:
            self.errors += 1
            return {"ok": False, "error": "request longer than %d bytes" % MAX_REQUEST}
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.errors += 1
            return {"ok": False, "error": 'send one JSON object per line, e.g. {"cmd":"status"}'}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.errors += 1
            return {"ok": False, "error": 'a request is a JSON object with "cmd"'}
        try:
            result = await self.handler(request)
        except ControlError as err:
            self.errors += 1
            return {"ok": False, "error": str(err)}
        except Exception as err:  # noqa: BLE001 - one bad request must not stop the relay
            self.errors += 1
            log.exception("control request %s failed", request.get("cmd"))
            return {"ok": False, "error": "internal error: %s; see the relay's log" % err}
        out = {"ok": True}
        out.update(result)
        return out


def call(path: str, request: Dict[str, Any], timeout: float = 15.0) -> Dict[str, Any]:
    """Send one request to the relay at ``path`` and return its ``ok`` response.

    >>> call("/run/vmdiag/relay.sock", {"cmd": "status"})["vms"]   # doctest: +SKIP

    Raises ControlError when the relay is not running, does not answer in ``timeout``
    seconds, or answers ``ok: false``.
    """
    line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ControlError("vmdiag-relay is not running (nothing at %s); start it with "
                               "'systemctl start vmdiag-relay'" % path) from err
        except PermissionError as err:
            raise ControlError("no permission to use %s; run as root or as a member of the "
                               "socket's group" % path) from err
        try:
            sock.sendall(line)
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_RESPONSE:
                    raise ControlError("the relay's answer is larger than %d bytes"
                                       % MAX_RESPONSE)
        except socket.timeout as err:
            raise ControlError("vmdiag-relay did not answer within %.0f s; see its log "
                               "(journalctl -u vmdiag-relay)" % timeout) from err
        except OSError as err:
            raise ControlError("talking to vmdiag-relay at %s failed: %s" % (path, err)) from err
    try:
        response = json.loads(bytes(data))
    except ValueError as err:
        raise ControlError("vmdiag-relay sent an answer that is not JSON") from err
    if not isinstance(response, dict):
        raise ControlError("vmdiag-relay sent an answer that is not a JSON object")
    if not response.get("ok"):
        raise ControlError(str(response.get("error") or "the relay refused the request"))
    return response
