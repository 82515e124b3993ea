"""Run the hook scripts the way VDSM does: a subprocess with the domain XML in a file named by
``$_hook_domxml``, ``$vmId``, and each custom property as an environment variable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.real import unavailable

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "vdsm_hooks" / "hooks"
DATA = ROOT / "tests" / "data" / "domxml"
CHANNEL = "org.vmdiag.agent.0"

#: The sample domain XMLs and the VM id VDSM would pass with each.
SAMPLES = {
    "el9_server_before_start.xml": "6f1c2a8e-0b7d-4c55-9e1a-3b2f8d4c7a10",
    "compact_no_virtio_serial.xml": "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d",
    "windows2019_hyperv.xml": "d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70",
    "migration_incoming_ns0.xml": "8c7b6a59-4837-4261-9f0e-8c7b6a594837",
}


def script(point: str) -> Path:
    return HOOKS / point / "50_vmdiag"


def write_conf(directory: Path, text: str) -> Path:
    conf = directory / "relay.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def run_hook(point: str, domxml: Path | None, conf: Path, vm_id: str | None = None,
             props: dict[str, str] | None = None, user: str | None = None,
             source_tree_only: bool = False, group: str | None = None,
             extra_groups: list[str] | None = None) -> subprocess.CompletedProcess:
    """Execute the script itself (its shebang), as VDSM's hook runner does."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "VMDIAG_RELAY_CONF": str(conf)}
    if not source_tree_only:
        env["PYTHONPATH"] = str(ROOT)
    if domxml is not None:
        env["_hook_domxml"] = str(domxml)
    if vm_id is not None:
        env["vmId"] = vm_id
    env.update(props or {})
    kwargs: dict = {"user": user} if user else {}
    if group is not None:
        kwargs["group"] = group
    if extra_groups is not None:
        kwargs["extra_groups"] = extra_groups
    return subprocess.run([str(script(point))], env=env, capture_output=True, timeout=60,
                          cwd="/", check=False, **kwargs)


def vmdiag_channels(data: bytes) -> list[ET.Element]:
    root = ET.fromstring(data)
    return [c for c in root.iterfind("devices/channel")
            if c.find("target") is not None and c.find("target").get("name") == CHANNEL]


def canonical_without_vmdiag(data: bytes) -> str:
    """C14N of the document with the vmdiag channel removed: equal to the original's C14N
    exactly when the hook added nothing else and lost nothing."""
    text = data.decode("utf-8")
    text = re.sub(r"\s*<channel type=\"unix\">\s*<source mode=\"bind\" path=\"[^\"]*"
                  r"\.org\.vmdiag\.agent\.0\"/>\s*<target type=\"virtio\" "
                  r"name=\"org\.vmdiag\.agent\.0\"/>\s*</channel>", "", text)
    text = re.sub(r"^<\?xml[^>]*\?>", "", text)
    return ET.canonicalize(text, strip_text=True)


def canonical(data: bytes) -> str:
    return ET.canonicalize(re.sub(r"^<\?xml[^>]*\?>", "", data.decode("utf-8")), strip_text=True)


def virt_xml_validate(path: Path) -> None:
    """Validate with libvirt's own RELAX NG schema; fail with its message."""
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        unavailable("virt-xml-validate is not installed (Debian package libvirt-clients)")
    result = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

