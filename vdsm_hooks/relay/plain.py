"""Guest lines that cleaning leaves as they are, taken without the validation walk (optional).

``diag_protocol.native``'s gate (msgspec, an optional accelerator; the one
``diag_protocol.framing.use_native_gate`` would give ``decode_line``) tells from a line's bytes
that the reference walk would accept the message *and* that cleaning would change nothing in
it. For such a line the plainly decoded value is the validated message, and the line's own
bytes are its JSON: for a report, the cache keeps them and the uploader forwards them instead
of encoding the report again, which ``decode_line`` could not tell its caller. Most of what the
relay spent on a report was that walk (a validated copy of a ~20 KB tree) and the second
encoding (docs/relay.md, "Where a report's CPU goes").

Every line the gate does not take (hostile or unusual text, a newer agent's extra field, no
msgspec installed) goes through ``LineDecoder``'s ordinary path (the walk), which decides as it
always did: the gate can make acceptance cheaper, never change what is accepted or how a
refusal is counted. ``tests/relay/test_plain.py`` checks this differentially; the relay does
not also call ``use_native_gate``, so a refused line is not passed through the gate twice.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from diag_protocol import MAX_LINE_BYTES, MESSAGE_TYPES, LineDecoder
from diag_protocol.framing import loads

Message = Dict[str, Any]

try:  # optional, as the relay package only recommends it: same results without, slower
    import orjson
except ImportError:
    orjson = None  # type: ignore[assignment]

_UNSET: Any = object()
_gate: Any = _UNSET


def message_gate() -> Any:
    """The process's gate for guest lines (every message kind), or None without msgspec (or
    for a schema it cannot express): every line then takes the ordinary path."""
    global _gate
    if _gate is _UNSET:
        _gate = None
        try:
            import msgspec

            from diag_protocol.native import Gate, Unsupported
        except ImportError:
            return None
        try:
            _gate = Gate.messages(MESSAGE_TYPES, msgspec)
        except Unsupported:
            pass
    return _gate


class PlainLineDecoder(LineDecoder):
    """``LineDecoder`` that takes the messages its gate passes as they are.

    After each ``feed``, ``encoded`` maps ``id(message)`` of every message it took that way to
    the line's bytes (without the newline): the message's JSON, value for value. The ids are
    those of the messages that ``feed`` just returned, valid until the next ``feed``.
    """

    def __init__(self, *args: Any, gate: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.encoded: Dict[int, bytes] = {}
        #: Lines taken through the gate (the others went the ordinary way).
        self.plain = 0

    def feed(self, data: bytes) -> List[Message]:
        self.encoded.clear()
        return super().feed(data)

    def _line(self, line: bytes, out: List[Message]) -> None:
        gate = self.gate
        if gate is None:
            super()._line(line, out)
            return
        line = line.strip()
        if not line:
            return
        skip = self.skip
        if skip is not None:
            reason = skip(line)
            if reason is not None:
                self.drops[reason] += 1
                return
        message = self._plain(gate, line)
        if message is not None:
            out.append(message)
            self.encoded[id(message)] = line
            self.messages += 1
            self.plain += 1
            return
        self.skip = None  # already asked, and said no: the ordinary path decides the rest
        try:
            super()._line(line, out)
        finally:
            self.skip = skip

    @staticmethod
    def _plain(gate: Any, line: bytes) -> Optional[Message]:
        if len(line) > MAX_LINE_BYTES:
            return None
        if not gate.accepts(line):  # no, also when it cannot judge (native.Gate.accepts):
            return None  # the ordinary path decides, as without the gate
        try:
            # every number within its schema range and nothing nested deep: orjson decodes
            # it as ``loads`` would, without loads' wide-number scan
            message: Message = orjson.loads(line) if orjson is not None else loads(line)
        except ValueError:  # the gate took what the decoder refuses: the decoder decides
            return None
        return message
