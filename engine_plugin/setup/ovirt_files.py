"""What oVirt's own files say about the engine: its FQDN, HTTPS port and CA.

engine-setup writes ``ENGINE_FQDN`` and the Apache ports into
``/etc/ovirt-engine/engine.conf.d/10-setup-protocols.conf`` (shell-style ``KEY=value`` or
``KEY="value"``); like the engine, later files of the folder (sorted) override earlier ones.
The engine CA is ``/etc/pki/ovirt-engine/ca.pem``; it signs the engine's HTTPS certificate and
every host's vdsm certificate.
"""

from __future__ import annotations

import glob
import os
import shlex
import socket
import ssl
from dataclasses import dataclass
from typing import Dict

from .steps import Context, SetupError

ENGINE_CONF_D = "/etc/ovirt-engine/engine.conf.d"
PROTOCOLS_CONF = ENGINE_CONF_D + "/10-setup-protocols.conf"
ENGINE_CA = "/etc/pki/ovirt-engine/ca.pem"


@dataclass(frozen=True)
class Engine:
    fqdn: str
    https_port: int
    source: str          # the file that set ENGINE_FQDN

    @property
    def base(self) -> str:
        port = "" if self.https_port == 443 else ":%d" % self.https_port
        return "https://%s%s" % (self.fqdn, port)

    @property
    def api_url(self) -> str:
        return self.base + "/ovirt-engine/api"


def read_engine_vars(ctx: Context) -> Dict[str, tuple]:
    """KEY -> (value, file) from every engine.conf.d/*.conf, later files winning."""
    folder = ctx.path(ENGINE_CONF_D)
    if not os.path.isdir(folder):
        raise SetupError("%s is missing: this is not an oVirt engine machine, or engine-setup "
                         "has not run yet (run engine-setup first)" % ENGINE_CONF_D)
    values: Dict[str, tuple] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.conf"))):
        real = os.path.join(ENGINE_CONF_D, os.path.basename(path))
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as err:
            raise SetupError("%s: cannot read it (%s): run setup as root" % (real, err.strerror)
                             ) from err
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, raw = line.partition("=")
            try:
                words = shlex.split(raw)
            except ValueError:
                words = [raw]
            values[key.strip()] = (words[0] if words else "", real)
    return values


def engine_from_files(ctx: Context) -> Engine:
    values = read_engine_vars(ctx)
    if "ENGINE_FQDN" not in values or not values["ENGINE_FQDN"][0]:
        raise SetupError("ENGINE_FQDN is not set in %s/*.conf (engine-setup writes it to %s): "
                         "run engine-setup, or ovirt-engine-rename to fix the name"
                         % (ENGINE_CONF_D, PROTOCOLS_CONF))
    fqdn, source = values["ENGINE_FQDN"]
    port_text, port_source = values.get("ENGINE_PROXY_HTTPS_PORT", ("443", source))
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(port_text)
    except ValueError as err:
        raise SetupError("ENGINE_PROXY_HTTPS_PORT=%s in %s is not a port number: fix the file "
                         "or run engine-setup again" % (port_text, port_source)) from err
    return Engine(fqdn, port, source)


def check_resolves(engine: Engine) -> None:
    try:
        socket.getaddrinfo(engine.fqdn, engine.https_port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise SetupError("ENGINE_FQDN=%s (%s) does not resolve: add it to DNS or /etc/hosts, or "
                         "fix the name with ovirt-engine-rename" % (engine.fqdn, engine.source)
                         ) from err


def check_ca(ctx: Context, path: str = ENGINE_CA) -> ssl.SSLContext:
    """An SSL client context trusting the CA file; SetupError naming the file otherwise."""
    real = ctx.path(path)
    if not os.path.exists(real):
        raise SetupError("%s is missing: engine-setup creates the engine CA there; run "
                         "engine-setup, or restore it from backup" % path)
    try:
        with open(real, "rb"):
            pass
        return ssl.create_default_context(cafile=real)
    except PermissionError as err:
        raise SetupError("%s: cannot read it: run setup as root" % path) from err
    except (ssl.SSLError, OSError, ValueError) as err:
        raise SetupError("%s is not a PEM CA certificate (%s): restore the engine CA" % (
            path, err)) from err
