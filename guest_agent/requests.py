"""Answers to host requests. Only the protocol's allow-list is served; nothing here runs a command.

``ping`` and ``config.get`` are answered at once by the I/O thread. ``report.now`` and
``checks.run`` need a collection, so they are handed to the collector thread (bounded: a host
that floods requests gets ``busy`` instead of an ever-growing backlog). Anything else gets
``ok: false`` with ``unknown_method``, so a newer host talking to an older agent learns why.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Union

import guest_agent
from diag_protocol import ALLOWED_METHODS, ID_SHAPE, make_reply

Message = Dict[str, Any]
#: Methods that need a fresh collection and run on the collector thread.
COLLECTING = ("report.now", "checks.run")


def unknown_method(request_id: str, method: str) -> Message:
    return make_reply(request_id, False, code="unknown_method",
                      message="method %r is not served by this agent; allowed: %s"
                      % (method, ", ".join(ALLOWED_METHODS)))


def refusal(request_id: Union[str, int], method: str) -> Message:
    """The answer to a request the protocol refused: its id (an integer id is not served, but
    echoed so a JSON-RPC or QMP style client is not left waiting), its method, or its shape."""
    if not isinstance(request_id, str):
        return make_reply(request_id, False, code="bad_request",
                          message="the request id must be %s, not a number; the request was "
                                  "not run" % ID_SHAPE)
    if method not in ALLOWED_METHODS:
        return unknown_method(request_id, method)
    return make_reply(request_id, False, code="bad_request",
                      message="the request does not match the protocol schema; a request is "
                              "{type: request, v: 1, id: %s, method: one of %s, params: an "
                              "object}" % (ID_SHAPE, ", ".join(ALLOWED_METHODS)))


def busy(request_id: str, method: str) -> Message:
    return make_reply(request_id, False, code="busy",
                      message="%s: earlier collections are still queued; retry in a few seconds"
                      % method)


def ping(request_id: str, run_id: str) -> Message:
    return make_reply(request_id, True, {"pong": True, "time": time.time(), "run_id": run_id,
                                         "agent_version": guest_agent.__version__})


def handle(request: Message, *, run_id: str, effective_config: Callable[[], Message],
           submit: Callable[[str, str], bool]) -> Message | None:
    """The reply to send now, or None when ``submit(method, id)`` took the job for later.

    ``submit`` returns False when the collector's queue is full.
    """
    rid, method = request["id"], request.get("method")
    if method == "ping":
        return ping(rid, run_id)
    if method == "config.get":
        return make_reply(rid, True, effective_config())
    if method in COLLECTING:
        return None if submit(method, rid) else busy(rid, method)
    return unknown_method(rid, str(method))
