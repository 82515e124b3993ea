"""Kernel counters parsed from the el9 and debian12 fixture trees."""

import os

import pytest

from guest_agent import platform
from guest_agent.platform import Paths, Unsupported

from .fakes import DATA, copy_tree, machine, write

EL9 = machine("el9")


def test_cpu_stat_reads_totals_per_cpu_and_boot_time():
    stat = platform.cpu_stat(EL9)
    assert stat.total == {"user": 123456, "nice": 789, "system": 45678, "idle": 9876543,
                          "iowait": 2345, "irq": 0, "softirq": 1234, "steal": 5678,
                          "guest": 0, "guest_nice": 0}
    assert len(stat.per_cpu) == 2
    assert stat.per_cpu[1]["idle"] == 4938272
    assert stat.boot_time == 1732518000


def test_cpu_stat_of_an_old_kernel_without_steal_columns_reads_zero(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    write(root, "proc/stat", "cpu  10 0 5 100\ncpu0 10 0 5 100\nbtime 5\n")
    stat = platform.cpu_stat(machine("el9", root))
    assert stat.total["steal"] == 0 and stat.total["iowait"] == 0
    assert stat.total["idle"] == 100


def test_load_uptime_and_file_handles():
    assert platform.load_average(EL9) == [0.52, 0.58, 0.59]
    assert platform.uptime(EL9) == 86400.52
    assert platform.file_handles(EL9) == (2144, 9223372036854775807)


def test_meminfo_is_in_bytes():
    mem = platform.meminfo(EL9)
    assert mem["MemTotal"] == 3735280 * 1024
    assert mem["SwapFree"] == 1572860 * 1024
    assert mem["HugePages_Total"] == 0  # unitless counters stay as they are


def test_vmstat_counters():
    vm = platform.vmstat(EL9)
    assert (vm["pswpin"], vm["pswpout"], vm["oom_kill"]) == (1500, 4200, 3)


def test_pressure_averages_per_resource():
    assert platform.pressure(EL9) == {
        "cpu": {"some_avg10": 1.25, "some_avg60": 0.8, "full_avg10": 0.0, "full_avg60": 0.0},
        "memory": {"some_avg10": 0.0, "some_avg60": 0.15, "full_avg10": 0.0,
                   "full_avg60": 0.05},
        "io": {"some_avg10": 3.5, "some_avg60": 2.1, "full_avg10": 2.0, "full_avg60": 1.1},
    }


def test_pressure_missing_says_how_to_enable_it(tmp_path):
    os.makedirs(tmp_path / "proc")
    with pytest.raises(Unsupported, match="psi=1"):
        platform.pressure(machine("el9", str(tmp_path)))


def test_mounts_unescape_octal_fields():
    mounts = {m.mountpoint: m for m in platform.mounts(EL9)}
    assert mounts["/srv/bind mount"].device == "/dev/mapper/rl-root"
    assert mounts["/data"].options[0] == "ro"
    assert mounts["/"].fstype == "xfs"


def test_real_filesystems_are_those_not_marked_nodev():
    real = platform.real_filesystems(EL9)
    assert {"xfs", "ext4", "vfat", "iso9660"} <= real
    assert not real & {"tmpfs", "nfs4", "proc", "cgroup2"}


def test_disk_stats_keep_whole_disks_only_in_bytes():
    disks = platform.disk_stats(EL9)
    assert sorted(disks) == ["dm-0", "dm-1", "vda", "vdb"]
    vda = disks["vda"]
    assert vda.reads == 51234 and vda.read_bytes == 3456789 * 512 and vda.read_ms == 23456
    assert vda.writes == 98765 and vda.write_bytes == 8765432 * 512 and vda.write_ms == 87654
    assert vda.io_ms == 65432


def test_disk_stats_of_the_ci_machine_tree():
    disks = platform.disk_stats(machine("debian12"))
    assert "vda" in disks
    assert not [name for name in disks if name.startswith(("loop", "zram"))]


def test_paths_map_absolute_paths_under_the_root():
    p = Paths("/x/y")
    assert p.proc("1", "stat") == "/x/y/proc/1/stat"
    assert p.host("/etc/os-release") == "/x/y/etc/os-release"
    assert Paths().proc("stat") == "/proc/stat" and Paths().is_live
    assert not Paths(os.path.join(DATA, "el9")).is_live
