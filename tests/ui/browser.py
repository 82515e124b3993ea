"""Helpers to drive Debian's headless Chromium through Selenium and /usr/bin/chromedriver.

No browser is downloaded: the tests use the distribution's chromium and chromium-driver packages.
A script installed before any page script runs records whatever executes through ``__xss`` or
``alert``/``confirm``/``prompt``, and every Content-Security-Policy violation, in every frame.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

from lab.browser import CHROMEDRIVER, CHROMIUM, chromium_driver
from tests.real import require_module, unavailable

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"

HOOK = """
(function () {
  var calls = [];
  var csp = [];
  Object.defineProperty(window, "__xssCalls", {value: calls});
  Object.defineProperty(window, "__cspViolations", {value: csp});
  function hit(what) {
    calls.push(String(what));
    try { if (window.top !== window && window.top.__xssCalls) window.top.__xssCalls.push(what); }
    catch (e) {}
  }
  window.__xss = hit;
  window.alert = function (m) { hit("alert:" + m); };
  window.confirm = function (m) { hit("confirm:" + m); return false; };
  window.prompt = function (m) { hit("prompt:" + m); return null; };
  document.addEventListener("securitypolicyviolation", function (e) {
    csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
  });
})();
"""


def start_chromium(profile_dir: Path) -> Any:
    """Start headless Chromium, or skip with the reason when this machine has no Chromium."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        unavailable("Chromium or chromedriver missing: apt-get install chromium chromium-driver")
    require_module("selenium.webdriver", "pip install selenium")
    driver = chromium_driver(profile_dir)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
    return driver


def set_viewport(driver: Any, width: int, height: int = 800) -> None:
    """Exact CSS viewport size (the window size would include browser chrome)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def wait_for(driver: Any, script: str, timeout: float = 15.0, what: str = "") -> Any:
    """Poll a JavaScript expression until it is truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script("return (%s);" % script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s (%s); last value %r" % (
        timeout, what or script, driver.current_url, value))


def open_page(driver: Any, url: str, timeout: float = 15.0) -> None:
    """Load a Diagnostics page in a fresh document and wait until its fragment is swapped in."""
    driver.get("about:blank")  # a URL differing only in its #fragment would not reload
    driver.get(url)
    wait_for(driver, "document.querySelector('#vmdiag-root') && "
                     "document.querySelector('#vmdiag-root').getAttribute('aria-busy') === "
                     "'false' && !document.querySelector('.vmdiag-loading')",
             timeout, "the page fragment")


def screenshot(driver: Any, name: str) -> Path:
    """Save a full-page PNG under tests/artifacts/ui/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000),
                 "scale": 1}})
    path = ARTIFACTS / (name + ".png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
