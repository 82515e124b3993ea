"""The JSON Schema of every vmdiag message: the single source of truth for agent, relay and engine.

``SCHEMA`` is a JSON Schema (draft 2020-12) document with one ``$defs`` entry per message kind
plus the relay-to-engine envelope. ``python3 -m diag_protocol schema`` prints it as JSON.

This package must stay stdlib-only (it runs inside guests), so ``validate`` implements the
subset of JSON Schema that ``SCHEMA`` uses (type, enum, const, properties, required,
additionalProperties, items, min/maxItems, maxProperties, minimum, maximum, maxLength,
pattern, $ref). The test suite checks that ``jsonschema`` agrees with it on generated input.
``check`` is the reference walk; compiled.py compiles ``SCHEMA`` into closures that clean and
check in one walk for the hot path, and falls back to ``check`` to word every rejection.

Caps keep an untrusted guest from making the host hold or store huge documents: every list
has ``maxItems`` and every string ``maxLength``. Section payloads admit fields this version
does not know (``additionalProperties`` true, within the caps) so newer agents can add data
without older relays dropping whole reports.
"""

import re
from typing import Any, Dict, List, Optional

from .constants import (
    ALLOWED_METHODS,
    CHECK_STATUSES,
    ID_PATTERN,
    MAX_COUNT,
    MAX_ECHO_ID,
    MAX_NUMBER,
    MAX_SEQ,
    MAX_STRING,
    MAX_TIME,
    MIN_TIME,
    SECTIONS,
    SUPPORTED_VERSIONS,
)
from .errors import ProtocolError

Schema = Dict[str, Any]

# Every number has a range (constants.py): nothing a guest sends can overflow a store's column.
NUM: Schema = {"type": ["number", "null"], "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}
COUNT: Schema = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_COUNT}
BOOL: Schema = {"type": ["boolean", "null"]}


def s(limit: int = 256, nullable: bool = True) -> Schema:
    return {"type": ["string", "null"] if nullable else "string", "maxLength": limit}


def arr(items: Schema, limit: int) -> Schema:
    return {"type": "array", "items": items, "maxItems": limit}


def obj(props: Dict[str, Schema], required: Optional[List[str]] = None,
        extra: bool = True, limit: int = 256) -> Schema:
    o: Schema = {"type": "object", "properties": props, "maxProperties": limit}
    if required:
        o["required"] = required
    if not extra:
        o["additionalProperties"] = False
    return o


def ref(name: str) -> Schema:
    return {"$ref": "#/$defs/" + name}


ID = {"type": "string", "maxLength": 128, "pattern": ID_PATTERN}
#: A reply echoes its request's id; an integer id is echoed on the ``bad_request`` that
#: refuses it (constants.MAX_ECHO_ID).
REPLY_ID = {"anyOf": [ID, {"type": "integer", "minimum": -MAX_ECHO_ID, "maximum": MAX_ECHO_ID}]}
UUID = {"type": "string", "pattern": "^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"}
TIME = {"type": "number", "minimum": MIN_TIME, "maximum": MAX_TIME}
SEQ = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}

_process = obj({"pid": COUNT, "name": s(), "user": s(), "cpu_percent": NUM, "rss": COUNT,
                "memory_percent": NUM, "cmdline": s(1024)})

NETWORK = obj({
    "interfaces": arr(obj({
        "name": s(64), "up": BOOL, "mtu": COUNT, "mac": s(64), "speed_mbps": NUM,
        "addresses": arr(obj({"family": s(16), "address": s(64), "prefixlen": COUNT}), 64),
        "rx_bytes": COUNT, "tx_bytes": COUNT, "rx_packets": COUNT, "tx_packets": COUNT,
        "rx_errors": COUNT, "tx_errors": COUNT, "rx_dropped": COUNT, "tx_dropped": COUNT,
        "rx_bps": NUM, "tx_bps": NUM, "error_rate": NUM, "drop_rate": NUM,
    }), 256),
    "routes": arr(obj({"destination": s(64), "gateway": s(64), "interface": s(64),
                       "metric": COUNT}), 1024),
    "default_gateway": {"anyOf": [{"type": "null"},
                                  obj({"address": s(64), "interface": s(64)})]},
    "dns": obj({"nameservers": arr(s(64), 32), "search": arr(s(256), 32)}),
    "probes": arr(obj({"kind": s(16), "target": s(512), "ok": BOOL, "latency_ms": NUM,
                       "error": s(512)}), 64),
    "listening": arr(obj({"proto": s(8), "address": s(64), "port": COUNT, "pid": COUNT,
                          "process": s()}), 1024),
})

