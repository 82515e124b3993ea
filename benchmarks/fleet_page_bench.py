"""The fleet page with a large fleet, in headless Chromium, timed by the browser itself.

Runs the real vmdiag-engine service (SQLite store, ovirtsdk4 against the stand-in oVirt engine
of lab/, which lists the same VMs and answers at a real engine's speed, ``REAL_ENGINE_SPEED``:
a cost per request and per VM listed, docs/engine.md) with ``--vms`` VMs, opens the fleet page
the way the UI plugin does (SSO token in the URL fragment) and reports, from the browser's own
clocks, for an administrator (shown every VM, from the service's shared VM directory) and for
a user who is not one but may see every VM (per-VM permissions: their own filtered list):

* first render: navigation start (``performance.timeOrigin``) to the fragment swapped in and
  painted (the page's ``vmdiag:loaded`` event, then one animation frame) --
  *new user*: the service has never seen the user (cold: the engine is asked who they are and
  what they may see); *new token*: a user it has seen, with a token it has not (the engine
  checks the token); *warm*: the same token again;
* a user's first render is of the first page the engine answered (the service reads the
  user's list a page at a time; the page says it is still reading); *whole list shown*:
  navigation start to the first render that no longer says so;
* page change: click on "next page" to the new page painted (``performance.now()`` in the
  page), and a search typed into the filter to its result painted;
* the fragment's own fetch (Resource Timing: request start to response end), and Chromium's
  own main-thread counters for the warm render (CDP ``Performance.getMetrics``: task time,
  style recalculation and layout).

Side by side, in the same run: administrator against user for each page size (``--per-page``,
50 the default against 500 the most one page may hold), with the load average before and after
each, and what one cache miss of the whole list cost before (through ovirtsdk4's parser)
against the lean read. Medians over ``--runs``. The targets (issues 16 and 17): 1 s cold and
200 ms warm, and each first render and page change within 1 s.

    python benchmarks/fleet_page_bench.py --vms 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import quote

import ovirtsdk4
from ovirtsdk4 import http, reader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_plugin import config as config_mod  # noqa: E402
from engine_plugin.ovirt.connection import get_xml  # noqa: E402
from engine_plugin.ovirt.visibility import VmInfo  # noqa: E402
from engine_plugin.service.app import EngineService  # noqa: E402
from lab.big_fleet import BigFleet  # noqa: E402
from lab.browser import chromium_driver  # noqa: E402
from lab.ovirt_standin import REAL_ENGINE_SPEED, StandinEngine, TestPKI  # noqa: E402

LOADED_HOOK = """
window.__vmdiagLoads = [];
window.__vmdiagComplete = [];
document.addEventListener("vmdiag:loaded", function () {
  var reading = !!document.querySelector("[data-vmdiag-reading]");
  requestAnimationFrame(function () {
    setTimeout(function () {
      window.__vmdiagLoads.push(performance.now());
      if (!reading) { window.__vmdiagComplete.push(performance.now()); }
    }, 0);
  });
});
"""

WAIT_COMPLETE = """
var done = arguments[arguments.length - 1];
(function poll() {
  if (window.__vmdiagComplete && window.__vmdiagComplete.length) {
    done(window.__vmdiagComplete[0]);
  } else { setTimeout(poll, 20); }
})();
"""

WAIT_LOADS = """
var want = arguments[0], done = arguments[arguments.length - 1];
(function poll() {
  if (window.__vmdiagLoads && window.__vmdiagLoads.length >= want) {
    done(window.__vmdiagLoads[want - 1]);
  } else { setTimeout(poll, 5); }
})();
"""

CLICK_AND_WAIT = """
var selector = arguments[0], done = arguments[arguments.length - 1];
var before = window.__vmdiagLoads.length;
var t0 = performance.now();
document.querySelector(selector).click();
(function poll() {
  if (window.__vmdiagLoads.length > before) { done(window.__vmdiagLoads[before] - t0); }
  else { setTimeout(poll, 5); }
})();
"""

SEARCH_AND_WAIT = """
var text = arguments[0], done = arguments[arguments.length - 1];
var before = window.__vmdiagLoads.length;
var form = document.getElementById("fleet-filters");
document.getElementById("filter-q").value = text;
var t0 = performance.now();
form.requestSubmit();
(function poll() {
  if (window.__vmdiagLoads.length > before) { done(window.__vmdiagLoads[before] - t0); }
  else { setTimeout(poll, 5); }
})();
"""

FRAGMENT_TIMING = """
var entries = performance.getEntriesByType("resource").filter(
  function (e) { return e.name.indexOf("/fleet/fragment") >= 0; });
