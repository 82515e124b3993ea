"""Cleaning of decoded guest data.

JSON escapes can smuggle in characters that raw-byte checks never see (``\\u0000``, lone
surrogates, terminal escape sequences), so strings are cleaned *after* decoding, as vdsm's
guest agent reader does. Cleaning also enforces the generic caps: depth, string length and
the number of items of any list or object.
"""

import re
from typing import Any

from .constants import MAX_DEPTH, MAX_ITEMS, MAX_STRING
from .errors import ProtocolError

# C0 controls except tab and newline, DEL, C1 controls, lone surrogates, and the two Unicode
# line/paragraph separators that break naive log and terminal output.
_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def clean_string(value: str, limit: int = MAX_STRING) -> str:
    """Return ``value`` with control characters and lone surrogates replaced, cut to ``limit``."""
    if len(value) > limit:
        value = value[:limit]
    if _BAD_CHARS.search(value):
        value = _BAD_CHARS.sub("\ufffd", value)
    return value


def clean(value: Any, depth: int = 0) -> Any:
    """Return a cleaned copy of a decoded JSON value, or raise ProtocolError.

    Raises ``too_deep`` past MAX_DEPTH and ``invalid`` for a list or object with more than
    MAX_ITEMS items (the schema caps most lists far lower).
    """
    if isinstance(value, str):
        return clean_string(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if depth >= MAX_DEPTH:
        raise ProtocolError("too_deep", "nesting deeper than %d" % MAX_DEPTH)
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise ProtocolError("invalid", "object with %d keys" % len(value))
        return {clean_string(k, 256): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise ProtocolError("invalid", "list with %d items" % len(value))
        return [clean(v, depth + 1) for v in value]
    raise ProtocolError("invalid", "unexpected value of type %s" % type(value).__name__)
