"""The Jinja2 environment of the Diagnostics pages.

Autoescaping is on for every template, whatever its file name, because nearly every string on
these pages comes from inside a guest (hostnames, unit and process names, sysctl values) and
must show as text, never as markup. No template uses ``|safe``; tests/ui checks that payloads
stay inert in a real browser.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict

import jinja2

from diag_protocol import units

from . import formatting

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


def make_environment() -> jinja2.Environment:
    """A sandbox-free but escape-everything environment with the page's formatting filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # One filter per unit of diag_protocol.units, named for it: a template says what unit a
    # value is in ({{ i.rx_bps|bits_per_second }}), and the table says how that unit reads.
    env.filters.update({name: _unit_filter(name) for name in units.UNITS})
    env.filters.update({"utc": formatting.utc_text, "iso": formatting.iso_utc})
    env.globals["MISSING"] = formatting.MISSING
    return env


def _unit_filter(unit: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return units.format_value(unit, value)
    fmt.__name__ = unit
    return fmt


def static_versions() -> Dict[str, str]:
    """Content hashes of the page's own assets, appended as ``?v=`` so upgrades bust caches."""
    versions = {}
    for name in ("vmdiag.css", "vmdiag.js", "vendor/patternfly/patternfly-vmdiag.css"):
        path = STATIC_DIR / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "0"
        versions[name] = digest
    return versions


def render(env: jinja2.Environment, template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)
