"""The relay's plain-report path (vdsm_hooks/relay/plain.py) against LineDecoder's ordinary one.

Whatever the stream and however it is chunked, both give the same messages (same values,
same types, same key order), the same drop counts, and every report taken as it is comes with
bytes that decode to exactly that message. The gate is an optional accelerator in a site, but
not here: without msgspec these tests fail rather than test the fallback twice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diag_protocol import LineDecoder, encode, make_heartbeat, make_hello
from diag_protocol.framing import loads
from lab.fake_guest import sample_report
from tests.protocol.generate import mutate_one_path
from vdsm_hooks.relay.cache import ReportCache
from vdsm_hooks.relay.plain import PlainLineDecoder, message_gate
from vdsm_hooks.relay.session import Runstate, SessionConfig, VMSession

VM = "00000000-0000-4000-8000-000000000001"


def gate() -> Any:
    found = message_gate()
    assert found is not None, "diag_protocol.native's gate is missing: install msgspec"
    return found


def exact(value: Any) -> str:
    """Equal only for equal values of equal types in the same order (1 and 1.0 differ)."""
    return json.dumps(value, ensure_ascii=False)


def both(chunks: List[bytes]) -> tuple:
    plain, ordinary = PlainLineDecoder(gate=gate()), LineDecoder()
    got_plain: List[Any] = []
    got_ordinary: List[Any] = []
    for chunk in chunks:
        for msg in plain.feed(chunk):
            raw = plain.encoded.get(id(msg))
            if raw is not None:
                assert exact(loads(raw)) == exact(msg)
            got_plain.append((exact(msg), raw is not None))
        got_ordinary.extend(exact(msg) for msg in ordinary.feed(chunk))
    assert [m for m, _ in got_plain] == got_ordinary
    assert plain.drops == ordinary.drops
    assert plain.messages == ordinary.messages
    return got_plain, plain


REPORT = sample_report(seq=1, processes=5, units=5, now=1.7e9)
HEARTBEAT = encode(make_heartbeat("b", "r", 1))
#: Values a hostile or unusual guest puts anywhere in a report.
ODD = st.one_of(
    st.text(max_size=8), st.sampled_from(["\x00", "\x1b[31m", "\u2028", "\x85", "\ud800",
                                          "é", "\\u0041", "x" * 5000]),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.booleans(), st.none(), st.just([]), st.just({}), st.just({"extra": 1}),
    st.lists(st.integers(), max_size=3))


def test_well_formed_messages_take_the_plain_path_with_their_own_bytes():
    line = encode(REPORT)
    hello = encode(make_hello("1.0", {"name": "Debian"}, "guest", "boot-1", ["ack"]))
    got, decoder = both([line, HEARTBEAT, line, hello])
    assert [taken for _, taken in got] == [True, True, True, True]
    assert decoder.plain == 4


def test_unusual_text_takes_the_ordinary_path_and_is_judged_as_before():
    spaced = json.dumps(REPORT).encode() + b"\n"  # json.dumps spacing, \u escapes for é
    escaped = json.dumps(dict(REPORT, run_id="run\\u0041")).encode() + b"\n"
    controls = encode(dict(REPORT, boot_id="boot\x1b[31m"))  # cleaned, so not plain
    duplicate = encode(REPORT)[:-2] + b',"seq":2}\n'  # a key twice: the last one wins
    extra = encode(dict(REPORT, newer_field=1))
    overflow = encode(REPORT).replace(b'"seq":1', b'"seq":%d' % 2**64)
    # deeper than msgspec skips while it looks for the type (its RecursionError)
    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"\n"
    got, decoder = both([spaced, escaped, controls, duplicate, extra, overflow, deep,
                   b'{"type":"report"}\n', b"\xff\n", b"[" * 3000 + b"\n"])
    assert len(got) >= 4  # the valid ones, whichever path took them
    assert decoder.drops["too_deep"] == 2  # this one and the bare "[[[..."


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_mutation_in_any_chunking_gives_the_ordinary_result(data):
    mutated = mutate_one_path(REPORT, data, ODD)
    try:
        line = json.dumps(mutated, ensure_ascii=data.draw(st.booleans()),
                          separators=(",", ":")).encode("utf-8", "surrogatepass") + b"\n"
    except ValueError:
        return
    stream = encode(REPORT) + line + HEARTBEAT + line
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=6))))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if b > a]
    both(chunks)


def test_the_session_caches_and_forwards_the_guests_own_bytes():
    """A report taken as it is: the cache keeps the guest's line and the sink gets it as the
    encoded report, the same value as the ordinary path would have encoded."""
    async def run() -> None:
        cache = ReportCache()
        handed: list = []
        s = VMSession(VM, "/nonexistent", cache, config=SessionConfig(read_burst=1 << 30),
                      on_report=lambda *item: handed.append(item))
        s._state = Runstate.CONNECTED
        s._decoder = s._new_decoder()
        assert isinstance(s._decoder, PlainLineDecoder) and s._decoder.gate is gate()
        line = encode(REPORT)
        s._on_data(line)
        assert s.entry.report_json == line[:-1]
        vm_id, report, _, _, _, encoded = handed[0]
        assert vm_id == VM and encoded == line[:-1]
        assert exact(report) == exact(loads(encoded)) == exact(cache.get(VM).report())
        assert s.entry.summary.seq == 1 and s.entry.counters.reports == 1
    asyncio.run(run())
