"""Names and limits that every part of vmdiag agrees on (DESIGN.md, "Wire protocol")."""


from .vocabulary import STATUSES

PROTOCOL_VERSION = 1
#: Versions this code can speak; a peer's ``hello`` lists its own and the highest common one wins.
SUPPORTED_VERSIONS = (1,)

CHANNEL_NAME = "org.vmdiag.agent.0"
GUEST_DEVICE = "/dev/virtio-ports/" + CHANNEL_NAME
HOST_CHANNELS_DIR = "/var/lib/libvirt/qemu/channels"

#: A line longer than this is dropped whole; the decoder resumes at the next newline.
MAX_LINE_BYTES = 1 << 20
#: Nesting depth of any message (objects and arrays both count).
MAX_DEPTH = 16
#: Strings are cut to this many characters after cleaning; schema fields may cap them lower.
MAX_STRING = 4096
#: Any list or object not capped more tightly by the schema.
MAX_ITEMS = 20000

# Ranges of every number a receiver may store (docs/design.md, "Ranges of numbers"). The schema
# applies them, so the relay refuses an out-of-range report and the engine an out-of-range
# envelope (reason ``out_of_range``), before any of them reaches a database column.

#: ``seq``: 0 .. 2**53 - 1, exact in a double and in JavaScript, and within a signed 64-bit
#: column (PostgreSQL ``bigint``, SQLite ``INTEGER``).
MAX_SEQ = 2**53 - 1
#: Times in seconds since the epoch (a report's ``time``, a section's ``collected_at``, a
#: heartbeat's ``time``, an envelope's ``received_at``): 1970-01-01 .. 2100-01-01 UTC. A guest
#: whose clock is unset (1970) is still heard; the engine orders by its own receive time.
MIN_TIME = 0
MAX_TIME = 4102444800
#: Counters and sizes (bytes, packets, pids, counts): 0 .. 2**63 - 1, a signed 64-bit integer.
MAX_COUNT = 2**63 - 1
#: Any other number (rates, percentages, offsets, durations): within +/- (2**63 - 1), so that
#: it fits a signed 64-bit integer when it is one, and is finite as a double.
MAX_NUMBER = 2**63 - 1

#: A request's ``id`` (host to guest): what the host chooses and the reply echoes.
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ID_SHAPE = "a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -"
#: A request whose id is an integer (as JSON-RPC and QMP clients send) is not served, but its
#: id can be echoed: the reply ``bad_request`` carries it back, so the sender is not left
#: waiting. Integers up to 2**53 - 1 either way, exact in a double and in JavaScript.
MAX_ECHO_ID = 2**53 - 1

SECTIONS = ("network", "resources", "applications", "settings", "checks")
MESSAGE_TYPES = ("hello", "report", "heartbeat", "request", "reply", "ack")
#: The capability an agent lists in its ``hello`` when it keeps unacknowledged reports and
#: understands ``ack`` (host to guest); a relay acknowledges reports only to such an agent.
ACK_CAPABILITY = "ack"
ALLOWED_METHODS = ("ping", "report.now", "checks.run", "config.get")
#: The statuses a check result may have: the shared vocabulary's (vocabulary.py).
CHECK_STATUSES = STATUSES


def host_socket_path(vm_id: str, channels_dir: str = HOST_CHANNELS_DIR) -> str:
    """The host side socket of a VM's channel (the pattern oVirt uses for its own)."""
    return "%s/%s.%s" % (channels_dir.rstrip("/"), vm_id, CHANNEL_NAME)


def is_uuid(value: str) -> bool:
    """True when ``value`` is a UUID (how oVirt names VMs and hosts)."""
    import uuid  # here: uuid loads the platform module, which the guest agent never needs

    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True
