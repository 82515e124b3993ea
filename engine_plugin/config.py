"""Configuration of the engine service: ``/etc/vmdiag/engine.conf`` plus ``engine.conf.d/*.conf``.

Every option is declared exactly once below, with its type, default, allowed values and a
sentence of documentation (the habit of vdsm's ``config.py.in``), so the parser, the error
messages and ``vmdiag-engine config`` (which prints the effective values) share one source.
Drop-ins are read in sorted order and later files win. An unknown section or key is an error,
not a silent no-op: a typo in ``[ingest] cert`` must not make the service start without TLS.

Health thresholds are the exception: ``[health]``, ``[health:cluster:<name>]`` and
``[health:vm:<name or id>]`` hold the keys of ``engine_plugin.health.Thresholds`` (declared
there, once) and are validated by it; ``Config.thresholds_for`` resolves them for one VM.
"""

from __future__ import annotations

import configparser
import glob
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

DEFAULT_PATH = "/etc/vmdiag/engine.conf"


class ConfigError(ValueError):
    """A configuration file cannot be used; the message names the file, key and what to write."""


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected one of yes, no, true, false, on, off, 1, 0")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 90, 90s, 15m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parse_list(text: str) -> List[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_networks(text: str) -> List[str]:
    nets = []
    for item in _parse_list(text):
        nets.append(str(ipaddress.ip_network(item, strict=False)))
    return nets


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("expected a TCP port between 0 and 65535")
    return port


def _parse_positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("expected a number above 0")
    return value


def _parse_workers(text: str) -> int:
    """``auto`` (-1: one per core) or a count of processes, 0 for none."""
    if text == "auto":
        return -1
    value = int(text)
    if value < 0:
        raise ValueError("expected auto or a number of processes, 0 or more")
    return value


def _parse_processes(text: str) -> int:
    """``auto`` (-1: one per core this process may use) or a count of processes, 1 or more."""
    if text == "auto":
        return -1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("expected auto or a number of processes, 1 or more")
    return value


PARSERS: Dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "port": _parse_port,
    "float": float,
    "positive": _parse_positive,
    "percent": float,
    "bool": _parse_bool,
    "duration": _parse_duration,
    "list": _parse_list,
    "networks": _parse_networks,
    "workers": _parse_workers,
    "processes": _parse_processes,
}


@dataclass(frozen=True)
class Option:
    section: str
    key: str
    kind: str
    default: str
    doc: str
    allowed: Tuple[str, ...] | None = None


