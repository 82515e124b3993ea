"""Ingest, latest reports, summaries, verdicts and event state, on every backend."""

from __future__ import annotations

import json
import math

import pytest

from engine_plugin.storage import IngestResult, Store
from engine_plugin.storage.errors import Unstorable
from lab.store_reports import batch, envelope, vm_uuid
from tests.jsontree import typed


def test_ingest_stores_latest_report_as_received(store: Store) -> None:
    envs = batch([1, 2, 3], 0, 1000.0)
    assert store.ingest(envs) == IngestResult(accepted=3, duplicates=0,
                                              outcomes=("stored",) * 3)
    latest = store.latest(vm_uuid(2))
    assert latest is not None
    assert latest.vm_id == vm_uuid(2)
    assert latest.host_id == "host-1"
    assert latest.received_at == 1001.0
    assert latest.report == envs[1]["report"]
    assert store.latest(vm_uuid(99)) is None


def test_retried_batch_changes_nothing(store: Store) -> None:
    envs = batch([1, 2], 0, 1000.0, cpu=10.0)
    store.ingest(envs)
    retry = batch([1, 2], 0, 1000.0, cpu=77.0)  # same keys, different content
    assert store.ingest(retry) == IngestResult(accepted=0, duplicates=2,
                                               outcomes=("duplicate",) * 2)
    assert store.history(vm_uuid(1), "cpu.percent", 0, 5000) == ("raw", [(1000.0, 10.0)])
    assert store.latest(vm_uuid(1)).report["sections"]["resources"]["data"]["cpu"][
        "percent"] == 10.0


def test_duplicates_inside_a_batch_count_as_duplicates(store: Store) -> None:
    result = store.ingest([envelope(1, 0, 1.0), envelope(1, 0, 1.0), envelope(1, 1, 61.0)])
    assert result == IngestResult(accepted=2, duplicates=1,
                                  outcomes=("stored", "duplicate", "stored"))


def test_same_seq_in_another_run_is_a_new_report(store: Store) -> None:
    store.ingest([envelope(1, 0, 1000.0, run_id="a")])
    assert store.ingest([envelope(1, 0, 2000.0, run_id="b")]).accepted == 1


def test_older_report_never_replaces_latest(store: Store) -> None:
    store.ingest([envelope(1, 5, 1300.0, run_id="a")], now=1301.0)
    store.ingest([envelope(1, 4, 1240.0, run_id="a")], now=1310.0)  # late retry, older seq
    assert store.latest(vm_uuid(1)).report["seq"] == 5
    # Across runs the engine's receive time decides: a run it received earlier loses...
    store.ingest([envelope(1, 9, 1200.0, run_id="old", received_at=1201.0)], now=1300.5)
    assert store.latest(vm_uuid(1)).report["run_id"] == "a"
    # ... and a run it receives later wins, even with a smaller seq.
    store.ingest([envelope(1, 0, 1400.0, run_id="b")], now=1401.0)
    latest = store.latest(vm_uuid(1))
    assert (latest.report["run_id"], latest.report["seq"]) == ("b", 0)
    assert latest.ingested_at == 1401.0
    # The older reports still went into the time series.
    _, points = store.history(vm_uuid(1), "cpu.percent", 0, 5000)
    assert [t for t, _ in points] == [1200.0, 1240.0, 1300.0, 1400.0]


def test_a_relay_time_in_the_future_pins_nothing(store: Store) -> None:
    # A relay clock far ahead (or a hostile relay) used to keep its report latest for good.
    store.ingest([envelope(1, 0, 1000.0, run_id="x", received_at=4e9)], now=1001.0)
    latest = store.latest(vm_uuid(1))
    assert latest.received_at == 1001.0 and latest.ingested_at == 1001.0  # clamped
    store.ingest([envelope(1, 0, 1060.0, run_id="y")], now=1061.0)
    assert store.latest(vm_uuid(1)).report["run_id"] == "y"
    # Within one batch (one engine instant) the relay's order of receipt still decides.
    store.ingest([envelope(1, 0, 1130.0, run_id="late", received_at=1131.0),
                  envelope(1, 0, 1120.0, run_id="early", received_at=1121.0)], now=1140.0)
    assert store.latest(vm_uuid(1)).report["run_id"] == "late"
    assert [row.ingested_at for row in store.summaries()] == [1140.0]


