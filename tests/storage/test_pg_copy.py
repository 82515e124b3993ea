"""The samples' COPY stream packed by hand (``copy_samples_data``) stores exactly what
psycopg's own ``write_row`` stores, on a real PostgreSQL server."""

from __future__ import annotations

import math
import random
import sys

import psycopg
import pytest

from engine_plugin.storage.postgres_store import copy_samples_data

pytestmark = pytest.mark.postgres

EDGES = [(1, 1, 0.0, 0.0), (2**31 - 1, 2**31 - 1, -0.0, -0.0),
         (7, 3, 1.7976931348623157e308, -1.7976931348623157e308),
         (7, 4, 5e-324, -5e-324), (8, 1, 1796270400.123456, 2**63 * 1.0),
         (9, 2, -1e-300, 1.0 / 3.0), (10, 5, sys.float_info.epsilon, 123456789.0),
         (11, 6, 1e9, 7)]  # an int value, as a caller might pass


def test_packed_copy_stores_what_write_row_stores(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(16)
    rows = EDGES + [(rng.randint(1, 2**31 - 1), rng.randint(1, 2**31 - 1),
                     rng.uniform(-1e12, 1e12), rng.uniform(-1e300, 1e300))
                    for _ in range(2000)]
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("by_row", "packed"):
            conn.execute("CREATE TABLE %s (n serial, vm_key int4, metric_id int4, t float8,"
                         " value float8)" % table)
        with conn.cursor() as cur:
            with cur.copy("COPY by_row (vm_key, metric_id, t, value) FROM STDIN"
                          " (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int4", "float8", "float8"])
                for row in rows:
                    copy.write_row(row)
            with cur.copy("COPY packed (vm_key, metric_id, t, value) FROM STDIN"
                          " (FORMAT BINARY)") as copy:
                copy.write(copy_samples_data(rows))
            with cur.copy("COPY packed (vm_key, metric_id, t, value) FROM STDIN"
                          " (FORMAT BINARY)") as copy:
                copy.write(copy_samples_data([]))  # no rows: header and trailer only
        by_row = conn.execute("SELECT vm_key, metric_id, t, value FROM by_row ORDER BY n"
                              ).fetchall()
        packed = conn.execute("SELECT vm_key, metric_id, t, value FROM packed ORDER BY n"
                              ).fetchall()
    assert len(packed) == len(rows)
    assert packed == by_row
    # bit for bit, the sign of zero included
    assert [tuple(math.copysign(1.0, x) if x == 0 else x for x in r) for r in packed] == \
        [tuple(math.copysign(1.0, x) if x == 0 else x for x in r) for r in by_row]
    assert [(float(r[2]), float(r[3])) for r in packed] == [(float(r[2]), float(r[3]))
                                                             for r in rows]
