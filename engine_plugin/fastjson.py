"""JSON on the engine's ingest path and in its store: orjson and msgspec when installed, else
the standard library and the compiled walk.

Decoding a relay's batch and encoding each report for the store were about a third of an
ingest's CPU with the standard library; orjson does both 3 to 5 times faster. Validating the
decoded batch (diag_protocol's compiled walk) was the next third; msgspec's native gate
(``diag_protocol.native``) decides in a fraction of it that a batch is plain (every envelope
valid, nothing that cleaning would change), so the decoded batch is the validated one. Both
are optional: the results are the same either way, only the cost differs (docs/engine.md,
"Ingest throughput"), so a site without them loses speed, nothing else. How the same results
are guaranteed: ``diag_protocol.framing.use_fast_json`` and ``diag_protocol.native``.

The health pass's states and verdicts, and the reports it reads, are JSON text in the store,
decoded and encoded for every VM at every pass (about a seventh of a pass's CPU with the
standard library): ``loads_stored`` and ``dumps_stored`` do it with orjson where that gives
exactly the standard library's values (below), else as before.
"""

from __future__ import annotations

import json
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

__all__ = ["FAST", "GATE", "dumps", "dumps_stored", "loads", "loads_batch", "loads_stored"]


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


def dumps_stored(value: Any) -> str:
    """JSON text of ``value`` (a state or a verdict) for the store, keys sorted: what
    ``json.dumps(value, separators=(",", ":"), sort_keys=True)`` gives, or text that
    ``loads_stored`` decodes to the same value. orjson's text is used only when it decodes to
    a value equal to ``value`` (orjson writes NaN and infinities as null, refuses integers
    beyond 64 bits and keys that are not strings, writes tuples as lists: then the standard
    library writes it, NaN and infinities as its tokens, which ``loads_stored`` reads back)."""
    if orjson is not None:
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:     # orjson.JSONEncodeError
            pass
        else:
            if orjson.loads(text) == value:
                return text.decode("utf-8")
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


#: every digit as 0, so a run of ``WIDE_DIGITS`` digits is one ``find``
_ZEROS = bytes.maketrans(b"123456789", b"000000000")
#: an integer beyond 64 bits (which orjson turns into a float) has at least this many digits
WIDE_DIGITS = 19


def loads_stored(text: str | bytes) -> Any:
    """``json.loads(text)`` for JSON text the store holds (``dumps_stored``'s, a report's):
    orjson where it decodes exactly as the standard library does (text with no run of
    ``WIDE_DIGITS`` digits, so no integer beyond 64 bits; a number beyond a double it
    refuses), else, and for anything it refuses (NaN, infinities), the standard library."""
    if orjson is not None:
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if b"0" * WIDE_DIGITS not in raw.translate(_ZEROS):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    return json.loads(text)
