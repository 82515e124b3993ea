"""With orjson installed (engine_plugin.fastjson, the relay), diag_protocol's decoder gives what
it gives on the standard library alone, on valid and hostile bodies alike, and the report text
written decodes to the report; the store's states and verdicts (``dumps_stored``,
``loads_stored``) decode to what the standard library's text gave, NaN and infinities
included."""

from __future__ import annotations

import json
import math
import random

import pytest

from diag_protocol import framing
from diag_protocol.framing import may_overflow
from engine_plugin import fastjson
from lab.fake_guest import sample_report
from tests.jsontree import typed


def test_orjson_is_installed_here() -> None:
    # optional for a site, not for the tests: without it the fast path would go untested
    assert fastjson.FAST, "install the engine extra (scripts/setup-deps): orjson is missing"


def reference_loads(raw: bytes):
    """diag_protocol.loads on the standard library alone (as the guest agent runs it)."""
    saved = framing._fast
    framing.use_fast_json(None)
    try:
        return framing.loads(raw)
    finally:
        framing.use_fast_json(saved)


def outcome(decode, raw: bytes):
    try:
        return ("value", decode(raw))
    except RecursionError:
        return ("error", "RecursionError")
    except (ValueError, UnicodeDecodeError) as err:
        return ("error", type(err).__name__, str(err))


def body(n: int = 3) -> bytes:
    envs = [{"host_id": "h", "vm_id": "00000000-0000-4000-8000-%012d" % i, "received_at": 1.5,
             "report": sample_report(seq=i, processes=5, units=5)} for i in range(n)]
    return json.dumps({"envelopes": envs}, ensure_ascii=False).encode("utf-8")


TRICKY = [
    b'{"a":18446744073709551615}', b'{"a":18446744073709551616}',
    b'{"a":-9223372036854775808}', b'{"a":-9223372036854775809}',
    b'{"a":-9999999999999999999}', b'[1e400]', b'[-1e400]', b'[1e308]', b'[1.5e-400]',
    b'[1' + b'0' * 400 + b']', b'[0.' + b'1' * 400 + b']', b'{"a":NaN}', b'[Infinity]',
    b'[-Infinity]', b'{"a":"\\ud800"}', b'{"a":"\\udc00x"}', b'{"a":"\\ud83d\\ude00"}',
    b'{"a":1,"a":2}', b'[' * 2000 + b']' * 2000, b'[' * 200000 + b']' * 200000,
    b'{"a":"\xff"}', b'\xef\xbb\xbf{}', b'{"a":-0}', b'[-0.0]', b'[01]', b'[1.]', b'[.5]',
    b'[1e5]', b'[1E+05]', b'{"a":"x\\u0000y"}', b'{"a":"tab\there"}', b'{"a":"\x7f"}',
    b'{} x', b' \t\n{}\r\n', b'', b'nul', b'null', b'"str"', b'{"a":[1,2,]}',
    b'{"a":1.7976931348623157e308}', b'{"a":4.9e-324}', b'{"a":0.1}', b'{"\\u00e9":"\xc3\xa9"}',
    b'{"d":"b4581e378f2f39495d09dd294e424b92c277af3208c9196da9fd1ce996655f23"}',
    b'{"a":"1e400 in a string"}', b'  12345678901234567890', b'[1, 12345678901234567890]',
]


@pytest.mark.parametrize("raw", TRICKY, ids=range(len(TRICKY)))
def test_tricky_bodies_decode_or_fail_as_the_reference(raw: bytes) -> None:
    assert outcome(fastjson.loads, raw) == outcome(reference_loads, raw)


