"""LineDecoder: chunking, resync, caps and cleaning, as vdsm's guest-agent reader is tested."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diag_protocol import (
    MAX_DEPTH,
    LineDecoder,
    ProtocolError,
    decode_line,
    encode,
    loads,
    make_heartbeat,
    make_report,
    make_request,
)

HB = make_heartbeat("boot-1", "run-1", 3, now=1700000000.0)
REQ = make_request("r1", "ping")


def stream_of(*msgs):
    return b"".join(encode(m) for m in msgs)


def feed_in_chunks(data, sizes):
    dec = LineDecoder()
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        out += dec.feed(data[pos:pos + size])
        pos += size
        i += 1
    return dec, out


def test_every_fixed_chunk_size_gives_the_same_messages():
    data = stream_of(HB, REQ, HB)
    expected = LineDecoder().feed(data)
    assert [m["type"] for m in expected] == ["heartbeat", "request", "heartbeat"]
    for size in range(1, len(data) + 1):
        _, got = feed_in_chunks(data, [size])
        assert got == expected, size


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20))
def test_arbitrary_chunking_gives_the_same_messages(sizes):
    data = stream_of(HB, REQ, HB, REQ)
    _, got = feed_in_chunks(data, sizes)
    assert got == LineDecoder().feed(data)


@given(st.lists(st.binary(max_size=200).filter(lambda b: b"\n" not in b), max_size=8))
@settings(max_examples=200)
def test_garbage_between_valid_lines_is_counted_and_valid_lines_survive(garbage):
    good = encode(HB)
    dec = LineDecoder()
    got = dec.feed(b"".join(g + b"\n" + good for g in garbage) + good)
    expected = []
    for g in garbage:
        expected += LineDecoder().feed(g + b"\n") + LineDecoder().feed(good)
    expected += LineDecoder().feed(good)
    assert got == expected
    assert dec.messages == len(expected)
    dropped = sum(dec.drops.values())
    assert dropped == sum(1 for g in garbage if g.strip()) - (len(expected) - len(garbage) - 1)


def test_oversize_line_is_dropped_whole_and_decoder_resyncs():
    dec = LineDecoder(max_line=1000)
    out = dec.feed(b'{"type":"heartbeat","v":1,"time":1,"x":"' + b"a" * 600)
    out += dec.feed(b"a" * 600)   # now over the cap: buffer released, skipping
    assert dec.buffered == 0
    out += dec.feed(b"a" * 5000)  # still the same line: nothing kept
    assert dec.buffered == 0
    out += dec.feed(b'"}\n' + encode(HB))
    assert out == [LineDecoder().feed(encode(HB))[0]]
    assert dec.drops["oversize"] == 1


def test_one_mebibyte_cap_is_the_default():
    dec = LineDecoder()
    dec.feed(b"x" * (1 << 20) + b"x")
    assert dec.buffered == 0 and dec.drops["oversize"] == 1


def test_a_line_with_invalid_utf8_is_dropped_and_counted():
    # DESIGN.md: invalid UTF-8 is dropped and counted, never repaired into U+FFFD
    bad = b'{"type":"heartbeat","v":1,"time":1,"boot_id":"ab\xff\xfecd"}\n'
    surrogate = b'{"type":"heartbeat","v":1,"time":1,"boot_id":"\xed\xa0\x80"}\n'
    seen = []
    dec = LineDecoder(on_drop=lambda line, err: seen.append(err.reason))
    assert dec.feed(bad + surrogate + encode(HB)) == [LineDecoder().feed(encode(HB))[0]]
    assert dec.drops == {"bad_utf8": 2} and seen == ["bad_utf8", "bad_utf8"]
    with pytest.raises(ProtocolError) as err:
        decode_line(bad.rstrip(b"\n"))
    assert err.value.reason == "bad_utf8" and "byte 48" in err.value.detail


def test_escaped_control_characters_and_lone_surrogates_are_cleaned():
    line = json.dumps({"type": "heartbeat", "v": 1, "time": 1,
                       "boot_id": "a\u0000b\u001b[31m\ud800c\u2028"}).encode() + b"\n"
    [msg] = LineDecoder().feed(line)
    assert msg["boot_id"] == "a\ufffdb\ufffd[31m\ufffdc\ufffd"


def test_deep_nesting_is_dropped_not_fatal():
    deep = b'{"type":"reply","v":1,"id":"1","ok":true,"result":' + b"[" * 100000 \
        + b"]" * 100000 + b"}\n"
    shallow_but_over = (b'{"type":"reply","v":1,"id":"1","ok":true,"result":'
                        + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}\n")
    dec = LineDecoder()
    assert dec.feed(deep + shallow_but_over + encode(HB))[0]["type"] == "heartbeat"
    assert dec.drops["too_deep"] == 2


def test_wrong_shapes_are_dropped_with_their_reason():
    dec = LineDecoder()
    lines = [b"[1,2]", b'"str"', b'{"type":"nope","v":1}', b'{"type":"heartbeat","v":2,"time":1}',
             b'{"type":"heartbeat","v":1,"time":"yesterday"}', b"{not json",
             b'{"type":"heartbeat","v":1,"time":NaN}',
             b'{"type":"request","v":1,"id":"1","method":"shell.exec"}']
    assert dec.feed(b"\n".join(lines) + b"\n") == []
    assert dec.drops == {"not_object": 2, "unknown_type": 1, "bad_version": 1, "invalid": 2,
                         "bad_json": 2}


def test_lists_over_their_cap_are_invalid():
    sections = {"resources": {"collected_at": 1.0, "data": {
        "top_cpu": [{"pid": i, "name": "p"} for i in range(101)]}}}
    try:
        encode(make_report("b", "r", 0, sections))
    except ProtocolError as err:
        assert err.reason == "invalid" and "top_cpu" in err.detail
    else:
        raise AssertionError("a 101-process list must be refused")


def test_blank_lines_and_crlf_are_tolerated():
    dec = LineDecoder()
    assert len(dec.feed(b"\n\r\n" + encode(HB).replace(b"\n", b"\r\n"))) == 1
    assert not dec.drops


def test_numbers_beyond_what_a_receiver_can_hold_are_dropped():
    # a 400-digit integer would make every float() downstream raise; 1e400 decodes to inf
    huge_int = b'{"type":"reply","v":1,"id":"1","ok":true,"result":{"total":1' + b"0" * 400 \
        + b"}}"
    huge_float = b'{"type":"reply","v":1,"id":"2","ok":true,"result":[1e400]}'
    fine = (b'{"type":"reply","v":1,"id":"3","ok":true,"result":{"max":18446744073709551615,'
            b'"min":-9223372036854775808,"tiny":1e-300,"serial":"e123 00000000000000000000001"}}')
    dec = LineDecoder()
    out = dec.feed(b"\n".join([huge_int, huge_float, fine]) + b"\n")
    assert [m["id"] for m in out] == ["3"]
    assert out[0]["result"]["max"] == 2**64 - 1 and out[0]["result"]["tiny"] == 1e-300
    assert dec.drops == {"bad_json": 2}
    assert loads('{"a": 12345678901234567890}') == {"a": 12345678901234567890}
    with pytest.raises(ValueError, match="beyond 64 bits"):
        loads(b'[123456789012345678901]')


def test_on_drop_sees_each_refused_line_with_its_reason():
    seen = []
    dec = LineDecoder(max_line=200, on_drop=lambda line, err: seen.append((line, err.reason)))
    out = dec.feed(b'{"type":"request","v":1,"id":"7","method":"shell.exec"}\n'
                   + b"x" * 300 + b"\n" + encode(HB) + b"{not json\n")
    assert out == [HB]
    assert seen == [(b'{"type":"request","v":1,"id":"7","method":"shell.exec"}', "invalid"),
                    (b"{not json", "bad_json")]  # the oversize line was never held
    assert dec.drops["oversize"] == 1
