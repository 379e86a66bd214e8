"""The same search on a Ray cluster, through Ray Tune (``nas search --backend ray``).

Kept import-light: Ray is imported only when a Ray search actually runs.

- :mod:`.cluster` starts a local Ray or connects to a cluster (a bad address fails fast);
- :mod:`.searcher` builds Tune's OptunaSearch over the design space, seeded with the trials
  the study storage already holds (so an interrupted run resumes without losing any);
- :mod:`.trainable` is the Tune trainable: it runs the project's ``TrialRunner`` on a real
  trial of the project's study, so a Ray trial is stored exactly like a local one;
- :mod:`.backend` is the engine's backend: one Tune experiment per study, keeping the storage
  consistent with what Tune decided (ASHA stops -> PRUNED, crashed workers -> FAIL, retried).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.errors import UserError

__all__ = ["RayOptions", "ray_options_from"]


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    """None starts a local Ray; "auto" or HOST:PORT connects to a running cluster."""
    cpus_per_trial: int = 1
    max_concurrent: int | None = None
    gpus_per_trial: float = 0.0
    """GPUs Ray reserves per trial (fractions share one GPU: 0.25 runs four trials on it)."""
    num_gpus: int | None = None
    """GPUs a local Ray may hand out (None: those it detects); a cluster's nodes declare their own."""
    max_failures: int = 2
    """How often Tune retries a trial whose worker crashed."""


def ray_options_from(ray_address: str | None, cpus_per_trial: int | None, max_concurrent: int | None,
                     gpus_per_trial: float | None = None, num_gpus: int | None = None) -> RayOptions:
    """Check the Ray options (cheaply, before anything is written)."""
    if gpus_per_trial is not None and not (0 < gpus_per_trial <= 64):
        raise UserError(f"--gpus-per-trial must be above 0 (fractions share a GPU, e.g. 0.25), got {gpus_per_trial:g}")
    if num_gpus is not None and num_gpus < 0:
        raise UserError(f"--num-gpus must be >= 0, got {num_gpus}")
    if num_gpus is not None and ray_address:
        raise UserError("--num-gpus sets the GPUs of the local Ray this command starts; a cluster's nodes declare their own")
    if cpus_per_trial is not None and cpus_per_trial < 1:
        raise UserError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    address = ray_address.strip() if ray_address else None
    if address is not None and address != "auto":
        from nas.backends.ray.cluster import parse_address

        parse_address(address)
    return RayOptions(address=address, cpus_per_trial=cpus_per_trial or 1, max_concurrent=max_concurrent,
                      gpus_per_trial=gpus_per_trial or 0.0, num_gpus=num_gpus)
