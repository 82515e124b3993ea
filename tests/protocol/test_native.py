"""The native gate (diag_protocol/native.py, msgspec) against the reference walk
(``check(clean(json.loads(...)))``): it accepts JSON text only when the reference accepts it
and cleaning changes nothing, never anything the reference refuses."""

import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from diag_protocol import MAX_STRING, SCHEMA, ProtocolError, clean, native
from diag_protocol.constants import MAX_NUMBER, MAX_TIME, MESSAGE_TYPES
from diag_protocol.framing import loads
from diag_protocol.schema import check
from lab.fake_guest import sample_report

from .generate import in_range, mutate_one_path, schema_for

GATED = ["hello", "report", "heartbeat", "ack", "envelope"]
VM = "00000000-0000-4000-8000-000000000001"


def reference(kind, data: bytes):
    """(True, cleaned) or (False, error) as validation answers for JSON text ``data``."""
    try:
        value = loads(data)
    except (ValueError, RecursionError) as err:
        return False, ("bad_json", str(err))
    try:
        cleaned = clean(value)
        check(cleaned, SCHEMA["$defs"][kind])
    except ProtocolError as err:
        return False, (err.reason, err.detail)
    return True, cleaned


def assert_never_more_lenient(gate, kind, data: bytes):
    if gate.accepts(data):
        ok, out = reference(kind, data)
        assert ok, (data[:300], out)
        assert out == loads(data)  # cleaning changes nothing: the decoded value is the result
        # and the same text, key for key (the order is kept: the stored JSON is the same)
        assert json.dumps(out) == json.dumps(loads(data))


def _leaves():
    return st.one_of(
        st.none(), st.booleans(), st.integers(-5, 10**6),
        st.integers(-(2**64), 2**65), st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([MAX_NUMBER, MAX_NUMBER + 1, float(MAX_NUMBER), -float(MAX_NUMBER),
                         math.nextafter(float(MAX_NUMBER), 0), MAX_TIME, MAX_TIME + 0.5,
                         float(MAX_TIME), -0.0, 1.0, 0.5, 2**53, 2**53 + 1]),
        st.text(max_size=12),
        st.sampled_from(["\x00", "a\u2028b", "\u2029", "\x1b[31m", "\x7f", "\x85", "\x9f",
                         "\ud800", "tab\tnl\n", "cr\r", "\b", "\f", "ok", "critical",
                         "report", "x" * 300, "y" * (MAX_STRING + 1), "é\u00a0", "\\u0041"]))


def _mutations():
    return st.recursive(_leaves(), lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
        max_leaves=12)


