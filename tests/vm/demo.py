"""The demo behind ``scripts/demo``: a real guest VM with the agent, booted through libvirtd
with the VDSM hook's channel, read by the real relay; prints its diagnostics and waits for
Ctrl-C, then shuts everything down.

    python3 -m tests.vm.demo
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from . import image as image_mod
from .libvirt_env import Guest, ensure_daemons
from .progress import log
from .relay_feed import RelayFeed


def main() -> int:
    img = image_mod.ensure_image()
    conn = ensure_daemons()
    runs = os.path.join(image_mod.cache_dir(), "runs")
    os.makedirs(runs, exist_ok=True)
    vm = Guest(conn, img, run_dir=tempfile.mkdtemp(prefix="demo-", dir=runs))
    feed = None
    try:
        log("booting the guest (KVM when it works, else TCG: about a minute)")
        vm.start()
        vm.wait_for_boot()
        feed = RelayFeed(vm.vm_id, os.path.join(vm.run_dir, "relay.log"))
        log("waiting for the first diagnostics from the guest's agent")
        feed.wait_report(timeout=300)
        env = dict(os.environ, PYTHONPATH=image_mod.SOURCE_ROOT)
        subprocess.run([sys.executable, "-m", "vdsm_hooks.relay.cli", "show", vm.vm_id,
                        "--config", feed.config], env=env, check=False)
        subprocess.run([sys.executable, "-m", "vdsm_hooks.relay.cli", "status",
                        "--config", feed.config], env=env, check=False)
        log("the guest keeps reporting; console log: %s. Ctrl-C stops everything."
            % os.path.join(vm.run_dir, "console.log"))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        if feed is not None:
            feed.close()
        vm.destroy()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
