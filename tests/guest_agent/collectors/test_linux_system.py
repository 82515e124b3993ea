"""Identity, settings, services, packages and time sync on the fixture trees."""

import os
import sys

import pytest

from guest_agent import platform
from guest_agent.platform import (
    CommandFailed,
    CommandNotFound,
    CommandTimeout,
    PlatformError,
    Unsupported,
    subprocess_runner,
)
from guest_agent.platform.linux.timesync import parse_chrony_tracking, parse_ntpq_peers

from .fakes import DATA, RecordedRunner, copy_tree, machine, write

EL9 = machine("el9")
DEB = machine("debian12")


def test_identity_of_el9():
    assert platform.hostname(EL9) == "db1"
    assert platform.fqdn_from_hosts(EL9, "db1") == "db1.lab.example.org"
    assert platform.fqdn_from_hosts(EL9, "other") is None
    assert platform.fqdn_from_hosts(EL9, "a.b.c") == "a.b.c"
    assert platform.kernel_release(EL9) == "5.14.0-362.8.1.el9_3.x86_64"
    assert platform.arch(EL9) == "x86_64"
    assert platform.boot_id(EL9) == "3f2b8c1e-9d4a-4e61-8a57-0c9d2e7b5a11"
    assert platform.os_release(EL9) == {"name": "Rocky Linux", "version": "9.3", "id": "rocky",
                                        "pretty": "Rocky Linux 9.3 (Blue Onyx)",
                                        "id_like": "rhel centos fedora"}


def test_timezone_from_localtime_link_or_etc_timezone():
    assert platform.timezone(EL9) == "Europe/Prague"
    assert platform.timezone(DEB) == "Etc/UTC"


def test_timezone_without_any_source_says_how_to_set_it(tmp_path):
    os.makedirs(tmp_path / "etc")
    with pytest.raises(PlatformError, match="timedatectl set-timezone"):
        platform.timezone(machine("el9", str(tmp_path)))


def test_security_modules():
    assert platform.security_modules(EL9) == {"selinux": "enforcing", "apparmor": None}
    assert platform.security_modules(DEB) == {"selinux": None, "apparmor": "enabled"}


