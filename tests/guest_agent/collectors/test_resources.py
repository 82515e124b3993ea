"""The resources section on the el9 tree: exact values and rates between two samples."""

import os
import shutil

import pytest

from guest_agent.collectors import CollectorOptions, CollectorState, collect_section, prime
from guest_agent.platform.linux.processes import parse_stat
from tests.real import unavailable

from .fakes import ManualClock, copy_tree, machine, read, write


@pytest.fixture
def tree(tmp_path):
    return copy_tree("el9", str(tmp_path))


def _options(root, **kw):
    return CollectorOptions(machine=machine("el9", root), **kw)


def _advance_stat(root):
    """Ten seconds later on 2 CPUs at USER_HZ 100: 1000 ticks per CPU."""
    write(root, "proc/stat", """cpu  124056 789 45928 9877443 2445 0 1259 5803 0 0
cpu0 62228 400 23039 4938371 1300 0 600 2939 0 0
cpu1 61828 389 22889 4939072 1145 0 659 2864 0 0
btime 1732518000
""")


def test_first_report_has_levels_but_no_rates(tree):
    section = collect_section("resources", _options(tree), CollectorState(clock=ManualClock()))
    data = section["data"]
    assert data["cpu"]["count"] == 2 and data["cpu"]["percent"] is None
    assert data["cpu"]["load"] == [0.52, 0.58, 0.59]
    mem = data["memory"]
    assert mem["total"] == 3824926720 and mem["available"] == 2580385792
    assert mem["used"] == 1244540928 and mem["percent"] == 32.54
    assert mem["swap_total"] == 2097148 * 1024 and mem["swap_used"] == 524288 * 1024
    assert mem["swap_percent"] == 25.0 and mem["swap_in_per_s"] is None
    assert data["pressure"]["io"]["full_avg60"] == 1.1
    assert [d["name"] for d in data["disks"]] == ["dm-0", "dm-1", "vda", "vdb"]
    assert data["disks"][2]["read_bps"] is None
    assert data["fds"] == {"open": 2144, "max": 9223372036854775807}
    assert data["uptime_s"] == 86400.52 and data["boot_time"] == 1732518000.0
    assert data["oom_kills"] == 3
    assert section["errors"] == []


def test_rates_after_ten_seconds(tree):
    clock = ManualClock()
    options, state = _options(tree), CollectorState(clock=clock)
    collect_section("resources", options, state)
    clock.advance(10)
    _advance_stat(tree)
    write(tree, "proc/vmstat", "pswpin 2000\npswpout 5200\noom_kill 3\n")
    write(tree, "proc/diskstats",
          " 252       0 vda 52234 1200 3477269 26456 99265 45678 8769528 89654 0 67932 "
          "116110 0 0 0 0 4321 1234\n")
    data = collect_section("resources", options, state)["data"]
    cpu = data["cpu"]
    assert {k: cpu[k] for k in ("percent", "user", "system", "iowait", "steal", "idle")} == {
        "percent": 50.0, "user": 30.0, "system": 13.75, "iowait": 5.0, "steal": 6.25,
        "idle": 45.0}
    assert cpu["per_cpu"] == [{"percent": 80.0, "iowait": 10.0, "steal": 10.0},
                              {"percent": 20.0, "iowait": 0.0, "steal": 2.5}]
    assert data["memory"]["swap_in_per_s"] == 50.0
    assert data["memory"]["swap_out_per_s"] == 100.0
    assert data["disks"] == [{"name": "vda", "read_bps": 1048576.0, "write_bps": 209715.2,
                              "read_iops": 100.0, "write_iops": 50.0, "await_ms": 3.333,
                              "util_percent": 25.0}]


def test_counter_reset_gives_no_rate_instead_of_a_negative_one(tree):
    clock = ManualClock()
    options, state = _options(tree), CollectorState(clock=clock)
    collect_section("resources", options, state)
    clock.advance(10)
    write(tree, "proc/vmstat", "pswpin 1\npswpout 1\noom_kill 3\n")
    data = collect_section("resources", options, state)["data"]
    assert data["memory"]["swap_in_per_s"] is None


def test_prime_makes_the_first_report_carry_rates(tree):
    clock = ManualClock()
    options, state = _options(tree), CollectorState(clock=clock)
    prime(options, state)
    clock.advance(10)
    _advance_stat(tree)
    data = collect_section("resources", options, state)["data"]
    assert data["cpu"]["percent"] == 50.0


