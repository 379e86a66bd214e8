"""How a local search should use the cores: 1 trial x N threads, or N trials x 1 thread.

Run: .venv/bin/python benchmarks/threads.py [--steps 8] [--width 1.0]

Trains the fast 1.0x g3 build (batch 128, 1x32x32) in real worker processes and prints the
aggregate training images/s of both layouts; nas/parallelism.py encodes the decision.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def worker(threads: int, steps: int, width: float, results: mp.Queue) -> None:
    import torch
    from torch.nn import functional as F

    from shufflenet_core import ShuffleNetConfig, build_model

    torch.set_num_threads(threads)
    config = ShuffleNetConfig.from_width(3, width, num_classes=10, in_channels=1, input_size=32)
    model = build_model(config).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(128, 1, 32, 32), torch.randint(0, 10, (128,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    results.put((steps * 128, time.perf_counter() - start))


def aggregate(processes: int, threads: int, steps: int, width: float) -> float:
    """Images/s of all workers together, over the wall time of the slowest."""
    context = mp.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=worker, args=(threads, steps, width, results)) for _ in range(processes)]
    for process in workers:
        process.start()
    outcomes = [results.get() for _ in workers]
    for process in workers:
        process.join()
    return sum(images for images, _ in outcomes) / max(seconds for _, seconds in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternate both layouts this many times")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    one_trial, many_trials = f"1 trial x {cores} threads", f"{cores} trials x 1 thread"
    best = {one_trial: 0.0, many_trials: 0.0}
    for _ in range(args.rounds):
        best[one_trial] = max(best[one_trial], aggregate(1, cores, args.steps, args.width))
        best[many_trials] = max(best[many_trials], aggregate(cores, 1, args.steps, args.width))
    for name, rate in best.items():
        print(f"{name}: {rate:.0f} training images/s (fast {args.width}x g3, batch 128, 32x32)")


if __name__ == "__main__":
    main()
