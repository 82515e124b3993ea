"""The lab: what the demo, the tests and the benchmarks share on this machine; never shipped.

- ``lab.demo``: the README's main job (``python -m lab.demo``), with ``lab.demo_engine``;
- ``lab.vm``: the guest-image builder, the libvirt environment, the accelerator choice, channel
  and qemu-guest-agent clients, the VDSM hook runner;
- ``lab.ovirt_standin``: the stand-in oVirt engine (SSO, REST, events) and the test PKI;
- ``lab.pg_cluster``: throwaway PostgreSQL clusters;
- ``lab.fake_guest``, ``lab.store_reports``: simulated guests and realistic reports.

Nothing under ``diag_protocol``, ``guest_agent``, ``vdsm_hooks`` or ``engine_plugin`` imports it.
"""