var e = entries[entries.length - 1];
return e ? [e.responseEnd - e.requestStart, e.requestStart] : [null, null];
"""


def service_config(pki: TestPKI, engine: StandinEngine, store_url: str) -> Any:
    server = pki.server("ingest")
    return config_mod.load("/nonexistent/engine.conf", overrides={
        "api": {"listen": "127.0.0.1", "port": "0"},
        # one process: an ingest process would read the whole directory from the stand-in too
        "ingest": {"listen": "127.0.0.1", "port": "0", "cert": server.cert, "key": server.key,
                   "ca": pki.ca_file, "processes": "1"},
        "storage": {"url": store_url},
        "ovirt": {"url": engine.url, "ca_file": pki.ca_file, "user": "vmdiag@internal",
                  "password": "svcpw", "visibility_cache_ttl": "30", "timeout": "60"},
        "events": {"enabled": "no"},
    })


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


USERS = itertools.count(1)
KINDS = (("admin", "administrator (shared directory)"),
         ("user", "user who may see every VM (own list)"))
STEPS = ("first_new_user", "first_new_token", "first_warm", "fragment_new_user",
         "fragment_new_token", "fragment_warm", "shell_new_user", "shell_new_token",
         "shell_warm", "complete_new_user", "busy_warm", "style_layout_warm", "next_page",
         "search")
#: Chromium's own main-thread counters (CDP Performance.getMetrics), seconds, summed per load
BUSY = ("TaskDuration",)
STYLE_LAYOUT = ("RecalcStyleDuration", "LayoutDuration")


def browser_metrics(driver: Any) -> Dict[str, float]:
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return {m["name"]: float(m["value"]) for m in metrics}


def open_fleet(driver: Any, base: str, per_page: int, token: str
               ) -> Tuple[float, float, float, float, float, float]:
    """(first render, fragment fetch, fragment request start, whole list shown, main-thread
    busy, style and layout) of the fleet page opened with ``token``, in ms (the third: the
    page shell, its assets and script before the fetch; the fourth: until the page no longer
    says it is still reading the user's list from oVirt; the last two: Chromium's counters
    from navigation until the first render)."""
    driver.get("about:blank")
    before = browser_metrics(driver)
    driver.get("%sfleet?per_page=%d#token=%s" % (base, per_page, quote(token, safe="")))
    render = driver.execute_async_script(WAIT_LOADS, 1)
    after = browser_metrics(driver)
    fetch, start = driver.execute_script(FRAGMENT_TIMING)
    complete = driver.execute_async_script(WAIT_COMPLETE)

    def spent(names: Tuple[str, ...]) -> float:
        # the counters are the page's: a navigation to a new renderer starts them again
        return 1000 * sum(after.get(n, 0.0) - (before.get(n, 0.0) if after.get(n, 0.0) >=
                                               before.get(n, 0.0) else 0.0) for n in names)
    return render, fetch, start, complete, spent(BUSY), spent(STYLE_LAYOUT)


def measure(driver: Any, base: str, engine: StandinEngine, fleet: BigFleet, per_page: int,
            runs: int) -> Dict[str, Dict[str, List[float]]]:
    """Every run of the administrators first, then the users' (whose first list is heavy for
    the stand-in, which runs in this process, so it is not mixed into the others' figures)."""
    out = {kind: {step: [] for step in STEPS + ("load",)} for kind, _ in KINDS}
    for kind, _label in KINDS:
        out[kind]["load"].append(os.getloadavg()[0])
        for _ in range(runs):
            name = "%s%d@internal" % (kind, next(USERS))
            if kind == "admin":
                engine.add_user(name, "pw", admin=True)
            else:
                engine.add_user(name, "pw", vms=fleet.vm_ids, hosts=fleet.host_ids)
            first, second = engine.issue_token(name), engine.issue_token(name)
            for step, token in (("new_user", first), ("new_token", second), ("warm", second)):
                render, fragment, shell, complete, busy, style = open_fleet(
                    driver, base, per_page, token)
                out[kind]["first_" + step].append(render)
                out[kind]["fragment_" + step].append(fragment)
                out[kind]["shell_" + step].append(shell)
                if step == "new_user":
                    out[kind]["complete_new_user"].append(complete)
                if step == "warm":
                    out[kind]["busy_warm"].append(busy)
                    out[kind]["style_layout_warm"].append(style)
            out[kind]["next_page"].append(driver.execute_async_script(CLICK_AND_WAIT,
                                                                      "#page-next-top"))
            out[kind]["search"].append(driver.execute_async_script(SEARCH_AND_WAIT,
                                                                   "vm-0777"))
        out[kind]["load"].append(os.getloadavg()[0])
    return out


