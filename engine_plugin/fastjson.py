"""JSON on the engine's ingest path: orjson when it is installed, else the standard library.

Decoding a relay's batch and encoding each report for the store were about a third of an
ingest's CPU with the standard library; orjson does both 3 to 5 times faster. It is optional:
the results are the same either way, only the cost differs (docs/engine.md, "Ingest
throughput"), so a site without the package loses speed, nothing else.

``loads`` gives exactly what ``diag_protocol.loads`` gives, or raises exactly what it raises:
orjson decodes only text that cannot hold a number beyond 64 bits (orjson would turn such an
integer into a float instead of refusing it), and anything orjson refuses (a lone surrogate
escape, nesting beyond its 1,024 levels, bytes that are not UTF-8, NaN, ...) goes to
``diag_protocol.loads``, which accepts what it always accepted and raises its own errors for
the rest.
"""

from __future__ import annotations

import json
from typing import Any

from diag_protocol import loads as reference_loads
from diag_protocol.framing import may_overflow

try:
    import orjson
except ImportError:  # optional: the standard library gives the same results, slower
    orjson = None  # type: ignore[assignment]

#: Whether the fast library is in use (logged at start, shown in the benchmark's output).
FAST = orjson is not None


def loads(raw: bytes) -> Any:
    """``diag_protocol.loads(raw)``: the same value, or the same exception."""
    if orjson is not None and not may_overflow(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the reference decides, and words the error as it always did
    return reference_loads(raw)


def dumps(value: Any) -> str:
    """Compact JSON text of a decoded (validated) tree, non-ASCII characters kept as they are:
    what ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` returns."""
    if orjson is not None:
        try:
            return orjson.dumps(value).decode("utf-8")
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits
            pass
    # a validated report is a tree (no cycles, depth capped): no cycle check needed
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, check_circular=False)
