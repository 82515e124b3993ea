"""Run an aiohttp app with ``setup_ui`` in a background thread, for the browser tests.

Selenium calls block, so the app gets its own event loop in a thread; it listens on 127.0.0.1 on
a free port. Besides the pages it serves what the engine serves to a UI plugin: the descriptor
list (as WebAdmin.html embeds it) and ``/ovirt-engine/webadmin/plugin/vmdiag/*`` from the plugin's
resource folder, plus the web admin stand-in of ``harness/``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from engine_plugin.ui import PLUGIN_DIR, setup_ui

HARNESS_DIR = Path(__file__).resolve().parent / "harness"


def plugin_definitions() -> list:
    """What the engine puts into WebAdmin.html for each descriptor in ui-plugins/."""
    descriptor = json.loads((PLUGIN_DIR / "vmdiag.json").read_text())
    return [{"name": descriptor["name"], "url": descriptor["url"],
             "config": descriptor.get("config", {}), "enabled": True}]


def build_app(source: Any, **ui_options: Any) -> web.Application:
    app = web.Application()
    setup_ui(app, source, **ui_options)
    descriptor = json.loads((PLUGIN_DIR / "vmdiag.json").read_text())
    resources = (PLUGIN_DIR / descriptor["resourcePath"]).resolve()

    async def plugin_resource(request: web.Request) -> web.StreamResponse:
        path = (resources / request.match_info["path"]).resolve()
        if resources not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def definitions(request: web.Request) -> web.Response:
        return web.json_response(plugin_definitions())

    async def harness_page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(HARNESS_DIR / "webadmin.html")

    async def harness_js(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(HARNESS_DIR / "harness.js",
                                headers={"Content-Type": "text/javascript"})

    app.router.add_get("/ovirt-engine/webadmin/plugin/%s/{path:.+}" % descriptor["name"],
                       plugin_resource)
    app.router.add_get("/ovirt-engine/webadmin/harness.html", harness_page)
    app.router.add_get("/harness/harness.js", harness_js)
    app.router.add_get("/harness/plugin-definitions.json", definitions)
    return app


class ServerThread:
    """An aiohttp server on 127.0.0.1 in its own thread and loop; ``url`` is its base URL."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = "http://127.0.0.1:%d" % port

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the UI test server did not start within 10 s")
        return self

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