def test_filesystems_real_ones_once_per_device(tree):
    data = collect_section("resources", _options(tree), CollectorState())["data"]
    fss = data["filesystems"]
    assert [(f["mountpoint"], f["device"], f["fstype"], f["readonly"]) for f in fss] == [
        ("/", "/dev/mapper/rl-root", "xfs", False),
        ("/boot", "/dev/vda1", "xfs", False),
        ("/data", "/dev/vdb1", "ext4", True)]
    st = os.statvfs(os.path.join(tree, "boot"))
    boot = fss[1]
    assert boot["total"] == st.f_blocks * st.f_frsize
    assert boot["inodes_total"] == st.f_files
    assert boot["percent"] == round(100.0 * boot["used"] / (boot["used"] + boot["free"]), 2)


def test_missing_mountpoint_costs_that_filesystem_only(tree):
    shutil.rmtree(os.path.join(tree, "boot"))
    section = collect_section("resources", _options(tree), CollectorState())
    assert [f["mountpoint"] for f in section["data"]["filesystems"]] == ["/", "/data"]
    assert [e["field"] for e in section["errors"]] == ["filesystems./boot"]
    assert "does not exist" in section["errors"][0]["error"]


def test_old_kernel_without_psi_and_oom_counter_degrades_per_field(tree):
    for name in ("cpu", "memory", "io"):
        os.remove(os.path.join(tree, "proc/pressure", name))
    os.rmdir(os.path.join(tree, "proc/pressure"))
    write(tree, "proc/vmstat", "pswpin 1500\npswpout 4200\n")
    write(tree, "proc/meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 100 kB\n"
                                "Cached: 300 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    section = collect_section("resources", _options(tree), CollectorState())
    errors = {e["field"]: e["error"] for e in section["errors"]}
    assert set(errors) == {"pressure", "oom_kills"}
    assert "psi=1" in errors["pressure"] and "4.13" in errors["oom_kills"]
    data = section["data"]
    assert "pressure" not in data and "oom_kills" not in data
    # Linux < 3.14 has no MemAvailable: free + buffers + cached
    assert data["memory"]["available"] == 500 * 1024 and data["memory"]["percent"] == 50.0
    assert data["memory"]["swap_percent"] == 0.0
    assert data["cpu"]["count"] == 2  # everything else still there


def test_top_processes_first_scan_averages_since_start(tree):
    options = _options(tree, top_n=3)
    data = collect_section("resources", options, CollectorState())["data"]
    hz = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    top = data["top_cpu"]
    assert [p["pid"] for p in top] == [1234, 2001, 1240]
    postgres = top[0]
    assert postgres["name"] == "postgres"
    assert postgres["cpu_percent"] == round(100.0 * 35000 / hz / (86400.52 - 1200 / hz), 2)
    assert postgres["rss"] == 40000 * page
    assert postgres["memory_percent"] == round(100.0 * 40000 * page / 3824926720, 2)
    assert [p["pid"] for p in data["top_memory"]] == [1234, 2001, 1240]


def test_top_processes_use_the_interval_and_reuse_between_scans(tree):
    clock = ManualClock()
    options, state = _options(tree, top_n=2, top_interval_s=60), CollectorState(clock=clock)
    collect_section("resources", options, state)
    hz = os.sysconf("SC_CLK_TCK")
    # 60 s later the inventory daemon used 30 s of CPU, postgres none.
    clock.advance(60)
    line = read(tree, "proc/2001/stat").split(" ")
    line[13] = str(int(line[13]) + 30 * hz)
    write(tree, "proc/2001/stat", " ".join(line))
    top = collect_section("resources", options, state)["data"]["top_cpu"]
    assert [(p["pid"], p["cpu_percent"]) for p in top] == [(2001, 50.0), (1, 0.0)]
    # before the next interval the same list is reused even though /proc changed
    clock.advance(30)
    write(tree, "proc/2001/stat", read(tree, "proc/1/stat")
          .replace("1 (systemd)", "2001 (inventory-servi)"))
    again = collect_section("resources", options, state)["data"]["top_cpu"]
    assert again == top


def test_top_process_owner_names_from_the_tree_passwd(tree):
    if os.geteuid() != 0:
        unavailable("changing a file's owner needs root (CI runs as root)")
    os.chown(os.path.join(tree, "proc/1234"), 26, 26)
    data = collect_section("resources", _options(tree, top_n=1), CollectorState())["data"]
    assert data["top_memory"][0]["user"] == "postgres"


def test_parse_stat_handles_parentheses_in_the_name():
    parsed = parse_stat(read(machine("el9").paths.proc("4000"), "stat").encode())
    assert parsed.pid == 4000 and parsed.name == "(sd-pam) x)" and parsed.state == "S"
    assert parse_stat(b"garbage") is None
