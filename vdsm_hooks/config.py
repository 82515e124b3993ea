"""The host configuration: ``/etc/vmdiag/relay.conf`` plus ``relay.conf.d/*.conf`` drop-ins.

Every option is declared once in ``OPTIONS`` with its type, default, allowed values and a doc
line (the shape of vdsm's ``config.py.in``); the parser, the error messages and
``default_config_text()`` (the commented file packaging installs) all come from that table.
Files are read in order, main file first then drop-ins sorted by name, later values winning.
A missing main file means "all defaults"; an unknown section or key, or a bad value, is an error
that names the file, the key and what is allowed, because a typo silently ignored on one host
out of hundreds is worse than a relay that refuses to start.

Used by the hook scripts (``[hook]``, ``[relay] channels_dir`` and ``control_socket``) and by
the relay daemon (everything). ``VMDIAG_RELAY_CONF`` overrides the main file's path.
"""

from __future__ import annotations

import configparser
import dataclasses
import glob
import os
import re
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import urlsplit

DEFAULT_PATH = "/etc/vmdiag/relay.conf"
ENV_PATH = "VMDIAG_RELAY_CONF"


class ConfigError(ValueError):
    """A configuration file cannot be used; the message says which file, key and what to do."""


# --- value types: each parses a string or raises ValueError saying what is allowed ----------

_BOOLS = {"on": True, "yes": True, "true": True, "1": True,
          "off": False, "no": False, "false": False, "0": False}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20,
               "mib": 1 << 20, "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3}


