"""Host side of vmdiag: the VDSM hook that gives every VM its diagnostics channel, and the relay.

``domxml`` holds the pure domain-XML functions, ``hook_runner`` reads and writes the XML the
way VDSM hands it to a hook and runs each hook point, ``hooks/<hook point>/50_vmdiag`` are the
thin scripts VDSM executes, ``config`` reads ``/etc/vmdiag/relay.conf`` for the hook and the
relay daemon, and ``relay/`` is the daemon itself. See DESIGN.md, "Names and paths".
"""
