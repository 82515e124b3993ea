"""How many cores this process may use: what ``auto`` means for process counts."""

import os


def usable_cores() -> int:
    """The cores this process's affinity allows (``taskset``, a cgroup's cpuset), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores)
