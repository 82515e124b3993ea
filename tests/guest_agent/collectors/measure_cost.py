"""Measure what collection costs on this machine (not a test: ``python3 -m`` it).

    python3 -m tests.guest_agent.collectors.measure_cost [rounds]

Prints CPU milliseconds (this process, all threads, plus the commands it ran) per full
collection on the fast path (slow parts cached) and with the heavy parts (packages, listening
sockets, top processes),
and compares the /proc/<pid>/stat scan with psutil.process_iter for the top-process pass.
Probes are off: they cost wall time on the network, not CPU here.
"""

from __future__ import annotations

import resource
import statistics
import sys
from typing import Callable, List

import psutil

from guest_agent import platform
from guest_agent.collectors import CollectorOptions, CollectorState, collect_all, prime


def _cpu_now() -> float:
    """CPU seconds of this process and of the commands it ran (rpm, systemctl, ...)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def cpu_ms(fn: Callable[[], object], rounds: int) -> List[float]:
    out = []
    for _ in range(rounds):
        start = _cpu_now()
        fn()
        out.append((_cpu_now() - start) * 1000.0)
    return out


def summary(samples: List[float]) -> str:
    return "median %.2f ms, min %.2f, max %.2f (n=%d)" % (
        statistics.median(samples), min(samples), max(samples), len(samples))


def psutil_top() -> list:
    return [p.info for p in psutil.process_iter(["pid", "name", "cpu_times", "memory_info"])]


def main(rounds: int = 30) -> None:
    options = CollectorOptions(probe_gateway=False, resolve_fqdn=False, top_n=5,
                               watched_processes=["sshd", "python3"],
                               sysctls=["vm.swappiness", "net.ipv4.ip_forward"])
    state = CollectorState()
    prime(options, state)
    collect_all(options, state)  # warm caches and imports

    def heavy() -> None:
        state.force_slow()
        collect_all(options, state)

    print("processes:", len(psutil.pids()))
    print("full collection, heavy parts:", summary(cpu_ms(heavy, max(5, rounds // 3))))
    state.force_slow()
    collect_all(options, state)
    print("full collection, fast path:  ", summary(cpu_ms(lambda: collect_all(options, state),
                                                          rounds)))
    print("/proc/<pid>/stat scan:       ", summary(cpu_ms(lambda: platform.scan(platform.LOCAL),
                                                          rounds)))
    print("psutil.process_iter:         ", summary(cpu_ms(psutil_top, rounds)))
    state.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
