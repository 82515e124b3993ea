"""Errors of the store.

::

    StorageError               anything the store cannot do; the message says what to do next
     +-- UnsupportedUrl        the store URL names no known backend or is malformed
     +-- SchemaTooNew          the database was migrated by a newer vmdiag than this one
     +-- StoreClosed           a method was called after ``close()``
     +-- Unstorable            the database cannot hold this data (a value beyond a column's
                               range, a malformed envelope): retrying cannot help
"""


class StorageError(RuntimeError):
    """The store cannot complete an operation."""


class UnsupportedUrl(StorageError):
    """The store URL is not ``sqlite:///<path>`` or ``postgresql://...``."""


class SchemaTooNew(StorageError):
    """The database schema is newer than the migrations this code knows."""


class StoreClosed(StorageError):
    """The store was closed; open a new one with ``open_store``."""


class Unstorable(StorageError):
    """The data itself cannot be stored; the same call would fail again."""