def list_costs(engine: StandinEngine, runs: int) -> Dict[str, List[float]]:
    """One cache miss of a user who may see every VM, before and now (seconds): the whole
    request with the list parsed into ovirtsdk4's objects (what every new token cost before)
    and with the lean read; and the parse alone of the same answer, both ways."""
    name = "peer%d@internal" % next(USERS)
    engine.add_user(name, "pw", vms=list(engine.vms))
    conn = ovirtsdk4.Connection(url=engine.url, username=name, password="pw",
                                ca_file=engine.ca_file, timeout=300, headers={"Filter": "true"})
    service = conn.system_service().vms_service()
    query = {"follow": "host,cluster"}
    body = conn.wait(conn.send(http.Request(method="GET", path="/vms", query=query))).body
    ways: Dict[str, Callable[[], Any]] = {
        "request, ovirtsdk4 objects (before)": lambda: service.list(follow="host,cluster"),
        "request, ElementTree (now)": lambda: get_xml(conn, "/vms", "bench", query),
        "parse only, ovirtsdk4 objects": lambda: reader.Reader.read(body),
        "parse only, ElementTree": lambda: [VmInfo.from_xml(e)
                                            for e in ET.fromstring(body).findall("vm")],
    }
    out: Dict[str, List[float]] = {way: [] for way in ways}
    try:
        for _ in range(runs):
            for way, call in ways.items():
                started = time.monotonic()
                call()
                out[way].append(time.monotonic() - started)
    finally:
        conn.close()
    out["answer, MB"] = [len(body) / 1e6]
    return out


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="vmdiag-fleet-bench-"))
    pki = TestPKI(str(work / "pki"))
    speed = REAL_ENGINE_SPEED if args.engine_speed == "real" else {}
    engine = StandinEngine(pki.server("standin"), pki.ca_file,
                           request_cost_s=speed.get("request_cost_s", 0.0),
                           vm_cost_s=speed.get("vm_cost_s", 0.0))
    fleet = BigFleet(args.vms, hosts=args.hosts)
    fleet.add_to_standin(engine)
    engine.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    engine.start()
    started = time.monotonic()
    service = EngineService(service_config(pki, engine, "sqlite:///%s/vmdiag.db" % work))
    await service.start()
    print("service started in %.1f s (the VM directory read once)" % (time.monotonic() - started))
    try:
        started = time.monotonic()
        await asyncio.to_thread(fleet.fill_store, service.store, time.time())
        print("fleet: %d VMs on %d hosts, stored in %.1f s (SQLite, %s)"
              % (args.vms, args.hosts, time.monotonic() - started, work))
        print("stand-in engine: %s" % (", ".join("%s=%s" % kv for kv in speed.items())
                                        or "no added cost"))
        base = "http://127.0.0.1:%d/vmdiag/ui/" % service.api_port
        driver = await asyncio.to_thread(chromium_driver, work / "chromium")
        try:
            driver.set_script_timeout(300)
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                   {"source": LOADED_HOOK})
            driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "timeTicks"})
            results = {}
            for per_page in args.per_page:
                results[per_page] = await asyncio.to_thread(measure, driver, base, engine,
                                                            fleet, per_page, args.runs)
        finally:
            await asyncio.to_thread(driver.quit)
        report(args, results)
        peer = await asyncio.to_thread(list_costs, engine, args.runs)
    finally:
        await service.stop()
        engine.stop()
    print("\none cache miss of a user who may see all %d VMs (engine list, seconds, median):"
          % args.vms)
    for way, values in peer.items():
        print("  %-40s %8.2f" % (way, median(values)))


def report(args: argparse.Namespace, results: Dict[int, Dict[str, Dict[str, List[float]]]]
           ) -> None:
    print("medians of %d runs, milliseconds, browser clocks (targets: 1000 ms cold, 200 ms "
          "warm for the service's answer, 1000 ms a first render and a page change)"
          % args.runs)
    labels = [("first render, new user", "first_new_user"),
              ("  whole list shown, new user", "complete_new_user"),
              ("first render, new token", "first_new_token"),
              ("first render, warm (same token)", "first_warm"),
              ("  fragment fetch, new user", "fragment_new_user"),
              ("  fragment fetch, new token", "fragment_new_token"),
              ("  fragment fetch, warm", "fragment_warm"),
              ("  shell until the fetch starts, warm", "shell_warm"),
              ("  main thread busy, warm", "busy_warm"),
              ("  of which style and layout, warm", "style_layout_warm"),
              ("page change (next page)", "next_page"),
              ("search typed and applied", "search")]
    for per_page, result in results.items():
        print("\n%d rows per page" % per_page)
        print("%-40s %14s %14s" % ("", "administrator", "user (own list)"))
        for label, key in labels:
            print("%-40s %14.0f %14.0f" % (label, median(result["admin"][key]),
                                           median(result["user"][key])))
        print("%-40s %14s %14s" % ("load average (1 min) before / after", *(
            "%.1f / %.1f" % tuple(result[kind]["load"]) for kind in ("admin", "user"))))
        for kind, title in KINDS:
            worst = max(max(result[kind][k]) for k in ("first_new_token", "first_warm",
                                                       "next_page", "search"))
            print("slowest new-token/warm/page/search, %s: %.0f ms" % (title, worst))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-page", type=lambda v: [int(x) for x in v.split(",")],
                        default=[50, 500], help="page sizes to measure, e.g. 50,500")
    parser.add_argument("--engine-speed", choices=("real", "none"), default="real",
                        help="the stand-in's cost per request and per VM listed "
                             "(REAL_ENGINE_SPEED) or none")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
