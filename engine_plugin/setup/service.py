"""Setup steps for the service itself: its TLS files, its drop-in, its store, Apache, the unit."""

from __future__ import annotations

import configparser
import os
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from typing import List, Tuple

from .. import config as config_mod
from .ovirt_files import ENGINE_CA, Engine
from .steps import Action, Context, Finding, RunCommand, SetupError, WriteFile

CONFIG = "/etc/vmdiag/engine.conf"
DROPIN = "/etc/vmdiag/engine.conf.d/10-setup.conf"
INGEST_CERT = "/etc/pki/ovirt-engine/certs/vmdiag.cer"
INGEST_KEY = "/etc/pki/ovirt-engine/keys/vmdiag.key.nopass"
HTTPD_CONF = "/etc/httpd/conf.d/z-vmdiag.conf"
HTTPD_PROXY_MODULES = "/etc/httpd/conf.modules.d/00-proxy.conf"
UNIT = "vmdiag-engine.service"
ENROLL = "/usr/share/ovirt-engine/bin/pki-enroll-pkcs12.sh"


class SetMode(Action):
    """chgrp + chmod of an existing file, undone by putting the old ones back."""

    def __init__(self, path: str, mode: int, group: str):
        self.path, self.mode, self.group = path, mode, group
        self._old: tuple | None = None

    def describe(self) -> str:
        return "chgrp %s %s and chmod %04o" % (self.group, self.path, self.mode)

    def apply(self, ctx: Context) -> None:
        real = ctx.path(self.path)
        gid = ctx.gid(self.group)
        if gid is None:
            raise SetupError("group %s does not exist: reinstall ovirt-engine-ui-plugin-vmdiag"
                             % self.group)
        try:
            st = os.stat(real)
            self._old = (stat.S_IMODE(st.st_mode), st.st_gid)
            os.chown(real, -1, gid)
            os.chmod(real, self.mode)
        except OSError as err:
            raise SetupError("%s: %s" % (self.path, err.strerror)) from err

    def undo(self, ctx: Context) -> None:
        if self._old:
            os.chmod(ctx.path(self.path), self._old[0])
            os.chown(ctx.path(self.path), -1, self._old[1])


def enroll_commands(engine: Engine | None) -> str:
    cn = engine.fqdn if engine else "<engine FQDN>"
    return ("%s --name=vmdiag --password=mypass --subject=\"/CN=%s\" --san=DNS:%s && "
            "openssl pkcs12 -in /etc/pki/ovirt-engine/keys/vmdiag.p12 -passin pass:mypass "
            "-nodes -nocerts -out %s && openssl pkcs12 -in /etc/pki/ovirt-engine/keys/vmdiag.p12 "
            "-passin pass:mypass -nokeys -clcerts -out %s" % (ENROLL, cn, cn, INGEST_KEY,
                                                              INGEST_CERT))


#: where setup copies the ingest certificate or key when vmdiag cannot reach oVirt's folders
COPY_DIR = "/etc/pki/vmdiag"


def reachable(ctx: Context, path: str, user: str) -> bool:
    """Whether ``user`` (its own group only, as the unit runs it) can traverse to ``path``."""
    uid, gid = ctx.uid(user), ctx.gid(user)
    folder = os.path.dirname(path)
    while True:
        st = os.stat(ctx.path(folder))
        if not ((st.st_uid == uid and st.st_mode & 0o100) or
                (st.st_gid == gid and st.st_mode & 0o010) or st.st_mode & 0o001):
            return False
        if folder == "/":
            return True
        folder = os.path.dirname(folder)


