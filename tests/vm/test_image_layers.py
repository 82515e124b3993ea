"""Image building blocks on throw-away trees: offline unit enabling, module pruning, the
agent layer's choice between the .deb and the sources, and the baked-in agent configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from guest_agent.config import load_config
from lab.vm import agent_layer, guest_net, rootfs


def touch(path: str, text: str = "") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_units_are_enabled_and_masked_offline(tmp_path) -> None:
    root = str(tmp_path)
    rootfs.enable_unit(root, "a.service", unit_dir="lib/systemd/system")
    rootfs.enable_unit(root, "a.service", unit_dir="lib/systemd/system")  # idempotent
    rootfs.mask_units(root, ["b.timer"])
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants/a.service")
    assert os.readlink(wants) == "/lib/systemd/system/a.service"
    assert os.readlink(os.path.join(root, "etc/systemd/system/b.timer")) == "/dev/null"


@pytest.mark.skipif(shutil.which("depmod") is None, reason="depmod missing: apt-get install kmod")
def test_prune_keeps_only_listed_modules(tmp_path) -> None:
    root = str(tmp_path)
    kernel = os.path.join(root, "lib/modules/6.1.0-test/kernel")
    for rel in ("fs/ext4/ext4.ko", "fs/xfs/xfs.ko", "drivers/net/virtio_net.ko",
                "drivers/net/wireless/x.ko", "drivers/gpu/y.ko"):
        touch(os.path.join(kernel, rel))
    assert rootfs.prune_modules(root) == 3
    left = sorted(os.path.relpath(os.path.join(d, n), kernel)
                  for d, _s, names in os.walk(kernel) for n in names)
    assert left == ["drivers/net/virtio_net.ko", "fs/ext4/ext4.ko"]
    assert os.path.exists(os.path.join(root, "lib/modules/6.1.0-test/modules.dep"))


def fake_source(tmp_path) -> str:
    src = os.path.join(str(tmp_path), "src")
    for package in agent_layer.AGENT_PACKAGES:
        touch(os.path.join(src, package, "__init__.py"), package)
    return src


def test_deb_is_used_only_when_not_older_than_the_sources(tmp_path) -> None:
    src = fake_source(tmp_path)
    assert agent_layer.agent_deb(src, env={}) is None
    deb = os.path.join(src, "dist", "vmdiag-guest-agent_1.0_all.deb")
    touch(deb)
    now = time.time()
    os.utime(deb, (now, now))
    assert agent_layer.agent_deb(src, env={}) == deb
    os.utime(deb, (now - 100, now - 100))  # sources edited after the package was built
    assert agent_layer.agent_deb(src, env={}) is None
    assert agent_layer.agent_deb(src, env={agent_layer.AGENT_FROM_ENV: "deb"}) == deb
    assert agent_layer.agent_deb(src, env={agent_layer.AGENT_FROM_ENV: "sources"}) is None


def test_layer_key_follows_the_agent_sources(tmp_path) -> None:
    src = fake_source(tmp_path)
    first = agent_layer.layer_key(src)
    assert agent_layer.layer_key(src) == first
    touch(os.path.join(src, "guest_agent", "__init__.py"), "changed")
    assert agent_layer.layer_key(src) != first


def test_sources_install_runs_the_agent_from_opt(tmp_path) -> None:
    src, root = fake_source(tmp_path), os.path.join(str(tmp_path), "root")
    assert agent_layer.apply(root, src) == "sources"
    assert os.path.exists(os.path.join(root, "opt/vmdiag/guest_agent/__init__.py"))
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    assert sorted(os.listdir(wants)) == sorted([
        agent_layer.AGENT_UNIT, agent_layer.BROKEN_UNIT, agent_layer.ROLE_UNIT,
        agent_layer.FILL_UNIT, agent_layer.SLEEPER_UNIT])


def test_roles_are_chosen_on_the_kernel_command_line(tmp_path) -> None:
    src, root = fake_source(tmp_path), os.path.join(str(tmp_path), "root")
    agent_layer.apply(root, src)

    def unit(name: str) -> str:
        with open(os.path.join(root, "etc/systemd/system", name), encoding="utf-8") as handle:
            return handle.read()

    assert "ConditionKernelCommandLine=!vmdiag.role=healthy" in unit(agent_layer.BROKEN_UNIT)
    healthy = unit(agent_layer.ROLE_UNIT)
    assert "ConditionKernelCommandLine=vmdiag.role=healthy" in healthy
    assert "Before=%s" % agent_layer.AGENT_UNIT in healthy
    assert "rm -f /" + agent_layer.FAULTS_DROPIN in healthy
    assert os.path.exists(os.path.join(root, agent_layer.FAULTS_DROPIN))
    assert "ConditionKernelCommandLine=vmdiag.role=filling" in unit(agent_layer.FILL_UNIT)


def test_fill_script_stops_at_its_limit(tmp_path) -> None:
    # The filler's shell loop, run here against a fake df that reports the limit at once.
    script = agent_layer.fault_files()["etc/systemd/system/" + agent_layer.FILL_UNIT]
    body = script.split("ExecStart=/bin/sh -c '", 1)[1].rsplit("'\n", 1)[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "df").write_text("#!/bin/sh\necho Use%%; echo ' %d%%'\n"
                               % agent_layer.FILL_STOP_PERCENT)
    (bindir / "df").chmod(0o755)
    body = body.replace("exec sleep infinity", "exit 0")
    out = subprocess.run(["/bin/sh", "-c", body], env={"PATH": "%s:/usr/bin:/bin" % bindir},
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "at %d%%, holding" % agent_layer.FILL_STOP_PERCENT in out.stdout


def test_baked_config_is_read_by_the_agent_with_the_faults_watched(tmp_path) -> None:
    path = os.path.join(str(tmp_path), "agent.conf")
    touch(path + ".d/50-vmdiag-test.conf", agent_layer.agent_conf())
    touch(path + ".d/60-vmdiag-test-faults.conf", agent_layer.faults_conf())
    cfg = load_config(path)
    assert agent_layer.BROKEN_UNIT in cfg.get("watch", "units")
    assert agent_layer.MISSING_PROCESS in cfg.get("watch", "processes")
    assert cfg.interval == agent_layer.REPORT_INTERVAL_S
    # the only name probed is the lab's own zone, which the lab's resolver on the host answers
    assert cfg.get("probes", "dns_names") == (guest_net.PROBED_NAME,)
    assert not cfg.get("probes", "http_targets")
