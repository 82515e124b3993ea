"""agent.conf parsing: defaults, drop-in order, errors naming file, key and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guest_agent.config import (
    CONFIG_ENV,
    OPTIONS,
    ConfigError,
    config_files,
    describe_options,
    load_config,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_gives_declared_defaults(tmp_path: Path) -> None:
    cfg = load_config(str(tmp_path / "agent.conf"))
    assert cfg.files == []
    assert cfg.interval == 60.0
    assert cfg.heartbeat_interval == 15.0
    assert cfg.device == "/dev/virtio-ports/org.vmdiag.agent.0"
    assert cfg.get("agent", "log_level") == "INFO"
    assert cfg.thresholds["fs_warning_percent"] == 85.0
    assert cfg.thresholds["fs_critical_percent"] == 95.0
    assert cfg.get("watch", "units") == ()


def test_drop_ins_override_main_file_in_sorted_order(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.conf", "[agent]\ninterval = 30\nheartbeat_interval = 5\n"
                                          "[watch]\nunits = sshd.service, crond.service\n")
    write(tmp_path / "agent.conf.d" / "20-late.conf", "[agent]\ninterval = 120\n")
    write(tmp_path / "agent.conf.d" / "10-early.conf", "[agent]\ninterval = 90\n"
                                                        "[probes]\ngateway = no\n")
    write(tmp_path / "agent.conf.d" / "99-ignored.conf.rpmsave", "[agent]\ninterval = oops\n")
    cfg = load_config(str(main))
    assert [Path(f).name for f in cfg.files] == ["agent.conf", "10-early.conf", "20-late.conf"]
    assert cfg.interval == 120.0
    assert cfg.heartbeat_interval == 5.0
    assert cfg.get("watch", "units") == ("sshd.service", "crond.service")
    assert cfg.get("probes", "gateway") is False
    assert cfg.sources[("agent", "interval")].endswith("20-late.conf")


def test_drop_ins_apply_without_main_file(tmp_path: Path) -> None:
    write(tmp_path / "agent.conf.d" / "50-x.conf", "[thresholds]\nfs_warning_percent = 70\n")
    assert config_files(str(tmp_path / "agent.conf"))[0].endswith("50-x.conf")
    assert load_config(str(tmp_path / "agent.conf")).thresholds["fs_warning_percent"] == 70.0


@pytest.mark.parametrize("section,key,value,allowed", [
    ("agent", "interval", "often", "a number from 0.01 to 86400"),
    ("agent", "interval", "0", "a number from 0.01 to 86400"),
    ("agent", "heartbeat_interval", "nan", "a number from 0.01 to 3600"),
    ("agent", "queue_max_messages", "2.5", "an integer from 1 to 10000"),
    ("agent", "log_level", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
    ("probes", "tcp_targets", "db.example:5432, nocolon", "host:port"),
    ("probes", "tcp_targets", "db:70000", "a port from 1 to 65535"),
    ("probes", "http_targets", "ftp://x/", "http:// or https://"),
    ("probes", "gateway", "maybe", "yes or no"),
    ("thresholds", "fs_critical_percent", "101", "a number from 1 to 100"),
    ("agent", "device", "", "give a string"),
])
def test_bad_value_names_file_key_and_what_is_allowed(tmp_path: Path, section: str, key: str,
                                                      value: str, allowed: str) -> None:
    path = write(tmp_path / "agent.conf.d" / "30-bad.conf", "[%s]\n%s = %s\n" % (section, key,
                                                                                  value))
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "agent.conf"))
    message = str(info.value)
    assert message.startswith(str(path) + ": [%s] %s: " % (section, key))
    assert allowed in message


def test_warning_above_critical_is_rejected_naming_both_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.conf", "[thresholds]\nsteal_warning_percent = 30\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (
        "%s: [thresholds] steal_warning_percent (30) is above steal_critical_percent (25); the "
        "warning level must not exceed the critical level" % path)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.conf", "interval = 5\n")
    with pytest.raises(ConfigError, match="^%s: is not a valid INI file" % path):
        load_config(str(path))


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.conf"
    path.write_bytes(b"[agent]\ndevice = /dev/\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_config(str(path))


def test_unknown_names_are_warnings_not_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.conf", "[agent]\nintervall = 5\n[future]\nx = 1\n")
    cfg = load_config(str(path))
    assert cfg.interval == 60.0
    assert len(cfg.warnings) == 2
    assert "unknown option [agent] intervall ignored; known options: " in cfg.warnings[0]
    assert "interval" in cfg.warnings[0].split("known options: ")[1].split(", ")
    assert "unknown section [future] ignored" in cfg.warnings[1]


def test_environment_variable_selects_the_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "elsewhere.conf", "[agent]\ninterval = 7.5\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert load_config().interval == 7.5


def test_effective_config_is_plain_json_with_sources(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.conf", "[watch]\nprocesses = postgres\n")
    cfg = load_config(str(path)).with_overrides({("agent", "device"): "/tmp/port"})
    eff = json.loads(json.dumps(cfg.effective()))
    assert eff["options"]["watch"]["processes"] == ["postgres"]
    assert eff["options"]["agent"]["device"] == "/tmp/port"
    assert eff["files"] == [str(path)]
    assert eff["overridden"] == ["agent.device", "watch.processes"]
    assert set(eff["options"]) == {o.section for o in OPTIONS}


def test_collector_options_follow_the_config(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.conf", "[watch]\nunits = a.service, b.timer=active\n"
                                          "[probes]\ntcp_targets = [::1]:22, localhost:80\n"
                                          "timeout = 0.5\ngateway = off\n[collect]\ntop_n = 3\n")
    opts = load_config(str(path)).collector_options(top_interval_s=5.0)
    assert list(opts.watched_units) == ["a.service", "b.timer=active"]
    assert list(opts.tcp_targets) == ["[::1]:22", "localhost:80"]
    assert opts.probe_timeout_s == 0.5
    assert opts.probe_gateway is False
    assert opts.top_n == 3
    assert opts.top_interval_s == 5.0


def test_annotated_defaults_parse_back_to_the_defaults(tmp_path: Path) -> None:
    lines: list = []
    describe_options(lines.append)
    text = "\n".join(line[1:] if line.startswith("#") and " = " in line else line
                     for line in lines)
    cfg = load_config(str(write(tmp_path / "agent.conf", text)))
    assert cfg.warnings == []
    for opt in OPTIONS:
        if opt.kind != "str" or opt.default:
            assert cfg.get(opt.section, opt.key) == opt.default, opt.key
