"""Trials per hour on a GPU: 1, 2, 4 and 8 concurrent trials per GPU, bf16 vs fp32.

Each concurrent trial is its own process pinned to the GPU with its share of the memory (as
`nas search --accelerator cuda --workers N` runs them) and trains the default proxy (1 epoch,
10k Fashion-MNIST images at 32 px, batch 128) on the paper's 1x g3. Prints img/s per trial,
trials per hour in total, and the same run on this machine's CPU for the ratio (label it as
another machine when the CPU figure comes from elsewhere).

Run on a machine with a CUDA GPU:
    .venv/bin/python benchmarks/gpu.py [--concurrency 1 2 4 8] [--trials-each 3]
Exits 2 with one line where torch sees no GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

TRIAL_IMAGES = 10_000


def _trial_loop(args: tuple[str, str, int, int, int]) -> tuple[float, int]:
    """One worker: ``trials`` default proxy trials back to back; (seconds, images trained)."""
    accelerator, precision, worker, workers, trials = args
    import torch

    from nas.evaluation.accelerator import pin_worker, placement
    from nas.evaluation.data import load_data
    from nas.evaluation.proxy import DEFAULT_RECIPE
    from nas.evaluation.training import prepare_data, train_config
    from shufflenet_core import PRESETS

    torch.set_num_threads(1)
    pin_worker(accelerator, worker, workers)
    place = placement(accelerator, precision)
    data = prepare_data(load_data("fashion-mnist"), DEFAULT_RECIPE)
    config = PRESETS["shufflenet_v1_1.0x_g3"].config
    train_config(config, data, DEFAULT_RECIPE, seed=99, place=place)  # warm-up: cuDNN picks its kernels
    started = time.perf_counter()
    for seed in range(trials):
        train_config(config, data, DEFAULT_RECIPE, seed=seed, place=place)
    return time.perf_counter() - started, trials * len(data.train_labels)


def _measure(accelerator: str, precision: str, concurrent: int, trials: int) -> tuple[float, float]:
    """(img/s per trial, trials per hour in total) with ``concurrent`` trials at once."""
    jobs = [(accelerator, precision, worker, concurrent, trials) for worker in range(concurrent)]
    with multiprocessing.get_context("spawn").Pool(concurrent) as pool:
        started = time.perf_counter()
        results = pool.map(_trial_loop, jobs)
        wall = time.perf_counter() - started
    per_trial = sum(images / seconds for seconds, images in results) / concurrent
    return per_trial, concurrent * trials / wall * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials-each", type=int, default=3, help="trials per worker per measurement")
    parser.add_argument("--cpu-workers", type=int, default=2, help="the CPU row: this many 1-thread workers")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: torch sees no CUDA GPU; run it on a GPU machine", file=sys.stderr)
        raise SystemExit(2)
    print(f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}")
    print("| trials per GPU | precision | img/s per trial | trials/hour |")
    print("|---|---|---|---|")
    for precision in ("bf16", "fp32"):
        for concurrent in args.concurrency:
            per_trial, per_hour = _measure("cuda", precision, concurrent, args.trials_each)
            print(f"| {concurrent} | {precision} | {per_trial:.0f} | {per_hour:.0f} |", flush=True)
    per_trial, per_hour = _measure("cpu", "fp32", args.cpu_workers, 1)
    print(f"| CPU, {args.cpu_workers} workers x 1 thread | fp32 | {per_trial:.0f} | {per_hour:.0f} |")


if __name__ == "__main__":
    main()
