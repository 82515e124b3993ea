"""JSON on the engine's ingest path: orjson when it is installed, else the standard library.

Decoding a relay's batch and encoding each report for the store were about a third of an
ingest's CPU with the standard library; orjson does both 3 to 5 times faster. It is optional:
the results are the same either way, only the cost differs (docs/engine.md, "Ingest
throughput"), so a site without the package loses speed, nothing else. How the same results
are guaranteed: ``diag_protocol.framing.use_fast_json``.
"""

from __future__ import annotations

from typing import Any

from diag_protocol.framing import dumps_tree, loads, use_fast_json

try:
    import orjson
except ImportError:  # optional: the standard library gives the same results, slower
    orjson = None  # type: ignore[assignment]
else:
    use_fast_json(orjson)

#: Whether the fast library is in use (shown in the benchmarks' output).
FAST = orjson is not None

__all__ = ["FAST", "dumps", "loads"]


def dumps(value: Any) -> str:
    """Compact JSON text of a decoded, validated tree (``diag_protocol.framing.dumps_tree``)."""
    return dumps_tree(value).decode("utf-8")
