"""The engine's answer to a relay's upload, per envelope (docs/design.md, "Ingest answer").

``POST /ingest/v1/reports`` with ``{"envelopes": [...]}`` is answered 200 whenever the body
parsed as a batch, with one result per envelope in the same order::

    {"results": [{"outcome": "stored"} | {"outcome": "duplicate"}
                 | {"outcome": "refused", "reason": <REFUSED reason>, "message": <text>}
                 | {"outcome": "retry", "reason": <RETRY reason>}, ...],
     "stored": n, "duplicates": n, "refused": n, "retry": n}

"refused" is for good (the relay drops the envelope and counts it); "retry" is transient
(the relay keeps it and sends it again later, without holding up the others).
"""

from .schema import INVALID, OUT_OF_RANGE

ROUTE = "/ingest/v1/reports"

STORED = "stored"
DUPLICATE = "duplicate"
REFUSED = "refused"
RETRY = "retry"
OUTCOMES = (STORED, DUPLICATE, REFUSED, RETRY)

# Reasons of "refused": INVALID, the envelope does not follow the schema (shape, types, sizes,
# depth); OUT_OF_RANGE, a number outside the range the contract gives it (constants.py).
#: the sending host does not hold the VM, nor held it within the migration window
NOT_THIS_HOST = "not_this_host"
#: ``[ingest] host_identity = strict`` and host_id differs from the certificate's CN
HOST_MISMATCH = "host_mismatch"
#: the store cannot hold the report although it passed validation (a gap in the contract)
UNSTORABLE = "unstorable"
REFUSED_REASONS = (INVALID, OUT_OF_RANGE, NOT_THIS_HOST, HOST_MISMATCH, UNSTORABLE)

# Reasons of "retry".
#: the engine does not know yet where oVirt runs the VM (its directory is being refreshed)
PLACEMENT_PENDING = "placement_pending"
RETRY_REASONS = (PLACEMENT_PENDING,)
