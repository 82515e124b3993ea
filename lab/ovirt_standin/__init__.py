"""A stand-in oVirt engine for tests: real HTTPS, the engine's SSO, REST XML and event contracts.

The real engine cannot run on a CI machine, so this follows the approach of the oVirt Python
SDK's own ``tests/server.py``: an embedded HTTPS server whose answers have the shapes ovirtsdk4
parses. Unlike that server it keeps state (users, permissions, VMs, events) so tests can check
behaviour, and it fails loudly on anything it does not know.
"""

from .pki import TestPKI
from .server import REAL_ENGINE_SPEED, StandinEngine, StandinUser

__all__ = ["REAL_ENGINE_SPEED", "StandinEngine", "StandinUser", "TestPKI"]
