"""The same search on a Ray cluster, through Ray Tune (``nas search --backend ray``).

Kept import-light: Ray is imported only when a Ray search actually runs.

- :mod:`.cluster` starts a local Ray or connects to a cluster (a bad address fails fast);
- :mod:`.searcher` builds Tune's OptunaSearch over the design space, seeded with the trials
  the study storage already holds (so an interrupted run resumes without losing any);
- :mod:`.trial` is the Tune trainable: it runs the project's ``TrialRunner`` on a real trial
  of the project's study, so a Ray trial is stored exactly like a local one;
- :mod:`.driver` ties them together per budget and keeps the storage consistent with what
  Tune decided (ASHA stops -> PRUNED, crashed workers -> FAIL, then retried).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.errors import UserError

__all__ = ["BACKENDS", "RayOptions", "ray_options_from"]

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    """None starts a local Ray; "auto" or HOST:PORT connects to a running cluster."""
    cpus_per_trial: int = 1
    max_concurrent: int | None = None
    max_failures: int = 2
    """How often Tune retries a trial whose worker crashed."""


def ray_options_from(backend: str, ray_address: str | None, cpus_per_trial: int | None, max_concurrent: int | None) -> RayOptions | None:
    """Check the backend options (cheaply, before anything is written); None means local."""
    backend = (backend or "local").strip().lower()
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use local or ray")
    if backend == "local":
        given = [name for name, value in (("--ray-address", ray_address), ("--cpus-per-trial", cpus_per_trial), ("--max-concurrent", max_concurrent)) if value]
        if given:
            raise UserError(f"{', '.join(given)} only apply with --backend ray")
        return None
    if cpus_per_trial is not None and cpus_per_trial < 1:
        raise UserError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    address = ray_address.strip() if ray_address else None
    if address is not None and address != "auto":
        from nas.backends.ray.cluster import parse_address

        parse_address(address)
    return RayOptions(address=address, cpus_per_trial=cpus_per_trial or 1, max_concurrent=max_concurrent)