def test_mutated_bodies_decode_or_fail_as_the_reference() -> None:
    rng = random.Random(1016)
    valid = body()
    assert outcome(fastjson.loads, valid)[0] == "value"
    alphabet = b'0123456789-+.eE"\\[]{}:, \x00\xff\xc3ua'
    for _ in range(1500):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(raw))
            kind = rng.random()
            if kind < 0.4:
                raw[pos] = rng.choice(alphabet)
            elif kind < 0.7:
                raw[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
            else:
                del raw[pos:pos + rng.randint(1, 30)]
        got = outcome(fastjson.loads, bytes(raw))
        assert got == outcome(reference_loads, bytes(raw)), bytes(raw)[:200]


def test_the_overflow_guard_misses_no_wide_number_and_skips_hex_digests() -> None:
    for raw in (b'{"a":18446744073709551616}', b'{"a": -9223372036854775809}', b'[1e400]',
                b'[\n\t1E+400]', b'  12345678901234567890', b'[1' + b'0' * 30 + b'.5]'):
        assert may_overflow(raw), raw
    for raw in (b'{"digest":"b4581e378f2f39495d09dd294e424b92c277af3208c9196da9fd1ce9"}',
                b'{"a":123456789012345678}', b'{"a":1.5e-300}', b'{"a":"0000000000000000000000"}',
                body()):
        assert not may_overflow(raw), raw[:80]


def test_report_text_decodes_to_the_report() -> None:
    report = sample_report(seq=7, processes=20, units=20)
    report["sections"]["settings"]["data"]["hostname"] = "h\u00f6st-\u6f22\ufffd"
    text = fastjson.dumps(report)
    assert json.loads(text) == report
    assert "\u00f6" in text and "\\u" not in text  # non-ASCII kept, as ensure_ascii=False
    # what orjson refuses goes to the standard library (validated trees hold neither)
    assert json.loads(fastjson.dumps({"big": 2**70})) == {"big": 2**70}
    with pytest.raises(ValueError):  # a lone surrogate is no UTF-8: the store refuses it
        fastjson.dumps({"s": "\ud800"})


def test_without_orjson_the_results_are_the_same(monkeypatch) -> None:
    raw = body()
    fast = fastjson.loads(raw)
    monkeypatch.setattr(framing, "_fast", None)
    assert fastjson.loads(raw) == fast
    assert json.loads(fastjson.dumps(fast)) == fast


def test_msgspec_is_installed_here() -> None:
    assert fastjson.GATE, "install the engine extra (scripts/setup-deps): msgspec is missing"


def batch_outcome(raw: bytes):
    """What the service makes of a body: its decoding, and each envelope validated."""
    from diag_protocol import validate_envelope
    got = outcome(lambda r: fastjson.loads_batch(r), raw)
    if got[0] != "value":
        return got, None
    body, plain = got[1]
    envelopes = body.get("envelopes") if isinstance(body, dict) else None
    if plain:  # the gate passed it: every envelope is what validation would return
        assert isinstance(envelopes, list) and list(body) == ["envelopes"]
        for env in envelopes:
            assert validate_envelope(json.loads(json.dumps(env))) == env
    return ("value", body), plain


@pytest.mark.parametrize("raw", TRICKY + [body()], ids=range(len(TRICKY) + 1))
def test_tricky_batches_decode_or_fail_as_the_reference(raw: bytes) -> None:
    got, _ = batch_outcome(raw)
    assert got == outcome(reference_loads, raw)


def mutations(valid, alphabet, seed: int, count: int = 1500) -> list:
    """``count`` copies of ``valid`` (bytes or text), each with one to three characters
    replaced from ``alphabet`` or runs of up to five deleted, the same for a seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        chars = list(valid)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars))
            if rng.random() < 0.6:
                chars[pos] = rng.choice(alphabet)
            else:
                del chars[pos:pos + rng.randint(1, 5)]
        out.append(bytes(chars) if isinstance(valid, bytes) else "".join(chars))
    return out


def test_mutated_batches_decode_as_the_reference_and_pass_the_gate_only_when_valid() -> None:
    valid = body()
    assert batch_outcome(valid) == (("value", json.loads(valid)), True)
    plain = 0
    for raw in mutations(valid, b'0123456789-+.eE"\\[]{}:, \x00\xff\xc3ua', 1017):
        got, passed = batch_outcome(raw)
        plain += bool(passed)
        assert got == outcome(reference_loads, raw), raw[:200]
    assert plain > 0  # some mutations keep the batch valid (a digit in a number, ...)


# -- the store's JSON: states, verdicts, reports (dumps_stored, loads_stored) ------------------

def stored_reference(value) -> str:
    """What the store wrote before (the standard library)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def health_state():
    """A health pass's state and verdict: a fill, a daily cleanup cycle, noise."""
    from engine_plugin.health import Thresholds, evaluate_vm
    rnd = random.Random(5)
    now = 1_800_000_000.0
    gib = float(2**30)
    series = {"fs.used:/": [], "fs.used:/var": [], "memory.used": []}
    t = now - 4 * 86400
    while t <= now:
        series["fs.used:/"].append((t, 30 * gib + t % 86400 / 86400 * 20 * gib))
        series["fs.used:/var"].append((t, 10 * gib + 5 * gib * (t - now) / 86400 / 4))
        series["memory.used"].append((t, 3 * gib + rnd.gauss(0, 0.1 * gib)))
        t += 300
    series.update({"fs.total:/": [(now, 100 * gib)], "fs.total:/var": [(now, 30 * gib)],
                   "memory.total": [(now, 8 * gib)]})
    verdict, state = evaluate_vm(None, series, Thresholds(), None, now, now)
    return verdict, state


STORED = [
    {"nan": math.nan, "inf": [math.inf, -math.inf], "x": 1.5},
    {"big": 2**70, "small": -2**63 - 1, "ok": 2**63 - 1},
    {"pair": (1, 2.5), "keys": {1: "int key", 2: "two"}},
    {"s": "h\u00f6st-\u6f22\ufffd", "lone": "\ud800", "nul": "a\u0000b", "ctl": "\t\x7f"},
    {"neg0": -0.0, "tiny": 5e-324, "huge": 1.7976931348623157e308, "third": 1 / 3},
    {"none": None, "t": True, "f": False, "e": {}, "l": [], "deep": [[[[{"a": [1]}]]]]},
    {"b": 1, "a": 2, "\u00e9": 3, "Z": 4},
]


@pytest.mark.parametrize("value", STORED, ids=range(len(STORED)))
def test_stored_text_decodes_as_the_standard_library_text_did(value) -> None:
    text = fastjson.dumps_stored(value)
    want = typed(json.loads(stored_reference(value)))
    assert typed(json.loads(text)) == want
    assert typed(fastjson.loads_stored(text)) == want
    assert typed(fastjson.loads_stored(stored_reference(value))) == want


def test_a_health_state_takes_the_fast_path_and_decodes_to_itself() -> None:
    verdict, state = health_state()
    assert any("cycle" in memo for memo in state["fits"].values())
    for value in (verdict, state):
        text = fastjson.dumps_stored(value)
        assert typed(fastjson.loads_stored(text)) == typed(json.loads(stored_reference(value)))
        # no tuple, no wide number: orjson's text (non-ASCII as it is, floats its own way)
        assert text.encode() == orjson_text(value)


def orjson_text(value) -> bytes:
    import orjson
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def loads_outcome(decode, text):
    try:
        return ("value", typed(decode(text)))
    except RecursionError:
        return ("error", "RecursionError")
    except (ValueError, UnicodeDecodeError) as err:
        return ("error", type(err).__name__)


def test_stored_texts_tricky_or_mutated_decode_or_fail_as_the_standard_library() -> None:
    texts = []
    for raw in TRICKY:
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    texts += [stored_reference(v) for v in STORED]
    texts.append(fastjson.dumps_stored(health_state()[1]))
    texts += mutations(texts[-1], '0123456789-+.eE"\\[]{}:, \x00\u00e9uaNIfinty', 1318)
    for text in texts:
        assert loads_outcome(fastjson.loads_stored, text) == loads_outcome(json.loads, text), \
            text[:200]


def test_stored_json_without_orjson_is_the_standard_library(monkeypatch) -> None:
    values = STORED + list(health_state())
    monkeypatch.setattr(fastjson, "orjson", None)
    for value in values:
        assert fastjson.dumps_stored(value) == stored_reference(value)
        assert typed(fastjson.loads_stored(stored_reference(value))) == \
            typed(json.loads(stored_reference(value)))
