"""Errors of the oVirt integration.

::

    OvirtError               anything the engine said or did that vmdiag cannot use
     +-- NotAuthenticated    the user's SSO token is missing, expired or revoked -> HTTP 401
     +-- EngineUnavailable   the engine did not answer (down, TLS, timeout)      -> HTTP 503
     +-- EngineRefused       the engine answered with an error vmdiag did not expect
"""

from __future__ import annotations


class OvirtError(Exception):
    """Base class; ``str()`` says what happened and what to do next."""


class NotAuthenticated(OvirtError):
    """The engine does not accept the token: log in to the engine again."""


class EngineUnavailable(OvirtError):
    """The engine could not be reached; the request may be retried later."""


class EngineRefused(OvirtError):
    """The engine answered with an unexpected error (``code`` is its HTTP status)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
