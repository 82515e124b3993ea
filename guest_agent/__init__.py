"""vmdiag guest agent: collects diagnostics inside a VM and sends them over virtio-serial.

Layout: ``platform`` hides the operating system, ``collectors`` turn it into report sections,
``checks`` judge the sections, ``channel`` moves lines over the port without ever blocking
collection, ``daemon`` schedules the work and ``cli`` is the ``vmdiag-agent`` command.
"""

__version__ = "0.1.0"
