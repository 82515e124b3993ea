"""Opening stores: URLs, migrations, refusing newer schemas, errors that say what to do."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Callable

import pytest

from engine_plugin.storage import (
    SchemaTooNew,
    StorageConfig,
    StorageError,
    Store,
    StoreClosed,
    UnsupportedUrl,
    open_store,
)
from engine_plugin.storage.schema import load_migrations, split_statements
from lab.store_reports import envelope, vm_uuid


def _execute(url: str, sql: str) -> None:
    """Run SQL behind the store's back, as another tool (or a newer vmdiag) would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.execute(sql)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def test_migrate_is_idempotent_and_keeps_data(make_store: Callable[..., Store]) -> None:
    store = make_store()
    version = len(load_migrations(store.backend))
    store.ingest([envelope(1, 0, 1000.0)])
    assert store.migrate() == version
    assert make_store().migrate() == version
    assert store.vm_ids() == [vm_uuid(1)]


def test_newer_schema_is_refused(make_store: Callable[..., Store], store_url: str) -> None:
    make_store()
    _execute(store_url, "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (999, 'from_the_future', 0)")
    with pytest.raises(SchemaTooNew, match="upgrade vmdiag"):
        make_store()


def test_closed_store_refuses_work(make_store: Callable[..., Store]) -> None:
    store = make_store()
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.ingest([envelope(1, 0, 1000.0)])
    with pytest.raises(StoreClosed):
        store.vm_ids()


def test_every_backend_has_contiguous_migrations() -> None:
    for backend in ("sqlite", "postgresql"):
        migrations = load_migrations(backend)
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
        assert all(m.statements for m in migrations)


def test_statement_splitting_drops_comments() -> None:
    sql = "-- a table; with a semicolon in a comment\nCREATE TABLE a (x int);\n\n" \
          "CREATE INDEX b ON a (x); -- trailing\n"
    assert split_statements(sql) == ["CREATE TABLE a (x int)", "CREATE INDEX b ON a (x)"]


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite:///:memory:", "sqlite://relative.db"])
def test_unsupported_urls_say_what_to_write(url: str) -> None:
    with pytest.raises(UnsupportedUrl, match="sqlite:////absolute/path.db"):
        open_store(url)


def test_sqlite_in_missing_folder_says_to_create_it(tmp_path: os.PathLike) -> None:
    url = "sqlite:///%s/missing/vmdiag.db" % tmp_path
    with pytest.raises(StorageError, match="does not exist; create it"):
        open_store(url)


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="must not be shorter"):
        StorageConfig(raw_retention_s=7 * 86400, rollup_retention_s=86400)
    with pytest.raises(ValueError, match="above 0"):
        StorageConfig(vm_retention_s=0)


@pytest.mark.postgres
def test_unreachable_postgresql_fails_fast_without_leaking_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_store(StorageConfig(url="postgresql://vmdiag:s3cret@127.0.0.1:1/vmdiag",
                                 busy_timeout_s=2))
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert "s3cret" not in message
    assert "host=127.0.0.1" in message and "check [storage] url" in message


@pytest.mark.postgres
def test_postgresql_over_tcp_loopback(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    pg_cluster.create_database("tcp_test")
    with open_store(pg_cluster.url("tcp_test", tcp=True)) as store:
        store.migrate()
        assert store.ingest([envelope(1, 0, 1000.0)]).accepted == 1
        assert store.latest(vm_uuid(1)).report["seq"] == 0


@pytest.mark.postgres
def test_postgresql_reports_and_states_are_lz4_compressed(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    url = pg_cluster.create_database()
    state = {"fits": {"m%d" % i: {"mean": i / 7, "noise": i / 3} for i in range(200)}}
    with open_store(url) as store:
        store.migrate()
        store.migrate()
        store.set_verdicts([(vm_uuid(1), {"status": "ok"}, 1000.0)], 1000.0,
                           {"health:" + vm_uuid(1): state})
        assert store.event_states(["health:" + vm_uuid(1)]) == {"health:" + vm_uuid(1): state}
    with psycopg.connect(url) as conn:
        for table, column in (("latest_reports", "report"), ("event_states", "state"),
                              ("verdicts", "verdict")):
            row = conn.execute("SELECT attcompression FROM pg_attribute WHERE attrelid ="
                               " %s::regclass AND attname = %s", (table, column)).fetchone()
            assert row == ("l",), table
        # the state written is stored lz4-compressed (pg_column_compression: 'lz4')
        assert conn.execute("SELECT pg_column_compression(state) FROM event_states"
                            ).fetchone() == ("lz4",)