RESOURCES = obj({
    "cpu": obj({"count": COUNT, "percent": NUM, "user": NUM, "system": NUM, "iowait": NUM,
                "steal": NUM, "idle": NUM,
                "per_cpu": arr(obj({"percent": NUM, "iowait": NUM, "steal": NUM}), 1024),
                "load": arr(NUM, 3)}),
    "memory": obj({k: NUM for k in ("total", "available", "used", "percent", "swap_total",
                                    "swap_used", "swap_percent", "swap_in_per_s",
                                    "swap_out_per_s")}),
    "pressure": obj({k: obj({f: NUM for f in ("some_avg10", "some_avg60", "full_avg10",
                                              "full_avg60")})
                     for k in ("cpu", "memory", "io")}),
    "filesystems": arr(obj({"mountpoint": s(1024), "device": s(1024), "fstype": s(64),
                            "total": COUNT, "used": COUNT, "free": COUNT, "percent": NUM,
                            "inodes_total": COUNT, "inodes_used": COUNT,
                            "inodes_percent": NUM, "readonly": BOOL}), 512),
    "disks": arr(obj({"name": s(64), "read_bps": NUM, "write_bps": NUM, "read_iops": NUM,
                      "write_iops": NUM, "await_ms": NUM, "util_percent": NUM}), 512),
    "top_cpu": arr(_process, 100),
    "top_memory": arr(_process, 100),
    "fds": obj({"open": COUNT, "max": COUNT}),
    "uptime_s": NUM, "boot_time": NUM, "oom_kills": COUNT,
})

APPLICATIONS = obj({
    "failed_units": arr(obj({"name": s(), "description": s(1024), "active_state": s(32),
                             "sub_state": s(32)}), 1024),
    "units": arr(obj({"name": s(), "active_state": s(32), "sub_state": s(32),
                      "expected": s(32)}), 1024),
    "units_via": s(32),
    "processes": arr(obj({"name": s(), "present": BOOL, "count": COUNT}), 256),
    "packages": obj({"manager": s(16), "count": COUNT, "digest": s(128), "changed": BOOL,
                     "list": arr(obj({"name": s(), "version": s(), "arch": s(32)}), 50000)}),
})

SETTINGS = obj({
    "hostname": s(255), "fqdn": s(255),
    "os": obj({"name": s(), "version": s(), "id": s(64), "pretty": s()}),
    "kernel": s(), "arch": s(32), "timezone": s(128),
    "time_sync": obj({"service": s(64), "synchronized": BOOL, "offset_ms": NUM,
                      "source": s(), "read_via": s(32)}),
    "security": obj({"selinux": s(32), "apparmor": s(32)}),
    "sysctls": {"type": "object", "maxProperties": 256,
                "additionalProperties": {"type": ["string", "number", "null"],
                                         "maxLength": 1024, "minimum": -MAX_NUMBER,
                                         "maximum": MAX_NUMBER}},
    "users": arr(obj({"name": s(), "terminal": s(64), "host": s(), "started": NUM}), 256),
    "reboot_required": BOOL, "reboot_reason": s(1024),
})

CHECKS = obj({
    "results": arr(obj({"id": s(512, nullable=False), "name": s(512),
                        "status": {"enum": list(CHECK_STATUSES)},
                        "message": s(2048), "value": NUM, "threshold": NUM},
                       required=["id", "status"]), 512),
})

SECTION_DATA = {"network": NETWORK, "resources": RESOURCES, "applications": APPLICATIONS,
                "settings": SETTINGS, "checks": CHECKS}


def section(data: Schema) -> Schema:
    return obj({
        "collected_at": TIME,
        "duration_ms": {"type": "number", "minimum": 0, "maximum": MAX_NUMBER},
        "errors": arr(obj({"field": s(256), "error": s(1024)}), 256),
        "data": data,
    }, required=["collected_at", "data"])


def message(kind: str, props: Dict[str, Schema], required: List[str]) -> Schema:
    all_props: Dict[str, Schema] = {"type": {"const": kind}, "v": {"const": 1}}
    all_props.update(props)
    return obj(all_props, required=["type", "v"] + required, limit=64)


