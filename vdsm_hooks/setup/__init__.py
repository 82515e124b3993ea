"""``vmdiag-relay setup``: point this host's relay at the engine, from oVirt's own files.

Run once on each host after installing vdsm-hook-vmdiag (or vmdiag-relay), and again whenever
you like: it changes only what is not as it should be. Steps, in order:

=========  ==============================================================================
engine     the engine's FQDN (``--engine``, or the one a previous run wrote) resolves
hostcert   the host's vdsm certificate, key and the engine CA under /etc/pki/vdsm/, the key
           readable by the relay (group kvm, as oVirt installs it)
account    the vmdiag user and the groups qemu and kvm its unit joins
answers    the engine's ingest listener (port 8791) accepts this host's certificate
config     /etc/vmdiag/relay.conf.d/10-setup.conf: upload on, URL, certificate, key, CA
unit       vmdiag-relay.service enabled and (re)started
=========  ==============================================================================

``--standalone`` (a plain libvirt host, no engine) keeps uploads off and skips the first
steps. ``--check`` prints one line per step and changes nothing; ``--root DIR`` works on a
machine image in DIR; ``--offline`` skips what needs the engine to answer. Exit codes: 0 all
well, 1 something is wrong or left to do.
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

from ..config import DEFAULT_PATH, ConfigError, load_config
from .steps import Action, Context, Finding, RunCommand, SetupError, Step, WriteFile, check, run

DROPIN = "/etc/vmdiag/relay.conf.d/10-setup.conf"
VDSM_CERT = "/etc/pki/vdsm/certs/vdsmcert.pem"
VDSM_KEY = "/etc/pki/vdsm/keys/vdsmkey.pem"
VDSM_CA = "/etc/pki/vdsm/certs/cacert.pem"
INGEST_PORT = 8791
INGEST_PATH = "/ingest/v1/reports"
UNIT = "vmdiag-relay.service"
GROUPS = ("qemu", "kvm")


@dataclass
class _State:
    fqdn: Optional[str] = None
    port: int = INGEST_PORT
    changed: bool = False


def _previous_engine(ctx: Context) -> Optional[str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ctx.path(DROPIN), encoding="utf-8")
        return urlsplit(parser.get("upload", "url")).netloc or None
    except (configparser.Error, OSError, ValueError):
        return None


def split_engine(text: str) -> Tuple[str, int]:
    """``FQDN`` or ``FQDN:PORT`` (the ingest port, 8791 unless the engine moved it)."""
    try:
        parts = urlsplit("//" + text)
        return parts.hostname or "", parts.port or INGEST_PORT
    except ValueError as err:
        raise SetupError("--engine %s is not FQDN or FQDN:PORT" % text) from err


def dropin_text(fqdn: str, port: int) -> str:
    return ("# Written by vmdiag-relay setup; run it again to change the engine. Put your own\n"
            "# settings in another drop-in.\n"
            "[upload]\nenabled = yes\nurl = https://%s:%d%s\ncert = %s\nkey = %s\nca = %s\n"
            % (fqdn, port, INGEST_PATH, VDSM_CERT, VDSM_KEY, VDSM_CA))


def _allowed(ctx: Context, path: str, bits: int) -> bool:
    """``bits`` (0o4 read, 0o1 search) for the relay: user vmdiag, groups vmdiag, qemu, kvm."""
    st = os.stat(ctx.path(path))
    if st.st_uid == ctx.uid("vmdiag"):
        return bool(st.st_mode & (bits << 6))
    if st.st_gid in {ctx.gid(g) for g in ("vmdiag",) + GROUPS}:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def _readable_by_relay(ctx: Context, path: str) -> bool:
    folder = os.path.dirname(path)
    while folder != "/":
        if not _allowed(ctx, folder, 0o1):
            return False
        folder = os.path.dirname(folder)
    return _allowed(ctx, path, 0o4)


def inspect_hostcert(ctx: Context) -> Finding:
    for path in (VDSM_CERT, VDSM_KEY, VDSM_CA):
        if not os.path.exists(ctx.path(path)):
            raise SetupError("%s is missing: add this host to the engine first (Compute > Hosts "
                             "> New, or Installation > Enroll Certificate), or use --standalone "
                             "on a plain libvirt host" % path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(ctx.path(VDSM_CERT),
                                                                ctx.path(VDSM_KEY))
        ssl.create_default_context(cafile=ctx.path(VDSM_CA))
    except (ssl.SSLError, OSError) as err:
        raise SetupError("%s, %s, %s are not a certificate, its key and a CA (%s): enroll the "
                         "host's certificate again (Installation > Enroll Certificate)"
                         % (VDSM_CERT, VDSM_KEY, VDSM_CA, err)) from err
    if not _readable_by_relay(ctx, VDSM_KEY):
        raise SetupError("%s is not readable by group kvm (oVirt installs it vdsm:kvm 0440 in a "
                         "folder others may search): chgrp kvm %s && chmod 0440 %s"
                         % (VDSM_KEY, VDSM_KEY, VDSM_KEY))
    return Finding("host certificate %s, key %s, engine CA %s" % (VDSM_CERT, VDSM_KEY, VDSM_CA))


def inspect_account(ctx: Context) -> Finding:
    missing = [g for g in GROUPS if ctx.gid(g) is None]
    if missing:
        raise SetupError("group %s does not exist (qemu-kvm creates qemu and kvm); the relay's "
                         "unit joins them: install qemu-kvm, or remove them from "
                         "SupplementaryGroups= with a drop-in (systemctl edit %s)"
                         % (" and ".join(missing), UNIT))
    if ctx.uid("vmdiag") is None:
        raise SetupError("user vmdiag does not exist: systemd-sysusers "
                         "/usr/lib/sysusers.d/vmdiag.conf (or reinstall vmdiag-relay)")
    try:
        group = load_config(ctx.path(DEFAULT_PATH), resolve_host_id=False).relay.control_group
    except ConfigError as err:
        raise SetupError(str(err)) from err
    if group and group not in ("vmdiag",) + GROUPS:
        raise SetupError("[relay] control_group = %s, but the relay runs with the groups vmdiag, "
                         "%s only (its unit): set kvm, vdsm's group, so the after_vm_destroy "
                         "hook can reach the control socket" % (group, ", ".join(GROUPS)))
    return Finding("user vmdiag; groups %s exist; control socket group %s" % (
        " and ".join(GROUPS), group or "vmdiag"))


def ingest_answers(ctx: Context, fqdn: str, port: int) -> Finding:
    url = "https://%s:%d%s" % (fqdn, port, INGEST_PATH)
    tls = ssl.create_default_context(cafile=ctx.path(VDSM_CA))
    tls.load_cert_chain(ctx.path(VDSM_CERT), ctx.path(VDSM_KEY))
    conn = http.client.HTTPSConnection(fqdn, port, context=tls, timeout=15)
    try:
        conn.request("GET", INGEST_PATH)
        status = conn.getresponse().status
    except ssl.SSLCertVerificationError as err:
        raise SetupError("%s: the engine's ingest certificate is not valid for %s with %s (%s): "
                         "use the engine's FQDN, the name its certificate was issued to"
                         % (url, fqdn, VDSM_CA, err.verify_message)) from err
    except ssl.SSLError as err:
        raise SetupError("%s refused this host's certificate %s (%s): it must be signed by the "
                         "engine CA (Installation > Enroll Certificate)" % (url, VDSM_CERT, err)
                         ) from err
    except (OSError, http.client.HTTPException) as err:
        raise SetupError("%s does not answer (%s): run vmdiag-engine setup on the engine and "
                         "open TCP %d there (firewall-cmd --permanent --add-port=%d/tcp)"
                         % (url, err, port, port)) from err
    finally:
        conn.close()
    return Finding("the engine's ingest listener answers at %s (HTTP %d to GET)" % (url, status))


def inspect_config(ctx: Context, text: Optional[str]) -> Finding:
    current = None
    if os.path.exists(ctx.path(DROPIN)):
        with open(ctx.path(DROPIN), encoding="utf-8") as f:
            current = f.read()
    try:
        cfg = load_config(ctx.path(DEFAULT_PATH), resolve_host_id=False)
    except ConfigError as err:
        raise SetupError("%s: fix it first (setup only adds %s)" % (err, DROPIN)) from err
    if text is None:
        return Finding("uploads stay off (--standalone); %s untouched" % DROPIN)
    if current != text:
        return Finding("%s uploads to the engine" % DROPIN, actions=[WriteFile(DROPIN, text)])
    intended = configparser.ConfigParser(interpolation=None)
    intended.read_string(text)
    for key, value in intended.items("upload"):
        now = getattr(cfg.upload, key)
        if (str(now).lower() if isinstance(now, bool) else str(now)) != {"yes": "true"}.get(
                value, value):
            later = [p for p in cfg.sources if os.path.basename(p) > os.path.basename(DROPIN)
                     and os.path.dirname(p) == os.path.dirname(ctx.path(DROPIN))]
            raise SetupError("[upload] %s = %s although %s sets %s: %s, read after it, "
                             "overrides that; remove the key there" % (
                                 key, now, DROPIN, value, " or ".join(
                                     os.path.join(os.path.dirname(DROPIN), os.path.basename(p))
                                     for p in later) or "a later file"))
    return Finding("%s uploads to the engine" % DROPIN)


def inspect_unit(ctx: Context, changed: bool) -> Finding:
    base = ["systemctl"] + (["--root=%s" % ctx.root] if ctx.rooted else [])
    if not os.path.exists(ctx.path("/usr/lib/systemd/system/" + UNIT)):
        raise SetupError("%s is not installed: install vmdiag-relay" % UNIT)
    state = subprocess.run(base + ["is-enabled", UNIT], capture_output=True, text=True,
                           timeout=60).stdout.strip()
    actions: List[Action] = []
    if state != "enabled":
        actions.append(RunCommand(base + ["enable", UNIT], undo_argv=base + ["disable", UNIT]))
    if ctx.rooted:
        return Finding("%s is enabled" % UNIT, actions=actions)
    active = subprocess.run(["systemctl", "is-active", UNIT], capture_output=True, text=True,
                            timeout=60).stdout.strip()
    if changed or active != "active":
        actions.append(RunCommand(["systemctl", "restart", UNIT]))
    return Finding("%s is enabled and running" % UNIT, actions=actions)


def build_steps(args: argparse.Namespace) -> List[Step]:
    st = _State()

    def note(finding: Finding) -> Finding:
        st.changed = st.changed or bool(finding.actions)
        return finding

    def engine(ctx: Context) -> Finding:
        st.fqdn, st.changed = None, False
        if args.standalone:
            return Finding("no engine (--standalone)")
        given = args.engine or _previous_engine(ctx)
        if not given:
            raise SetupError("which engine? pass --engine <engine FQDN> (the name in the "
                             "engine's certificate, ENGINE_FQDN on the engine), or --standalone")
        fqdn, port = split_engine(given)
        if not ctx.offline:
            try:
                socket.getaddrinfo(fqdn, port, proto=socket.IPPROTO_TCP)
            except (socket.gaierror, UnicodeError) as err:
                raise SetupError("engine %s does not resolve: add it to DNS or /etc/hosts, or "
                                 "pass the right --engine" % fqdn) from err
        st.fqdn, st.port = fqdn, port
        return Finding("engine %s, ingest port %d" % (fqdn, port))

    def hostcert(ctx: Context) -> Finding:
        if args.standalone:
            return Finding("host certificate: not needed (--standalone)")
        return inspect_hostcert(ctx)

    def answers(ctx: Context) -> Finding:
        if args.standalone or ctx.offline or st.fqdn is None:
            return Finding("the engine's ingest listener: not checked (%s)" % (
                "--standalone" if args.standalone else "--offline" if ctx.offline
                else "no engine"))
        return ingest_answers(ctx, st.fqdn, st.port)

    def config(ctx: Context) -> Finding:
        if not args.standalone and st.fqdn is None:
            return Finding("", problem="%s waits for the engine's FQDN" % DROPIN)
        text = None if args.standalone else dropin_text(st.fqdn or "", st.port)
        return note(inspect_config(ctx, text))

    return [Step("engine", engine), Step("hostcert", hostcert),
            Step("account", inspect_account), Step("answers", answers),
            Step("config", config), Step("unit", lambda ctx: inspect_unit(ctx, st.changed))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", metavar="FQDN[:PORT]",
                        help="the engine's FQDN, and the ingest port if not 8791 (default: "
                             "the engine a previous setup wrote)")
    parser.add_argument("--standalone", action="store_true",
                        help="a plain libvirt host: no engine, uploads stay off")
    parser.add_argument("--check", action="store_true",
                        help="only report, one line per step, and change nothing")
    parser.add_argument("--root", default="/",
                        help="work on the machine image in this folder (default: /)")
    parser.add_argument("--offline", action="store_true",
                        help="do not contact the engine (its check is skipped)")


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    ctx = Context(root=args.root, offline=args.offline)
    steps = build_steps(args)
    return check(steps, ctx, out) if args.check else run(steps, ctx, out)
