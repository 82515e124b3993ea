"""KVM is chosen only after it proved it can run a kernel; an override skips the probe."""

from __future__ import annotations

from .accel import ACCEL_ENV, choose_accel, probe_kvm


def test_override_skips_the_probe() -> None:
    assert choose_accel("/nonexistent-kernel", env={ACCEL_ENV: "TCG"}) == "tcg"
    assert choose_accel("/nonexistent-kernel", env={ACCEL_ENV: "kvm"}) == "kvm"


def test_missing_device_means_no_kvm(tmp_path) -> None:
    works, reason = probe_kvm("/nonexistent-kernel", kvm_device=str(tmp_path / "kvm"))
    assert works is False and "not accessible" in reason
