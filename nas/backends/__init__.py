"""Backends run a study's trials; the engine (nas.engine) decides everything else.

- ``local`` (:mod:`.local`): in this process, or N supervised worker processes on this
  machine sharing the storage;
- ``ray`` (:mod:`.ray`): Ray Tune on a local Ray or a cluster.

A backend is registered by name in :data:`BACKENDS` and offers exactly :class:`Backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.engine.backend import Backend

__all__ = ["BACKENDS", "Backend", "create_backend"]


def _local(options: Any) -> Backend:
    from nas.backends.local import LocalBackend

    return LocalBackend()


def _ray(options: Any) -> Backend:
    from nas.backends.ray.backend import RayBackend

    return RayBackend(options)


BACKENDS: dict[str, Callable[[Any], Backend]] = {"local": _local, "ray": _ray}
"""Backend factories by name; each takes its own options (None for local, RayOptions for ray)."""


def create_backend(name: str, options: Any = None) -> Backend:
    return BACKENDS[name](options)
