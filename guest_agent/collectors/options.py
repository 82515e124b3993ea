"""What the collectors are asked to look at; built by the agent from its configuration."""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ..platform import LOCAL, Machine


class CollectorOptions(NamedTuple):
    """Inputs of every collector. Defaults match agent.conf's declared defaults.

    ``watched_units`` entries may carry the state they must be in: ``"backup.timer=active"``,
    ``"one-shot.service=inactive"``; a bare name must be ``active``.
    """

    watched_units: Sequence[str] = ()
    watched_processes: Sequence[str] = ()
    dns_names: Sequence[str] = ()
    tcp_targets: Sequence[str] = ()  # "host:port", IPv6 as "[addr]:port"
    http_targets: Sequence[str] = ()
    sysctls: Sequence[str] = ()
    top_n: int = 5
    probe_timeout_s: float = 2.0
    packages_interval_s: float = 3600.0
    listening_interval_s: float = 60.0
    #: Seconds between two scans for top_cpu/top_memory (watched processes are checked always).
    top_interval_s: float = 60.0
    #: Seconds between two reads of the time sync state: one or two helper commands each
    #: (chronyc, timedatectl), the costliest part of a report, for a state that changes slowly.
    timesync_interval_s: float = 300.0
    #: Probe the default gateway (ICMP echo, else a TCP connect; see collectors.probes).
    probe_gateway: bool = True
    #: Ask the resolver for the FQDN when /etc/hosts gives none (off: no DNS traffic at all).
    resolve_fqdn: bool = True
    #: The package inventory kept across agent starts ("" for none; a path on ``machine``).
    packages_cache: str = ""
    #: Where to read from: the running system, or a fixture tree / container prefix in tests.
    machine: Machine = LOCAL