def inspect_ingest_tls(ctx: Context, engine: Engine | None) -> Tuple[Finding, str, str]:
    """The finding, and the certificate and key paths the service is to use."""
    missing = [p for p in (INGEST_CERT, INGEST_KEY) if not os.path.exists(ctx.path(p))]
    if missing:
        raise SetupError("%s missing: issue the ingest certificate from the engine CA: %s"
                         % (" and ".join(missing), enroll_commands(engine)))
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(ctx.path(INGEST_CERT),
                                                                ctx.path(INGEST_KEY))
    except (ssl.SSLError, OSError) as err:
        raise SetupError("%s and %s do not make a certificate and its key (%s): issue them "
                         "again: %s" % (INGEST_CERT, INGEST_KEY, err, enroll_commands(engine))
                         ) from err
    actions: List[Action] = []
    paths = []
    for path, mode in ((INGEST_CERT, 0o644), (INGEST_KEY, 0o640)):
        if reachable(ctx, path, "vmdiag"):
            paths.append(path)
            continue
        copy = os.path.join(COPY_DIR, os.path.basename(path))
        with open(ctx.path(path), encoding="utf-8") as f:
            text = f.read()
        if not _same(ctx, copy, text, mode):
            actions.append(WriteFile(copy, text, mode=mode, group="vmdiag"))
        paths.append(copy)
    cert, key = paths
    if key == INGEST_KEY:
        st = os.stat(ctx.path(INGEST_KEY))
        if st.st_gid != ctx.gid("vmdiag") or stat.S_IMODE(st.st_mode) != 0o640:
            actions.append(SetMode(INGEST_KEY, 0o640, "vmdiag"))
    notes = []
    if key != INGEST_KEY or cert != INGEST_CERT:
        notes.append("vmdiag cannot reach %s's folder, so the service uses copies in %s: run "
                     "setup again after issuing a new certificate" % (INGEST_KEY, COPY_DIR))
    finding = Finding("ingest certificate %s, key %s readable by vmdiag" % (cert, key),
                      actions=actions, notes=notes)
    return finding, cert, key


def _same(ctx: Context, path: str, text: str, mode: int) -> bool:
    try:
        st = os.stat(ctx.path(path))
        with open(ctx.path(path), encoding="utf-8") as f:
            return (f.read() == text and stat.S_IMODE(st.st_mode) == mode
                    and st.st_gid == ctx.gid("vmdiag"))
    except OSError:
        return False


def dropin_text(engine: Engine, password_file: str, user: str, cert: str = INGEST_CERT,
                key: str = INGEST_KEY) -> str:
    text = ("# Written by vmdiag-engine setup from ENGINE_FQDN in %s; run it again after\n"
            "# renaming the engine. Put your own settings in another drop-in.\n"
            "[ovirt]\nurl = %s\nca_file = %s\nuser = %s\npassword_file = %s\n"
            % (engine.source, engine.api_url, ENGINE_CA, user, password_file))
    if (cert, key) != (INGEST_CERT, INGEST_KEY):
        text += "\n[ingest]\ncert = %s\nkey = %s\n" % (cert, key)
    return text


def inspect_config(ctx: Context, text: str) -> Finding:
    real = ctx.path(DROPIN)
    current = None
    if os.path.exists(real):
        try:
            with open(real, encoding="utf-8") as f:
                current = f.read()
        except OSError as err:
            raise SetupError("%s: cannot read it (%s)" % (DROPIN, err.strerror)) from err
    try:
        cfg = config_mod.load(ctx.path(CONFIG))
    except config_mod.ConfigError as err:
        raise SetupError("%s: fix it first (setup only adds %s)" % (err, DROPIN)) from err
    if current == text:
        overridden = _overridden(text, cfg.as_dict())
        if overridden:
            later = [os.path.join(os.path.dirname(DROPIN), os.path.basename(p))
                     for p in cfg.sources if os.path.basename(p) > os.path.basename(DROPIN)
                     and os.path.dirname(p) == os.path.dirname(ctx.path(DROPIN))]
            raise SetupError("%s although %s sets %s: %s, read after it, overrides that; "
                             "remove the key there" % (overridden[0], DROPIN, overridden[1],
                                                       " or ".join(later) or "a later file"))
        return Finding("%s points the service at the engine" % DROPIN)
    return Finding("%s points the service at the engine" % DROPIN,
                   actions=[WriteFile(DROPIN, text, mode=0o644)])


