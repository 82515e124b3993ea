"""KVM is chosen only after it proved it can run a kernel; an override skips the probe."""

from __future__ import annotations

import os

from lab.vm.accel import ACCEL_ENV, choose_accel, libvirt_qemu_user, probe_kvm, user_may_open


def test_override_skips_the_probe() -> None:
    assert choose_accel("/nonexistent-kernel", env={ACCEL_ENV: "TCG"}) == "tcg"
    assert choose_accel("/nonexistent-kernel", env={ACCEL_ENV: "kvm"}) == "kvm"


def test_missing_device_means_no_kvm(tmp_path) -> None:
    works, reason = probe_kvm("/nonexistent-kernel", kvm_device=str(tmp_path / "kvm"))
    assert works is False and "not accessible" in reason


def test_the_qemu_user_comes_from_libvirts_config(tmp_path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "libvirt-qemu"\n  user = "+0"\n')
    assert libvirt_qemu_user(str(conf)) == "+0"


def test_a_device_only_root_may_open_is_closed_to_libvirts_qemu_user(tmp_path) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    os.chmod(device, 0o600)
    assert user_may_open(str(device), "+0")
    assert not user_may_open(str(device), "nobody")
    os.chmod(device, 0o666)
    assert user_may_open(str(device), "nobody")
    os.chmod(device, 0o600)
    works, reason = probe_kvm(None, kvm_device=str(device), qemu_user="nobody")
    assert works is False and "'nobody', who may not open" in reason
