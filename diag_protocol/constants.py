"""Names and limits that every part of vmdiag agrees on (DESIGN.md, "Wire protocol")."""

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

SECTIONS = ("network", "resources", "applications", "settings", "checks")
MESSAGE_TYPES = ("hello", "report", "heartbeat", "request", "reply")
ALLOWED_METHODS = ("ping", "report.now", "checks.run", "config.get")
CHECK_STATUSES = ("ok", "warning", "critical", "unknown")


def host_socket_path(vm_id: str, channels_dir: str = HOST_CHANNELS_DIR) -> str:
    """The host side socket of a VM's channel (the pattern oVirt uses for its own)."""
    return "%s/%s.%s" % (channels_dir.rstrip("/"), vm_id, CHANNEL_NAME)
