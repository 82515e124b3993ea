"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from hypothesis import settings

from tests.storage.pg_cluster import PgCluster, PgUnavailable

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
        if os.environ.get("VMDIAG_REQUIRE_POSTGRES"):
            raise
        pytest.skip("PostgreSQL server cannot run here: %s" % err)
    try:
        yield cluster
    finally:
        cluster.stop()
