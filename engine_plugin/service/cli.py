"""``vmdiag-engine``: run the service, migrate the store, apply retention once.

::

    vmdiag-engine serve [--config /etc/vmdiag/engine.conf]
    vmdiag-engine migrate [--config F]
    vmdiag-engine retention [--config F]
    vmdiag-engine config [--config F]        print the effective configuration
    vmdiag-engine setup [--check] [--root DIR] [--offline]   set the engine machine up

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
from typing import List

from .. import config as config_mod

log = logging.getLogger("vmdiag.engine")
#: Allocations between two young-generation collections in the service (Python's default: 700).
GC_THRESHOLD = 50000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmdiag-engine",
                                     description="vmdiag engine service")
    parser.add_argument("--config", default=config_mod.DEFAULT_PATH,
                        help="main configuration file (drop-ins: <file>.d/*.conf)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the API/UI and ingest listeners")
    sub.add_parser("migrate", help="create or upgrade the store's schema")
    sub.add_parser("retention", help="apply retention once (roll up and drop old data)")
    sub.add_parser("config", help="print the effective configuration as JSON")
    sub.add_parser("defaults", help="print an annotated engine.conf with every default")
    from ..setup import add_arguments as setup_arguments

    setup_arguments(sub.add_parser(
        "setup", help="set this engine machine up for vmdiag (idempotent; --check: doctor)",
        description="Read oVirt's own files (engine.conf.d, the engine CA), merge the vmdiag "
                    "custom property, create the service account, write the service's drop-in, "
                    "enable the unit; change nothing unless every step can be done."))
    return parser


def parse_args(argv: List[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def tune_gc() -> None:
    """Ingest decodes large batches into many short-lived objects; the collector's default
    pace (every 700 allocations) rescans them often: about a tenth of the parse and
    validation CPU (benchmarks/ingest_bench.py). What start-up built stays for good."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


async def serve(cfg: config_mod.Config) -> int:
    from .app import EngineService

    service = EngineService(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    tune_gc()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await service.stop()
    return 0


def main(argv: List[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "setup":
        from ..setup import main as setup_main

        return setup_main(args)
    if args.command == "defaults":
        sys.stdout.write(config_mod.describe())
        return 0
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as err:
        print("vmdiag-engine: %s" % err, file=sys.stderr)
        return 2
    for warning in cfg.warnings:
        logging.getLogger("vmdiag.engine").warning("%s", warning)
    if args.command == "config":
        values = cfg.as_dict()
        if values["ovirt"]["password"]:
            values["ovirt"]["password"] = "********"
        json.dump(values, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return 0
    try:
        if args.command == "serve":
            return asyncio.run(serve(cfg))
        from .app import open_configured_store

        store = open_configured_store(cfg)
        try:
            if args.command == "migrate":
                print("store schema is at version %s" % store.migrate())
            else:
                stats = store.apply_retention(time.time())
                print(json.dumps(stats, sort_keys=True))
        finally:
            store.close()
        return 0
    except ValueError as err:  # configuration-shaped problems found at start (TLS files...)
        print("vmdiag-engine: %s" % err, file=sys.stderr)
        return 2
    except Exception as err:
        log.debug("failure", exc_info=True)
        print("vmdiag-engine: %s: %s" % (type(err).__name__, err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
