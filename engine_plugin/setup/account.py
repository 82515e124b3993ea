"""The service's own oVirt account, ``vmdiag@internal``, and what it may do.

The service uses its account for two things only: adding external events
(``EventsService.add``) and listing VMs with their clusters (names in events, per-cluster
thresholds). The least oVirt roles for that, both granted at system level:

- ``ExternalEventsCreator``: holds the single action group ``INJECT_EXTERNAL_EVENTS``; it
  cannot read anything.
- ``ReadOnlyAdmin``: an administrator role without a single write action group; it lets the
  account list every VM without ``Filter: true``. A user role (``UserRole``) would instead let
  the account start and stop VMs, and still see only VMs it holds permissions on.

Setup creates the account in the internal (aaa-jdbc) domain with ``ovirt-aaa-jdbc-tool`` and a
random password kept in ``/etc/vmdiag/ovirt-password`` (root:vmdiag 0640). Granting the roles
needs an administrator's session, which setup does not hold: it prints where to click, and
``--check`` proves the grant by logging in as the account and listing one VM without a filter.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import List

from .ovirt_files import Engine
from .steps import Action, Context, Finding, RunCommand, SetupError, WriteFile

USER = "vmdiag"
DOMAIN_USER = "vmdiag@internal"
PASSWORD_FILE = "/etc/vmdiag/ovirt-password"
ROLES = ("ReadOnlyAdmin", "ExternalEventsCreator")
GRANT = ("in the web admin: Administration > Configure > System Permissions > Add: user "
         "vmdiag (internal), role ReadOnlyAdmin; then Add again with role ExternalEventsCreator")


def _aaa_tool() -> str | None:
    return shutil.which("ovirt-aaa-jdbc-tool")


def inspect(ctx: Context, engine: Engine | None, ca: ssl.SSLContext | None) -> Finding:
    actions: List[Action] = []
    pw_real = ctx.path(PASSWORD_FILE)
    password = None
    if os.path.exists(pw_real):
        try:
            with open(pw_real, encoding="utf-8") as f:
                password = f.readline().rstrip("\n")
        except OSError as err:
            raise SetupError("%s: cannot read it (%s): run setup as root" % (
                PASSWORD_FILE, err.strerror)) from err
        if not password:
            raise SetupError("%s is empty: remove it and run setup again to set a new "
                             "password" % PASSWORD_FILE)
    new_password = password is None
    if password is None:
        password = secrets.token_urlsafe(24)
        actions.append(WriteFile(PASSWORD_FILE, password + "\n", mode=0o640, group="vmdiag"))
    tool = _aaa_tool()
    if tool is None:
        raise SetupError("ovirt-aaa-jdbc-tool not found (package ovirt-engine-extension-aaa-"
                         "jdbc): setup runs on the engine machine, where engine-setup installs it")
    exists = subprocess.run([tool, "user", "show", USER], capture_output=True, text=True,
                            timeout=120).returncode == 0
    if not exists:
        actions.append(RunCommand([tool, "user", "add", USER, "--attribute=firstName=vmdiag",
                                   "--attribute=description=vmdiag service account"],
                                  undo_argv=[tool, "user", "delete", USER]))
    if not exists or new_password:
        actions.append(RunCommand(
            [tool, "user", "password-reset", USER, "--password=env:VMDIAG_PW",
             "--password-valid-to=2999-12-31 23:59:59Z"],
            what="set the password of %s to the one in %s" % (DOMAIN_USER, PASSWORD_FILE),
            env={"VMDIAG_PW": password}))
    notes = []
    fact = "service account %s (password in %s)" % (DOMAIN_USER, PASSWORD_FILE)
    if actions or engine is None or ca is None or ctx.offline:
        notes.append("grant its roles %s %s" % (" and ".join(ROLES), GRANT))
        return Finding(fact, actions=actions, notes=notes)
    verdict = login_and_list(engine, ca, password)
    if verdict:
        return Finding(fact, problem=verdict)
    return Finding(fact + " logs in and may list every VM")


def login_and_list(engine: Engine, ca: ssl.SSLContext, password: str) -> str | None:
    """None when the account logs in and reads VMs unfiltered; else the line to print."""
    form = urllib.parse.urlencode({"grant_type": "password", "scope": "ovirt-app-api",
                                   "username": DOMAIN_USER, "password": password}).encode()
    url = engine.base + "/ovirt-engine/sso/oauth/token"
    req = urllib.request.Request(url, data=form, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ca, timeout=15) as resp:
            token = json.load(resp)["access_token"]
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:200]
        return ("%s cannot log in at %s (%s): remove %s and run setup again to reset the "
                "password" % (DOMAIN_USER, url, detail, PASSWORD_FILE))
    except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
        return "%s: %s: check the engine answers" % (url, err)
    vms = engine.api_url + "/vms?max=1"
    req = urllib.request.Request(vms, headers={"Authorization": "Bearer " + token,
                                               "Accept": "application/xml"})
    try:
        with urllib.request.urlopen(req, context=ca, timeout=15):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return "%s may not list VMs (HTTP %d): grant its roles %s" % (DOMAIN_USER, err.code,
                                                                          GRANT)
        return "%s: HTTP %d: check the engine log (engine.log)" % (vms, err.code)
    except (urllib.error.URLError, OSError) as err:
        return "%s: %s: check the engine answers" % (vms, err)
