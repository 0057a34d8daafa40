"""How many worker processes a stage may use: ``n_jobs`` settings where 0 means "one per core"."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM allocation, a cgroup)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_jobs(n_jobs: int) -> int:
    """A configured ``n_jobs``: the value itself, or ``available_cores()`` for 0."""
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0 (0 = one per core), got {n_jobs}")
    return n_jobs or available_cores()
