"""Agent configuration: /etc/vmdiag/agent.conf plus agent.conf.d/*.conf, read in sorted order.

Every option is declared once below with its type, default, allowed range and doc (the way
vdsm's ``config.py.in`` does it), so the parser, the error messages, ``config.get`` and the
documentation cannot drift apart. A bad value raises ``ConfigError`` naming the file, the
``[section] key`` and what is allowed, because an agent that silently falls back to defaults
hides the admin's mistake until the day the threshold mattered.

Unknown sections and keys are not fatal (a newer config file must not stop an older agent);
they are collected in ``AgentConfig.warnings`` and logged at start.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple

from diag_protocol import GUEST_DEVICE

#: Where the agent reads its configuration unless ``--config`` or this variable says otherwise.
DEFAULT_CONFIG_PATH = "/etc/vmdiag/agent.conf"
CONFIG_ENV = "VMDIAG_AGENT_CONFIG"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """A configuration value cannot be used; the message names file, key and what is allowed."""


class Option(NamedTuple):
    """One declared option. ``kind`` is int, float, bool, str, list, choice, targets or urls."""

    section: str
    key: str
    kind: str
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: Tuple[str, ...] = ()

    def allowed(self) -> str:
        """What a valid value looks like, for error messages and docs."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "yes or no"
        if self.kind in ("int", "float"):
            what = "an integer" if self.kind == "int" else "a number"
            if self.minimum is not None and self.maximum is not None:
                return "%s from %s to %s" % (what, _num(self.minimum), _num(self.maximum))
            if self.minimum is not None:
                return "%s of at least %s" % (what, _num(self.minimum))
            return what
        if self.kind == "list":
            return "a comma-separated list"
        if self.kind == "targets":
            return "a comma-separated list of host:port (IPv6 as [addr]:port)"
        if self.kind == "urls":
            return "a comma-separated list of http:// or https:// URLs"
        return "a string"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_o = Option
