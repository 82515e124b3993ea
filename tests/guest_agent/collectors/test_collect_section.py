"""The section runner: contract of a section, isolation of a failing collector."""

import logging
import os

import pytest

from diag_protocol import make_report, validate
from guest_agent.collectors import (
    COLLECTORS,
    CollectorOptions,
    CollectorState,
    collect_all,
    collect_section,
)
from guest_agent.platform import Machine, Paths

from .fakes import DATA, RecordedRunner, machine

SECTION_KEYS = {"collected_at", "duration_ms", "errors", "data"}


def _broken_if_addrs():
    raise RuntimeError("getifaddrs exploded")


def test_every_section_of_the_el9_tree_is_valid_protocol():
    options = CollectorOptions(machine=machine("el9"), probe_gateway=False,
                               watched_units=["sshd.service", "postgresql.service",
                                              "backup.timer", "nosuch.service"],
                               watched_processes=["postgres"], sysctls=["vm.swappiness"])
    state = CollectorState()
    sections = collect_all(options, state)
    assert sorted(sections) == ["applications", "network", "resources", "settings"]
    for section in sections.values():
        assert set(section) == SECTION_KEYS
        assert section["duration_ms"] >= 0
    sections["checks"] = {"collected_at": 1.0, "duration_ms": 0.0, "errors": [],
                          "data": {"results": []}}
    report = validate(make_report("3f2b8c1e", "run-1", 0, sections))
    assert report["sections"]["resources"]["data"]["cpu"]["count"] == 2


def test_a_collector_bug_costs_only_its_section(caplog):
    m = Machine(paths=Paths(os.path.join(DATA, "el9", "root")),
                runner=RecordedRunner(os.path.join(DATA, "el9", "commands")),
                if_addrs=_broken_if_addrs, users=lambda: [])
    options = CollectorOptions(machine=m, probe_gateway=False)
    with caplog.at_level(logging.ERROR, logger="guest_agent.collectors"):
        sections = collect_all(options, CollectorState())
    network = sections["network"]
    assert network["data"] == {}
    assert network["errors"] == [{"field": "*", "error": (
        "the network collector failed (RuntimeError: getifaddrs exploded); the agent log has "
        "the traceback, please report it")}]
    assert "collector network failed" in caplog.text
    assert sections["resources"]["data"]["cpu"]["count"] == 2
    assert sections["settings"]["data"]["hostname"] == "db1"


def test_unknown_section_names_the_known_ones():
    with pytest.raises(ValueError, match="applications, network, resources, settings"):
        collect_section("checks", CollectorOptions(), CollectorState())


def test_errors_are_capped_at_the_protocol_limit():
    options = CollectorOptions(machine=machine("el9"),
                               sysctls=["vm.nosuch%d" % i for i in range(300)])
    section = collect_section("settings", options, CollectorState())
    assert len(section["errors"]) == 256
    assert len(COLLECTORS) == 4