def _bool(text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError("expected on or off") from None


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("expected a whole number from %d to %d" % (low, high)) from None
        if not low <= value <= high:
            raise ValueError("expected a whole number from %d to %d" % (low, high))
        return value
    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("expected a number of seconds from %g to %g" % (low, high)) from None
        if not low <= value <= high:
            raise ValueError("expected a number of seconds from %g to %g" % (low, high))
        return value
    return parse


def _size(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError("expected a size such as 268435456, 512KiB, 256MiB or 2GiB")
        value = int(match.group(1)) * _SIZE_UNITS[unit]
        if value < low:
            raise ValueError("expected at least %d bytes" % low)
        return value
    return parse


def _text(text: str) -> str:
    return text.strip()


def _abs_path(text: str) -> str:
    value = text.strip()
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


def _optional_path(text: str) -> str:
    return _abs_path(text) if text.strip() else ""


def _libvirt_uri(text: str) -> str:
    value = text.strip()
    if "://" not in value:
        raise ValueError("expected a libvirt URI such as qemu:///system")
    return value


def _https_url(text: str) -> str:
    value = text.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("expected https://<engine>:8791/ingest/v1/reports")
    return value


def split_listen(text: str) -> Tuple[str, int]:
    """``127.0.0.1:9791``, ``[::1]:9791`` or ``localhost:9791`` -> (host, port)."""
    try:
        parts = urlsplit("//" + text.strip())
        host, port = parts.hostname, parts.port
        extra = bool(parts.path or parts.query or parts.username)
    except ValueError:
        host, port, extra = None, None, True
    if not host or port is None or extra:
        raise ValueError("expected host:port, such as 127.0.0.1:9791 or [::1]:9791 "
                         "(empty: off)")
    return host, port


def _listen(text: str) -> str:
    value = text.strip()
    if value:
        split_listen(value)
    return value


# --- the declaration ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Option:
    section: str
    key: str
    parse: Callable[[str], Any]
    default: str
    doc: str


OPTIONS: Tuple[Option, ...] = (
    Option("hook", "default", _bool, "on",
           "Add the vmdiag channel to VMs whose 'vmdiag' custom property is not set (on/off)."),
    Option("relay", "host_id", _text, "",
           "This host's id in uploads; empty means the CN of [upload] cert when uploading, "
           "else /etc/vdsm/vdsm.id, else /etc/machine-id."),
    Option("relay", "libvirt_uri", _libvirt_uri, "qemu:///system",
           "libvirt connection the relay watches for VMs."),
    Option("relay", "channels_dir", _abs_path, "/var/lib/libvirt/qemu/channels",
           "Directory of the VMs' channel sockets (<vm-uuid>.org.vmdiag.agent.0)."),
    Option("relay", "control_socket", _abs_path, "/run/vmdiag/relay.sock",
           "Unix socket of the relay's local control interface (vmdiag-relay, hooks)."),
    Option("relay", "control_group", _text, "kvm",
           "Group of the control socket (mode 0660): its members may use vmdiag-relay status, "
           "show and request, and the after_vm_destroy hook (run by vdsm, group kvm) notifies "
           "through it. The relay's user must be in it. Empty: the relay's own group."),
    Option("relay", "silence_timeout", _float_range(5, 86400), "180",
           "Seconds without a message after which a guest's channel is reopened."),
    Option("relay", "reconnect_max_backoff", _float_range(1, 3600), "30",
           "Upper bound in seconds of the wait between reconnects to a VM's channel."),
    Option("relay", "max_vms", _int_range(1, 100000), "5000",
           "Most VMs served at once; more are logged and ignored."),
    Option("relay", "min_report_interval", _float_range(0, 86400), "5",
           "Seconds between two reports of one VM that the relay takes, on average (0: no "
           "limit); more are dropped and counted as rate_limited. Keep it below the agents' "
           "[agent] interval."),
    Option("relay", "report_burst", _int_range(1, 10000), "10",
           "Reports one VM may send in a row above that rate (report.now, agent restarts)."),
    Option("upload", "enabled", _bool, "false",
           "Upload reports to the engine's ingest listener (on/off)."),
    Option("upload", "url", _https_url, "",
           "Ingest endpoint, https://<engine>:8791/ingest/v1/reports; required when enabled."),
    Option("upload", "cert", _optional_path, "/etc/pki/vdsm/certs/vdsmcert.pem",
           "Client certificate (PEM) presented to the engine; empty sends none."),
    Option("upload", "key", _optional_path, "/etc/pki/vdsm/keys/vdsmkey.pem",
           "Private key of the client certificate (PEM)."),
    Option("upload", "ca", _optional_path, "/etc/pki/vdsm/certs/cacert.pem",
           "CA certificate(s) that signed the engine's ingest certificate; empty: system CAs."),
    Option("upload", "batch_size", _int_range(1, 10000), "500",
           "Most envelopes in one upload request."),
    Option("upload", "batch_interval", _float_range(0.01, 3600), "2.0",
           "Seconds a report may wait for others to fill a batch."),
    Option("upload", "timeout", _float_range(0.1, 600), "10",
           "Seconds one upload request may take before it counts as failed."),
    Option("upload", "spool_dir", _abs_path, "/var/lib/vmdiag/spool",
           "Where reports wait on disk while the engine cannot be reached."),
    Option("upload", "spool_max_bytes", _size(4096), "256MiB",
           "Bound of the spool; beyond it the oldest reports are dropped, and counted."),
    Option("upload", "retry_max_backoff", _float_range(0.01, 3600), "60",
           "Upper bound in seconds of the wait between upload retries."),
    Option("metrics", "listen", _listen, "",
           "host:port of the relay's Prometheus /metrics, e.g. 127.0.0.1:9791; empty: off. "
           "No authentication: keep it on localhost or behind a firewall (docs/prometheus.md)."),
    Option("metrics", "max_vms", _int_range(1, 100000), "1000",
           "Most VMs in /metrics (first by name); the rest are counted, not shown."),
)


# --- the result -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HookConfig:
    default: bool = True


@dataclasses.dataclass(frozen=True)
class RelaySettings:
    host_id: str = ""
    libvirt_uri: str = "qemu:///system"
    channels_dir: str = "/var/lib/libvirt/qemu/channels"
    control_socket: str = "/run/vmdiag/relay.sock"
    control_group: str = "kvm"
    silence_timeout: float = 180.0
    reconnect_max_backoff: float = 30.0
    max_vms: int = 5000
    min_report_interval: float = 5.0
    report_burst: int = 10


@dataclasses.dataclass(frozen=True)
class UploadConfig:
    enabled: bool = False
    url: str = ""
    cert: str = "/etc/pki/vdsm/certs/vdsmcert.pem"
    key: str = "/etc/pki/vdsm/keys/vdsmkey.pem"
    ca: str = "/etc/pki/vdsm/certs/cacert.pem"
    batch_size: int = 500
    batch_interval: float = 2.0
    timeout: float = 10.0
    spool_dir: str = "/var/lib/vmdiag/spool"
    spool_max_bytes: int = 256 << 20
    retry_max_backoff: float = 60.0


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""
    max_vms: int = 1000


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    hook: HookConfig
    relay: RelaySettings
    upload: UploadConfig
    #: The files that were read, in order (the main file only if it exists).
    sources: Tuple[str, ...] = ()
    metrics: MetricsConfig = MetricsConfig()


_SECTIONS: Dict[str, type] = {"hook": HookConfig, "relay": RelaySettings, "upload": UploadConfig,
                              "metrics": MetricsConfig}


def default_host_id(root: str = "/") -> str:
    """VDSM's host id (``/etc/vdsm/vdsm.id``, what the engine knows the host by), else the
    machine-id; ``root`` lets tests supply a file tree."""
    for rel in ("etc/vdsm/vdsm.id", "etc/machine-id"):
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                value = f.read().strip()
        except OSError:
            continue
        if value:
            return value
    raise ConfigError("cannot tell this host's id: neither %s nor %s is readable; set "
                      "[relay] host_id in relay.conf"
                      % (os.path.join(root, "etc/vdsm/vdsm.id"),
                         os.path.join(root, "etc/machine-id")))


def certificate_cn(path: str) -> str | None:
    """The subject CN of the PEM certificate at ``path``; None when it cannot be read.

    The relay's upload certificate is VDSM's, whose CN is the host's address as the engine knows
    it, and the engine records uploads under that CN (``[ingest] host_identity``).
    """
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:  # python3-cryptography is on every VDSM host; tolerate its absence
        return None
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError):
        return None
    value = names[0].value if names else ""
    return value.strip() if isinstance(value, str) and value.strip() else None


def config_files(path: str) -> List[str]:
    """The files ``load_config`` reads for main file ``path``: itself if present, then the
    ``*.conf`` drop-ins of ``<path>.d/`` in sorted order."""
    files = [path] if os.path.exists(path) else []
    files.extend(sorted(glob.glob(os.path.join(glob.escape(path + ".d"), "*.conf"))))
    return files


def load_config(path: str | None = None, *, root: str = "/",
                resolve_host_id: bool = True) -> RelayConfig:
    """Read relay.conf and its drop-ins into frozen dataclasses; raise ConfigError if unusable.

    ``path`` defaults to ``$VMDIAG_RELAY_CONF`` or /etc/vmdiag/relay.conf. An empty
    ``[relay] host_id`` is filled, unless ``resolve_host_id`` is false (the hook scripts do not
    need it), with the CN of the upload certificate when uploads are on, else from
    ``default_host_id(root)``.
    """
    path = path or os.environ.get(ENV_PATH) or DEFAULT_PATH
    values: Dict[Tuple[str, str], Any] = {}
    files = config_files(path)
    for filename in files:
        _read_file(filename, values)
    for option in OPTIONS:
        if (option.section, option.key) not in values:
            values[(option.section, option.key)] = option.parse(option.default)

    sections: Dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        fields = {key: value for (section, key), value in values.items() if section == name}
        sections[name] = cls(**fields)
    upload: UploadConfig = sections["upload"]
    if upload.enabled and not upload.url:
        raise ConfigError("%s: [upload] enabled = on needs [upload] url, for example "
                          "https://engine.example.com:8791/ingest/v1/reports"
                          % (" + ".join(files) or path))
    if upload.enabled and bool(upload.cert) != bool(upload.key):
        raise ConfigError("%s: [upload] cert and key must be set together (or both empty)"
                          % (" + ".join(files) or path))
    relay: RelaySettings = sections["relay"]
    if resolve_host_id and not relay.host_id:
        cn = certificate_cn(upload.cert) if upload.enabled and upload.cert else None
        relay = dataclasses.replace(relay, host_id=cn or default_host_id(root))
    return RelayConfig(hook=sections["hook"], relay=relay, upload=upload, sources=tuple(files),
                       metrics=sections["metrics"])


def _read_file(filename: str, values: Dict[Tuple[str, str], Any]) -> None:
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    try:
        with open(filename, encoding="utf-8") as f:
            parser.read_file(f, source=filename)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("%s: cannot read it: %s" % (filename, err)) from err
    except configparser.Error as err:
        raise ConfigError("%s: not a valid INI file: %s" % (filename, err)) from err
    known = {(o.section, o.key): o for o in OPTIONS}
    for section in parser.sections():
        if section not in _SECTIONS:
            raise ConfigError("%s: unknown section [%s]; allowed: %s"
                              % (filename, section, ", ".join("[%s]" % s for s in _SECTIONS)))
        for key, raw in parser.items(section):
            option = known.get((section, key))
            if option is None:
                allowed = ", ".join(o.key for o in OPTIONS if o.section == section)
                raise ConfigError("%s: unknown key %r in [%s]; allowed: %s"
                                  % (filename, key, section, allowed))
            try:
                values[(section, key)] = option.parse(raw)
            except ValueError as err:
                raise ConfigError("%s: [%s] %s = %r: %s"
                                  % (filename, section, key, raw, err)) from err


def default_config_text() -> str:
    """A relay.conf with every option commented out at its default, with its doc line."""
    out = ["# vmdiag relay and hook configuration. Drop-ins: relay.conf.d/*.conf (sorted).", ""]
    current = None
    for option in OPTIONS:
        if option.section != current:
            if current is not None:
                out.append("")
            out.append("[%s]" % option.section)
            current = option.section
        out.append("# %s" % option.doc)
        out.append("#%s = %s" % (option.key, option.default))
    return "\n".join(out) + "\n"