def test_selinux_permissive_and_disabled(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    write(root, "sys/fs/selinux/enforce", "0")
    assert platform.security_modules(machine("el9", root))["selinux"] == "permissive"
    os.remove(os.path.join(root, "sys/fs/selinux/enforce"))
    assert platform.security_modules(machine("el9", root))["selinux"] == "disabled"


def test_sysctl_values_dotted_and_slashed_names():
    assert platform.sysctl(EL9, "vm.swappiness") == "30"
    assert platform.sysctl(EL9, "net.ipv4.tcp_rmem") == "4096 131072 6291456"
    assert platform.sysctl(EL9, "net/ipv4/conf/eth0.100/rp_filter") == "1"
    with pytest.raises(PlatformError, match="does not exist"):
        platform.sysctl(EL9, "vm.nosuch")


@pytest.mark.parametrize("name", ["../../etc/passwd", "net/../../../x", "a b", ""])
def test_sysctl_rejects_names_that_could_leave_proc_sys(name):
    with pytest.raises(PlatformError, match="not a sysctl name"):
        platform.sysctl(EL9, name)


def test_logged_in_users():
    assert platform.logged_in_users(EL9) == [
        {"name": "admin", "terminal": "pts/0", "host": "192.168.122.1", "started": 1732600000.0},
        {"name": "root", "terminal": "tty1", "host": None, "started": 1732590000.0}]


def test_reboot_required_on_debian_lists_packages_once():
    assert platform.reboot_required(DEB) == (
        True, "updated packages need a reboot: libc6, linux-image-6.1.0-27-amd64")


def test_reboot_required_on_el_compares_newest_kernel_image(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    boot = os.path.join(root, "boot")
    os.utime(os.path.join(boot, "vmlinuz-5.14.0-362.8.1.el9_3.x86_64"), (1000, 1000))
    os.utime(os.path.join(boot, "vmlinuz-5.14.0-427.13.1.el9_4.x86_64"), (2000, 2000))
    os.utime(os.path.join(boot, "vmlinuz-0-rescue-6d1b0c4e1f2a4b7d9e3c5a8f0b1d2e3f"),
             (3000, 3000))
    m = machine("el9", root)
    assert platform.reboot_required(m) == (
        True, "kernel 5.14.0-427.13.1.el9_4.x86_64 is installed but "
              "5.14.0-362.8.1.el9_3.x86_64 is running; reboot to use it")
    os.utime(os.path.join(boot, "vmlinuz-5.14.0-362.8.1.el9_3.x86_64"), (4000, 4000))
    assert platform.reboot_required(m) == (False, None)


def test_reboot_required_unknown_without_flag_or_kernels(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    for name in os.listdir(os.path.join(root, "boot")):
        os.remove(os.path.join(root, "boot", name))
    with pytest.raises(Unsupported, match="vmlinuz"):
        platform.reboot_required(machine("el9", root))


def test_failed_units_from_systemctl():
    assert platform.failed_units(EL9) == [
        {"name": "kdump.service", "active_state": "failed", "sub_state": "failed",
         "description": "Crash recovery kernel arming"},
        {"name": "nfs-server.service", "active_state": "failed", "sub_state": "failed",
         "description": "NFS server and services"}]
    assert platform.failed_units(DEB) == []


def test_failed_units_accepts_the_bullet_older_systemd_prints():
    runner = RecordedRunner(os.path.join(DATA, "el9", "commands"))
    runner.add(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager",
                "--full"], "\u25cf kdump.service loaded failed failed Crash recovery\n")
    units = platform.failed_units(machine("el9", runner=runner))
    assert units == [{"name": "kdump.service", "active_state": "failed",
                      "sub_state": "failed", "description": "Crash recovery"}]


def test_unit_states_in_argument_order():
    names = ["sshd.service", "postgresql.service", "backup.timer", "nosuch.service"]
    states = platform.unit_states(EL9, names)
    assert states["sshd.service"] == {"load_state": "loaded", "active_state": "active",
                                      "sub_state": "running"}
    assert states["backup.timer"]["active_state"] == "inactive"
    assert states["nosuch.service"]["load_state"] == "not-found"
    assert platform.unit_states(EL9, []) == {}


def test_units_without_systemd_say_so(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    os.remove(os.path.join(root, "run/systemd/system/.keep"))
    os.rmdir(os.path.join(root, "run/systemd/system"))
    with pytest.raises(Unsupported, match="systemd is not the init system"):
        platform.failed_units(machine("el9", root))


def test_rpm_packages_sorted_without_gpg_keys_and_with_epoch():
    manager, packages = platform.installed_packages(EL9)
    assert manager == "rpm"
    assert len(packages) == 10
    assert packages[0] == ("bash", "5.1.8-6.el9_1", "x86_64")
    assert ("shadow-utils", "2:4.9-8.el9", "x86_64") in packages
    assert [p.name for p in packages].count("kernel-core") == 2
    assert not [p for p in packages if p.name == "gpg-pubkey"]


def test_dpkg_packages_only_installed_ones():
    manager, packages = platform.installed_packages(DEB)
    assert manager == "dpkg"
    assert len(packages) == 25
    assert "apache2" not in [p.name for p in packages]  # "rc": removed, config left
    assert packages == sorted(packages)


def test_package_db_stamp_changes_with_the_database(tmp_path):
    root = copy_tree("el9", str(tmp_path))
    m = machine("el9", root)
    first = platform.package_db_stamp(m)
    assert first[0] == "/var/lib/rpm/rpmdb.sqlite"
    write(root, "var/lib/rpm/rpmdb.sqlite", "more")
    assert platform.package_db_stamp(m) != first


def test_time_sync_from_chrony():
    assert platform.time_sync(EL9) == {"service": "chronyd", "synchronized": True,
                                       "offset_ms": pytest.approx(-0.123456),
                                       "source": "192.168.122.1", "read_via": "chronyc"}


def test_time_sync_falls_back_to_timesyncd():
    assert platform.time_sync(DEB) == {"service": "systemd-timesyncd", "synchronized": True,
                                       "offset_ms": None, "source": "ntp.example.org",
                                       "read_via": "timedatectl"}


def test_time_sync_falls_back_to_ntpq_when_chronyd_is_down():
    runner = RecordedRunner(os.path.join(DATA, "el9", "commands"))
    runner.add(["chronyc", "-n", "tracking"], "", rc=1, stderr="506 Cannot talk to daemon\n")
    runner.add(["ntpq", "-pn"], (
        "     remote           refid      st t when poll reach   delay   offset  jitter\n"
        "==============================================================================\n"
        "+192.168.122.2  .GPS.            1 u   40   64  377    0.600   -0.300   0.050\n"
        "*192.168.122.1  .GPS.            1 u   33   64  377    0.512   12.125   0.045\n"))
    result = platform.time_sync(machine("el9", runner=runner))
    assert result == {"service": "ntpd", "synchronized": True, "offset_ms": 12.125,
                      "source": "192.168.122.1", "read_via": "ntpq"}


def test_time_sync_error_explains_each_failure():
    runner = RecordedRunner(os.path.join(DATA, "el9", "commands"))
    runner.add(["chronyc", "-n", "tracking"], timeout=True)
    with pytest.raises(PlatformError) as err:
        platform.time_sync(machine("el9", runner=runner))
    text = str(err.value)
    assert "did not answer within" in text and "timedatectl is not installed" in text
    assert "install and enable chronyd" in text


def test_chrony_unsynchronised_and_fast_clock():
    text = ("Reference ID    : 00000000 ()\nSystem time     : 1.500000000 seconds fast of NTP "
            "time\nLeap status     : Not synchronised\n")
    assert parse_chrony_tracking(text) == {"service": "chronyd", "synchronized": False,
                                           "offset_ms": 1500.0, "source": None}


def test_ntpq_without_selected_peer_is_unsynchronised():
    assert parse_ntpq_peers(" remote refid\n=====\n 10.0.0.1 .INIT. 16 u - 64 0 0 0 0\n")[
        "synchronized"] is False


def test_subprocess_runner_runs_real_commands_with_c_locale():
    result = subprocess_runner([sys.executable, "-c",
                                "import os,sys; print(os.environ['LC_ALL']); sys.exit(3)"], 10)
    assert (result.rc, result.stdout) == (3, "C\n")


def test_subprocess_runner_kills_a_command_at_its_timeout():
    with pytest.raises(CommandTimeout, match="did not answer within 0.3s"):
        subprocess_runner([sys.executable, "-c", "import time; time.sleep(30)"], 0.3)


def test_subprocess_runner_missing_program():
    with pytest.raises(CommandNotFound, match="vmdiag-no-such-tool is not installed"):
        subprocess_runner(["vmdiag-no-such-tool"], 1)


def test_machine_run_raises_on_unexpected_exit_code():
    m = platform.Machine()
    with pytest.raises(CommandFailed, match="exited with status 2: boom"):
        m.run([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(2)"])
    assert m.run([sys.executable, "-c", "import sys; sys.exit(2)"], ok_codes=(0, 2)).rc == 2
