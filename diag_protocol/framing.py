"""Newline-delimited JSON framing, hardened for bytes that come from an untrusted guest.

``LineDecoder`` is incremental: feed it whatever ``read()`` returned and it gives back the
complete, valid, cleaned messages, identical however the stream was chunked. It never holds
more than ``max_line`` bytes: a longer line is dropped whole (counted as ``oversize``) and the
decoder skips to the next newline without buffering the rest.
"""

import collections
import json
import math
import time
from typing import Any, Callable, Dict, List, Optional

from .compiled import ENVELOPE_HEAD, ENVELOPE_IN_PLACE, VALIDATORS
from .constants import MAX_LINE_BYTES, MESSAGE_TYPES, PROTOCOL_VERSION
from .errors import ProtocolError

Message = Dict[str, Any]


def _reject_constant(name: str) -> None:
    raise ValueError("%s is not JSON" % name)


#: JSON numbers that nothing downstream can hold: integers beyond 64 bits (``float()`` of
#: them raises OverflowError) and floats that overflow to infinity (``1e400``).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _int64(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("integer %s... is beyond 64 bits" % text[:24])
    return value


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number %s... overflows a double" % text[:24])
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_checked_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_int64,
                                    parse_float=_finite)
# Only a number token with 19 digits in a row (every integer beyond 64 bits has them, and so has
# every float too large for a double that has no exponent) or an exponent of 3 digits can hold
# such a number. With every digit mapped to "0", substring searches find the candidates (a
# tenth of a regex's cost); a candidate counts only when it is a number token, i.e. starts
# after ``[``, ``:``, ``,`` or at the start of the text: hex digests ("...1e378f...") in every
# real report used to send each body down the slower exact path.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_CANDIDATES = (b"0" * 19, b"e000", b"e+000")
#: Bytes of a number token once folded; JSON whitespace; what may come before a number.
_NUMBER_BYTES = frozenset(b"0.-+e")
_SPACE = frozenset(b" \t\n\r")
_BEFORE_NUMBER = frozenset(b"[:,")


def _number_token_at(folded: bytes, pos: int) -> bool:
    start = pos
    while start > 0 and folded[start - 1] in _NUMBER_BYTES:
        start -= 1
    while start > 0 and folded[start - 1] in _SPACE:
        start -= 1
    return start == 0 or folded[start - 1] in _BEFORE_NUMBER


def may_overflow(data: bytes) -> bool:
    """Whether JSON text ``data`` may hold a number beyond 64 bits or beyond a double (then
    ``loads`` takes its exact, slower decoder). False guarantees it holds none."""
    folded = data.translate(_DIGITS_TO_ZERO)
    size = len(folded)
    for needle in _CANDIDATES:
        pos = folded.find(needle)
        while pos >= 0:
            if _number_token_at(folded, pos):
                return True
            end = pos + len(needle)
            while end < size and folded[end] in _NUMBER_BYTES:
                end += 1
            pos = folded.find(needle, end)
    return False


#: A faster JSON library with orjson's API (``loads``, ``dumps``, ``JSONDecodeError``), set by
#: ``use_fast_json``: the relay and the engine install orjson when they have it; the guest agent
#: never does (it needs Python alone). Results are the same with it or without.
_fast: Any = None


def use_fast_json(module: Any) -> None:
    """Let ``loads`` and ``dumps_tree`` use ``module`` (orjson, or None for the standard
    library) where it gives exactly their results: decoding only text that ``may_overflow``
    clears (orjson turns an integer beyond 64 bits into a float instead of refusing it), and
    anything it refuses (lone surrogate escapes, nesting beyond its 1,024 levels, bytes that
    are not UTF-8, NaN, ...) decoded again by the standard library, which accepts what it
    always accepted and raises its own errors for the rest."""
    global _fast
    _fast = module


#: ``native.Gate.messages`` of every message kind, set by ``use_native_gate`` (msgspec).
_gate: Any = None


def use_native_gate(msgspec: Any) -> None:
    """Let ``decode_line`` (and ``LineDecoder``) skip the validation walk for a line that
    ``diag_protocol.native``'s gate finds valid and clean as it is, with the msgspec module
    given (None: the walks alone). The result is the same either way: the gate accepts only
    what validation accepts unchanged, and leaves everything else to it."""
    global _gate
    if msgspec is None:
        _gate = None
        return
    from .native import Gate  # imported here: a guest never needs it
    _gate = Gate.messages(MESSAGE_TYPES, msgspec)


def loads(data: "str | bytes", raw: Optional[bytes] = None) -> Any:
    """``json.loads`` for untrusted input: no NaN/Infinity, no number out of range.

    ``raw`` is ``data``'s bytes when the caller has them. Raises ValueError
    (UnicodeDecodeError for bytes that are not UTF-8) like json.loads."""
    text: Optional[str] = None
    if isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    else:
        text = data
        if raw is None:
            raw = text.encode("utf-8", "surrogatepass")
    wide = may_overflow(raw)
    if _fast is not None and not wide:
        try:
            return _fast.loads(raw)
        except _fast.JSONDecodeError:
            pass  # the standard library decides, with its own words
    if text is None:
        text = raw.decode("utf-8")
    return (_checked_decoder if wide else _decoder).decode(text)


def dumps_tree(value: Any) -> bytes:
    """Compact UTF-8 JSON of a message decoded by ``loads`` and validated (a tree of plain
    JSON values, so no cycles and no NaN), non-ASCII characters as they are."""
    if _fast is not None:
        try:
            return bytes(_fast.dumps(value))
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      check_circular=False).encode("utf-8")


