"""The parts of the setup commands that need no machine: engine-config's output, the merge of
custom properties, the shared step runner."""

import filecmp
import os

import pytest

from engine_plugin.setup import custom_property as cp
from engine_plugin.setup.steps import SetupError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# as engine-config -g prints it (oVirt's docs show both "Key: value" and "Key : value")
GET_OUTPUT = """\
UserDefinedVMProperties:  version: 4.2
UserDefinedVMProperties : memory=^[0-9]+$ version: 4.6
UserDefinedVMProperties: sap_agent=^(true|false)$;vmdiag=^(on|off)$ version: 4.7
"""


def test_engine_config_output_is_read_per_level():
    assert cp.parse_get(GET_OUTPUT) == {"4.2": "", "4.6": "memory=^[0-9]+$",
                                        "4.7": "sap_agent=^(true|false)$;vmdiag=^(on|off)$"}


@pytest.mark.parametrize("value,merged", [
    ("", "vmdiag=^(on|off)$"),
    ("memory=^[0-9]+$", "memory=^[0-9]+$;vmdiag=^(on|off)$"),
    ("a=^x$;b=^(y|z)$;", "a=^x$;b=^(y|z)$;vmdiag=^(on|off)$"),
    ("sap_agent=^(true|false)$;vmdiag=^(on|off)$", None),
])
def test_merge_keeps_other_hooks_properties(value, merged):
    assert cp.merge(value) == merged


def test_merge_refuses_another_definition_of_vmdiag():
    with pytest.raises(SetupError, match=r"vmdiag=\^\(yes\|no\)\$ is already declared"):
        cp.merge("vmdiag=^(yes|no)$;other=^a$")


def test_both_parts_run_setup_with_the_same_step_runner():
    # parts may not import each other, so each has its copy; they must not drift apart
    assert filecmp.cmp(os.path.join(ROOT, "engine_plugin/setup/steps.py"),
                       os.path.join(ROOT, "vdsm_hooks/setup/steps.py"), shallow=False)