OPTIONS: Tuple[Option, ...] = (
    Option("api", "listen", "str", "127.0.0.1",
           "Address of the API/UI listener; Apache proxies /vmdiag/ to it: keep it on loopback."),
    Option("api", "port", "port", "8790", "Port of the API/UI listener."),
    Option("api", "prefix", "str", "/vmdiag", "URL prefix of every API/UI route."),
    Option("ingest", "listen", "str", "0.0.0.0",
           "Address of the TLS listener the host relays upload to."),
    Option("ingest", "port", "port", "8791", "Port of the TLS ingest listener."),
    Option("ingest", "cert", "str", "/etc/pki/ovirt-engine/certs/vmdiag.cer",
           "Server certificate (PEM) of the ingest listener, signed by the engine CA."),
    Option("ingest", "key", "str", "/etc/pki/ovirt-engine/keys/vmdiag.key.nopass",
           "Private key (PEM, unencrypted) of the ingest server certificate."),
    Option("ingest", "ca", "str", "/etc/pki/ovirt-engine/ca.pem",
           "CA that must have signed every relay's client certificate (the engine CA)."),
    Option("ingest", "reuse_port", "bool", "no",
           "Let several vmdiag-engine processes listen on the same ingest address "
           "(SO_REUSEPORT; the kernel hands each new relay connection to one of them). "
           "With 'no' a second process on the address fails to start."),
    Option("ingest", "processes", "processes", "auto",
           "Processes that take relay connections (TLS, decoding, validation, storing), so "
           "ingest uses every core: 'auto' one per core this process may use, 1 the "
           "service's own process only. The service starts the others, which listen on "
           "the same address (SO_REUSEPORT) and do nothing but ingest, and restarts one "
           "that dies."),
    Option("ingest", "max_body_bytes", "int", "33554432",
           "Largest accepted upload body; a relay splits bigger spools into several batches."),
    Option("ingest", "max_envelopes", "int", "500", "Most envelopes accepted in one batch."),
    Option("ingest", "host_identity", "str", "certificate",
           "Which host an envelope is recorded under: 'certificate' replaces the envelope's "
           "host_id with the client certificate's subject CN; 'strict' rejects envelopes whose "
           "host_id differs from it.", ("certificate", "strict")),
    Option("ingest", "ownership", "str", "ovirt",
           "Which VMs a host may report: 'ovirt' accepts a host's reports only for VMs oVirt "
           "runs on it or ran on it within migration_window (needs the [ovirt] service "
           "account; without one every host may report every VM); 'any' accepts every VM "
           "from every host with an engine-CA certificate.", ("ovirt", "any")),
    Option("ingest", "migration_window", "duration", "1h",
           "How long a host may still report a VM after oVirt moved it elsewhere or stopped "
           "it (what its relay spooled before the migration)."),
    Option("ingest", "max_clock_skew", "duration", "60",
           "A relay's receive time further ahead of the engine's clock than this is counted "
           "and logged as a fast relay clock; any relay time ahead of the engine's is stored "
           "as the engine's time."),
    Option("storage", "url", "str", "sqlite:////var/lib/vmdiag/vmdiag.db",
           "Store URL: sqlite:////absolute/path.db or postgresql://user@host/db."),
    Option("storage", "raw_retention", "duration", "48h",
           "How long raw samples are kept before only 5-minute rollups remain."),
    Option("storage", "rollup_retention", "duration", "30d", "How long 5-minute rollups are kept."),
    Option("storage", "vm_retention", "duration", "30d",
           "How long a VM that stopped reporting is remembered at all."),
    Option("storage", "retention_interval", "duration", "1h",
           "How often the running service applies retention."),
    Option("storage", "max_series_per_vm", "int", "5000",
           "Most time series (metric names: fixed ones plus one per mountpoint, interface "
           "and top process name) one VM may have; samples that would start a new series "
           "beyond it are dropped and counted, the report itself is stored. Series not "
           "reported for longer than rollup_retention are dropped by retention."),
    Option("ovirt", "url", "str", "https://localhost/ovirt-engine/api",
           "oVirt REST API base URL used for permission checks and events."),
    Option("ovirt", "ca_file", "str", "/etc/pki/ovirt-engine/ca.pem",
           "CA bundle that signed the engine's HTTPS certificate."),
    Option("ovirt", "user", "str", "",
           "The service's own oVirt account (e.g. vmdiag@internal), used only to add events."),
    Option("ovirt", "password", "str", "", "Password of [ovirt] user (prefer password_file)."),
    Option("ovirt", "password_file", "str", "",
           "File whose first line is the password of [ovirt] user (mode 0600)."),
    Option("ovirt", "token_file", "str", "",
           "File holding an SSO token for the service account, instead of user/password."),
    Option("ovirt", "visibility_cache_ttl", "duration", "30",
           "Seconds an answer of the engine about what a user may see is reused as it is; "
           "after that it is read again in the background."),
    Option("ovirt", "visibility_max_age", "duration", "600",
           "Seconds after which a user's list of VMs is no longer shown while it is read "
           "again (the request waits for the engine)."),
    Option("ovirt", "timeout", "positive", "15", "Seconds before a request to the engine fails."),
    Option("ovirt", "workers", "int", "8", "Threads that talk to the engine (ovirtsdk4 blocks)."),
    Option("events", "enabled", "bool", "yes",
           "Raise oVirt external events when a VM's health or forecast changes."),
    Option("events", "retry_interval", "duration", "60",
           "Seconds between delivery attempts of events the engine did not accept yet."),
    Option("events", "min_status", "str", "warning",
           "Least severe status that raises an event on entering it; leaving such a status "
           "raises one too (a recovery).", ("warning", "critical")),
    Option("evaluation", "workers", "workers", "auto",
           "Processes that evaluate VMs for the health pass (read their history, compute "
           "verdicts and forecasts), so a pass uses every core and never holds the service's "
           "own process: 'auto' one per core, 0 evaluates in the service's own "
           "process as before issue 16."),
    Option("metrics", "allow", "networks", "127.0.0.1/32,::1/128",
           "CIDRs allowed to scrape /vmdiag/metrics (it needs no user token)."),
    Option("metrics", "fleet", "bool", "no",
           "Add each VM's health and forecast time left, by VM id, to /vmdiag/metrics (every "
           "VM, whatever the scraper's oVirt users may see; docs/prometheus.md)."),
    Option("metrics", "max_vms", "int", "5000",
           "Most VMs in the fleet metrics (by id); the rest are counted, not shown."),
)

