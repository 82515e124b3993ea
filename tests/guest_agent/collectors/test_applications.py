"""The applications section: units, watched processes and the package inventory cadence."""

import os

import pytest

from guest_agent.collectors import CollectorOptions, CollectorState, collect_section
from guest_agent.collectors.applications import MAX_LIST_BYTES, digest
from guest_agent.platform.linux.packages import RPM_QUERY

from .fakes import DATA, ManualClock, RecordedRunner, copy_tree, machine, read, write


@pytest.fixture
def tree(tmp_path):
    return copy_tree("el9", str(tmp_path))


@pytest.fixture
def runner():
    return RecordedRunner(os.path.join(DATA, "el9", "commands"))


def _options(root, runner, **kw):
    return CollectorOptions(machine=machine("el9", root, runner), **kw)


def test_units_and_processes(tree, runner):
    options = _options(
        tree, runner,
        watched_units=["sshd.service", "postgresql.service", "backup.timer=inactive",
                       "nosuch.service"],
        watched_processes=["sshd", "postgres", "inventory-service-daemon", "zombie-job",
                           "(sd-pam)", "nosuch", "sshd"])
    section = collect_section("applications", options, CollectorState())
    assert section["errors"] == []
    data = section["data"]
    assert [u["name"] for u in data["failed_units"]] == ["kdump.service", "nfs-server.service"]
    assert data["units"] == [
        {"name": "sshd.service", "active_state": "active", "sub_state": "running",
         "expected": "active", "load_state": "loaded"},
        {"name": "postgresql.service", "active_state": "active", "sub_state": "running",
         "expected": "active", "load_state": "loaded"},
        {"name": "backup.timer", "active_state": "inactive", "sub_state": "dead",
         "expected": "inactive", "load_state": "loaded"},
        {"name": "nosuch.service", "active_state": "inactive", "sub_state": "dead",
         "expected": "active", "load_state": "not-found"}]
    assert data["processes"] == [
        {"name": "sshd", "present": True, "count": 1},
        {"name": "postgres", "present": True, "count": 2},
        # comm is cut to "inventory-servi"; argv[0]'s base name matches
        {"name": "inventory-service-daemon", "present": True, "count": 1},
        {"name": "zombie-job", "present": False, "count": 0},  # a zombie is not running
        {"name": "(sd-pam)", "present": True, "count": 1},
        {"name": "nosuch", "present": False, "count": 0}]


def test_nothing_watched_gives_empty_lists_without_asking_systemctl_show(tree, runner):
    data = collect_section("applications", _options(tree, runner), CollectorState())["data"]
    assert data["units"] == [] and data["processes"] == []
    assert not [c for c in runner.calls if c[:2] == ("systemctl", "show")]


def test_systemctl_timeout_costs_the_unit_fields_only(tree, runner):
    runner.add(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager",
                "--full"], timeout=True)
    section = collect_section("applications", _options(tree, runner), CollectorState())
    assert [e["field"] for e in section["errors"]] == ["failed_units"]
    assert "did not answer within" in section["errors"][0]["error"]
    assert section["data"]["packages"]["count"] == 10


def test_packages_full_list_only_when_the_digest_changes(tree, runner):
    clock = ManualClock()
    options = _options(tree, runner, packages_interval_s=3600)
    state = CollectorState(clock=clock)

    def packages():
        return collect_section("applications", options, state)["data"]["packages"]

    def rpm_calls():
        return runner.calls.count(tuple(RPM_QUERY))

    first = packages()
    assert first["manager"] == "rpm" and first["count"] == 10 and first["changed"] is True
    assert first["list"][0] == {"name": "bash", "version": "5.1.8-6.el9_1", "arch": "x86_64"}
    assert first["digest"].startswith("crc32:") and len(first["digest"]) == 14

    clock.advance(60)
    second = packages()
    assert second == {"manager": "rpm", "count": 10, "digest": first["digest"],
                      "changed": False}
    assert rpm_calls() == 1  # database untouched: no rpm run at all

    write(tree, "var/lib/rpm/rpmdb.sqlite", "rewritten, same packages")
    assert packages()["changed"] is False
    assert rpm_calls() == 2  # database moved: queried again, same digest

    runner.add(RPM_QUERY, read(os.path.join(DATA, "el9", "commands"), "rpm-qa.out")
               + "zsh\t5.8-9.el9\tx86_64\n")
    write(tree, "var/lib/rpm/rpmdb.sqlite", "zsh installed")
    third = packages()
    assert third["changed"] is True and third["count"] == 11
    assert third["list"][-1]["name"] == "zsh" and third["digest"] != first["digest"]

    clock.advance(3600)
    assert packages()["changed"] is False and rpm_calls() == 4  # the interval re-reads

    state.force_packages()
    assert "list" in packages()


