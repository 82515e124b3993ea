"""Fixtures of the Diagnostics page tests: realistic fleet, users, a running app, Chromium."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, List

import pytest

from .browser import start_chromium
from .documents import VM_FILLING, VM_HEALTHY, Fleet
from .server import ServerThread, build_app
from .source import FleetSource, User

ADMIN_TOKEN = "sso-admin.7Hq2-bUkWv_0~x"
ALICE_TOKEN = "sso-alice.Zk1/9+q=="


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def fleet(now: float) -> Fleet:
    return Fleet(now)


@pytest.fixture
def source(fleet: Fleet) -> FleetSource:
    users = {ADMIN_TOKEN: User("admin@internal", None),
             ALICE_TOKEN: User("alice@lab", frozenset({VM_HEALTHY, VM_FILLING}))}
    return FleetSource(fleet, users)


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """Start the UI app for a source in a background thread; stopped after the test."""
    started: List[ServerThread] = []

    def start(source: Any, **ui_options: Any) -> ServerThread:
        server = ServerThread(build_app(source, **ui_options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., ServerThread], source: FleetSource) -> ServerThread:
    return serve(source)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Any]:
    """The session's Chromium, reset to a 1280x800 viewport with CSP enforced and no storage."""
    from .browser import set_viewport

    set_viewport(chromium, 1280, 800)
    chromium.execute_cdp_cmd("Page.setBypassCSP", {"enabled": False})
    yield chromium
    # Every test serves on a new port, hence a new origin: no storage carries over.
    chromium.get("about:blank")
