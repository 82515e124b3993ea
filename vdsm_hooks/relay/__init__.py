"""vmdiag-relay: the host daemon that reads each VM's vmdiag channel and forwards its reports.

Modules: ``discovery`` (libvirt domains and lifecycle events), ``session`` (one state machine
per VM channel), ``cache`` (latest report and counters per VM), ``control`` (the local control
socket and its client), ``daemon`` (wires them together, with the uploader) and ``cli``
(``vmdiag-relay run|status|show|request``; its docstring says which user the relay runs
as, and why).
"""

from diag_protocol.framing import use_fast_json

try:
    import orjson
except ImportError:  # optional: the standard library gives the same results, slower
    pass
else:
    # decoding each guest line and encoding each report once: the relay's main costs
    use_fast_json(orjson)
