"""``vmdiag-relay check VM``: the Nagios/Icinga plugin, against a real relay daemon.

The daemon runs on libvirt's test driver with fake guests on real unix sockets (as in
test_daemon); the plugin runs as a subprocess, so its exit code and output are what Nagios
would get.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from lab.fake_guest import FakeGuest, hello, sample_report
from tests.relay.test_daemon import cli, conn, daemon, domain_xml  # noqa: F401 - fixtures
from tests.relay.test_session import until
from vdsm_hooks.relay import nagios_check
from vdsm_hooks.relay.session import Runstate

pytestmark = pytest.mark.libvirt

#: The perfdata grammar of the Nagios plugin guidelines.
PERF = re.compile(r"'[^'=]+'=-?[0-9.]+(s|%|c|B)?(;[0-9.]*){0,4}")


def perfdata(out: str) -> list[str]:
    first = out.splitlines()[0]
    assert first.count("|") == 1, first
    items = first.split("|", 1)[1].split()
    # labels are quoted and may hold spaces: rejoin them
    joined, cur = [], ""
    for item in items:
        cur = item if not cur else cur + " " + item
        if cur.count("'") == 2:
            joined.append(cur)
            cur = ""
    assert not cur
    for item in joined:
        assert PERF.fullmatch(item), item
    return joined


async def start_vm(conn, daemon, tmp_path, name):  # noqa: F811 - fixtures
    guest = await FakeGuest(str(tmp_path / ("%s.sock" % name)), auto_reply=True).start()
    conn.createXML(domain_xml(name, guest.vm_id, guest.path), 0)
    await until(lambda: guest.vm_id in daemon.sessions, what="session")
    await daemon.sessions[guest.vm_id].wait_state(Runstate.CONNECTED, timeout=5)
    return guest


async def test_exit_codes_and_perfdata_follow_the_latest_report(daemon, conn, tmp_path):  # noqa: F811
    guest = await start_vm(conn, daemon, tmp_path, "vmdiag-t-chk")
    sock = daemon.settings.control_socket
    try:
        session = daemon.sessions[guest.vm_id]
        code, out, _ = await cli("check", "vmdiag-t-chk", "--socket", sock)
        assert code == 3 and out.startswith("VMDIAG UNKNOWN - vmdiag-t-chk: no report"), out

        for seq, worst, want in ((1, "critical", 2), (2, "warning", 1), (3, "ok", 0)):
            await guest.send(hello("3.0"), sample_report(seq=seq, worst=worst))
            await until(lambda n=seq: session.entry.summary is not None
                        and session.entry.summary.seq == n, what="report %d" % seq)
            code, out, err = await cli("check", guest.vm_id, "--socket", sock)
            assert code == want, (out, err)
            labels = [p.split("=")[0] for p in perfdata(out)]
            assert labels[:4] == ["'report_age'", "'cpu'", "'memory'", "'swap'"]
            assert "'fs /mnt/0'" in labels and "'inodes /mnt/5'" in labels
            assert "'dropped'" in labels
            if worst != "ok":
                assert "mem.available: Only 12% of memory" in out.splitlines()[0]
                assert out.splitlines()[1].startswith(worst.upper() + " mem.available")
            else:
                assert "7 checks ok" in out

        # stale: the same report, judged with a short interval after it has aged
        await asyncio.sleep(0.6)
        code, out, _ = await cli("check", "vmdiag-t-chk", "--interval", "0.2", "--stale", "2",
                                 "--socket", sock)
        assert code == 3 and "more than 2 intervals" in out and "agent silent" in out, out
        assert perfdata(out)[0].startswith("'report_age'=")
    finally:
        await guest.close()


async def test_unknown_vm_and_no_relay_are_unknown_with_the_reason(daemon, tmp_path):  # noqa: F811
    code, out, _ = await cli("check", "no-such-vm", "--socket", daemon.settings.control_socket)
    assert code == 3 and "no VM 'no-such-vm' on this host" in out, out
    code, out, _ = await cli("check", "x", "--socket", str(tmp_path / "none.sock"))
    assert code == 3 and "vmdiag-relay is not running" in out, out


async def test_hostile_guest_text_cannot_break_the_plugin_output(daemon, conn, tmp_path):  # noqa: F811
    guest = await start_vm(conn, daemon, tmp_path, "vmdiag-t-bad")
    try:
        session = daemon.sessions[guest.vm_id]
        report = sample_report(seq=1, worst="critical")
        fs = report["sections"]["resources"]["data"]["filesystems"]
        fs[0]["mountpoint"] = "/a'b=c|d\ne"
        check = report["sections"]["checks"]["data"]["results"][-1]
        check["message"] = "bad | 'x'=1;;\nCRITICAL fake line\x1b[31m" + "y" * 1900
        check["id"] = "id|with\nnewline"
        await guest.send(report)
        await until(lambda: session.entry.summary is not None, what="report")
        code, out, _ = await cli("check", "vmdiag-t-bad", "--socket",
                                 daemon.settings.control_socket)
        assert code == 2
        lines = out.splitlines()
        assert len(lines) == 2 and "\x1b" not in out  # status line + one long line
        assert len(lines[0]) < 4000 and "CRITICAL fake line" in lines[0]
        assert "'fs /a_b_c_d_e'=40%;;;0;100" in perfdata(out)
    finally:
        await guest.close()


def test_evaluate_without_checks_or_resources_is_ok_and_says_so():
    vm = {"vm_id": "v", "name": "n", "last_report_age": 1.0, "state": "connected",
          "responsive": True, "report": {"sections": {}}, "counters": {"dropped": 0}}
    result = nagios_check.evaluate(vm)
    assert result.exit_code == 0 and "no checks" in result.summary
    vm["report"] = {"sections": {"checks": {"data": {"results": [
        {"id": "a", "status": "bogus"}, {"id": "b", "status": "ok"}]}}}}
    result = nagios_check.evaluate(vm)
    assert result.status == "unknown" and result.details == ["UNKNOWN a: "]
