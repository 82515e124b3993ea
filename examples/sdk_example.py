#!/usr/bin/env python3
"""Print vmdiag's view of the fleet, and the diagnostics of the worst VMs, with the oVirt SDK.

    python3 examples/sdk_example.py https://engine.example.com/ovirt-engine/api \
        admin@internal /etc/pki/ovirt-engine/ca.pem [--vm VM_ID] [--wait 120]

The password is read from the terminal (or $OVIRT_PASSWORD). Whatever the user may not see in
oVirt, vmdiag does not show either.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

import ovirtsdk4

from engine_plugin import sdk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="engine API URL, https://<engine>/ovirt-engine/api")
    parser.add_argument("user", help="oVirt user, e.g. admin@internal")
    parser.add_argument("ca_file", help="engine CA certificate (PEM)")
    parser.add_argument("--vm", help="show this VM's diagnostics and memory history")
    parser.add_argument("--wait", type=float, default=0,
                        help="with --vm: first wait this many seconds for a fresh report")
    args = parser.parse_args()
    password = os.environ.get("OVIRT_PASSWORD") or getpass.getpass("Password: ")

    connection = ovirtsdk4.Connection(url=args.url, username=args.user, password=password,
                                      ca_file=args.ca_file)
    try:
        fleet = sdk.fleet_summary(connection)
        print("fleet: " + ", ".join("%s %d" % kv for kv in sorted(fleet.counts.items())))
        for vm in fleet.vms:
            if vm.health in ("warning", "critical"):
                first = vm.findings[0].message if vm.findings else ""
                print("  %-8s %-30s %s" % (vm.health, vm.name, first))
        if args.vm:
            if args.wait:
                diag = sdk.wait_for_report(connection, args.vm, time.time() + args.wait)
            else:
                diag = sdk.vm_diagnostics(connection, args.vm)
            print("%s on %s: %s (agent %s)" % (diag.vm.name, diag.vm.host_name,
                                               diag.health.status, diag.agent.state))
            for finding in diag.health.findings:
                print("  - [%s] %s" % (finding.status, finding.message))
            for fc in diag.forecasts:
                if fc.eta_s is not None:
                    print("  forecast %s: full in %.1f days (%s)" % (fc.label, fc.eta_s / 86400,
                                                                     fc.status))
            now = time.time()
            series = sdk.history(connection, args.vm, "memory.percent", now - 86400, now)
            if series.points:
                values = [v for _, v in series.points]
                print("  memory last 24 h: min %.0f%%, max %.0f%% (%d points, %s)" % (
                    min(values), max(values), len(values), series.resolution))
    except sdk.VmdiagError as err:
        print("vmdiag: %s" % err, file=sys.stderr)
        return 1
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