_INDEX: Dict[Tuple[str, str], Option] = {(o.section, o.key): o for o in OPTIONS}
#: Keys renamed for the shared vocabulary (a level is a "status"; docs/design.md): the old name
#: still works, with a warning naming the file and the new name.
RENAMED: Dict[Tuple[str, str], str] = {("events", "min_severity"): "min_status"}


class Section:
    """The values of one section, read as attributes: ``config.api.port``."""

    def __init__(self, name: str, values: Dict[str, Any]) -> None:
        self._name = name
        self._values = values

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError("no option [%s] %s" % (self._name, key)) from None

    def as_dict(self) -> Dict[str, Any]:
        return dict(self._values)


class Config:
    """Typed, validated configuration; ``sources`` lists the files it was read from."""

    def __init__(self, values: Dict[str, Dict[str, Any]], sources: Sequence[str],
                 health: Dict[str, Any] | None = None,
                 warnings: Sequence[str] = ()) -> None:
        self._values = values
        self.sources = list(sources)
        self._health: Dict[str, Any] = health or {}
        #: What the files say that still works but should change (retired keys), to be logged.
        self.warnings = list(warnings)

    def __getattr__(self, section: str) -> Section:
        if section.startswith("_") or section not in self._values:
            raise AttributeError(section)
        return Section(section, self._values[section])

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def as_dict(self) -> Dict[str, Dict[str, Any]]:
        return {name: dict(values) for name, values in self._values.items()}

    def thresholds_for(self, vm_id: str | None = None, vm_name: str | None = None,
                       cluster: str | None = None) -> Any:
        """The ``Thresholds`` of one VM: [health], then its cluster's keys, then its own."""
        from .health import Thresholds

        result = Thresholds()
        for key in ("health", "health:cluster:%s" % cluster if cluster else None,
                    "health:vm:%s" % vm_name if vm_name else None,
                    "health:vm:%s" % vm_id if vm_id else None):
            if key and key in self._health:
                result = _build_thresholds(key, self._health[key], result)
        return result


def _convert(option: Option, raw: str, origin: str) -> Any:
    if option.allowed is not None and raw.strip() not in option.allowed:
        raise ConfigError("%s: [%s] %s = %r is not allowed; use one of: %s"
                          % (origin, option.section, option.key, raw, ", ".join(option.allowed)))
    try:
        return PARSERS[option.kind](raw.strip())
    except ValueError as err:
        raise ConfigError("%s: [%s] %s = %r is not valid (%s). %s"
                          % (origin, option.section, option.key, raw, err, option.doc)) from err


def config_files(path: str = DEFAULT_PATH) -> List[str]:
    """The main file (if present) then its drop-ins ``<path>.d/*.conf`` in sorted order."""
    files = [path] if os.path.exists(path) else []
    files.extend(sorted(glob.glob(os.path.join(path + ".d", "*.conf"))))
    return files


