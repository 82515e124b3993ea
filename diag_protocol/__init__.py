"""vmdiag wire protocol, version 1: framing, message kinds, schema, limits, and the shared
vocabulary (statuses, their order, units of every report field) (stdlib only).

Everything a guest sends is untrusted: use ``LineDecoder`` to turn bytes into validated,
cleaned messages, and ``encode`` to write them. See DESIGN.md, "Wire protocol".
"""

from .acks import ACK_TIMEOUT, UNACKED_MAX_BYTES, UNACKED_MAX_MESSAGES, Unacked
from .clean import clean, clean_string
from .constants import (
    ACK_CAPABILITY,
    ALLOWED_METHODS,
    CHANNEL_NAME,
    CHECK_STATUSES,
    GUEST_DEVICE,
    HOST_CHANNELS_DIR,
    ID_PATTERN,
    ID_SHAPE,
    MAX_COUNT,
    MAX_DEPTH,
    MAX_ECHO_ID,
    MAX_LINE_BYTES,
    MAX_NUMBER,
    MAX_SEQ,
    MAX_STRING,
    MAX_TIME,
    MESSAGE_TYPES,
    MIN_TIME,
    PROTOCOL_VERSION,
    SECTIONS,
    SUPPORTED_VERSIONS,
    host_socket_path,
    is_uuid,
)
from .errors import ProtocolError
from .framing import (
    LineDecoder,
    decode_line,
    encode,
    loads,
    validate,
    validate_envelope,
    wrap_report,
)
from .messages import (
    make_ack,
    make_envelope,
    make_heartbeat,
    make_hello,
    make_reply,
    make_report,
    make_request,
)
from .schema import INVALID, OUT_OF_RANGE, SCHEMA, negotiate
from .units import FIELDS, UNITS, format_field, format_value, prometheus_name, unit_of
from .vocabulary import EXIT_CODES, NOT_OK, RANK, STATUSES, WORST_FIRST, status_of, worst

__all__ = [
    "ALLOWED_METHODS", "CHANNEL_NAME", "CHECK_STATUSES", "GUEST_DEVICE", "HOST_CHANNELS_DIR",
    "MAX_COUNT", "MAX_DEPTH", "MAX_LINE_BYTES", "MAX_NUMBER", "MAX_SEQ", "MAX_STRING",
    "MAX_TIME", "MIN_TIME", "INVALID", "OUT_OF_RANGE", "MESSAGE_TYPES", "PROTOCOL_VERSION",
    "SECTIONS",
    "SUPPORTED_VERSIONS", "SCHEMA", "LineDecoder", "ProtocolError", "clean", "clean_string",
    "decode_line", "encode", "host_socket_path", "loads", "make_envelope", "make_heartbeat",
    "make_hello", "make_reply", "make_report", "make_request", "negotiate", "validate",
    "validate_envelope", "wrap_report",
    # acknowledged reports (acks.py)
    "ACK_CAPABILITY", "ACK_TIMEOUT", "UNACKED_MAX_BYTES", "UNACKED_MAX_MESSAGES", "Unacked",
    "make_ack",
    # the shared vocabulary (vocabulary.py) and units (units.py)
    "EXIT_CODES", "FIELDS", "ID_PATTERN", "ID_SHAPE", "MAX_ECHO_ID", "NOT_OK", "RANK",
    "STATUSES", "UNITS", "WORST_FIRST", "format_field",
    "format_value", "is_uuid", "prometheus_name", "status_of", "unit_of", "worst",
]
