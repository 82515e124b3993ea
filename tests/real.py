"""Real components in tests: run for real, or say why not; in CI, never skip quietly.

A test that needs a real component (libvirtd, a guest VM, PostgreSQL, Chromium, rpmbuild,
virt-xml-validate...) calls :func:`unavailable` when this machine cannot provide it. On a
developer's machine that is a skip with the reason and the install step; with
``$VMDIAG_REQUIRE_REAL=1``, which ``scripts/test`` (and so CI) sets, it is a failure, and the
hook in ``tests/conftest.py`` turns any other skip into a failure too.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_ENV = "VMDIAG_REQUIRE_REAL"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip (developer) or fail (``$VMDIAG_REQUIRE_REAL=1``) a test whose component is missing."""
    if required():
        pytest.fail("%s; $%s=1 requires every real component: run scripts/setup-deps"
                    % (reason, REQUIRE_ENV), pytrace=False)
    pytest.skip(reason)


def require_module(name: str, install: str) -> ModuleType:
    """Import ``name`` or call :func:`unavailable` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        unavailable("%s cannot be imported (%s): %s" % (name, err, install))
