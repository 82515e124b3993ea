"""vmdiag on the oVirt engine machine: the ``vmdiag-engine`` service, storage, health and
forecasts, oVirt integration (permissions, events), the UI plugin and SDK helpers.

Subpackages are imported on demand; importing ``engine_plugin`` itself stays cheap so SDK users
(``engine_plugin.sdk``) do not pull in aiohttp or a database driver.
"""

__version__ = "0.1.0"
