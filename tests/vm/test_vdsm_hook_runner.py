"""The hook runner gives a hook exactly VDSM's interface: XML file, vmId, custom properties."""

from __future__ import annotations

import os
import stat

import pytest

from lab.vm.vdsm_hook import HookFailed, run_hook

SCRIPT = """#!/bin/sh
# records its environment in the XML, as a hook that edits the domain would
printf '<domain><vm>%s</vm><prop>%s</prop></domain>' "$vmId" "$vmdiag" > "$_hook_domxml"
test -n "$FAIL" && { echo "told to fail" >&2; exit 2; }
exit 0
"""


def make_script(tmp_path) -> str:
    path = os.path.join(str(tmp_path), "50_test")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SCRIPT)
    os.chmod(path, stat.S_IRWXU)
    return path


def test_hook_gets_vm_id_properties_and_edits_the_xml_in_place(tmp_path) -> None:
    out = run_hook(make_script(tmp_path), "<domain/>", "vm-1", {"vmdiag": "off"})
    assert out == "<domain><vm>vm-1</vm><prop>off</prop></domain>"


def test_non_zero_exit_fails_like_vdsm_and_cleans_up(tmp_path) -> None:
    before = set(os.listdir("/tmp"))
    with pytest.raises(HookFailed, match="told to fail"):
        run_hook(make_script(tmp_path), "<domain/>", "vm-2", {"vmdiag": "on"},
                 extra_env={"FAIL": "1"})
    assert not {n for n in set(os.listdir("/tmp")) - before if n.startswith("hook-domxml-")}
