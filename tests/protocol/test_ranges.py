"""Every number a store keeps has a range in the contract (constants.py, docs/design.md):
the boundary is accepted, one step past it is refused as ``out_of_range``, everywhere."""

from __future__ import annotations

import json

import pytest

from diag_protocol import (
    MAX_COUNT,
    MAX_NUMBER,
    MAX_SEQ,
    MAX_TIME,
    MIN_TIME,
    OUT_OF_RANGE,
    LineDecoder,
    ProtocolError,
    make_envelope,
    make_heartbeat,
    make_report,
    validate,
    validate_envelope,
    wrap_report,
)

VM = "6b0c5b5e-2f5c-4c55-9d3b-0d1f7f1a2b3c"


def report(seq: int = 1, time: float = 1.7e9, **data: object) -> dict:
    resources = {"collected_at": time, "data": {"cpu": {"count": 2}, **data}}
    return make_report("boot", "run", seq, {"resources": resources}, now=time)


@pytest.mark.parametrize("fine, refused", [
    (report(seq=MAX_SEQ), report(seq=MAX_SEQ + 1)),
    (report(seq=0), report(seq=2**63)),
    (report(time=MAX_TIME), report(time=MAX_TIME + 1)),
    (report(time=MIN_TIME), report(time=MIN_TIME - 0.5)),
    (report(oom_kills=MAX_COUNT), report(oom_kills=MAX_COUNT + 1)),
    (report(uptime_s=MAX_NUMBER), report(uptime_s=float(MAX_NUMBER))),  # 2**63 as a double
    (report(uptime_s=-MAX_NUMBER), report(uptime_s=-1e19)),
    (make_heartbeat("b", "r", MAX_SEQ, now=1.0), make_heartbeat("b", "r", MAX_SEQ + 1, now=1.0)),
])
def test_the_boundary_passes_and_one_step_past_it_is_out_of_range(fine, refused):
    assert validate(fine)
    with pytest.raises(ProtocolError) as err:
        validate(refused)
    assert err.value.reason == OUT_OF_RANGE


def test_a_guest_line_out_of_range_is_dropped_and_counted_by_its_reason():
    dec = LineDecoder()
    lines = [json.dumps(report(seq=2**63)), json.dumps(report(time=1e12)),
             json.dumps(report(seq=5))]
    out = dec.feed(("\n".join(lines) + "\n").encode())
    assert [m["seq"] for m in out] == [5]
    assert dec.drops == {OUT_OF_RANGE: 2}


def test_an_envelope_out_of_range_is_refused_by_both_validators():
    good = validate(report(seq=3))
    assert validate_envelope(make_envelope("host", VM, good, received_at=MAX_TIME))
    for received_at in (MAX_TIME + 1, -1):
        with pytest.raises(ProtocolError) as err:
            validate_envelope(make_envelope("host", VM, good, received_at=received_at))
        assert err.value.reason == OUT_OF_RANGE
        with pytest.raises(ProtocolError) as err:
            wrap_report("host", VM, good, received_at=received_at)
        assert err.value.reason == OUT_OF_RANGE
    raw = make_envelope("host", VM, report(seq=MAX_SEQ + 1), received_at=1.0)
    with pytest.raises(ProtocolError) as err:
        validate_envelope(raw)
    assert err.value.reason == OUT_OF_RANGE
