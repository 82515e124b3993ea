"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from hypothesis import settings

from lab.pg_cluster import PgCluster, PgUnavailable
from tests.real import required, unavailable

# scripts/test (CI) runs the property tests derandomized, so a run on a clean checkout passes or
# fails the same way every time; a plain `pytest` keeps exploring new examples on each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway server for the session (fsync off: tests need no durability)."""
    try:
        cluster = PgCluster(settings={"fsync": "off", "synchronous_commit": "off",
                                      "full_page_writes": "off"})
        cluster.start()
    except PgUnavailable as err:
        unavailable("PostgreSQL server cannot run here: %s (apt-get install postgresql)" % err)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """With $VMDIAG_REQUIRE_REAL=1 (scripts/test, CI) a skipped test is a failed one."""
    outcome = yield
    report = outcome.get_result()
    if required() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = "skipped under $VMDIAG_REQUIRE_REAL=1, which allows no skip: %s" % (
            report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