def test_failing_package_query_is_not_retried_every_report(tree, runner):
    runner.add(RPM_QUERY, timeout=True)
    clock = ManualClock()
    options, state = _options(tree, runner), CollectorState(clock=clock)
    section = collect_section("applications", options, state)
    assert section["errors"][0]["field"] == "packages"
    clock.advance(60)
    again = collect_section("applications", options, state)
    assert runner.calls.count(tuple(RPM_QUERY)) == 1
    assert again["errors"][0]["field"] == "packages"
    assert "did not answer within" in again["errors"][0]["error"]
    assert "next try in at most 3600s" in again["errors"][0]["error"]


def test_a_package_list_too_big_for_one_line_sends_count_and_digest(tree, runner):
    lines = "".join("package-with-a-rather-long-name-%05d\t1.0-1.el9\tx86_64\n" % i
                    for i in range(20000))
    runner.add(RPM_QUERY, lines)
    section = collect_section("applications", _options(tree, runner), CollectorState())
    pkgs = section["data"]["packages"]
    assert pkgs["count"] == 20000 and "list" not in pkgs and pkgs["changed"] is True
    assert section["errors"][0]["field"] == "packages.list"
    assert "%d KiB" % (MAX_LIST_BYTES // 1024) not in section["errors"][0]["error"]


def test_digest_depends_on_every_field():
    from guest_agent.platform import Package

    base = [Package("a", "1", "x86_64")]
    assert digest(base) != digest([Package("a", "2", "x86_64")])
    assert digest(base) != digest([Package("a", "1", "noarch")])
    assert digest(base) == digest([Package("a", "1", "x86_64")])


def test_dpkg_inventory_on_debian():
    options = CollectorOptions(machine=machine("debian12"))
    data = collect_section("applications", options, CollectorState())["data"]
    assert data["packages"]["manager"] == "dpkg" and data["packages"]["count"] == 25
    assert data["failed_units"] == []


CACHE = "/var/cache/vmdiag/packages.json"


def test_an_agent_start_takes_the_inventory_from_the_cache_while_the_database_is_unchanged(
        tree, runner):
    os.makedirs(os.path.join(tree, "var/cache/vmdiag"))
    options = _options(tree, runner, packages_cache=CACHE)

    def start(lean=False):  # a new agent process: a new state
        state = CollectorState(clock=ManualClock())
        state.lean = lean
        return collect_section("applications", options, state)["data"].get("packages")

    def rpm_calls():
        return runner.calls.count(tuple(RPM_QUERY))

    assert start(lean=True) is None and rpm_calls() == 0  # no cache yet: left out, no rpm run
    first = start()
    assert rpm_calls() == 1 and first["count"] == 10
    again = start(lean=True)  # restart, database unchanged: from the cache, in the lean report
    assert rpm_calls() == 1 and again == first  # the full list: a new run sends it once
    write(tree, "var/lib/rpm/rpmdb.sqlite", "a package was installed")
    assert start(lean=True) is None and rpm_calls() == 1  # stale cache: left out
    assert start()["count"] == 10 and rpm_calls() == 2
    write(tree, CACHE.lstrip("/"), '{"version": 1, "stamp": "garbage"')
    assert start()["count"] == 10 and rpm_calls() == 3  # a broken cache is read over


def test_the_cache_is_written_only_into_a_folder_that_exists(tree, runner):
    options = _options(tree, runner, packages_cache=CACHE)
    collect_section("applications", options, CollectorState())
    assert not os.path.exists(os.path.join(tree, "var/cache/vmdiag"))