OPTIONS: Tuple[Option, ...] = (
    # [agent]
    _o("agent", "interval", "float", 60.0, "Seconds between two full reports.", 0.01, 86400),
    _o("agent", "heartbeat_interval", "float", 15.0,
      "Seconds between heartbeats, so the host can tell a hung agent from a slow one.",
      0.01, 3600),
    _o("agent", "device", "str", GUEST_DEVICE,
      "The virtio-serial port. At the default, the agent also finds the port by scanning "
      "/sys/class/virtio-ports when the udev symlink is missing."),
    _o("agent", "log_level", "choice", "INFO", "Logging threshold.", choices=LOG_LEVELS),
    _o("agent", "queue_max_messages", "int", 16,
      "Messages held while the host does not read; the oldest report goes first.", 1, 10000),
    _o("agent", "queue_max_bytes", "int", 8 << 20,
      "Bytes held while the host does not read.", 4096, 256 << 20),
    _o("agent", "events", "bool", True,
       "Report at once, between intervals, when a watched unit or process fails or a file "
       "system turns read-only or critically full."),
    _o("agent", "event_poll_interval", "float", 2.0,
       "Seconds between two looks at the watched processes and the file systems (unit "
       "changes come from systemd's signals as they happen).", 0.1, 3600),
    _o("agent", "event_min_interval", "float", 10.0,
       "At least this many seconds between two reports sent for events; what happens in "
       "between is sent together at the end of the gap.", 0.1, 86400),
    # [watch]
    _o("watch", "units", "list", (), "systemd units that must be active, e.g. sshd.service."),
    _o("watch", "processes", "list", (), "Process names that must be running, e.g. postgres."),
    # [probes]
    _o("probes", "dns_names", "list", (), "Names to resolve through the configured resolvers."),
    _o("probes", "tcp_targets", "targets", (), "host:port pairs that must accept connections."),
    _o("probes", "http_targets", "urls", (), "URLs that must answer below HTTP 500."),
    _o("probes", "timeout", "float", 2.0, "Seconds each probe may take.", 0.1, 30),
    _o("probes", "gateway", "bool", True,
       "Probe the default gateway (ICMP echo, else a TCP connect) with every report."),
    # [settings]
    _o("settings", "sysctls", "list",
      ("vm.swappiness", "vm.overcommit_memory", "net.ipv4.ip_forward", "kernel.panic",
       "fs.file-max"),
      "Kernel settings to report."),
    # [collect]
    _o("collect", "top_n", "int", 5, "Processes listed in top_cpu and top_memory.", 0, 100),
    _o("collect", "packages_interval", "float", 3600.0,
      "Seconds between two full package inventories (the digest is sent every report).",
      60, 604800),
    _o("collect", "packages_cache", "str", "/var/cache/vmdiag/packages.json",
       "Where the package inventory is kept, so an agent start with no package change since "
       "needs no package manager run; used only when its folder exists (the unit's "
       "CacheDirectory=). Empty: no cache."),
    _o("collect", "listening_interval", "float", 60.0,
      "Seconds between two scans of listening sockets.", 1, 86400),
    _o("collect", "top_interval", "float", 60.0,
       "Seconds between two scans for the top CPU and memory processes.", 1, 86400),
    _o("collect", "timesync_interval", "float", 300.0,
       "Seconds between two reads of the clock synchronisation state (chronyc, timedatectl).",
       1, 86400),
    # [thresholds]
    _o("thresholds", "fs_warning_percent", "float", 85.0, "File system fill that warns.", 1, 100),
    _o("thresholds", "fs_critical_percent", "float", 95.0, "File system fill that is critical.",
      1, 100),
    _o("thresholds", "inode_warning_percent", "float", 85.0, "Inode use that warns.", 1, 100),
    _o("thresholds", "inode_critical_percent", "float", 95.0, "Inode use that is critical.",
      1, 100),
    _o("thresholds", "steal_warning_percent", "float", 10.0,
      "CPU time stolen by the hypervisor that warns.", 0.1, 100),
    _o("thresholds", "steal_critical_percent", "float", 25.0,
      "CPU time stolen by the hypervisor that is critical.", 0.1, 100),
    _o("thresholds", "swap_storm_pages_per_s", "float", 1000.0,
      "Pages swapped in plus out per second that warns of a swap storm.", 1, 10000000),
    _o("thresholds", "swap_storm_critical_pages_per_s", "float", 10000.0,
      "Pages swapped in plus out per second that is critical.", 1, 10000000),
    _o("thresholds", "memory_pressure_warning_percent", "float", 10.0,
      "PSI memory 'some' avg60: share of time some task waited for memory that warns.", 0.1, 100),
    _o("thresholds", "memory_pressure_critical_percent", "float", 5.0,
      "PSI memory 'full' avg60: share of time all tasks waited for memory that is critical.",
      0.1, 100),
    _o("thresholds", "time_offset_warning_ms", "float", 500.0,
      "Clock offset from the time source that warns.", 1, 86400000),
    _o("thresholds", "time_offset_critical_ms", "float", 5000.0,
      "Clock offset from the time source that is critical.", 1, 86400000),
)
del _o

#: Pairs that must be ordered (warning below critical) for the thresholds to mean anything.
ORDERED_PAIRS = (
    ("fs_warning_percent", "fs_critical_percent"),
    ("inode_warning_percent", "inode_critical_percent"),
    ("steal_warning_percent", "steal_critical_percent"),
    ("swap_storm_pages_per_s", "swap_storm_critical_pages_per_s"),
    ("time_offset_warning_ms", "time_offset_critical_ms"),
)

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")
_BY_NAME: Dict[Tuple[str, str], Option] = {(o.section, o.key): o for o in OPTIONS}
_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d+)$")


def _split(text: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in text.replace("\n", ",").split(",") if item.strip())


def _parse_number(opt: Option, text: str) -> float:
    try:
        value = int(text, 10) if opt.kind == "int" else float(text)
    except ValueError:
        raise ValueError("%r is not %s" % (text, opt.allowed())) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("%r is not %s" % (text, opt.allowed()))
    if (opt.minimum is not None and value < opt.minimum) or (
            opt.maximum is not None and value > opt.maximum):
        raise ValueError("%s is out of range; use %s" % (text, opt.allowed()))
    return value


