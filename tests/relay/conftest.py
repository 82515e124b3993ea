"""Fixtures of the relay's tests against the real system libvirtd (see system_libvirt.py)."""

from __future__ import annotations

from typing import Dict

import pytest


@pytest.fixture(scope="module")
def system_libvirt() -> Dict[str, str]:
    """A running system libvirtd with QEMU; started here (no systemd in CI) if needed."""
    from tests.relay.system_libvirt import prepare_system_libvirt

    return prepare_system_libvirt()