SCHEMA: Schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:vmdiag:protocol:1",
    "title": "vmdiag wire protocol, version 1",
    "$defs": {
        "hello": message("hello", {
            "agent_version": s(64, nullable=False),
            "protocol_versions": arr({"type": "integer", "minimum": 1,
                                      "maximum": MAX_COUNT}, 16),
            "os": obj({"name": s(), "version": s(), "kernel": s(), "arch": s(32)}),
            "hostname": s(255),
            "boot_id": s(64),
            "capabilities": arr(s(64, nullable=False), 64),
        }, ["agent_version", "protocol_versions"]),
        "report": message("report", {
            "boot_id": s(64, nullable=False),
            "run_id": ID,
            "seq": SEQ,
            "time": TIME,
            "sections": obj({name: section(SECTION_DATA[name]) for name in SECTIONS},
                            extra=False),
        }, ["boot_id", "run_id", "seq", "time", "sections"]),
        "heartbeat": message("heartbeat", {
            "time": TIME, "boot_id": s(64), "run_id": ID,
            "seq": SEQ,
        }, ["time"]),
        "request": message("request", {
            "id": ID, "method": {"enum": list(ALLOWED_METHODS)},
            "params": {"type": "object", "maxProperties": 32},
        }, ["id", "method"]),
        "reply": message("reply", {
            "id": REPLY_ID, "ok": {"type": "boolean"}, "result": {},
            "error": {"anyOf": [{"type": "null"},
                                obj({"code": s(64, nullable=False), "message": s(2048)},
                                    required=["code"])]},
        }, ["id", "ok"]),
        # host to guest: the report (run_id, seq) is safe from a relay crash (diag_protocol.acks)
        "ack": message("ack", {"run_id": ID, "seq": SEQ}, ["run_id", "seq"]),
        "envelope": obj({
            "host_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "vm_id": UUID,
            "received_at": TIME,
            # the version the agent announced in its hello, when the relay has seen one
            "agent_version": s(64, nullable=False),
            "report": ref("report"),
        }, required=["host_id", "vm_id", "received_at", "report"], extra=False),
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}
_PATTERNS: Dict[str, "re.Pattern[str]"] = {}


#: ProtocolError reasons of a schema refusal: a number outside its range (constants.py), or
#: anything else.
OUT_OF_RANGE = "out_of_range"
INVALID = "invalid"


def _fail(path: str, why: str, reason: str = INVALID) -> ProtocolError:
    return ProtocolError(reason, "%s: %s" % (path or "message", why))


def _same(value: Any, expected: Any) -> bool:
    """JSON equality of scalars as JSON Schema means it for const and enum: 1 == 1.0, but
    true is not 1 (Python's ``True == 1`` would let ``"v": true`` through)."""
    return value == expected and isinstance(value, bool) is isinstance(expected, bool)


def check(value: Any, schema: Schema, path: str = "") -> None:
    """Raise ProtocolError('invalid') unless ``value`` satisfies ``schema`` (the subset above)."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                check(value, option, path)
                break
            except ProtocolError as err:
                errors.append(err.detail)
        else:
            raise _fail(path, "matches none of: " + "; ".join(errors))
    if "const" in schema and not _same(value, schema["const"]):
        raise _fail(path, "must be %r" % (schema["const"],))
    if "enum" in schema and not any(_same(value, choice) for choice in schema["enum"]):
        raise _fail(path, "must be one of %s" % ", ".join(map(str, schema["enum"])))
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[k](value) for k in kinds):
            raise _fail(path, "must be %s, not %s" % (" or ".join(kinds), type(value).__name__))
    if isinstance(value, dict):
        _check_object(value, schema, path)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _fail(path, "more than %d items" % schema["maxItems"])
        if "items" in schema:
            for i, item in enumerate(value):
                check(item, schema["items"], "%s[%d]" % (path, i))
    elif isinstance(value, str):
        if len(value) > schema.get("maxLength", MAX_STRING):
            raise _fail(path, "longer than %d characters" % schema.get("maxLength", MAX_STRING))
        if len(value) < schema.get("minLength", 0):
            raise _fail(path, "shorter than %d characters" % schema["minLength"])
        pattern = schema.get("pattern")
        if pattern is not None:
            compiled = _PATTERNS.get(pattern) or _PATTERNS.setdefault(pattern, re.compile(pattern))
            if not compiled.search(value):
                raise _fail(path, "does not match %s" % pattern)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise _fail(path, "below %s" % schema["minimum"], OUT_OF_RANGE)
        if "maximum" in schema and value > schema["maximum"]:
            raise _fail(path, "above %s" % schema["maximum"], OUT_OF_RANGE)


def _check_object(value: Dict[str, Any], schema: Schema, path: str) -> None:
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise _fail(path, "more than %d fields" % schema["maxProperties"])
    for name in schema.get("required", ()):
        if name not in value:
            raise _fail(path, "missing %r" % name)
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = props.get(name)
        where = "%s.%s" % (path, name) if path else name
        if sub is not None:
            check(item, sub, where)
        elif extra is False:
            raise _fail(where, "unknown field")
        elif isinstance(extra, dict):
            check(item, extra, where)


def negotiate(hello: Dict[str, Any]) -> int:
    """The highest protocol version both sides speak, from a validated ``hello``."""
    common = set(hello.get("protocol_versions") or ()) & set(SUPPORTED_VERSIONS)
    if not common:
        raise ProtocolError("bad_version", "peer speaks %s, we speak %s"
                            % (hello.get("protocol_versions"), list(SUPPORTED_VERSIONS)))
    return max(common)