def _overridden(text: str, effective: dict) -> Tuple[str, str] | None:
    """(what is in effect, what the drop-in says) for the first key a later file changed."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    for section in parser.sections():
        for key, value in parser.items(section):
            now = effective.get(section, {}).get(key)
            if str(now) != value:
                return ("[%s] %s = %s" % (section, key, now), value)
    return None


def inspect_store(ctx: Context) -> Finding:
    try:
        cfg = config_mod.load(ctx.path(CONFIG))
    except config_mod.ConfigError as err:
        raise SetupError(str(err)) from err
    url = cfg.as_dict()["storage"]["url"]
    if url.startswith("sqlite:"):
        folder = os.path.dirname(url.split("sqlite:///", 1)[-1]) or "/"
        real = ctx.path(folder)
        uid = ctx.uid("vmdiag")
        if not os.path.isdir(real) or os.stat(real).st_uid != uid:
            raise SetupError("%s must be a directory owned by vmdiag (the package creates "
                             "/var/lib/vmdiag): reinstall ovirt-engine-ui-plugin-vmdiag or set "
                             "[storage] url" % folder)
        return Finding("store %s (its schema is created by the service at start, as vmdiag)"
                       % url)
    if ctx.rooted:
        return Finding("store %s (not checked with --root)" % url)
    return Finding("store %s" % url, actions=[RunCommand(
        ["vmdiag-engine", "--config", CONFIG, "migrate"], what="migrate the store schema")])


def inspect_httpd(ctx: Context, engine: Engine | None, ca: ssl.SSLContext | None,
                  changed: bool) -> Finding:
    for path, what in ((HTTPD_CONF, "reinstall ovirt-engine-ui-plugin-vmdiag"),
                       (HTTPD_PROXY_MODULES, "reinstall httpd (it loads mod_proxy_http there)")):
        if not os.path.exists(ctx.path(path)):
            raise SetupError("%s is missing: %s" % (path, what))
    with open(ctx.path(HTTPD_PROXY_MODULES), encoding="utf-8") as f:
        if "proxy_http_module" not in f.read():
            raise SetupError("%s does not load proxy_http_module: add 'LoadModule "
                             "proxy_http_module modules/mod_proxy_http.so'" % HTTPD_PROXY_MODULES)
    fact = "Apache proxies /vmdiag/ to 127.0.0.1:8790 (%s)" % HTTPD_CONF
    if ctx.rooted or ctx.offline or engine is None or ca is None:
        return Finding(fact)
    url = engine.base + "/vmdiag/healthz"
    if not changed and _answers(url, ca, tries=1):
        return Finding(fact + "; %s answers" % url)
    return Finding(fact, actions=[RunCommand(["systemctl", "reload", "httpd.service"])])


def inspect_unit(ctx: Context, changed: bool) -> Finding:
    base = ["systemctl"] + (["--root=%s" % ctx.root] if ctx.rooted else [])
    state = subprocess.run(base + ["is-enabled", UNIT], capture_output=True, text=True,
                           timeout=60).stdout.strip()
    if state == "not-found" or (not state and ctx.rooted and not os.path.exists(
            ctx.path("/usr/lib/systemd/system/" + UNIT))):
        raise SetupError("%s is not installed: install ovirt-engine-ui-plugin-vmdiag" % UNIT)
    actions: List[Action] = []
    if state != "enabled":
        actions.append(RunCommand(base + ["enable", UNIT], undo_argv=base + ["disable", UNIT]))
    if ctx.rooted:
        return Finding("%s is enabled" % UNIT, actions=actions)
    active = subprocess.run(["systemctl", "is-active", UNIT], capture_output=True, text=True,
                            timeout=60).stdout.strip()
    if changed or active != "active":
        actions.append(RunCommand(["systemctl", "restart", UNIT]))
    elif not ctx.offline and not _answers("http://127.0.0.1:8790/vmdiag/healthz", None, 10):
        raise SetupError("%s is active but http://127.0.0.1:8790/vmdiag/healthz does not "
                         "answer: see journalctl -u %s" % (UNIT, UNIT))
    return Finding("%s is enabled and running" % UNIT, actions=actions)


def _answers(url: str, ca: ssl.SSLContext | None, tries: int) -> bool:
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, context=ca, timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if attempt + 1 < tries:
            time.sleep(1)
    return False


def engine_answers(engine: Engine, ca: ssl.SSLContext) -> Finding:
    """The engine's REST API answers over HTTPS with a certificate valid for ENGINE_FQDN."""
    url = engine.api_url
    try:
        with urllib.request.urlopen(url, context=ca, timeout=15):
            pass
    except urllib.error.HTTPError as err:
        if err.code != 401:
            raise SetupError("%s answers HTTP %d: check the engine (systemctl status "
                             "ovirt-engine httpd)" % (url, err.code)) from err
    except ssl.SSLCertVerificationError as err:
        raise SetupError("%s: the engine's certificate is not valid for %s with %s (%s): "
                         "ENGINE_FQDN (%s) must be the name the engine certificate was issued to"
                         % (url, engine.fqdn, ENGINE_CA, err.verify_message, engine.source)
                         ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise SetupError("%s does not answer (%s): start the engine (systemctl start "
                         "ovirt-engine httpd), or use --offline to set up without it"
                         % (url, reason)) from err
    return Finding("the engine answers at %s" % url)
