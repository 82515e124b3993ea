"""Opening ovirtsdk4 connections the way vmdiag needs them, and mapping their errors.

A connection made with a *user's* token must be closed with ``logout=False``: the SDK's
default ``close()`` revokes the token, which would log the user out of the web admin.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import ovirtsdk4

from .errors import EngineRefused, EngineUnavailable, NotAuthenticated, OvirtError

T = TypeVar("T")


@dataclass(frozen=True)
class EngineEndpoint:
    """Where the engine's API is and how to trust it."""

    url: str
    ca_file: str | None
    timeout: float = 15.0


@contextlib.contextmanager
def user_connection(endpoint: EngineEndpoint, token: str) -> Iterator[ovirtsdk4.Connection]:
    """A connection acting as the user (``Filter: true``: only what the user may see)."""
    conn = ovirtsdk4.Connection(url=endpoint.url, token=token, ca_file=endpoint.ca_file,
                                timeout=int(endpoint.timeout), headers={"Filter": "true"})
    try:
        yield conn
    finally:
        conn.close(logout=False)


def translate(call: Callable[[], T], what: str) -> T:
    """Run ``call``; turn ovirtsdk4's errors into vmdiag's (``what`` names the request)."""
    try:
        return call()
    except ovirtsdk4.AuthError as err:
        raise NotAuthenticated("the engine refused the credentials while %s: %s; log in to "
                               "the engine again" % (what, err)) from err
    except (ovirtsdk4.ConnectionError, ovirtsdk4.TimeoutError) as err:
        raise EngineUnavailable("the engine did not answer while %s: %s; check that "
                                "ovirt-engine runs and [ovirt] url" % (what, err)) from err
    except ovirtsdk4.NotFoundError:
        raise
    except ovirtsdk4.Error as err:
        code = getattr(err, "code", None)
        if code is None:
            # pycurl-level failures (TLS, connection reset) carry no HTTP code.
            raise EngineUnavailable("talking to the engine failed while %s: %s; check [ovirt] "
                                    "url and ca_file" % (what, err)) from err
        if code >= 500:
            raise EngineUnavailable("the engine failed while %s: %s" % (what, err)) from err
        raise EngineRefused("the engine refused %s: %s" % (what, err), code) from err


def link_id(obj: Any) -> str | None:
    return getattr(obj, "id", None) if obj is not None else None


def link_name(obj: Any) -> str | None:
    return getattr(obj, "name", None) if obj is not None else None


def enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


__all__ = ["EngineEndpoint", "OvirtError", "enum_value", "link_id", "link_name", "translate",
           "user_connection"]
