"""Opening ovirtsdk4 connections the way vmdiag needs them, and mapping their errors.

A connection made with a *user's* token must be closed with ``logout=False``: the SDK's
default ``close()`` revokes the token, which would log the user out of the web admin.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, TypeVar

import ovirtsdk4
from ovirtsdk4 import http

from .errors import EngineRefused, EngineUnavailable, NotAuthenticated, OvirtError

T = TypeVar("T")


@dataclass(frozen=True)
class EngineEndpoint:
    """Where the engine's API is and how to trust it."""

    url: str
    ca_file: str | None
    timeout: float = 15.0


def open_user_connection(endpoint: EngineEndpoint, token: str, filtered: bool = True
                         ) -> ovirtsdk4.Connection:
    """A connection acting as the user (``Filter: true``: only what the user may see;
    ``filtered=False`` only to ask whether the engine lets the user query unfiltered). The
    caller closes it with ``close(logout=False)`` (``user_connection`` does)."""
    return ovirtsdk4.Connection(url=endpoint.url, token=token, ca_file=endpoint.ca_file,
                                timeout=int(endpoint.timeout),
                                headers={"Filter": "true" if filtered else "false"})


@contextlib.contextmanager
def user_connection(endpoint: EngineEndpoint, token: str, filtered: bool = True
                    ) -> Iterator[ovirtsdk4.Connection]:
    """``open_user_connection``, closed without revoking the user's token."""
    conn = open_user_connection(endpoint, token, filtered)
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


def get_xml(conn: ovirtsdk4.Connection, path: str, what: str,
            query: Dict[str, str] | None = None) -> ET.Element | None:
    """``GET <api>/<path>`` through the SDK's connection (its TLS, token and headers), the
    answer parsed with ElementTree instead of ovirtsdk4's object mapping: listing 10,000
    VMs costs ovirtsdk4 seconds of pure Python, ElementTree a fraction of one. None when the
    engine answers 404; its other errors are vmdiag's (``what`` names the request)."""
    def call() -> Any:
        return conn.wait(conn.send(http.Request(method="GET", path=path, query=query or {})))

    response = translate(call, what)
    code = int(response.code or 0)
    if code == 404:
        return None
    if code == 401:
        raise NotAuthenticated("the engine refused the credentials while %s; log in to the "
                               "engine again" % what)
    if code >= 500 or code == 0:
        raise EngineUnavailable("the engine failed while %s: HTTP %d" % (what, code))
    if code >= 300:
        raise EngineRefused("the engine refused %s: HTTP %d" % (what, code), code)
    try:
        return ET.fromstring(response.body)
    except ET.ParseError as err:
        raise EngineUnavailable("the engine answered %s with a document that is not XML: %s"
                                % (what, err)) from err


def link_id(obj: Any) -> str | None:
    return getattr(obj, "id", None) if obj is not None else None


def link_name(obj: Any) -> str | None:
    return getattr(obj, "name", None) if obj is not None else None


def enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


__all__ = ["EngineEndpoint", "OvirtError", "enum_value", "get_xml", "link_id", "link_name",
           "open_user_connection", "translate", "user_connection"]
