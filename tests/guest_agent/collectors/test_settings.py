"""The settings section on the fixture trees."""

import os

import pytest

from guest_agent.collectors import CollectorOptions, CollectorState, collect_section

from .fakes import copy_tree, machine


@pytest.fixture
def tree(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    boot = os.path.join(root, "boot")
    os.utime(os.path.join(boot, "vmlinuz-5.14.0-362.8.1.el9_3.x86_64"), (2000, 2000))
    os.utime(os.path.join(boot, "vmlinuz-5.14.0-427.13.1.el9_4.x86_64"), (1000, 1000))
    return root


def test_settings_of_el9(tree):
    options = CollectorOptions(machine=machine("el9", tree),
                               sysctls=["vm.swappiness", "net.ipv4.ip_forward", "vm.nosuch",
                                        "vm.swappiness"])
    section = collect_section("settings", options, CollectorState())
    assert section["data"] == {
        "hostname": "db1", "fqdn": "db1.lab.example.org",
        "os": {"name": "Rocky Linux", "version": "9.3", "id": "rocky",
               "pretty": "Rocky Linux 9.3 (Blue Onyx)"},
        "kernel": "5.14.0-362.8.1.el9_3.x86_64", "arch": "x86_64",
        "timezone": "Europe/Prague",
        "time_sync": {"service": "chronyd", "synchronized": True,
                      "offset_ms": pytest.approx(-0.123456), "source": "192.168.122.1",
                      "read_via": "chronyc"},
        "security": {"selinux": "enforcing", "apparmor": None},
        "sysctls": {"vm.swappiness": "30", "net.ipv4.ip_forward": "0"},
        "users": [{"name": "admin", "terminal": "pts/0", "host": "192.168.122.1",
                   "started": 1732600000.0},
                  {"name": "root", "terminal": "tty1", "host": None, "started": 1732590000.0}],
        "reboot_required": False, "reboot_reason": None,
    }
    assert section["errors"] == [{"field": "sysctls.vm.nosuch", "error": (
        "sysctl vm.nosuch does not exist on this kernel; remove it from the agent's sysctls "
        "option")}]


def test_settings_of_the_debian_tree():
    data = collect_section("settings", CollectorOptions(machine=machine("debian12")),
                           CollectorState())["data"]
    assert data["os"]["id"] == "debian" and data["timezone"] == "Etc/UTC"
    assert data["time_sync"]["service"] == "systemd-timesyncd"
    assert data["reboot_required"] is True
    assert data["security"] == {"selinux": None, "apparmor": "enabled"}
    assert data["fqdn"] is None  # "vm" has no dotted name in /etc/hosts; trees never ask DNS


def test_missing_os_release_costs_only_os(tree):
    os.remove(os.path.join(tree, "etc/os-release"))
    section = collect_section("settings", CollectorOptions(machine=machine("el9", tree)),
                              CollectorState())
    assert [e["field"] for e in section["errors"]] == ["os"]
    assert "os-release" in section["errors"][0]["error"]
    assert section["data"]["hostname"] == "db1"


def test_time_sync_is_read_on_its_own_cadence(tree):
    # chronyc costs a process per read; the state is reused until timesync_interval_s passed
    now = [1000.0]
    m = machine("el9", tree)
    options = CollectorOptions(machine=m, timesync_interval_s=300)
    state = CollectorState(clock=lambda: now[0])

    def chrony_reads():
        return sum(1 for argv in m.runner.calls if argv[0] == "chronyc")

    first = collect_section("settings", options, state)["data"]["time_sync"]
    now[0] += 299
    again = collect_section("settings", options, state)["data"]["time_sync"]
    assert again == first and chrony_reads() == 1
    now[0] += 1
    collect_section("settings", options, state)
    assert chrony_reads() == 2