def validate(msg: Any) -> Message:
    """Return a cleaned copy of a valid protocol message, else raise ProtocolError."""
    if not isinstance(msg, dict):
        raise ProtocolError("not_object", "a message must be a JSON object")
    kind = msg.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", "type %r" % (str(kind)[:64],))
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", "v %r, this side speaks %d"
                            % (str(msg.get("v"))[:16], PROTOCOL_VERSION))
    checked: Message = VALIDATORS[kind](msg)
    return checked


def validate_envelope(envelope: Any, owned: bool = False) -> Message:
    """Validate a relay-to-engine envelope ``{host_id, vm_id, received_at, report}``.

    ``owned``: the caller just decoded ``envelope`` and keeps no other reference into it;
    it is then cleaned in place and returned (the same result, without copying it)."""
    if not isinstance(envelope, dict):
        raise ProtocolError("not_object", "an envelope must be a JSON object")
    checked: Message = (ENVELOPE_IN_PLACE if owned else VALIDATORS["envelope"])(envelope)
    return checked


def wrap_report(host_id: str, vm_id: str, report: Message,
                received_at: Optional[float] = None,
                agent_version: Optional[str] = None) -> Message:
    """A validated envelope around ``report``, which must be a report that ``validate``,
    ``decode_line`` or ``LineDecoder`` returned (so already checked and cleaned).

    Only the envelope's own fields are checked (ProtocolError as ``validate_envelope`` would
    raise it); the report is not walked again. Envelopes from anywhere else (disk, network)
    go through ``validate_envelope``.
    """
    if not isinstance(report, dict) or report.get("type") != "report":
        raise ProtocolError("invalid", "report: not a validated report message")
    head: Message = {"host_id": host_id, "vm_id": vm_id,
                     "received_at": time.time() if received_at is None else received_at,
                     "report": None}
    if agent_version:
        head["agent_version"] = agent_version
    envelope: Message = ENVELOPE_HEAD(head)
    envelope["report"] = report
    return envelope


def decode_line(line: bytes) -> Message:
    """Decode and validate one line (without its newline); raise ProtocolError if unusable."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError("oversize", "%d bytes" % len(line))
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:  # DESIGN.md: such a line is dropped, not repaired
        raise ProtocolError("bad_utf8", "byte %d is not UTF-8" % err.start) from err
    gate = _gate
    if gate is not None and gate.accepts(line):  # valid, and cleaning would change nothing
        plain: Message = loads(text, line)
        return plain
    try:
        value = loads(text, line)
    except RecursionError as err:
        raise ProtocolError("too_deep", "nesting too deep to decode") from err
    except ValueError as err:
        raise ProtocolError("bad_json", str(err)[:200]) from err
    return validate(value)


def encode(msg: Message) -> bytes:
    """Validate ``msg`` and return it as one compact UTF-8 JSON line ending in a newline."""
    checked = validate(msg)
    line = json.dumps(checked, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
    if len(line) >= MAX_LINE_BYTES:
        raise ProtocolError("oversize", "encoded message is %d bytes" % len(line))
    return line + b"\n"


class LineDecoder:
    """Incremental decoder of a byte stream of JSON lines.

    >>> dec = LineDecoder()
    >>> dec.feed(b'{"type":"heartbeat","v":1,"ti') + dec.feed(b'me":1}\\n')
    [{'type': 'heartbeat', 'v': 1, 'time': 1}]

    Counters: ``messages`` (accepted), ``bytes`` (all fed), ``drops`` (a Counter by reason:
    every line refused, ``bad_utf8`` for one that is not valid UTF-8).
    ``on_drop(line, error)``, if given, sees each line refused after decoding (not the
    oversize ones, which are never held), e.g. to answer a refused request.
    ``skip(line)``, if given, sees each complete line first and may return a drop reason:
    the line is then dropped and counted under it without being decoded (a receiver that
    would drop it anyway saves the work).
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES,
                 on_drop: Optional[Callable[[bytes, ProtocolError], None]] = None,
                 skip: Optional[Callable[[bytes], Optional[str]]] = None) -> None:
        self.max_line = max_line
        self.on_drop = on_drop
        self.skip = skip
        self.messages = 0
        self.bytes = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self._buf = bytearray()
        self._skipping = False  # inside an oversize line: discard until the next newline

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> List[Message]:
        self.bytes += len(data)
        out: List[Message] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._keep(data, start)
                return out
            if self._skipping:
                self._skipping = False
            else:
                if self._buf:
                    self._buf += data[start:nl]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = data[start:nl]
                if len(line) > self.max_line:
                    self.drops["oversize"] += 1
                else:
                    self._line(line, out)
            start = nl + 1

    def _keep(self, data: bytes, start: int) -> None:
        if self._skipping:
            return
        self._buf += data[start:]
        if len(self._buf) > self.max_line:
            self.drops["oversize"] += 1
            self._buf.clear()
            self._skipping = True

    def _line(self, line: bytes, out: List[Message]) -> None:
        line = line.strip()
        if not line:
            return
        if self.skip is not None:
            reason = self.skip(line)
            if reason is not None:
                self.drops[reason] += 1
                return
        try:
            out.append(decode_line(line))
        except ProtocolError as err:
            self.drops[err.reason] += 1
            if self.on_drop is not None:
                self.on_drop(line, err)
            return
        self.messages += 1
