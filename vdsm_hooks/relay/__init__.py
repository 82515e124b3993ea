"""vmdiag-relay: the host daemon that reads each VM's vmdiag channel and forwards its reports.

Modules: ``discovery`` (libvirt domains and lifecycle events), ``session`` (one state machine
per VM channel), ``cache`` (latest report and counters per VM), ``control`` (the local control
socket and its client), ``daemon`` (wires them together, with the uploader) and ``cli``
(``vmdiag-relay run|status|show|request``; its docstring says which user the relay runs
as, and why).
"""