def _parse_targets(opt: Option, text: str) -> Tuple[str, ...]:
    items = _split(text)
    for item in items:
        m = _HOSTPORT.match(item)
        if not m or not 1 <= int(m.group("port")) <= 65535:
            raise ValueError("%r is not host:port with a port from 1 to 65535; use %s"
                             % (item, opt.allowed()))
    return items


def _parse_urls(opt: Option, text: str) -> Tuple[str, ...]:
    # Imported here: only a configuration with http_targets needs URL parsing.
    import urllib.parse

    items = _split(text)
    for item in items:
        parts = urllib.parse.urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("%r is not an http:// or https:// URL with a host; use %s"
                             % (item, opt.allowed()))
    return items


def parse_value(opt: Option, text: str) -> Any:
    """Convert the text of ``opt`` from a file; raise ValueError saying what is allowed."""
    text = text.strip()
    if opt.kind in ("int", "float"):
        return _parse_number(opt, text)
    if opt.kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("%r is not %s" % (text, opt.allowed()))
    if opt.kind == "choice":
        upper = text.upper()
        if upper not in opt.choices:
            raise ValueError("%r is not %s" % (text, opt.allowed()))
        return upper
    if opt.kind == "list":
        return _split(text)
    if opt.kind == "targets":
        return _parse_targets(opt, text)
    if opt.kind == "urls":
        return _parse_urls(opt, text)
    if not text:
        raise ValueError("the value is empty; give %s or remove the line" % opt.allowed())
    return text


def config_files(path: str) -> List[str]:
    """The main file (if present) and then its ``.d/*.conf`` drop-ins in sorted order."""
    files = [path] if os.path.isfile(path) else []
    dropin_dir = path + ".d"
    files.extend(sorted(glob.glob(os.path.join(glob.escape(dropin_dir), "*.conf"))))
    return files


class AgentConfig:
    """The effective configuration: declared defaults overridden by the files, in order."""

    def __init__(self, values: Dict[Tuple[str, str], Any] | None = None,
                 sources: Dict[Tuple[str, str], str] | None = None,
                 files: List[str] | None = None, warnings: List[str] | None = None) -> None:
        self.values = {} if values is None else values
        self.sources = {} if sources is None else sources
        self.files = [] if files is None else files
        self.warnings = [] if warnings is None else warnings

    def __repr__(self) -> str:
        return "AgentConfig(files=%r, overridden=%r)" % (self.files, sorted(self.sources))

    def get(self, section: str, key: str) -> Any:
        if (section, key) not in _BY_NAME:
            raise KeyError("no option [%s] %s is declared" % (section, key))
        return self.values.get((section, key), _BY_NAME[(section, key)].default)

    def section(self, section: str) -> Dict[str, Any]:
        return {o.key: self.get(section, o.key) for o in OPTIONS if o.section == section}

    @property
    def interval(self) -> float:
        return float(self.get("agent", "interval"))

    @property
    def heartbeat_interval(self) -> float:
        return float(self.get("agent", "heartbeat_interval"))

    @property
    def device(self) -> str:
        return str(self.get("agent", "device"))

    @property
    def thresholds(self) -> Dict[str, float]:
        return {k: float(v) for k, v in self.section("thresholds").items()}

    def with_overrides(self, overrides: Mapping[Tuple[str, str], Any]) -> AgentConfig:
        """A copy with already-parsed values replaced (command-line flags such as --device)."""
        values = dict(self.values)
        sources = dict(self.sources)
        for name, value in overrides.items():
            if name not in _BY_NAME:
                raise KeyError("no option [%s] %s is declared" % name)
            values[name] = value
            sources[name] = "command line"
        return AgentConfig(values, sources, list(self.files), list(self.warnings))

    def effective(self) -> Dict[str, Any]:
        """Every option with its value and where it came from, for ``config.get`` and the CLI.

        Nothing here is secret (the agent holds no credentials), but the values are copied into
        plain JSON types so a reply can never carry an internal object.
        """
        out: Dict[str, Any] = {}
        for opt in OPTIONS:
            value = self.get(opt.section, opt.key)
            if isinstance(value, tuple):
                value = list(value)
            out.setdefault(opt.section, {})[opt.key] = value
        return {"options": out, "files": list(self.files),
                "overridden": sorted("%s.%s" % k for k in self.sources)}

    def collector_options(self, **overrides: Any) -> Any:
        """The ``CollectorOptions`` the collectors take, built from this configuration.

        ``overrides`` set fields that are not configuration, such as the ``machine`` to read.
        """
        from guest_agent.collectors.options import CollectorOptions

        fields: Dict[str, Any] = dict(
            watched_units=list(self.get("watch", "units")),
            watched_processes=list(self.get("watch", "processes")),
            dns_names=list(self.get("probes", "dns_names")),
            tcp_targets=list(self.get("probes", "tcp_targets")),
            http_targets=list(self.get("probes", "http_targets")),
            sysctls=list(self.get("settings", "sysctls")),
            top_n=int(self.get("collect", "top_n")),
            probe_timeout_s=float(self.get("probes", "timeout")),
            packages_interval_s=float(self.get("collect", "packages_interval")),
            packages_cache=str(self.get("collect", "packages_cache")),
            listening_interval_s=float(self.get("collect", "listening_interval")),
            top_interval_s=float(self.get("collect", "top_interval")),
            timesync_interval_s=float(self.get("collect", "timesync_interval")),
            probe_gateway=bool(self.get("probes", "gateway")),
        )
        fields.update(overrides)
        return CollectorOptions(**fields)


