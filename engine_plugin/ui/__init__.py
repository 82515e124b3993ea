"""The oVirt web admin integration of vmdiag: the Diagnostics pages and the UI plugin files.

``setup_ui(app, source)`` registers the pages on the engine service's aiohttp application; the
UI plugin itself (``plugin/vmdiag.json`` and ``plugin/vmdiag-resources/``) is static and is
installed into ``/usr/share/ovirt-engine/ui-plugins/`` by the package.
"""

from __future__ import annotations

from pathlib import Path

from .routes import PREFIX, setup_ui

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"

__all__ = ["PLUGIN_DIR", "PREFIX", "setup_ui"]
