"""``vmdiag-engine setup``: what engine-setup would do for vmdiag, from oVirt's own files.

Run once on the engine machine after installing ovirt-engine-ui-plugin-vmdiag, and again
whenever you like: it changes only what is not as it should be. Steps, in order:

=========  ==============================================================================
engine     ENGINE_FQDN and the HTTPS port from /etc/ovirt-engine/engine.conf.d/*.conf
ca         the engine CA, /etc/pki/ovirt-engine/ca.pem
answers    the engine's REST API answers with a certificate valid for ENGINE_FQDN
ingest     the ingest certificate and key under /etc/pki/ovirt-engine/, key readable by vmdiag
property   vmdiag=^(on|off)$ merged into UserDefinedVMProperties of every cluster level
account    vmdiag@internal, its password file, its roles (see ``account``)
config     /etc/vmdiag/engine.conf.d/10-setup.conf: engine URL, CA, account
store      the store's folder (SQLite) or schema (PostgreSQL)
httpd      Apache's proxy to the service
unit       vmdiag-engine.service enabled and (re)started
=========  ==============================================================================

``--check`` prints one line per step (``ok``, ``TODO`` or ``FAIL`` with the fix) and changes
nothing. ``--root DIR`` works on a machine image in DIR (files under DIR, ``systemctl --root``,
no service reload or start); ``--offline`` skips what needs the engine to answer.
Exit codes: 0 all well, 1 something is wrong or left to do.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from dataclasses import dataclass
from typing import List, Optional, TextIO

from . import account, custom_property, ovirt_files, service
from .steps import Context, Finding, SetupError, Step, check, run


@dataclass
class _State:
    engine: Optional[ovirt_files.Engine] = None
    ca: Optional[ssl.SSLContext] = None
    changed: bool = False
    ingest_cert: str = service.INGEST_CERT
    ingest_key: str = service.INGEST_KEY


def build_steps(args: argparse.Namespace) -> List[Step]:
    st = _State()

    def note(finding: Finding) -> Finding:
        st.changed = st.changed or bool(finding.actions)
        return finding

    def engine(ctx: Context) -> Finding:
        st.engine, st.ca, st.changed = None, None, False
        found = ovirt_files.engine_from_files(ctx)
        if args.fqdn and args.fqdn != found.fqdn:
            raise SetupError(
                "--fqdn %s differs from ENGINE_FQDN=%s in %s: the engine's certificate is "
                "issued to %s; drop --fqdn, or rename the engine with ovirt-engine-rename"
                % (args.fqdn, found.fqdn, found.source, found.fqdn))
        if not ctx.offline:
            ovirt_files.check_resolves(found)
        st.engine = found
        return Finding("engine %s (ENGINE_FQDN in %s)" % (found.base, found.source))

    def ca(ctx: Context) -> Finding:
        st.ca = ovirt_files.check_ca(ctx)
        return Finding("engine CA %s" % ovirt_files.ENGINE_CA)

    def answers(ctx: Context) -> Finding:
        if ctx.offline or st.engine is None or st.ca is None:
            return Finding("the engine's REST API: not checked (%s)" % (
                "--offline" if ctx.offline else "no engine FQDN or CA"))
        return service.engine_answers(st.engine, st.ca)

    def config(ctx: Context) -> Finding:
        if st.engine is None:
            return Finding("%s: waits for the engine's FQDN" % service.DROPIN,
                           problem="see the engine step")
        return note(service.inspect_config(ctx, service.dropin_text(
            st.engine, account.PASSWORD_FILE, account.DOMAIN_USER, st.ingest_cert,
            st.ingest_key)))

    def ingest(ctx: Context) -> Finding:
        finding, st.ingest_cert, st.ingest_key = service.inspect_ingest_tls(ctx, st.engine)
        return note(finding)

    return [
        Step("engine", engine),
        Step("ca", ca),
        Step("answers", answers),
        Step("ingest", ingest),
        Step("property", lambda ctx: note(custom_property.inspect(ctx))),
        Step("account", lambda ctx: note(account.inspect(ctx, st.engine, st.ca))),
        Step("config", config),
        Step("store", lambda ctx: note(service.inspect_store(ctx))),
        Step("httpd", lambda ctx: note(service.inspect_httpd(ctx, st.engine, st.ca,
                                                             st.changed))),
        Step("unit", lambda ctx: service.inspect_unit(ctx, st.changed)),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="only report, one line per step, and change nothing")
    parser.add_argument("--root", default="/",
                        help="work on the machine image in this folder (default: /)")
    parser.add_argument("--offline", action="store_true",
                        help="do not contact the engine (checks that need it are skipped)")
    parser.add_argument("--fqdn", help="expected engine FQDN; must match ENGINE_FQDN")


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    ctx = Context(root=args.root, offline=args.offline)
    steps = build_steps(args)
    return check(steps, ctx, out) if args.check else run(steps, ctx, out)
