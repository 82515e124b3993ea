"""Numbered SQL migrations, one folder per backend (``migrations/<backend>/NNNN_name.sql``).

A database records every applied version in ``schema_migrations``. Migrating applies the
missing ones in order, in one transaction together with their records, so a crash leaves the
schema at a known version. Each backend serialises migrators (SQLite: the write lock of
``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so several service instances can start
against one database at once. A database newer than the code is refused rather than guessed at.

The files hold plain statements separated by ``;`` at the end of a line, with ``--`` comments;
no semicolons inside statements (no triggers or functions), which keeps splitting trivial.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence, Tuple

from .errors import SchemaTooNew

if TYPE_CHECKING:
    from .sqlstore import Tx

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Tuple[str, ...]


def split_statements(sql: str) -> List[str]:
    """The statements of one migration file, comments removed."""
    lines = [re.sub(r"--.*$", "", line) for line in sql.splitlines()]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def load_migrations(backend: str) -> List[Migration]:
    """All migrations of ``backend`` in version order; versions must run 1, 2, 3 without gaps."""
    folder = MIGRATIONS_DIR / backend
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise RuntimeError("%s: a migration file must be named NNNN_lowercase_name.sql"
                               % path)
        found.append(Migration(int(match.group(1)), match.group(2),
                               tuple(split_statements(path.read_text(encoding="utf-8")))))
    if not found:
        raise RuntimeError("no migrations in %s: the package is incomplete; reinstall vmdiag"
                           % folder)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError("%s: migration %04d is missing (found %04d)"
                               % (folder, expected, migration.version))
    return found


def apply_migrations(tx: Tx, migrations: Sequence[Migration], database: str) -> int:
    """Apply the ``migrations`` the database of ``tx`` lacks, in order, each recorded in
    ``schema_migrations`` (the caller holds the backend's migration lock); a database newer
    than this code is refused (``database`` names it in the message). Returns the version."""
    tx.execute(CREATE_VERSIONS_TABLE)
    applied = {r[0] for r in tx.fetchall("SELECT version FROM schema_migrations")}
    newest = max(applied, default=0)
    if newest > len(migrations):
        raise SchemaTooNew("%s has schema version %d but this vmdiag knows only up to %d; "
                           "upgrade vmdiag on this machine"
                           % (database, newest, len(migrations)))
    for migration in migrations:
        if migration.version not in applied:
            for statement in migration.statements:
                tx.execute(statement)
            tx.execute("INSERT INTO schema_migrations (version, name, applied_at)"
                       " VALUES (?, ?, ?)", (migration.version, migration.name, time.time()))
    return len(migrations)
