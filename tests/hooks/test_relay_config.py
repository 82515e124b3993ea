"""relay.conf and its drop-ins: defaults, override order, and errors that say what to fix."""

from __future__ import annotations

import dataclasses
import re

import pytest

from vdsm_hooks.config import (
    OPTIONS,
    ConfigError,
    HookConfig,
    MetricsConfig,
    RelaySettings,
    UploadConfig,
    default_config_text,
    default_host_id,
    load_config,
)


@pytest.fixture
def root(tmp_path):
    """A fake host file tree for the host id."""
    (tmp_path / "etc" / "vdsm").mkdir(parents=True)
    (tmp_path / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return tmp_path


def test_no_file_means_documented_defaults(tmp_path, root):
    cfg = load_config(str(tmp_path / "relay.conf"), root=str(root))
    assert cfg.sources == ()
    assert cfg.hook == HookConfig()
    assert cfg.upload == UploadConfig()
    assert cfg.relay == dataclasses.replace(RelaySettings(),
                                            host_id="0123456789abcdef0123456789abcdef")
    assert cfg.upload.spool_max_bytes == 256 * 1024 * 1024


def test_dataclass_defaults_agree_with_the_option_table():
    classes = {"hook": HookConfig(), "relay": RelaySettings(), "upload": UploadConfig(),
               "metrics": MetricsConfig()}
    for option in OPTIONS:
        assert getattr(classes[option.section], option.key) == option.parse(option.default), \
            option.key
    declared = {(o.section, o.key) for o in OPTIONS}
    fields = {(s, f.name) for s, obj in classes.items() for f in dataclasses.fields(obj)}
    assert declared == fields


def test_host_id_prefers_vdsm_id(root):
    assert default_host_id(str(root)) == "0123456789abcdef0123456789abcdef"
    (root / "etc" / "vdsm" / "vdsm.id").write_text("4c4c4544-0035-4810-8052-b4c04f4d3732\n")
    assert default_host_id(str(root)) == "4c4c4544-0035-4810-8052-b4c04f4d3732"


def test_uploading_relay_is_known_by_its_certificate_cn(tmp_path, root):
    # The engine records uploads under the client certificate's CN, so that is the default.
    from lab.ovirt_standin import TestPKI

    pki = TestPKI(str(tmp_path / "pki"))
    host = pki.host("host1.example.test")
    conf = tmp_path / "relay.conf"
    conf.write_text("[upload]\nenabled = on\nurl = https://engine:8791/ingest/v1/reports\n"
                    "cert = %s\nkey = %s\n" % (host.cert, host.key))
    assert load_config(str(conf), root=str(root)).relay.host_id == "host1.example.test"
    conf.write_text(conf.read_text() + "[relay]\nhost_id = explicit\n")
    assert load_config(str(conf), root=str(root)).relay.host_id == "explicit"
    # an unreadable certificate, or uploads off, fall back to the host's id files
    broken = tmp_path / "broken.conf"
    broken.write_text("[upload]\nenabled = on\nurl = https://engine:8791/ingest/v1/reports\n"
                      "cert = %s\nkey = %s\n" % (tmp_path / "missing.pem", host.key))
    assert load_config(str(broken), root=str(root)).relay.host_id == \
        "0123456789abcdef0123456789abcdef"


def test_no_host_id_anywhere_says_what_to_set(tmp_path):
    with pytest.raises(ConfigError, match=r"set \[relay\] host_id"):
        load_config(str(tmp_path / "relay.conf"), root=str(tmp_path))
    cfg = load_config(str(tmp_path / "relay.conf"), root=str(tmp_path), resolve_host_id=False)
    assert cfg.relay.host_id == ""


def test_drop_ins_override_in_sorted_order(tmp_path, root):
    main = tmp_path / "relay.conf"
    main.write_text("[upload]\nbatch_size = 100\nspool_max_bytes = 1GiB\n[relay]\nhost_id = h1\n")
    drop = tmp_path / "relay.conf.d"
    drop.mkdir()
    (drop / "20-b.conf").write_text("[upload]\nbatch_size = 300\n")
    (drop / "10-a.conf").write_text("[upload]\nbatch_size = 200\nbatch_interval = 0.5\n")
    (drop / "99-z.conf.rpmsave").write_text("[upload]\nbatch_size = 999\n")
    cfg = load_config(str(main), root=str(root))
    assert cfg.upload.batch_size == 300
    assert cfg.upload.batch_interval == 0.5
    assert cfg.upload.spool_max_bytes == 1 << 30
    assert cfg.relay.host_id == "h1"
    assert cfg.sources == (str(main), str(drop / "10-a.conf"), str(drop / "20-b.conf"))


def test_env_variable_names_the_main_file(tmp_path, monkeypatch):
    main = tmp_path / "other.conf"
    main.write_text("[hook]\ndefault = off\n")
    monkeypatch.setenv("VMDIAG_RELAY_CONF", str(main))
    assert load_config(resolve_host_id=False).hook.default is False


@pytest.mark.parametrize("text, pattern", [
    ("[upload]\nbatch_sise = 5\n", r"unknown key 'batch_sise' in \[upload\]; allowed: enabled, "
                                   r"url, cert"),
    ("[uplaod]\nenabled = on\n", r"unknown section \[uplaod\]; allowed: \[hook\], \[relay\]"),
    ("[upload]\nbatch_size = 0\n", r"\[upload\] batch_size = '0': expected a whole number "
                                   r"from 1 to 10000"),
    ("[upload]\nspool_max_bytes = 12 parsecs\n", r"expected a size such as"),
    ("[upload]\nurl = http://engine:8791/x\n", r"expected https://<engine>:8791"),
    ("[relay]\nchannels_dir = relative/dir\n", r"expected an absolute path"),
    ("[hook]\ndefault = sometimes\n", r"\[hook\] default = 'sometimes': expected on or off"),
    ("[upload]\nenabled = on\n", r"needs \[upload\] url"),
    ("[upload]\nenabled = yes\nurl = https://e:8791/ingest/v1/reports\ncert =\n",
     r"cert and key must be set together"),
    ("[DEFAULT]\nx = 1\n", r"unknown section \[DEFAULT\]"),
    ("batch_size = 1\n", r"not a valid INI file"),
    ("[upload]\nbatch_size = 1\nbatch_size = 2\n", r"not a valid INI file"),
])
def test_errors_name_the_file_the_key_and_what_is_allowed(tmp_path, text, pattern):
    main = tmp_path / "relay.conf"
    main.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(main), resolve_host_id=False)
    message = str(err.value)
    assert message.startswith(str(main)), message
    assert re.search(pattern, message), message


def test_error_in_a_drop_in_names_the_drop_in(tmp_path):
    drop = tmp_path / "relay.conf.d"
    drop.mkdir()
    (drop / "50-site.conf").write_text("[relay]\nmax_vms = lots\n")
    with pytest.raises(ConfigError, match=r"50-site\.conf: \[relay\] max_vms = 'lots'"):
        load_config(str(tmp_path / "relay.conf"), resolve_host_id=False)


def test_the_generated_default_file_documents_and_round_trips(tmp_path, root):
    text = default_config_text()
    for option in OPTIONS:
        assert "# %s\n#%s = %s\n" % (option.doc, option.key, option.default) in text
    main = tmp_path / "relay.conf"
    main.write_text(re.sub(r"(?m)^#(\w+ = )", r"\1", text))
    assert load_config(str(main), root=str(root)) == dataclasses.replace(
        load_config(str(tmp_path / "absent.conf"), root=str(root)), sources=(str(main),))
