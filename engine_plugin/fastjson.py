"""JSON on the engine's ingest path: orjson and msgspec when installed, else the standard
library and the compiled walk.

Decoding a relay's batch and encoding each report for the store were about a third of an
ingest's CPU with the standard library; orjson does both 3 to 5 times faster. Validating the
decoded batch (diag_protocol's compiled walk) was the next third; msgspec's native gate
(``diag_protocol.native``) decides in a fraction of it that a batch is plain (every envelope
valid, nothing that cleaning would change), so the decoded batch is the validated one. Both
are optional: the results are the same either way, only the cost differs (docs/engine.md,
"Ingest throughput"), so a site without them loses speed, nothing else. How the same results
are guaranteed: ``diag_protocol.framing.use_fast_json`` and ``diag_protocol.native``.
"""

from __future__ import annotations

from typing import Any, Tuple

from diag_protocol.framing import dumps_tree, loads, use_fast_json
from diag_protocol.native import Gate, Unsupported

try:
    import orjson
except ImportError:  # optional: the standard library gives the same results, slower
    orjson = None  # type: ignore[assignment]
else:
    use_fast_json(orjson)

_BATCH_GATE: Gate | None = None
try:
    import msgspec
except ImportError:  # optional: every envelope takes the compiled walk, same results, slower
    pass
else:
    try:
        _BATCH_GATE = Gate.batch("envelope", "envelopes", msgspec)
    except Unsupported:  # a schema node msgspec cannot express: the walks do it all
        pass

#: Whether the fast JSON library is in use (shown in the benchmarks' output).
FAST = orjson is not None
#: Whether the native gate is in use (shown in the benchmarks' output).
GATE = _BATCH_GATE is not None

__all__ = ["FAST", "GATE", "dumps", "loads", "loads_batch"]


def dumps(value: Any) -> str:
    """Compact JSON text of a decoded, validated tree (``diag_protocol.framing.dumps_tree``)."""
    return dumps_tree(value).decode("utf-8")


def loads_batch(raw: bytes) -> Tuple[Any, bool]:
    """(``loads(raw)``, whether the native gate found it a plain batch): ``{"envelopes":
    [...]}`` and nothing else, every envelope one that ``validate_envelope`` accepts and
    returns unchanged, so the decoded envelopes need no walk. Raises as ``loads``."""
    if _BATCH_GATE is not None and _BATCH_GATE.accepts(raw):
        # every number is in its schema range and nothing nests deep: orjson decodes it
        # exactly as the standard library would, without loads' wide-number scan
        if orjson is not None:
            try:
                return orjson.loads(raw), True
            except orjson.JSONDecodeError:
                pass
        return loads(raw), True
    return loads(raw), False
