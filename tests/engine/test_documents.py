"""The API's documents as built from what the store holds (a real SQLite store)."""

from __future__ import annotations

import os

from engine_plugin.service.documents import worst_findings
from engine_plugin.storage import StorageConfig, open_store
from lab.store_reports import envelope


def test_a_check_without_a_message_is_named_by_its_id(tmp_path: os.PathLike) -> None:
    """Before its first verdict a VM is summed up by its worst checks; a guest's check may
    come without a message (the schema allows it): the finding still carries text, as the
    verdict's finding of that check would, never a null message."""
    store = open_store(StorageConfig(url="sqlite:///%s" % os.path.join(str(tmp_path), "db")))
    try:
        store.migrate()
        store.ingest([envelope(1, 0, 1000.0, checks=[("svc:httpd", "critical", None),
                                                     ("fs.fill:/", "warning", "/ is full")])])
        (row,) = store.summaries()
        found = worst_findings({}, row)
    finally:
        store.close()
    assert [(f["code"], f["status"], f["message"]) for f in found] == [
        ("check:svc:httpd", "critical", "svc:httpd"),
        ("check:fs.fill:/", "warning", "/ is full")]
