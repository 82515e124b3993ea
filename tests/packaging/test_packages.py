"""The packages as an administrator gets them: built with the real rpmbuild and dpkg-deb, then
read back with rpm and dpkg-deb (contents, requires, config flags, scriptlets), and the guest
agent run from the unpacked .deb."""

import argparse
import configparser
import glob
import importlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.rpm


def run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT, **kw).stdout


def rpm_path(dist, name):
    [path] = [p for p in glob.glob(os.path.join(dist, name + "-*.noarch.rpm"))
              if os.path.basename(p)[len(name) + 1].isdigit()]
    return path


def rpm_query(path, fmt):
    return run("rpm", "-qp", "--qf", fmt, path)


def rpm_files(path):
    out = rpm_query(path, "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\n]")
    return {name: (flags, perms) for name, flags, perms in
            (line.split("\t") for line in out.splitlines())}


PACKAGES = ["python3-vmdiag-protocol", "vmdiag-guest-agent", "vmdiag-relay", "vdsm-hook-vmdiag",
            "ovirt-engine-ui-plugin-vmdiag"]
#: package -> (its command, its unit)
SERVICES = {"vmdiag-guest-agent": ("vmdiag-agent", "vmdiag-agent.service"),
            "vmdiag-relay": ("vmdiag-relay", "vmdiag-relay.service"),
            "ovirt-engine-ui-plugin-vmdiag": ("vmdiag-engine", "vmdiag-engine.service")}


def test_five_noarch_packages_and_a_source_package(dist):
    for name in PACKAGES:
        assert rpm_query(rpm_path(dist, name), "%{ARCH}") == "noarch"
    assert glob.glob(os.path.join(dist, "vmdiag-*.src.rpm"))


def test_guest_agent_package(dist):
    path = rpm_path(dist, "vmdiag-guest-agent")
    files = rpm_files(path)
    assert files["/usr/bin/vmdiag-agent"][1] == "-rwxr-xr-x"
    assert "/usr/lib/systemd/system/vmdiag-agent.service" in files
    assert "/usr/lib/udev/rules.d/90-vmdiag-agent.rules" in files
    assert files["/etc/vmdiag/agent.conf"][0] == "cn"          # %config(noreplace)
    assert any(f.endswith("/guest_agent/cli.py") for f in files)
    assert not any("__pycache__" in f for f in files)
    requires = run("rpm", "-qp", "--requires", path)
    assert "python3-psutil >= 5.8" in requires
    assert "python3-vmdiag-protocol = " in requires
    scripts = run("rpm", "-qp", "--scripts", path)
    assert "preset vmdiag-agent.service" in scripts and "disable --now" in scripts


def test_each_service_package_ships_its_unit_preset_and_man_page(dist):
    for name, (command, unit) in SERVICES.items():
        files = rpm_files(rpm_path(dist, name))
        assert "/usr/lib/systemd/system/" + unit in files, name
        [preset] = [f for f in files if f.startswith("/usr/lib/systemd/system-preset/")]
        [manpage] = [f for f in files if f.startswith("/usr/share/man/man8/")]
        assert os.path.basename(manpage).startswith(command + ".8"), name
    for name in ("python3-vmdiag-protocol", "vdsm-hook-vmdiag"):
        assert not [f for f in rpm_files(rpm_path(dist, name)) if "/systemd/" in f]


