"""What the store takes out of a report: metric names and values, hostname, worst checks."""

from __future__ import annotations

from engine_plugin.storage.extract import extract_samples, hostname_of, worst_checks
from engine_plugin.storage.incoming import newest_per_vm, prepare
from lab.store_reports import envelope, report_sections


def _by_name(report: dict) -> dict:
    return {name: (t, value) for name, t, value in extract_samples(report)}


def test_every_documented_metric_comes_from_its_field() -> None:
    env = envelope(1, 0, 5000.0, cpu=33.0, mem_percent=61.0, mem_used=5e9, mem_total=8e9,
                   filesystems=[("/", 4e9, 1e10), ("/var/lib/pgsql", 7e9, 2e10)],
                   interfaces=[("eth0", 1500.0, 250.0), ("eth1", 10.0, 20.0)],
                   processes=[("postgres", 3e8), ("postgres", 1e8), ("java", 2e9)])
    samples = _by_name(env["report"])
    values = {name: value for name, (_, value) in samples.items()}
    assert values == {
        "cpu.percent": 33.0, "cpu.steal": 0.25, "cpu.iowait": 1.5, "load.1": 0.75,
        "memory.percent": 61.0, "memory.used": 5e9, "memory.total": 8e9,
        "swap.used": 1e8, "swap.total": 2e9,
        "fs.used:/": 4e9, "fs.total:/": 1e10, "fs.inodes_used:/": 12345.0,
        "fs.inodes_total:/": 655360.0,
        "fs.used:/var/lib/pgsql": 7e9, "fs.total:/var/lib/pgsql": 2e10,
        "fs.inodes_used:/var/lib/pgsql": 12346.0, "fs.inodes_total:/var/lib/pgsql": 655360.0,
        "net.rx_bps:eth0": 1500.0, "net.tx_bps:eth0": 250.0,
        "net.rx_bps:eth1": 10.0, "net.tx_bps:eth1": 20.0,
        # Processes sharing a name add up.
        "proc.rss:postgres": 4e8, "proc.rss:java": 2e9,
    }


def test_sample_time_is_the_sections_collection_time_not_receive_time() -> None:
    env = envelope(1, 0, 5000.0, received_at=9999.0)
    env["report"]["sections"]["network"]["collected_at"] = 4990.0
    samples = _by_name(env["report"])
    assert samples["cpu.percent"][0] == 5000.0
    assert samples["net.rx_bps:eth0"][0] == 4990.0


def test_missing_and_null_fields_produce_no_sample() -> None:
    env = envelope(1, 0, 5000.0)
    data = env["report"]["sections"]["resources"]["data"]
    data["cpu"]["percent"] = None
    del data["memory"]
    del env["report"]["sections"]["network"]
    names = set(_by_name(env["report"]))
    assert "cpu.percent" not in names
    assert not {n for n in names if n.startswith(("memory.", "swap.", "net."))}
    assert "cpu.steal" in names


def test_section_without_collection_time_falls_back_to_report_time() -> None:
    report = {"time": 7000.0, "sections": {"resources": {"data": {"cpu": {"percent": 5}}}}}
    assert extract_samples(report) == [("cpu.percent", 7000.0, 5.0)]


def test_booleans_and_non_finite_values_are_not_numbers() -> None:
    report = {"time": 1.0, "sections": {"resources": {"data": {
        "cpu": {"percent": True, "steal": float("nan"), "iowait": float("inf")},
        "memory": {"percent": 50}}}}}
    assert extract_samples(report) == [("memory.percent", 1.0, 50.0)]


def test_absurdly_long_metric_names_are_skipped_not_cut() -> None:
    long_mount = "/" + "x" * 300
    env = envelope(1, 0, 1.0, filesystems=[(long_mount, 1.0, 2.0), ("/", 1.0, 2.0)])
    names = set(_by_name(env["report"]))
    assert "fs.used:/" in names
    assert not [n for n in names if long_mount in n]


def test_worst_checks_orders_by_severity_and_keeps_five() -> None:
    checks = [("a.ok", "ok", "fine"), ("b.warn", "warning", "w"), ("c.crit", "critical", "c"),
              ("d.unknown", "unknown", "u")] + [("w%d" % i, "warning", "w") for i in range(6)]
    status, worst = worst_checks(envelope(1, 0, 1.0, checks=checks)["report"])
    assert status == "critical"
    assert [w["id"] for w in worst] == ["c.crit", "b.warn", "w0", "w1", "w2"]
    assert worst[0] == {"status": "critical", "id": "c.crit", "message": "c"}


def test_all_ok_checks_and_missing_checks_section_differ() -> None:
    assert worst_checks(envelope(1, 0, 1.0, checks=[("a", "ok", "fine")])["report"]) == \
        ("ok", [])
    assert worst_checks(envelope(1, 0, 1.0, checks=None)["report"]) is None


def test_hostname_only_from_settings() -> None:
    assert hostname_of(envelope(1, 0, 1.0, hostname="db1")["report"]) == "db1"
    assert hostname_of(envelope(1, 0, 1.0, hostname=None)["report"]) is None
    assert hostname_of({"sections": report_sections(1.0, hostname=None)}) is None


def test_duplicates_inside_one_batch_are_counted_once() -> None:
    items, duplicates = prepare([envelope(1, 0, 1.0), envelope(1, 0, 1.0), envelope(1, 1, 2.0)])
    assert [i.seq for i in items] == [0, 1]
    assert duplicates == 1


def test_newest_per_vm_uses_seq_within_a_run_and_receive_time_across_runs() -> None:
    items, _ = prepare([
        envelope(1, 5, 100.0, run_id="a", received_at=500.0),
        envelope(1, 7, 90.0, run_id="a", received_at=400.0),     # higher seq wins in a run
        envelope(2, 9, 100.0, run_id="a", received_at=500.0),
        envelope(2, 0, 100.0, run_id="b", received_at=600.0),    # later run wins by receipt
    ])
    newest = {i.vm_id: (i.run_id, i.seq) for i in newest_per_vm(items)}
    assert sorted(newest.values()) == [("a", 7), ("b", 0)]


def test_newest_report_without_checks_keeps_older_findings_of_the_batch() -> None:
    items, _ = prepare([
        envelope(1, 0, 100.0, checks=[("x", "critical", "broken")]),
        envelope(1, 1, 160.0, checks=None, hostname=None),
    ])
    (newest,) = newest_per_vm(items)
    assert newest.seq == 1
    assert newest.worst_status == "critical"
    assert newest.hostname == "guest.example.test"


def test_numbers_beyond_a_double_are_skipped_not_fatal() -> None:
    env = envelope(1, 0, 1.0)
    env["report"]["sections"]["resources"]["data"]["memory"]["total"] = 10**400
    names = [name for name, _, _ in extract_samples(env["report"])]
    assert "memory.total" not in names and "cpu.percent" in names
