"""The platform facade: one implementation chosen at import, a complete stub for other OSes."""

import inspect
import sys

import pytest

from guest_agent import platform
from guest_agent.platform import Unsupported, linux, unsupported


def _functions(module):
    return {name for name in module.__all__ if inspect.isfunction(getattr(module, name))}


def test_linux_is_chosen_on_linux():
    assert sys.platform.startswith("linux") and platform.OS_FAMILY == "linux"
    assert platform.cpu_stat is linux.cpu_stat


def test_the_stub_offers_every_function_a_port_must_provide():
    # the facade's functions: the names bound once from the chosen module (not in __all__)
    facade = {name for name, value in vars(platform).items() if inspect.isfunction(value)
              and value.__module__.startswith(linux.__name__)}
    assert all(getattr(platform, name) is getattr(linux, name) for name in facade)
    stub = {name for name, value in vars(unsupported).items()
            if callable(value) and not name.startswith("_") and name not in (
                "Unsupported", "Any", "Callable")}
    assert facade == stub == _functions(linux)


def test_stub_functions_raise_unsupported_naming_themselves():
    with pytest.raises(Unsupported, match="cpu_stat is not implemented for"):
        unsupported.cpu_stat(platform.LOCAL)