@pytest.mark.parametrize("kind", GATED)
def test_the_gate_accepts_only_what_the_reference_accepts_unchanged(kind):
    gate = native.Gate(kind, msgspec)

    @given(from_schema(schema_for(kind)), st.data(), st.booleans(), st.booleans())
    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def run(msg, data, ascii_only, cleaned_first):
        if cleaned_first:  # more messages that the reference accepts unchanged
            try:
                msg = clean(msg)
            except ProtocolError:
                pass
        msg = mutate_one_path(msg, data, _mutations())
        if not in_range(msg):
            return
        text = json.dumps(msg, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        assert_never_more_lenient(gate, kind, text)
    run()


def test_the_message_gate_accepts_only_what_the_reference_accepts_unchanged():
    gate = native.Gate.messages(MESSAGE_TYPES, msgspec)

    @given(st.sampled_from(GATED[:-1] + ["request", "reply"]).flatmap(
        lambda kind: st.tuples(st.just(kind), from_schema(schema_for(kind)))),
        st.data())
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def run(kind_msg, data):
        kind, msg = kind_msg
        msg = mutate_one_path(msg, data, _mutations())
        if not in_range(msg):
            return
        text = json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if gate.accepts(text):
            value = loads(text)
            assert isinstance(value, dict) and value.get("type") in MESSAGE_TYPES
            assert_never_more_lenient(gate, value["type"], text)
    run()


def _envelope(report=None):
    return {"host_id": "h", "vm_id": VM, "received_at": 1.5,
            "report": report or sample_report(seq=3, processes=20, units=20)}


def test_a_real_report_passes_the_gate_and_is_what_validation_gives():
    gate = native.Gate.batch("envelope", "envelopes", msgspec)
    body = json.dumps({"envelopes": [_envelope(), _envelope()]}, ensure_ascii=False).encode()
    assert gate.accepts(body)
    assert native.Gate("report", msgspec).accepts(json.dumps(sample_report()).encode())
    messages = native.Gate.messages(MESSAGE_TYPES, msgspec)
    assert messages.accepts(json.dumps(sample_report()).encode())


@pytest.mark.parametrize("change", [
    lambda r: r.__setitem__("hostname", "web\x1b[2J"),  # cleaning would change it
    lambda r: r["sections"]["settings"]["data"].__setitem__("hostname", "a\u2028b"),
    lambda r: r["sections"]["settings"]["data"].__setitem__("hostname", "a\x85b"),
    lambda r: r["sections"]["settings"]["data"].__setitem__("hostname", "a\rb"),
    lambda r: r["sections"]["settings"]["data"].__setitem__("new_field", 1),  # extra field
    lambda r: r.__setitem__("seq", -1),
    lambda r: r.__setitem__("seq", 2**53),
    lambda r: r.__setitem__("seq", 5.0),
    lambda r: r.__setitem__("v", True),
    lambda r: r.__setitem__("v", 1.0),  # accepted by the walk, left to it
    lambda r: r.__setitem__("run_id", "bad id"),
    lambda r: r["sections"]["resources"]["data"]["cpu"].__setitem__("percent", 2.0**63),
    lambda r: r["sections"]["resources"]["data"]["cpu"].__setitem__("percent", True),
    lambda r: r["sections"]["resources"]["data"]["memory"].__setitem__("total", 2**63),
    lambda r: r["sections"]["resources"]["data"]["cpu"].__setitem__("load", [1, 2, 3, 4]),
    lambda r: r["sections"]["checks"]["data"]["results"].append({"id": "x", "status": "bad"}),
    lambda r: r["sections"]["settings"]["data"].__setitem__("kernel", "k" * (MAX_STRING + 1)),
    lambda r: r["sections"]["settings"]["data"]["sysctls"].__setitem__("k" * 257, "1"),
    lambda r: r["sections"].__setitem__("other", {}),
])
def test_the_gate_leaves_every_other_message_to_the_walks(change):
    report = sample_report(processes=5, units=5)
    change(report)
    text = json.dumps(_envelope(report), ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert not native.Gate("envelope", msgspec).accepts(text)
    assert not native.Gate.batch("envelope", "envelopes", msgspec).accepts(
        b'{"envelopes":[' + text + b"]}")


@pytest.mark.parametrize("body", [
    b'{"envelopes":[],"other":1}', b'{"envelopes":{}}', b'[]', b'{"envelopes":[]} x',
    b'{"envelopes":[1]}', b'{"envelopes":[],"envelopes":[1]}',
])
def test_the_batch_gate_accepts_plain_batches_only(body):
    assert not native.Gate.batch("envelope", "envelopes", msgspec).accepts(body)


def test_text_that_may_need_cleaning_is_never_clean():
    for text in [b'"\\u0041"', b'"\\b"', b'"\\f"', b'"\\r"', b'"\x7f"',
                 '"\x85"'.encode(), '"\u2028"'.encode(), '"\u2029"'.encode()]:
        assert not native.text_is_clean(text), text
    for text in [b'"plain"', b'"\\n\\t\\"\\\\/"', '"é\u00a0\u2027\u202a"'.encode()]:
        assert native.text_is_clean(text), text


@pytest.mark.parametrize("run_id", ["abc\n", "abc\nd", "x" * 128, "x" * 129, "\u00e9"])
def test_patterns_are_searched_as_the_reference_searches_them(run_id):
    report = sample_report(processes=5, units=5)
    report["run_id"] = run_id
    text = json.dumps(report, ensure_ascii=False).encode()
    assert_never_more_lenient(native.Gate("report", msgspec), "report", text)


@pytest.mark.parametrize("size", [255, 256, 257])
def test_long_strings_are_counted_in_characters(size):
    report = sample_report(processes=5, units=5)
    report["sections"]["settings"]["data"]["kernel"] = "\U0001f600" * size
    text = json.dumps(report, ensure_ascii=False).encode()
    gate = native.Gate("report", msgspec)
    assert_never_more_lenient(gate, "report", text)
    assert gate.accepts(text) is (size <= 256)  # the kernel field's maxLength


def test_float_bounds_are_moved_inside():
    assert native._float_bound(2**63 - 1, low=False) < 2**63 - 1
    assert native._float_bound(-(2**63 - 1), low=True) > -(2**63 - 1)
    assert native._float_bound(100, low=False) == 100.0


def test_an_object_of_anything_has_no_gate():
    for kind in ("request", "reply"):
        with pytest.raises(native.Unsupported):
            native.Gate(kind, msgspec)


def test_decode_line_with_the_gate_answers_as_without_it():
    from diag_protocol import framing

    def outcome(line):
        try:
            return True, framing.decode_line(line)
        except ProtocolError as err:
            return False, (err.reason, err.detail)

    report = json.dumps(sample_report(processes=5, units=5), ensure_ascii=False).encode()
    lines = [report, report.replace(b'"seq":', b'"seq":-'), report.replace(b'"v":1', b'"v":1.0'),
             report.replace(b'"type":"report"', b'"type":"nope"'), b'{"type":"heartbeat",'
             b'"v":1,"time":5}', b'{"type":"heartbeat","v":1,"time":5,"time":"x"}',
             b'{"type":"request","v":1,"id":"a","method":"ping"}', b'{"type":"ack"}', b'[]',
             b'{"type":"heartbeat","v":1,"time":1e400}', b'\xff', b'{"type":"hello","v":1,'
             b'"agent_version":"1\\u0000","protocol_versions":[1]}']
    framing.use_native_gate(msgspec)
    try:
        gated = [outcome(line) for line in lines]
        assert framing._gate.accepts(report)
    finally:
        framing.use_native_gate(None)
    assert gated == [outcome(line) for line in lines]
    assert gated[0][0] and gated[4][0] and not gated[1][0]


def test_a_gate_that_cannot_judge_says_no_and_the_walk_decides():
    """msgspec raises RecursionError on an object nested about 3,000 deep, which it skips
    while it looks for the type tag; the gate answers no, and ``decode_line`` with the gate
    drops the line as too deep, as without it."""
    from diag_protocol import framing

    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000
    gate = native.Gate.messages(MESSAGE_TYPES, msgspec)
    assert gate.accepts(deep) is False
    assert gate.accepts(b'{"envelopes":[' + deep + b"]}") is False

    def reason(line):
        with pytest.raises(ProtocolError) as caught:
            framing.decode_line(line)
        return caught.value.reason

    without = reason(deep)
    framing.use_native_gate(msgspec)
    try:
        assert reason(deep) == without == "too_deep"
    finally:
        framing.use_native_gate(None)
