"""The packages, built once per session with the real rpmbuild and dpkg-deb."""

import glob
import os
import shutil
import subprocess

import pytest

from tests.real import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def dist():
    for tool in ("rpmbuild", "rpm", "dpkg-deb", "systemctl", "systemd-sysusers"):
        if not shutil.which(tool):
            unavailable("%s is not installed (scripts/setup-deps installs it)" % tool)
    for old in glob.glob(os.path.join(ROOT, "dist", "*")):
        os.remove(old)
    subprocess.run(["packaging/build", "all"], check=True, capture_output=True, cwd=ROOT)
    return os.path.join(ROOT, "dist")