def test_newest_of_a_batch_wins_whatever_its_position(store: Store) -> None:
    store.ingest([envelope(1, 3, 1180.0), envelope(1, 1, 1060.0), envelope(1, 2, 1120.0)])
    assert store.latest(vm_uuid(1)).report["seq"] == 3


def test_vm_moving_to_another_host_follows_its_latest_report(store: Store) -> None:
    store.ingest([envelope(1, 0, 1000.0, host_id="host-a"), envelope(2, 0, 1000.0,
                                                                     host_id="host-a")])
    store.ingest([envelope(1, 1, 1060.0, host_id="host-b")])
    assert store.vm_ids() == [vm_uuid(1), vm_uuid(2)]
    assert store.vm_ids(host_id="host-a") == [vm_uuid(2)]
    assert store.vm_ids(host_id="host-b") == [vm_uuid(1)]
    assert store.latest(vm_uuid(1)).host_id == "host-b"


def test_summaries_carry_hostname_times_and_worst_checks(store: Store) -> None:
    checks = [("fs.fill:/", "warning", "/ is 91% full; remove old files or grow the disk"),
              ("svc:httpd", "critical", "httpd.service failed; run systemctl status httpd"),
              ("mem", "ok", "memory fine")]
    store.ingest([envelope(1, 0, 1000.0, checks=checks, hostname="web1", host_id="h1"),
                  envelope(2, 0, 1000.0, checks=[("mem", "ok", "fine")], hostname="db1",
                           host_id="h2")])
    rows = store.summaries()
    assert [r.vm_id for r in rows] == [vm_uuid(1), vm_uuid(2)]
    web = rows[0]
    assert (web.host_id, web.hostname, web.received_at, web.report_time) == \
        ("h1", "web1", 1001.0, 1000.0)
    assert web.worst_status == "critical"
    assert [c["id"] for c in web.worst_checks] == ["svc:httpd", "fs.fill:/"]
    assert web.worst_checks[0]["message"].startswith("httpd.service failed")
    assert (rows[1].worst_status, rows[1].worst_checks) == ("ok", ())
    assert [r.vm_id for r in store.summaries(host_id="h2")] == [vm_uuid(2)]
    assert [r.vm_id for r in store.summaries(vm_ids=[vm_uuid(2), vm_uuid(7)])] == [vm_uuid(2)]


def test_report_without_checks_or_settings_keeps_previous_findings(store: Store) -> None:
    store.ingest([envelope(1, 0, 1000.0, checks=[("x", "warning", "look")], hostname="a")])
    store.ingest([envelope(1, 1, 1060.0, checks=None, hostname=None)])
    (row,) = store.summaries()
    assert row.report_time == 1060.0
    assert (row.worst_status, row.hostname) == ("warning", "a")
    store.ingest([envelope(1, 2, 1120.0, checks=[], hostname="b")])
    (row,) = store.summaries()
    assert (row.worst_status, row.worst_checks, row.hostname) == ("ok", (), "b")


def test_verdicts_are_stored_replaced_and_joined_into_summaries(store: Store) -> None:
    store.ingest(batch([1, 2], 0, 1000.0))
    store.set_verdict(vm_uuid(1), {"status": "warning", "reasons": ["disk"]}, now=1100.0)
    store.set_verdict(vm_uuid(1), {"status": "critical", "reasons": ["disk full"]}, now=1200.0)
    store.set_verdict(vm_uuid(2), {"status": "ok", "reasons": []}, now=1200.0)
    assert store.verdicts() == {vm_uuid(1): {"status": "critical", "reasons": ["disk full"]},
                                vm_uuid(2): {"status": "ok", "reasons": []}}
    assert store.verdicts([vm_uuid(2)]) == {vm_uuid(2): {"status": "ok", "reasons": []}}
    rows = {r.vm_id: r for r in store.summaries()}
    assert rows[vm_uuid(1)].verdict == {"status": "critical", "reasons": ["disk full"]}


def test_verdict_for_a_vm_without_reports_is_kept_but_not_listed(store: Store) -> None:
    store.set_verdict(vm_uuid(5), {"status": "unknown"}, now=10.0)
    assert store.verdicts() == {vm_uuid(5): {"status": "unknown"}}
    assert store.vm_ids() == []
    store.ingest([envelope(5, 0, 20.0)])
    (row,) = store.summaries()
    assert row.verdict == {"status": "unknown"}


