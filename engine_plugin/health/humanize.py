"""Short, readable durations and sizes for messages a person acts on.

The one humaniser of the project lives in ``diag_protocol.units`` (the pages, the CLIs and
these messages all say "1 d 12 h" and "4.5 GiB"); these names are kept for the callers.
"""

from diag_protocol.units import fmt_bytes as size
from diag_protocol.units import fmt_seconds as duration

__all__ = ["duration", "size"]
