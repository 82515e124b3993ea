"""Fixtures of the store tests: every store test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
from typing import Callable, Iterator, List

import pytest

from engine_plugin.storage import StorageConfig, Store, open_store

BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike) -> str:
    """A URL of an empty database: a file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite:///%s" % os.path.join(str(tmp_path), "vmdiag.db")
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[..., Store]]:
    """``make_store(**config)`` opens (and migrates) a store on this test's database; several
    calls give several independent instances, like several services sharing one database."""
    opened: List[Store] = []

    def make(migrate: bool = True, **config: object) -> Store:
        store = open_store(StorageConfig(url=store_url, **config))  # type: ignore[arg-type]
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()
