"""Each exported model file timed on the device the user names (``nas export --device``).

The files are timed as they ship, at the input they take (batch 1 at the resolution the weights
were trained at), in the runtime that runs each: ONNX files in ONNX Runtime, ``.pte`` programs in
ExecuTorch, all in one session with interleaved rounds so that a burst of load on a shared
machine spreads over all of them. The card then shows float32 and int8 side by side.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.export.quantize import RUNTIME_OF_FILE

__all__ = ["RUNTIME_OF_FILE", "file_latencies", "runtimes_for"]



def runtimes_for(formats: Sequence[str]) -> set[str]:
    """The runtimes the device needs for the files these ``--format`` values write."""
    return {"executorch" if name.startswith("executorch") else "onnxruntime" for name in formats if name != "pytorch"}


def file_latencies(device: Any, folder: Path, files: Sequence[str], input_shape: Sequence[int], *,
                   threads: int = 1, runs: int = 50, warmup: int = 10) -> dict[str, Any] | None:
    """Median, p10 and p90 of each timed file on ``device`` (a :class:`nas.latency.Device`)."""
    from nas.latency import RunSettings

    timed = [name for name in files if name in RUNTIME_OF_FILE]
    if not timed:
        return None
    settings = RunSettings(threads=threads, runs=runs, warmup=warmup, rounds=5)
    with tempfile.TemporaryDirectory(prefix="nas-export-latency-") as scratch:
        example = Path(scratch) / "input.npy"
        np.save(example, np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32))
        timings = device.measure([folder / name for name in timed], settings, input_file=example)
    rows = []
    for name, timing in zip(timed, timings, strict=True):
        runtime, precision = RUNTIME_OF_FILE[name]
        stats = timing.stats
        rows.append({"file": name, "runtime": runtime, "precision": precision, "median_ms": round(stats.median_ms, 4),
                     "p10_ms": round(stats.p10_ms, 4), "p90_ms": round(stats.p90_ms, 4)})
    return {"device": device.probe(), "threads": threads, "runs": runs, "clock": settings.effective_clock,
            "input_shape": list(input_shape), "files": rows}
