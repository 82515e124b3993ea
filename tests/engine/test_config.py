"""engine.conf: defaults, drop-ins in order, and errors that say which file and key."""

from __future__ import annotations

import pytest

from engine_plugin import config


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_without_any_file() -> None:
    cfg = config.load("/nonexistent/engine.conf")
    assert (cfg.api.listen, cfg.api.port, cfg.ingest.port) == ("127.0.0.1", 8790, 8791)
    assert cfg.ingest.ca == "/etc/pki/ovirt-engine/ca.pem"
    assert cfg.metrics.allow == ["127.0.0.1/32", "::1/128"]
    assert cfg.ovirt.visibility_cache_ttl == 30.0
    assert cfg.sources == []


def test_drop_ins_are_read_in_sorted_order_after_the_main_file(tmp_path) -> None:
    main = write(tmp_path / "engine.conf", "[api]\nport = 9000\n[storage]\nraw_retention = 2d\n")
    (tmp_path / "engine.conf.d").mkdir()
    write(tmp_path / "engine.conf.d" / "20-b.conf", "[api]\nport = 9002\n")
    write(tmp_path / "engine.conf.d" / "10-a.conf", "[api]\nport = 9001\n[metrics]\n"
          "allow = 10.1.2.3, 192.168.0.0/16\n")
    write(tmp_path / "engine.conf.d" / "ignored.txt", "[api]\nport = 1\n")
    cfg = config.load(main)
    assert cfg.api.port == 9002
    assert cfg.storage.raw_retention == 2 * 86400
    assert cfg.metrics.allow == ["10.1.2.3/32", "192.168.0.0/16"]
    assert [p.rsplit("/", 1)[1] for p in cfg.sources] == ["engine.conf", "10-a.conf",
                                                          "20-b.conf"]


@pytest.mark.parametrize("text, expected", [
    ("[api]\nprot = 1\n", r"engine.conf: unknown option \[api\] prot; options of \[api\]: "
                          r"listen, port, prefix"),
    ("[apii]\nport = 1\n", r"unknown section \[apii\]"),
    ("[api]\nport = 70000\n", r"\[api\] port = '70000' is not valid \(expected a TCP port"),
    ("[events]\nmin_status = loud\n", r"use one of: warning, critical"),
    ("[storage]\nraw_retention = soon\n", r"duration such as 90, 90s, 15m"),
    ("[metrics]\nallow = 10.0.0.0/33\n", r"\[metrics\] allow"),
    ("[health]\nsilence_s = -1\n", r"silence_s=.* must be zero or more"),
    ("[health:vm:web1]\nnope = 1\n", r"unknown key 'nope'.*\[health:vm:web1\]"),
    ("[health]\nmemory_warning_percent = 99\n",
     r"memory_warning_percent must not exceed memory_critical_percent"),
    ("not ini", r"cannot be read as an INI file"),
])
def test_errors_name_the_file_the_key_and_what_is_allowed(tmp_path, text: str,
                                                          expected: str) -> None:
    with pytest.raises(config.ConfigError, match=expected):
        config.load(write(tmp_path / "engine.conf", text))


def test_thresholds_layer_global_cluster_and_vm(tmp_path) -> None:
    cfg = config.load(write(tmp_path / "engine.conf", (
        "[health]\nmemory_warning_percent = 80\nsilence_s = 600\n"
        "[health:cluster:prod]\nmemory_warning_percent = 85\nmemory_critical_percent = 99\n"
        "[health:vm:db1]\nmemory_warning_percent = 95\n")))
    assert cfg.thresholds_for().memory_warning_percent == 80
    assert cfg.thresholds_for(cluster="dev").memory_warning_percent == 80
    prod = cfg.thresholds_for(cluster="prod")
    assert (prod.memory_warning_percent, prod.silence_s) == (85, 600)
    db1 = cfg.thresholds_for(vm_name="db1", cluster="prod")
    assert (db1.memory_warning_percent, db1.memory_critical_percent) == (95, 99)


def test_required_main_file_and_describe_round_trip(tmp_path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.conf"), require=True)
    text = config.describe()
    # the annotated defaults are themselves a valid file once uncommented
    uncommented = "\n".join(line[1:] if line.startswith("#") and " = " in line else line
                            for line in text.splitlines())
    cfg = config.load(write(tmp_path / "engine.conf", uncommented))
    assert cfg.as_dict() == config.load("/nonexistent").as_dict()


def test_retired_health_keys_still_load_with_a_warning_naming_file_and_key(tmp_path) -> None:
    """CPU steal is judged once, by the guest (issue 12): engine.conf files that still set the
    engine's old steal thresholds keep working, and say what to change."""
    main = write(tmp_path / "engine.conf", "[health]\nsteal_warning_percent = 12\n"
                 "memory_warning_percent = 80\n[health:vm:db1]\nsteal_critical_percent = 30\n")
    cfg = config.load(main)
    assert len(cfg.warnings) == 2
    assert cfg.warnings[0].startswith(main + ": [health] steal_warning_percent is no longer "
                                      "used")
    assert "agent.conf" in cfg.warnings[0]
    assert "[health:vm:db1] steal_critical_percent" in cfg.warnings[1]
    assert cfg.thresholds_for(vm_name="db1").memory_warning_percent == 80
    assert not hasattr(cfg.thresholds_for(vm_name="db1"), "steal_warning_percent")


def test_a_renamed_key_still_works_with_a_warning(tmp_path) -> None:
    main = write(tmp_path / "engine.conf", "[events]\nmin_severity = critical\n")
    cfg = config.load(main)
    assert cfg.events.min_status == "critical"
    assert cfg.warnings == [main + ": [events] min_severity is now called min_status; it "
                                   "still works, but rename it"]
