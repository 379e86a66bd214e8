"""How a local search spreads trials over the CPU: worker processes x torch threads each."""

from __future__ import annotations

__all__ = ["default_parallelism", "default_workers"]


def default_parallelism(cpu_count: int | None) -> tuple[int, int]:
    """(worker processes, torch threads per worker) for a local search on ``cpu_count`` cores.

    One single-threaded trial per core. Measured with ``benchmarks/threads.py`` on this
    project's 2-core shared machine (torch 2.13, fast 1.0x g3 build, batch 128, 32x32, other
    agents' jobs running): 1 trial x 2 threads gave 40 training images/s, 2 trials x 1 thread
    303 images/s in aggregate. Small ShuffleNet layers do not scale across threads, and an
    intra-op thread pool stalls at every barrier when another process takes one of its
    cores; separate processes never wait for each other. ``None`` or < 1 counts as 1 core.
    """
    cores = cpu_count if cpu_count and cpu_count > 0 else 1
    return cores, 1


def default_workers() -> int:
    """Worker processes on this machine (:func:`default_parallelism` of its cores)."""
    import os

    return default_parallelism(os.cpu_count())[0]
