"""Builders for each message kind, so senders never hand-assemble dictionaries."""

import time
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from .constants import PROTOCOL_VERSION, SUPPORTED_VERSIONS

Message = Dict[str, Any]


def make_hello(agent_version: str, os_info: Mapping[str, Any], hostname: str, boot_id: str,
               capabilities: Iterable[str] = ()) -> Message:
    return {"type": "hello", "v": PROTOCOL_VERSION, "agent_version": agent_version,
            "protocol_versions": list(SUPPORTED_VERSIONS), "os": dict(os_info),
            "hostname": hostname, "boot_id": boot_id, "capabilities": list(capabilities)}


def make_report(boot_id: str, run_id: str, seq: int, sections: Mapping[str, Any],
                now: Optional[float] = None) -> Message:
    return {"type": "report", "v": PROTOCOL_VERSION, "boot_id": boot_id, "run_id": run_id,
            "seq": seq, "time": time.time() if now is None else now,
            "sections": dict(sections)}


def make_heartbeat(boot_id: str, run_id: str, seq: int, now: Optional[float] = None) -> Message:
    return {"type": "heartbeat", "v": PROTOCOL_VERSION, "boot_id": boot_id, "run_id": run_id,
            "seq": seq, "time": time.time() if now is None else now}


def make_request(request_id: str, method: str, params: Optional[Mapping[str, Any]] = None
                 ) -> Message:
    return {"type": "request", "v": PROTOCOL_VERSION, "id": request_id, "method": method,
            "params": dict(params or {})}


def make_reply(request_id: Union[str, int], ok: bool, result: Any = None,
               code: Optional[str] = None, message: Optional[str] = None) -> Message:
    error = None if ok else {"code": code or "error", "message": message or ""}
    return {"type": "reply", "v": PROTOCOL_VERSION, "id": request_id, "ok": ok,
            "result": result, "error": error}


def make_ack(run_id: str, seq: int) -> Message:
    """Host to guest: the report ``(run_id, seq)`` is safe; the guest may forget it."""
    return {"type": "ack", "v": PROTOCOL_VERSION, "run_id": run_id, "seq": seq}


def make_envelope(host_id: str, vm_id: str, report: Message,
                  received_at: Optional[float] = None,
                  agent_version: Optional[str] = None) -> Message:
    envelope: Message = {"host_id": host_id, "vm_id": vm_id,
                         "received_at": time.time() if received_at is None else received_at,
                         "report": report}
    if agent_version:
        envelope["agent_version"] = agent_version
    return envelope
