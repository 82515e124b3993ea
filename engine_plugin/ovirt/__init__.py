"""oVirt integration: who may see what (the engine decides), and external events.

Both talk to the engine's REST API through ovirtsdk4, which blocks (pycurl), so every call
runs in a bounded thread pool owned by the caller.
"""

from .errors import EngineUnavailable, NotAuthenticated, OvirtError
from .visibility import HostInfo, Visibility, VmInfo

__all__ = ["EngineUnavailable", "HostInfo", "NotAuthenticated", "OvirtError", "Visibility",
           "VmInfo"]