def test_event_state_round_trip(store: Store) -> None:
    assert store.event_state("vm:1") is None
    store.set_event_state("vm:1", {"severity": "warning", "custom_id": 7})
    store.set_event_state("vm:1", {"severity": "normal", "custom_id": 8})
    assert store.event_state("vm:1") == {"severity": "normal", "custom_id": 8}
    assert store.event_state("vm:2") is None


def test_states_and_verdicts_read_back_as_the_standard_library_wrote_them(store: Store) -> None:
    # the store writes them with orjson where that gives the same values
    # (engine_plugin.fastjson.dumps_stored), else as before: NaN, infinities, wide integers
    # and tuples come back as json.dumps/json.loads gave them
    odd = {"nan": math.nan, "inf": [math.inf, -math.inf], "big": 2**70, "pair": (1, 2.5),
           "s": "h\u00f6st \u6f22", "neg0": -0.0, "tiny": 5e-324, "none": None}
    plain = {"status": "ok", "since": 1.5, "fits": {"m": {"k": 3, "sv": 1e15 / 3}}}
    store.set_event_states({"health:a": odd, "health:b": plain}, now=10.0)
    store.set_verdicts([(vm_uuid(1), odd, 2.0), (vm_uuid(2), plain, None)], 11.0,
                       states={"health:c": odd})
    got = store.event_states(["health:a", "health:b", "health:c"])
    got_verdicts = store.verdicts([vm_uuid(1), vm_uuid(2)])
    for value, back in ((odd, got["health:a"]), (plain, got["health:b"]),
                        (odd, got["health:c"]), (odd, store.event_state("health:c")),
                        (odd, got_verdicts[vm_uuid(1)]), (plain, got_verdicts[vm_uuid(2)])):
        assert typed(back) == typed(json.loads(json.dumps(value))), back


def test_malformed_envelope_is_refused_with_a_hint(store: Store) -> None:
    with pytest.raises(Unstorable, match="validate_envelope"):
        store.ingest([{"vm_id": vm_uuid(1), "received_at": 1.0, "report": {"seq": 1}}])
    assert store.vm_ids() == []


def test_empty_batch(store: Store) -> None:
    assert store.ingest([]) == IngestResult(accepted=0, duplicates=0)


def test_resent_sections_under_a_new_seq_keep_the_first_points(store: Store) -> None:
    # An agent answering report.now may resend sections it collected before: same sample
    # times, a new seq. The report is new; its points exist already and are kept as they are.
    store.ingest(batch([1, 2], 0, 1000.0, cpu=10.0))
    result = store.ingest([envelope(1, 1, 1000.0, cpu=99.0), envelope(2, 1, 1060.0, cpu=20.0)])
    assert result == IngestResult(accepted=2, duplicates=0, outcomes=("stored", "stored"))
    assert store.history(vm_uuid(1), "cpu.percent", 0, 5000)[1] == [(1000.0, 10.0)]
    assert store.history(vm_uuid(2), "cpu.percent", 0, 5000)[1] == [(1000.0, 10.0),
                                                                    (1060.0, 20.0)]
    assert store.latest(vm_uuid(1)).report["seq"] == 1


def test_agent_version_from_the_relays_envelope_is_kept(store: Store) -> None:
    # The relay adds the version the agent announced in its hello; an envelope without one
    # (a relay that has not seen the hello yet) keeps the version already known.
    first = envelope(1, 0, 1000.0)
    first["agent_version"] = "0.1.0"
    store.ingest([first])
    store.ingest([envelope(1, 1, 1060.0)])
    [row] = store.summaries([vm_uuid(1)])
    assert row.agent_version == "0.1.0"


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
def test_a_seq_no_column_holds_is_unstorable_and_changes_nothing(store: Store, seq: int) -> None:
    # What ingest isolates and refuses alone: SQLite raises OverflowError binding it,
    # PostgreSQL "bigint out of range"; both surface as Unstorable, and nothing is kept.
    hostile = envelope(2, 0, 1000.0)
    hostile["report"]["seq"] = seq
    with pytest.raises(Unstorable):
        store.ingest([envelope(1, 0, 1000.0), hostile])
    assert store.vm_ids() == []
    assert store.ingest([envelope(1, 0, 1000.0)]).outcomes == ("stored",)
