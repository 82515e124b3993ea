"""The compiled validators (diag_protocol/compiled.py) against the reference walk
(``check(clean(...))``): same acceptance, same cleaned copy, same errors."""

import copy

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from diag_protocol import (
    MAX_STRING,
    SCHEMA,
    ProtocolError,
    clean,
    validate,
    validate_envelope,
    wrap_report,
)
from diag_protocol.compiled import VALIDATORS, Validator, _Reject
from diag_protocol.constants import MAX_ITEMS
from diag_protocol.schema import check
from lab.fake_guest import sample_report

from .generate import mutate_one_path, schema_for

KINDS = ["hello", "report", "heartbeat", "request", "reply", "envelope"]
VM = "00000000-0000-4000-8000-000000000001"


def reference(kind, value):
    """What validation was before compiling: (True, cleaned copy) or (False, error)."""
    try:
        cleaned = clean(value)
        check(cleaned, SCHEMA["$defs"][kind])
    except ProtocolError as err:
        return False, (err.reason, err.detail)
    return True, cleaned


def fast(kind, value):
    try:
        return True, VALIDATORS[kind]._fast(value)
    except (_Reject, ProtocolError):
        return False, None


def _leaves():
    return st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(
        allow_nan=False, allow_infinity=False), st.text(max_size=12),
        st.sampled_from(["\x00", "a\u2028b", "\x1b[31m", "ok", "critical", "x" * 300]))


def _mutations():
    return st.recursive(_leaves(), lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
        max_leaves=12)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_walk_agrees_with_the_reference_walk(kind):
    @given(from_schema(schema_for(kind)), st.data())
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def run(msg, data):
        msg = mutate_one_path(msg, data, _mutations())  # raw, uncleaned values this time
        ok, out = reference(kind, msg)
        fast_ok, fast_out = fast(kind, copy.deepcopy(msg))
        if fast_ok:  # never more lenient, and the same cleaned copy
            assert ok and fast_out == out
        # the public entry point gives exactly the reference's answer
        try:
            got = (True, VALIDATORS[kind](msg))
        except ProtocolError as err:
            got = (False, (err.reason, err.detail))
        assert got == (ok, out)
        # and so does the walk that cleans in place, given its own copy
        owned = copy.deepcopy(msg)
        try:
            got = (True, Validator(kind, in_place=True)(owned))
        except ProtocolError as err:
            got = (False, (err.reason, err.detail))
        assert got == (ok, out)
    run()


def test_an_owned_envelope_is_cleaned_where_it_is():
    report = sample_report()
    report["hostname"] = "bad\x1b[31mname"
    envelope = {"host_id": "h", "vm_id": VM, "received_at": 1.0, "report": report}
    expected = validate_envelope(copy.deepcopy(envelope))
    out = validate_envelope(envelope, owned=True)
    assert out is envelope and out["report"] is report and out == expected
    assert report["hostname"] == "bad\ufffd[31mname"


def test_a_plain_report_takes_the_compiled_walk_only():
    report = sample_report()
    ok, out = fast("report", report)
    assert ok and out == clean(report) and out is not report


@pytest.mark.parametrize("kind", ["hello", "report", "envelope"])
def test_true_is_not_version_1(kind):
    # Python's True == 1 let "v": true through; JSON Schema's const does not.
    msg = ({"type": "hello", "v": 1, "agent_version": "1", "protocol_versions": [1]}
           if kind == "hello" else sample_report())
    if kind == "envelope":
        msg = {"host_id": "h", "vm_id": VM, "received_at": 1.0, "report": msg}
        msg["report"]["v"] = True
        call = validate_envelope
    else:
        msg["v"] = True
        call = validate
    assert not jsonschema.Draft202012Validator(schema_for(kind)).is_valid(msg)
    with pytest.raises(ProtocolError) as err:
        call(msg)
    assert err.value.reason == "invalid" and "must be 1" in err.value.detail


def test_strings_are_cleaned_in_the_same_walk():
    report = sample_report()
    report["sections"]["settings"]["data"]["hostname"] = "web\x00\x1b[2J\u2028"
    report["sections"]["settings"]["data"]["unknown_field"] = {"a\x01": ["y" * (MAX_STRING + 9)]}
    out = validate(report)
    data = out["sections"]["settings"]["data"]
    assert data["hostname"] == "web\ufffd\ufffd[2J\ufffd"
    assert data["unknown_field"] == {"a\ufffd": ["y" * MAX_STRING]}  # via the reference walk
    assert out == clean(report)


def test_clean_errors_win_over_schema_errors_as_before():
    report = sample_report()
    report["seq"] = -1  # a schema error early in the walk ...
    deep = []
    for _ in range(20):
        deep = [deep]
    report["sections"]["network"]["data"]["extra"] = deep  # ... and a cleaning error later
    with pytest.raises(ProtocolError) as err:
        validate(report)
    assert err.value.reason == "too_deep"


def test_lists_over_the_generic_cap_get_the_cleaning_error():
    report = sample_report()
    packages = report["sections"]["applications"]["data"]["packages"]
    packages["list"] = [{"name": "p"}] * (MAX_ITEMS + 1)  # maxItems is 50000, clean caps first
    with pytest.raises(ProtocolError) as err:
        validate(report)
    assert err.value.detail == "list with %d items" % (MAX_ITEMS + 1)


def test_unknown_schema_keywords_are_refused_at_compile_time():
    root = {"$defs": {"x": {"type": "array", "minItems": 1}}}
    with pytest.raises(ValueError, match="minItems"):
        Validator("x", root=root)


def test_wrap_report_checks_the_envelope_and_keeps_the_report_as_is():
    report = validate(sample_report())
    envelope = wrap_report("host-1", VM, report, received_at=5.0)
    assert envelope == validate_envelope(envelope)
    assert envelope["report"] is report  # not walked, not copied
    for host, vm, at, where in [("", VM, 5.0, "host_id"), ("h", "../etc", 5.0, "vm_id"),
                                ("h", VM, -1, "received_at")]:
        with pytest.raises(ProtocolError) as err:
            wrap_report(host, vm, report, received_at=at)
        assert err.value.detail.startswith(where + ":")
    with pytest.raises(ProtocolError):
        wrap_report("h", VM, {"type": "heartbeat", "v": 1, "time": 1})