def _read_file(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#", ";"),
                                          inline_comment_prefixes=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=path)
    except UnicodeDecodeError as err:
        raise ConfigError("%s: is not UTF-8 text (%s); save it as UTF-8" % (path, err)) from err
    except configparser.Error as err:
        raise ConfigError("%s: is not a valid INI file: %s; fix the line it names"
                          % (path, str(err).replace("\n", " "))) from err
    except OSError as err:
        raise ConfigError("%s: cannot be read (%s); check its permissions"
                          % (path, err.strerror or err)) from err
    return parser


def _check_order(cfg: AgentConfig) -> None:
    for low, high in ORDERED_PAIRS:
        lo, hi = cfg.get("thresholds", low), cfg.get("thresholds", high)
        if lo > hi:
            where = cfg.sources.get(("thresholds", high)) or cfg.sources.get(
                ("thresholds", low)) or "defaults"
            raise ConfigError("%s: [thresholds] %s (%s) is above %s (%s); the warning level must "
                              "not exceed the critical level" % (where, low, _num(lo), high,
                                                                 _num(hi)))


def load_config(path: str | None = None,
                files: Sequence[str] | None = None) -> AgentConfig:
    """Read the configuration; ``path`` defaults to $VMDIAG_AGENT_CONFIG, then /etc/vmdiag.

    A missing main file is fine (defaults apply); an unreadable or invalid one is not.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    cfg = AgentConfig()
    cfg.files = list(files) if files is not None else config_files(path)
    for name in cfg.files:
        parser = _read_file(name)
        for section in parser.sections():
            known = sorted({o.key for o in OPTIONS if o.section == section})
            if not known:
                cfg.warnings.append("%s: unknown section [%s] ignored; known sections: %s"
                                    % (name, section, ", ".join(sorted({o.section for o in
                                                                        OPTIONS}))))
                continue
            for key, text in parser.items(section):
                opt = _BY_NAME.get((section, key))
                if opt is None:
                    cfg.warnings.append("%s: unknown option [%s] %s ignored; known options: %s"
                                        % (name, section, key, ", ".join(known)))
                    continue
                try:
                    cfg.values[(section, key)] = parse_value(opt, text)
                except ValueError as err:
                    raise ConfigError("%s: [%s] %s: %s" % (name, section, key, err)) from None
                cfg.sources[(section, key)] = name
    _check_order(cfg)
    return cfg


def describe_options(out: Callable[[str], Any] = print) -> None:
    """Write an annotated default agent.conf (used for docs and packaging)."""
    section = None
    for opt in OPTIONS:
        if opt.section != section:
            section = opt.section
            out("\n[%s]" % section)
        default = opt.default
        if isinstance(default, tuple):
            default = ", ".join(default)
        elif isinstance(default, bool):
            default = "yes" if default else "no"
        elif isinstance(default, float):
            default = _num(default)
        out("# %s Allowed: %s." % (opt.doc, opt.allowed()))
        out("#%s = %s" % (opt.key, default))