def load(path: str = DEFAULT_PATH, overrides: Dict[str, Dict[str, str]] | None = None,
         require: bool = False) -> Config:
    """Read ``path`` and its drop-ins over the defaults; ``overrides`` (tests, CLI) win last.

    With ``require`` a missing main file is an error; otherwise defaults are used.
    """
    if require and not os.path.exists(path):
        raise ConfigError("%s does not exist; create it (every option is optional) or pass "
                          "--config with the right path" % path)
    values: Dict[str, Dict[str, Any]] = {}
    for option in OPTIONS:
        values.setdefault(option.section, {})[option.key] = _convert(
            option, option.default, "built-in default")
    files = config_files(path)
    health: Dict[str, Dict[str, Tuple[str, str]]] = {}
    warnings: List[str] = []
    for name in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(name, encoding="utf-8") as handle:
                parser.read_file(handle)
        except (OSError, UnicodeDecodeError, configparser.Error) as err:
            raise ConfigError("%s: cannot be read as an INI file: %s" % (name, err)) from err
        _apply(values, _items(parser), name, health, warnings)
    if overrides:
        _apply(values, ((s, k, v) for s, kv in overrides.items() for k, v in kv.items()),
               "override", health, warnings)
    return Config(values, files, _thresholds(health), warnings)


def _build_thresholds(section: str, raw: Dict[str, Tuple[str, str]], base: Any) -> Any:
    from .health import Thresholds

    result = base
    for key, (value, origin) in raw.items():
        try:
            result = Thresholds.from_mapping({key: value}, result, origin)
        except ValueError as err:
            raise ConfigError("%s (section [%s])" % (err, section)) from err
    return result


def _thresholds(raw: Dict[str, Dict[str, Tuple[str, str]]]) -> Dict[str, Any]:
    """Check every health section now (on top of [health]) so errors surface at start-up."""
    if raw:
        from .health import Thresholds

        base = _build_thresholds("health", raw.get("health", {}), Thresholds())
        for section, values in raw.items():
            _build_thresholds(section, values, base)
    return raw


def _items(parser: configparser.ConfigParser) -> Iterable[Tuple[str, str, str]]:
    for section in parser.sections():
        for key, raw in parser.items(section, raw=True):
            yield section, key, raw


def _apply(values: Dict[str, Dict[str, Any]], items: Iterable[Tuple[str, str, str]],
           origin: str, health: Dict[str, Dict[str, Tuple[str, str]]],
           warnings: List[str]) -> None:
    from .health.thresholds import RETIRED

    for section, key, raw in items:
        if section == "health" or section.startswith(("health:cluster:", "health:vm:")):
            if key in RETIRED:
                warnings.append("%s: [%s] %s is no longer used and is ignored: %s"
                                % (origin, section, key, RETIRED[key]))
                continue
            health.setdefault(section, {})[key] = (raw, origin)
            continue
        if section not in values:
            raise ConfigError("%s: unknown section [%s]; known sections: %s"
                              % (origin, section, ", ".join(sorted(values))))
        if (section, key) in RENAMED:
            new = RENAMED[(section, key)]
            warnings.append("%s: [%s] %s is now called %s; it still works, but rename it"
                            % (origin, section, key, new))
            key = new
        option = _INDEX.get((section, key))
        if option is None:
            known = ", ".join(o.key for o in OPTIONS if o.section == section)
            raise ConfigError("%s: unknown option [%s] %s; options of [%s]: %s"
                              % (origin, section, key, section, known))
        values[section][key] = _convert(option, raw, origin)


def describe() -> str:
    """An annotated engine.conf with every option at its default, for docs and ``config``."""
    lines: List[str] = []
    current = None
    for option in OPTIONS:
        if option.section != current:
            current = option.section
            lines.extend(["", "[%s]" % current])
        lines.append("# %s" % option.doc)
        if option.allowed:
            lines.append("# Allowed: %s" % ", ".join(option.allowed))
        lines.append("#%s = %s" % (option.key, option.default))
    lines.extend(_describe_health())
    return "\n".join(lines).lstrip() + "\n"


def _describe_health() -> List[str]:
    """The [health] section: the fields of ``health.Thresholds`` with their defaults."""
    try:
        import dataclasses

        from .health import Thresholds
    except ImportError:  # describe() must work in a tree without the health package
        return []
    lines = ["", "[health]",
             "# Health thresholds for every VM (seconds and percents). Override single keys",
             "# per cluster in [health:cluster:<cluster name>] and per VM in",
             "# [health:vm:<vm name or id>]."]
    for item in dataclasses.fields(Thresholds):
        lines.append("#%s = %g" % (item.name, float(item.default)))  # type: ignore[arg-type]
    return lines
