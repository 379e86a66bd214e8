"""How a local search should use the cores: 1 trial x N threads, or N trials x 1 thread.

Run: .venv/bin/python benchmarks/threads.py [--steps 8] [--width 1.0]

Trains the fast 1.0x g3 build (batch 128, 1x32x32) in real worker processes and prints the
aggregate training images/s of both layouts, and of one trial on one thread as the baseline
(what benchmarks/speed.py times); the layouts alternate round by round in one run and each
keeps its best, so load from other processes hits them alike. nas/backends/parallelism.py
encodes the decision.
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
    parser.add_argument("--rounds", type=int, default=2, help="alternate the layouts this many times")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    layouts = {"1 trial x 1 thread": (1, 1), f"1 trial x {cores} threads": (1, cores),
               f"{cores} trials x 1 thread": (cores, 1)}
    best = dict.fromkeys(layouts, 0.0)
    for _ in range(args.rounds):
        for name, (processes, threads) in layouts.items():
            best[name] = max(best[name], aggregate(processes, threads, args.steps, args.width))
    baseline = best["1 trial x 1 thread"]
    for name, rate in best.items():
        print(f"{name}: {rate:.0f} training images/s ({rate / baseline:.2f}x one thread; fast {args.width}x g3, "
              f"batch 128, 32x32)")


if __name__ == "__main__":
    main()