def test_units_name_only_documents_their_package_ships(dist, tmp_path):
    for name, (command, unit) in SERVICES.items():
        dest = tmp_path / name
        dest.mkdir()
        subprocess.run("rpm2cpio %s | cpio -idm --quiet" % rpm_path(dist, name), shell=True,
                       check=True, cwd=dest)
        cp = configparser.ConfigParser(strict=False)
        cp.optionxform = str
        cp.read(dest / ("usr/lib/systemd/system/" + unit))
        docs = cp["Unit"]["Documentation"].split()
        assert docs, unit
        for doc in docs:
            if doc.startswith("man:"):
                page, section = doc[4:].rstrip(")").split("(")
                assert glob.glob(str(dest / ("usr/share/man/man%s/%s.%s*" % (section, page,
                                                                            section)))), doc
            else:
                assert doc.startswith("file:/"), doc
                assert (dest / doc[len("file:/"):]).is_file(), doc
        # the man page is the command's own help: every subcommand is in it
        [page] = glob.glob(str(dest / "usr/share/man/man8/*"))
        with open(page) as f:
            text = f.read()
        assert text.startswith('.TH "%s" "8"' % command.upper())
        module = {"vmdiag-agent": "guest_agent.cli", "vmdiag-relay": "vdsm_hooks.relay.cli",
                  "vmdiag-engine": "engine_plugin.service.cli"}[command]
        parser = importlib.import_module(module).build_parser()
        [subs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        subcommands = list(subs.choices)
        assert len(subcommands) >= 3
        for sub in subcommands:
            assert ".SS %s\n" % sub.replace("-", "\\-") in text, (command, sub)


def test_relay_package_stands_alone_and_the_hook_package_adds_vdsm(dist):
    relay = rpm_path(dist, "vmdiag-relay")
    files = rpm_files(relay)
    assert files["/etc/vmdiag/relay.conf"][0] == "cn"
    assert "/usr/lib/sysusers.d/vmdiag.conf" in files
    assert files["/var/lib/vmdiag/spool"][1] == "drwxr-x---"
    assert not any(f.startswith("/usr/libexec/vdsm") for f in files)
    requires = run("rpm", "-qp", "--requires", relay).split("\n")
    assert "vdsm" not in requires
    for dep in ("python3-libvirt", "python3-aiohttp", "python3-cryptography"):
        assert dep in requires
    scripts = run("rpm", "-qp", "--scripts", relay)
    assert "systemd-sysusers --replace=/usr/lib/sysusers.d/vmdiag.conf -" in scripts
    assert "u     vmdiag" in scripts


def test_hook_package_installs_every_hook_point_executable(dist):
    path = rpm_path(dist, "vdsm-hook-vmdiag")
    files = rpm_files(path)
    for point in ("before_vm_start", "before_vm_migrate_destination", "before_vm_dehibernate",
                  "after_vm_destroy"):
        assert files["/usr/libexec/vdsm/hooks/%s/50_vmdiag" % point][1] == "-rwxr-xr-x"
    requires = run("rpm", "-qp", "--requires", path).split("\n")
    assert "vdsm" in requires and any(r.startswith("vmdiag-relay = ") for r in requires)


def test_hook_scripts_are_installed_with_the_system_python(dist, tmp_path):
    path = rpm_path(dist, "vdsm-hook-vmdiag")
    subprocess.run("rpm2cpio %s | cpio -idm --quiet" % path, shell=True, check=True,
                   cwd=tmp_path)
    with open(tmp_path / "usr/libexec/vdsm/hooks/before_vm_start/50_vmdiag") as f:
        assert f.readline().strip() == "#!/usr/bin/python3"


def test_engine_package_ships_plugin_service_and_apache_conf(dist):
    path = rpm_path(dist, "ovirt-engine-ui-plugin-vmdiag")
    files = rpm_files(path)
    desc = "/usr/share/ovirt-engine/ui-plugins/vmdiag.json"
    assert desc in files
    assert any(f.startswith("/usr/share/ovirt-engine/ui-plugins/vmdiag-resources/") for f in files)
    assert files["/etc/httpd/conf.d/z-vmdiag.conf"][0] == "cn"
    assert files["/etc/vmdiag/engine.conf"][0] == "cn"
    assert not any("node_modules" in f for f in files)
    requires = run("rpm", "-qp", "--requires", path).split("\n")
    assert "ovirt-engine-webadmin-portal" in requires and "python3-ovirt-engine-sdk4" in requires
    with open(os.path.join(ROOT, "engine_plugin/ui/plugin/vmdiag.json")) as f:
        plugin = json.load(f)
    assert plugin["name"] == "vmdiag" and plugin["resourcePath"] == "vmdiag-resources"


def test_units_are_sandboxed():
    for unit in glob.glob(os.path.join(ROOT, "packaging/systemd/*.service")):
        cp = configparser.ConfigParser(strict=False)
        cp.optionxform = str
        cp.read(unit)
        service = cp["Service"]
        assert service.get("NoNewPrivileges") == "yes", unit
        assert service.get("ProtectSystem") in ("strict", "full"), unit
        assert "CapabilityBoundingSet" in service, unit
        assert cp["Install"]["WantedBy"] == "multi-user.target"


def test_shipped_configs_match_the_declared_options():
    subprocess.run([sys.executable, "packaging/gen-configs", "--check"], check=True, cwd=ROOT)


def test_guest_deb_contents_and_control(dist):
    [deb] = glob.glob(os.path.join(dist, "vmdiag-guest-agent_*_all.deb"))
    fields = run("dpkg-deb", "-f", deb)
    assert "Package: vmdiag-guest-agent" in fields and "Architecture: all" in fields
    assert "python3-psutil (>= 5.8)" in fields
    contents = run("dpkg-deb", "-c", deb)
    for path in ("./usr/bin/vmdiag-agent", "./lib/systemd/system/vmdiag-agent.service",
                 "./lib/udev/rules.d/90-vmdiag-agent.rules", "./etc/vmdiag/agent.conf",
                 "./usr/lib/python3/dist-packages/guest_agent/cli.py",
                 "./usr/lib/python3/dist-packages/diag_protocol/framing.py"):
        assert path in contents
    assert "root/root" in contents and "__pycache__" not in contents


def test_agent_from_the_unpacked_deb_reports(dist, tmp_path):
    [deb] = glob.glob(os.path.join(dist, "vmdiag-guest-agent_*_all.deb"))
    run("dpkg-deb", "-x", deb, str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "usr/lib/python3/dist-packages"))
    # the packaged config plus a drop-in that keeps the gateway probe on this machine
    dropin = tmp_path / "etc/vmdiag/agent.conf.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "50-test.conf").write_text("[probes]\ngateway = no\n")
    out = subprocess.run([sys.executable, str(tmp_path / "usr/bin/vmdiag-agent"), "--config",
                          str(tmp_path / "etc/vmdiag/agent.conf"), "report", "--json"],
                         check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    report = json.loads(out)
    assert set(report["sections"]) == {"network", "resources", "applications", "settings",
                                       "checks"}
    assert report["sections"]["settings"]["data"]["hostname"] == os.uname().nodename
