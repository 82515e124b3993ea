"""The install test: the built RPMs installed into throwaway roots laid out as an EL9 oVirt host,
an EL9 oVirt engine machine and an EL9 guest, as docs/install.md tells an administrator.

Real components: the RPMs from rpmbuild, ``rpm --root`` (scriptlets run in the root: a shell,
``systemctl`` and ``systemd-sysusers`` are copied in), ``systemctl --root ... preset-all``,
``systemd-sysusers --root``, the ``setup`` commands reading oVirt's files at their real paths
with realistic contents, the stand-in engine over real TLS, and ``rpm -e --root``. Stand-ins:
``engine-config`` and ``ovirt-aaa-jdbc-tool`` (tests/packaging/fake_ovirt_bin), which keep their
state in a JSON file; the packages' own dependencies are not installed (``--nodeps``; no EL
mirror is reachable here), test_requires.py checks them instead.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Dict, Iterator, List

import pytest

from lab.ovirt_standin.pki import TestPKI
from lab.ovirt_standin.server import StandinEngine
from tests.real import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_BIN = os.path.join(ROOT, "tests", "packaging", "fake_ovirt_bin")
pytestmark = pytest.mark.rpm

HOST_RPMS = ["python3-vmdiag-protocol", "vmdiag-relay", "vdsm-hook-vmdiag"]
ENGINE_RPMS = ["python3-vmdiag-protocol", "ovirt-engine-ui-plugin-vmdiag"]
GUEST_RPMS = ["python3-vmdiag-protocol", "vmdiag-guest-agent"]
HOOK_POINTS = ("before_vm_start", "before_vm_migrate_destination", "before_vm_dehibernate",
               "after_vm_destroy")
OTHER_PROPERTY = "sap_agent=^(true|false)$"
DOMAIN_XML = "<domain type='kvm'><name>web1</name><uuid>%s</uuid></domain>\n" % (
    "5b2d61c6-5a4e-4a47-9c3d-2f7d1d3f4a10")

# EL9 ids: qemu-kvm's kvm (36) and qemu (107), vdsm (36), ovirt (108), apache (48)
PASSWD = {"host": ["root:x:0:0:root:/root:/bin/bash",
                   "qemu:x:107:107:qemu user:/:/sbin/nologin",
                   "vdsm:x:36:36:Node Virtualization Manager:/:/sbin/nologin"],
          "engine": ["root:x:0:0:root:/root:/bin/bash",
                     "ovirt:x:108:108:oVirt Manager:/var/lib/ovirt-engine:/sbin/nologin",
                     "apache:x:48:48:Apache:/usr/share/httpd:/sbin/nologin"],
          "guest": ["root:x:0:0:root:/root:/bin/bash"]}
GROUP = {"host": ["root:x:0:", "kvm:x:36:qemu,vdsm", "qemu:x:107:vdsm"],
         "engine": ["root:x:0:", "ovirt:x:108:", "apache:x:48:"],
         "guest": ["root:x:0:"]}


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s -> %d\n%s%s" % (" ".join(argv), proc.returncode, proc.stdout,
                                                 proc.stderr))
    return proc


def _copy_with_libraries(root: str, binary: str) -> None:
    real = os.path.realpath(binary)
    dest = os.path.join(root, "usr/bin", os.path.basename(binary))
    shutil.copy2(real, dest)
    for line in sh("ldd", real).stdout.splitlines():
        for word in line.split():
            if word.startswith("/") and os.path.exists(word):
                target = root + word
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.exists(target):
                    shutil.copy2(os.path.realpath(word), target)


def make_root(path: str, role: str) -> str:
    """An EL9-shaped root: merged /usr, passwd/group, presets, a shell and systemd's tools."""
    if os.geteuid() != 0:
        unavailable("the install test runs the packages' scriptlets in a chroot and sets file "
                    "owners, which needs root")
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc/systemd/system", "dev",
              "var/lib/rpm", "usr/lib/systemd/system", "usr/lib/systemd/system-preset", "tmp"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        os.symlink("usr/" + link, os.path.join(path, link))
    os.mknod(os.path.join(path, "dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for name in ("/bin/sh", shutil.which("systemctl"), shutil.which("systemd-sysusers")):
        _copy_with_libraries(path, str(name))
    with open(os.path.join(path, "etc/passwd"), "w") as f:
        f.write("\n".join(PASSWD[role]) + "\n")
    with open(os.path.join(path, "etc/group"), "w") as f:
        f.write("\n".join(GROUP[role]) + "\n")
    for db in ("shadow", "gshadow"):
        open(os.path.join(path, "etc", db), "w").close()
    # EL9's presets: everything disabled unless a package's preset enables it
    with open(os.path.join(path, "usr/lib/systemd/system-preset/99-default-disable.preset"),
              "w") as f:
        f.write("disable *\n")
    shutil.copy("/usr/lib/systemd/system/multi-user.target", os.path.join(
        path, "usr/lib/systemd/system/"))
    # another service that nothing enables: preset-all must leave it disabled
    with open(os.path.join(path, "usr/lib/systemd/system/bystander.service"), "w") as f:
        f.write("[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    sh("rpm", "--root", path, "--dbpath", "/var/lib/rpm", "--initdb")
    return path


def rpm_files(dist: str, names: List[str]) -> List[str]:
    out = []
    for name in names:
        [p] = [p for p in glob.glob(os.path.join(dist, name + "-*.noarch.rpm"))
               if os.path.basename(p)[len(name) + 1].isdigit()]
        out.append(p)
    return out


def install(root: str, dist: str, names: List[str]) -> None:
    """What docs/install.md says: the RPMs, then presets and sysusers as an image build does."""
    proc = sh("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-ivh", "--nodeps",
              *rpm_files(dist, names))
    assert "scriptlet failed" not in proc.stderr, proc.stderr
    sh("systemctl", "--root", root, "preset-all")
    sh("systemd-sysusers", "--root", root)


def is_enabled(root: str, unit: str) -> str:
    return sh("systemctl", "--root", root, "is-enabled", unit, check=False).stdout.strip()


def ids(root: str, db: str, name: str) -> int | None:
    with open(os.path.join(root, "etc", db)) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
    return None


def tree_digest(root: str, below: str) -> Dict[str, str]:
    out = {}
    for d, _, names in os.walk(os.path.join(root, below)):
        for n in names:
            p = os.path.join(d, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            st = os.stat(p)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = "%s %o %d" % (
                    hashlib.sha256(f.read()).hexdigest(), st.st_mode, st.st_gid)
    return out


def write(root: str, path: str, text: str, mode: int = 0o644, gid: int = 0) -> None:
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)
    os.chown(full, 0, gid)


def run_setup(command: str, root: str, *args: str, state: str | None = None,
              path_extra: str = FAKE_BIN) -> subprocess.CompletedProcess:
    """The installed command (its /usr/bin script and the packaged modules), as root runs it."""
    site = glob.glob(os.path.join(root, "usr/lib/python3*/site-packages"))
    assert site, "no site-packages in %s" % root
    env = dict(os.environ, PYTHONPATH=site[0], PATH=path_extra + os.pathsep + os.environ["PATH"])
    if state:
        env["VMDIAG_FAKE_OVIRT_STATE"] = state
    return subprocess.run([sys.executable, os.path.join(root, "usr/bin", command), "setup",
                           "--root", root, *args], capture_output=True, text=True, env=env,
                          timeout=120)


# -- the engine machine -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPKI:
    return TestPKI(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture()
def standin(pki: TestPKI) -> Iterator[StandinEngine]:
    engine = StandinEngine(pki.server(), pki.ca_file)
    engine.start()
    engine.add_cluster("c1", "Default")
    engine.add_vm("5b2d61c6-5a4e-4a47-9c3d-2f7d1d3f4a10", "web1", None, "c1")
    try:
        yield engine
    finally:
        engine.stop()


def engine_files(root: str, pki: TestPKI, port: int, fqdn: str = "localhost") -> None:
    """What engine-setup leaves on an EL9 engine machine, at the real paths."""
    write(root, "/etc/ovirt-engine/engine.conf.d/10-setup-protocols.conf",
          'ENGINE_FQDN=%s\nENGINE_PROXY_ENABLED=true\nENGINE_PROXY_HTTP_PORT=80\n'
          'ENGINE_PROXY_HTTPS_PORT=%d\nENGINE_AJP_ENABLED=true\nENGINE_AJP_PORT=8702\n'
          'ENGINE_HTTP_ENABLED=false\nENGINE_HTTPS_ENABLED=false\n' % (fqdn, port))
    write(root, "/etc/ovirt-engine/engine.conf.d/10-setup-database.conf",
          'ENGINE_DB_HOST="localhost"\nENGINE_DB_PORT="5432"\nENGINE_DB_USER="engine"\n'
          'ENGINE_DB_PASSWORD="secret"\nENGINE_DB_DATABASE="engine"\n', mode=0o640, gid=108)
    shutil.copy(pki.ca_file, os.path.join(root, "etc/pki/ovirt-engine/ca.pem")) \
        if os.path.isdir(os.path.join(root, "etc/pki/ovirt-engine")) else None
    os.makedirs(os.path.join(root, "etc/pki/ovirt-engine/certs"), exist_ok=True)
    os.makedirs(os.path.join(root, "etc/pki/ovirt-engine/keys"), exist_ok=True)
    shutil.copy(pki.ca_file, os.path.join(root, "etc/pki/ovirt-engine/ca.pem"))
    # the ingest certificate as pki-enroll-pkcs12.sh + openssl pkcs12 leave it (key root 0600)
    leaf = pki.server("vmdiag-ingest")
    shutil.copy(leaf.cert, os.path.join(root, "etc/pki/ovirt-engine/certs/vmdiag.cer"))
    shutil.copy(leaf.key, os.path.join(root, "etc/pki/ovirt-engine/keys/vmdiag.key.nopass"))
    os.chmod(os.path.join(root, "etc/pki/ovirt-engine/keys/vmdiag.key.nopass"), 0o600)
    # the engine's key folder is the engine's own (ovirt 0750): vmdiag cannot traverse it
    os.chown(os.path.join(root, "etc/pki/ovirt-engine/keys"), 108, 108)
    os.chmod(os.path.join(root, "etc/pki/ovirt-engine/keys"), 0o750)
    write(root, "/etc/httpd/conf.modules.d/00-proxy.conf",
          "LoadModule proxy_module modules/mod_proxy.so\n"
          "LoadModule proxy_http_module modules/mod_proxy_http.so\n")


def fake_ovirt_state(path: str, levels: Dict[str, str]) -> str:
    with open(path, "w") as f:
        json.dump({"UserDefinedVMProperties": levels, "aaa_users": {"admin": {}}}, f)
    return path


def load_state(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


LEVELS = {"4.2": "", "4.3": "", "4.4": "", "4.5": "", "4.6": "", "4.7": OTHER_PROPERTY}


def test_engine_machine(dist, tmp_path, pki, standin):
    root = make_root(str(tmp_path / "engine"), "engine")
    install(root, dist, ENGINE_RPMS)

    assert is_enabled(root, "vmdiag-engine.service") == "enabled"
    assert is_enabled(root, "bystander.service") == "disabled"
    assert os.path.isfile(os.path.join(root, "usr/share/ovirt-engine/ui-plugins/vmdiag.json"))
    assert os.path.isdir(os.path.join(root, "usr/share/ovirt-engine/ui-plugins/"
                                            "vmdiag-resources"))
    assert os.path.isfile(os.path.join(root, "etc/httpd/conf.d/z-vmdiag.conf"))
    uid, gid = ids(root, "passwd", "vmdiag"), ids(root, "group", "vmdiag")
    assert uid is not None and gid is not None
    st = os.stat(os.path.join(root, "var/lib/vmdiag"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o750)

    engine_files(root, pki, standin.port)
    state = fake_ovirt_state(str(tmp_path / "ovirt.json"), dict(LEVELS))
    before = tree_digest(root, "etc")

    # bad input first: each is one line naming the file or value, and nothing changes
    conflict = dict(LEVELS, **{"4.6": "vmdiag=^(yes|no)$"})
    fake_ovirt_state(state, conflict)
    proc = run_setup("vmdiag-engine", root, state=state)
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert "level 4.6: vmdiag=^(yes|no)$ is already declared" in line
    assert "nothing was changed" in proc.stdout
    assert tree_digest(root, "etc") == before
    assert load_state(state)["UserDefinedVMProperties"] == conflict

    fake_ovirt_state(state, dict(LEVELS))
    ca = os.path.join(root, "etc/pki/ovirt-engine/ca.pem")
    os.rename(ca, ca + ".away")
    proc = run_setup("vmdiag-engine", root, state=state)
    assert proc.returncode == 1
    assert "FAIL ca        /etc/pki/ovirt-engine/ca.pem is missing" in proc.stdout
    os.rename(ca + ".away", ca)
    assert tree_digest(root, "etc") == before

    standin.stop()
    proc = run_setup("vmdiag-engine", root, state=state)
    assert proc.returncode == 1
    assert "FAIL answers   https://localhost:%d/ovirt-engine/api does not answer" % (
        standin.port) in proc.stdout
    assert tree_digest(root, "etc") == before
    standin.start()

    # an action failing halfway (engine-config refuses one level): what was done is undone
    st_json = load_state(state)
    st_json["refuse_values"] = ["vmdiag=^(on|off)$"]          # the value for empty levels
    with open(state, "w") as f:
        json.dump(st_json, f)
    proc = run_setup("vmdiag-engine", root, state=state)
    assert proc.returncode == 1 and "undone:" in proc.stdout, proc.stdout
    assert tree_digest(root, "etc") == before
    assert load_state(state)["UserDefinedVMProperties"] == LEVELS
    fake_ovirt_state(state, dict(LEVELS))

    # the real run
    proc = run_setup("vmdiag-engine", root, state=state)
    out = proc.stdout
    levels = load_state(state)["UserDefinedVMProperties"]
    assert levels["4.7"] == OTHER_PROPERTY + ";vmdiag=^(on|off)$"      # the other hook kept
    assert all(levels[v] == "vmdiag=^(on|off)$" for v in ("4.2", "4.3", "4.4", "4.5", "4.6"))
    assert "restart ovirt-engine" in out
    pw_file = os.path.join(root, "etc/vmdiag/ovirt-password")
    st = os.stat(pw_file)
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o640)
    with open(pw_file) as f:
        password = f.read().strip()
    users = load_state(state)["aaa_users"]
    assert users["vmdiag"]["password"] == password
    # the service gets a copy of the key it can reach; oVirt's own folder is left as it was
    key = os.stat(os.path.join(root, "etc/pki/vmdiag/vmdiag.key.nopass"))
    assert (key.st_gid, stat.S_IMODE(key.st_mode)) == (gid, 0o640)
    keys_dir = os.stat(os.path.join(root, "etc/pki/ovirt-engine/keys"))
    assert (keys_dir.st_uid, stat.S_IMODE(keys_dir.st_mode)) == (108, 0o750)
    assert "run setup again after issuing a new certificate" in out
    # the account exists but holds no role yet: setup says so, naming the roles
    assert proc.returncode == 1
    [fail] = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert "vmdiag@internal cannot log in" in fail or "ReadOnlyAdmin" in fail, out

    # the administrator grants the roles (the stand-in's admin = ReadOnlyAdmin at system level)
    standin.add_user("vmdiag@internal", password, admin=True, can_add_events=True)
    proc = run_setup("vmdiag-engine", root, "--check", state=state)
    assert proc.returncode == 0, proc.stdout
    assert all(ln.startswith(("ok", " ")) for ln in proc.stdout.splitlines()), proc.stdout
    assert "may list every VM" in proc.stdout

    # a working config: the service reads it, and it points at the engine and files that exist
    sys.path.insert(0, glob.glob(os.path.join(root, "usr/lib/python3*/site-packages"))[0])
    from engine_plugin import config as engine_config
    cfg = engine_config.load(os.path.join(root, "etc/vmdiag/engine.conf")).as_dict()
    sys.path.pop(0)
    assert cfg["ovirt"]["url"] == standin.url.replace("127.0.0.1", "localhost")
    assert cfg["ingest"]["key"] == "/etc/pki/vmdiag/vmdiag.key.nopass"
    for path in (cfg["ovirt"]["ca_file"], cfg["ovirt"]["password_file"], cfg["ingest"]["cert"],
                 cfg["ingest"]["key"], cfg["ingest"]["ca"]):
        assert os.path.isfile(os.path.join(root, path.lstrip("/"))), path
        folder = os.path.dirname(path)
        while folder != "/":      # every folder on the way is searchable by vmdiag
            st = os.stat(os.path.join(root, folder.lstrip("/")))
            assert st.st_mode & 0o001 or (st.st_gid == gid and st.st_mode & 0o010), folder
            folder = os.path.dirname(folder)

    # a later drop-in that puts the old default back is named, with the value in effect
    write(root, "/etc/vmdiag/engine.conf.d/50-old.conf",
          "[ovirt]\nurl = https://localhost/ovirt-engine/api\n")
    proc = run_setup("vmdiag-engine", root, "--check", state=state)
    assert proc.returncode == 1
    assert ("FAIL config    [ovirt] url = https://localhost/ovirt-engine/api although "
            "/etc/vmdiag/engine.conf.d/10-setup.conf sets https://localhost:%d/ovirt-engine/api: "
            "/etc/vmdiag/engine.conf.d/50-old.conf, read after it, overrides that"
            % standin.port) in proc.stdout, proc.stdout
    os.remove(os.path.join(root, "etc/vmdiag/engine.conf.d/50-old.conf"))

    # again: nothing to do (idempotent)
    after = tree_digest(root, "etc")
    calls = len(load_state(state)["engine_config_calls"])
    proc = run_setup("vmdiag-engine", root, state=state)
    assert proc.returncode == 0 and "done" not in proc.stdout, proc.stdout
    assert tree_digest(root, "etc") == after
    assert [c[0] for c in load_state(state)["engine_config_calls"][calls:]] == ["-g"] * 2

    remove(root, ENGINE_RPMS, "vmdiag-engine.service")
    assert not os.path.exists(os.path.join(root, "usr/share/ovirt-engine/ui-plugins/"
                                                 "vmdiag.json"))


def remove(root: str, names: List[str], unit: str) -> None:
    proc = sh("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-e", *reversed(names))
    assert "scriptlet failed" not in proc.stderr, proc.stderr
    assert is_enabled(root, unit) in ("", "not-found")
    wants = glob.glob(os.path.join(root, "etc/systemd/system/*/*vmdiag*"))
    assert not wants, wants


# -- the host -----------------------------------------------------------------------------------

class _Ingest(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(405)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def ingest(pki: TestPKI) -> Iterator[int]:
    """A TLS listener that, like the engine's ingest, wants a client certificate of the CA."""
    leaf = pki.server("ingest")
    server = HTTPServer(("127.0.0.1", 0), _Ingest)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(leaf.cert, leaf.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def host_files(root: str, pki: TestPKI) -> None:
    """What host deploy leaves on an oVirt host: the vdsm certificate, key (vdsm:kvm 0440), CA."""
    leaf = pki.host("host1.example.test")
    for d in ("etc/pki/vdsm/certs", "etc/pki/vdsm/keys", "etc/libvirt/qemu"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy(leaf.cert, os.path.join(root, "etc/pki/vdsm/certs/vdsmcert.pem"))
    shutil.copy(pki.ca_file, os.path.join(root, "etc/pki/vdsm/certs/cacert.pem"))
    key = os.path.join(root, "etc/pki/vdsm/keys/vdsmkey.pem")
    shutil.copy(leaf.key, key)
    os.chown(key, 36, 36)
    os.chmod(key, 0o440)
    write(root, "/etc/libvirt/qemu/web1.xml", DOMAIN_XML)


def test_ovirt_host(dist, tmp_path, pki, ingest):
    root = make_root(str(tmp_path / "host"), "host")
    host_files(root, pki)
    vm_before = tree_digest(root, "etc/libvirt")
    install(root, dist, HOST_RPMS)

    assert is_enabled(root, "vmdiag-relay.service") == "enabled"
    assert is_enabled(root, "bystander.service") == "disabled"
    for point in HOOK_POINTS:
        hook = os.path.join(root, "usr/libexec/vdsm/hooks", point, "50_vmdiag")
        assert stat.S_IMODE(os.stat(hook).st_mode) == 0o755, point
    uid, gid = ids(root, "passwd", "vmdiag"), ids(root, "group", "vmdiag")
    assert uid is not None and gid is not None
    for d in ("var/lib/vmdiag", "var/lib/vmdiag/spool"):
        st = os.stat(os.path.join(root, d))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o750), d
    assert os.path.isfile(os.path.join(root, "usr/share/man/man8/vmdiag-relay.8"))
    assert os.path.isfile(os.path.join(root, "usr/share/doc/vmdiag-relay/relay.md"))

    # bad input: a wrong engine name, a key the relay cannot read; nothing changes
    before = tree_digest(root, "etc")
    proc = run_setup("vmdiag-relay", root, "--engine", "engine.invalid")
    assert proc.returncode == 1
    assert "FAIL engine    engine engine.invalid does not resolve" in proc.stdout
    key = os.path.join(root, "etc/pki/vdsm/keys/vdsmkey.pem")
    os.chmod(key, 0o400)
    proc = run_setup("vmdiag-relay", root, "--engine", "localhost:%d" % ingest)
    assert "FAIL hostcert  /etc/pki/vdsm/keys/vdsmkey.pem is not readable by group kvm" in (
        proc.stdout)
    os.chmod(key, 0o440)
    assert tree_digest(root, "etc") == before

    proc = run_setup("vmdiag-relay", root, "--engine", "localhost:%d" % ingest)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the engine's ingest listener answers at https://localhost:%d" % ingest in proc.stdout

    sys.path.insert(0, glob.glob(os.path.join(root, "usr/lib/python3*/site-packages"))[0])
    from vdsm_hooks.config import load_config
    cfg = load_config(os.path.join(root, "etc/vmdiag/relay.conf"), resolve_host_id=False)
    sys.path.pop(0)
    assert cfg.upload.enabled
    assert cfg.upload.url == "https://localhost:%d/ingest/v1/reports" % ingest
    for path in (cfg.upload.cert, cfg.upload.key, cfg.upload.ca):
        assert os.path.isfile(os.path.join(root, path.lstrip("/")))

    write(root, "/etc/vmdiag/relay.conf.d/50-group.conf", "[relay]\ncontrol_group = wheel\n")
    proc = run_setup("vmdiag-relay", root, "--check")
    assert "FAIL account   [relay] control_group = wheel, but the relay runs with" in (
        proc.stdout), proc.stdout
    os.remove(os.path.join(root, "etc/vmdiag/relay.conf.d/50-group.conf"))
    write(root, "/etc/vmdiag/relay.conf.d/50-old.conf", "[upload]\nenabled = no\n")
    proc = run_setup("vmdiag-relay", root, "--check")
    assert ("FAIL config    [upload] enabled = False although "
            "/etc/vmdiag/relay.conf.d/10-setup.conf sets yes: "
            "/etc/vmdiag/relay.conf.d/50-old.conf, read after it, overrides that") in (
        proc.stdout), proc.stdout
    os.remove(os.path.join(root, "etc/vmdiag/relay.conf.d/50-old.conf"))

    # again, from the engine the first run wrote: nothing to do
    after = tree_digest(root, "etc")
    proc = run_setup("vmdiag-relay", root, "--check")
    assert proc.returncode == 0, proc.stdout
    assert tree_digest(root, "etc") == after

    remove(root, HOST_RPMS, "vmdiag-relay.service")
    assert not glob.glob(os.path.join(root, "usr/libexec/vdsm/hooks/*/50_vmdiag"))
    assert tree_digest(root, "etc/libvirt") == vm_before


def test_plain_libvirt_host_and_guest(dist, tmp_path):
    root = make_root(str(tmp_path / "kvm"), "host")
    install(root, dist, ["python3-vmdiag-protocol", "vmdiag-relay"])
    assert is_enabled(root, "vmdiag-relay.service") == "enabled"
    assert not os.path.exists(os.path.join(root, "usr/libexec/vdsm"))
    proc = run_setup("vmdiag-relay", root, "--standalone")
    assert proc.returncode == 0, proc.stdout
    assert not os.path.exists(os.path.join(root, "etc/vmdiag/relay.conf.d/10-setup.conf"))
    remove(root, ["python3-vmdiag-protocol", "vmdiag-relay"], "vmdiag-relay.service")

    guest = make_root(str(tmp_path / "guest"), "guest")
    install(guest, dist, GUEST_RPMS)
    assert is_enabled(guest, "vmdiag-agent.service") == "enabled"
    assert os.path.isfile(os.path.join(guest, "usr/lib/udev/rules.d/90-vmdiag-agent.rules"))
    assert ids(guest, "passwd", "vmdiag") is None        # the agent needs no user of its own
    remove(guest, GUEST_RPMS, "vmdiag-agent.service")


def test_install_doc_gives_the_commands_this_test_runs():
    """docs/install.md, per role: the packages installed above and the setup commands run."""
    with open(os.path.join(ROOT, "docs", "install.md"), encoding="utf-8") as f:
        doc = f.read()
    sections = {title.split("\n", 1)[0].strip(): body for title, body in
                (part.split("\n", 1) for part in doc.split("\n## ")[1:])}
    roles = {"Host (oVirt, VDSM)": (HOST_RPMS, ["vmdiag-relay setup --engine",
                                                "vmdiag-relay setup --check"]),
             "Plain KVM host (libvirt, no VDSM)": (["python3-vmdiag-protocol", "vmdiag-relay"],
                                                  ["vmdiag-relay setup --standalone"]),
             "Engine": (ENGINE_RPMS, ["vmdiag-engine setup\n", "vmdiag-engine setup --check"]),
             "Guest": (GUEST_RPMS, [])}
    for title, (rpms, commands) in roles.items():
        body = sections[title]
        install_line = [ln for ln in body.split("```sh", 1)[1].split("```")[0].split("\n\n")[0]
                        .replace("\\\n", " ").splitlines() if ln.startswith("dnf install")][0]
        for rpm in rpms:
            assert "./%s-*.noarch.rpm" % rpm in install_line, (title, rpm)
        for command in commands:
            assert command in body, (title, command)
