"""complexity() against thop.profile on the same configs, in one run; prints the ratio.

Run: .venv/bin/python benchmarks/complexity.py [--configs 50]
complexity() is cached per config; the benchmark times the uncached function.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import thop
import torch

from shufflenet_core import ShuffleNetConfig, build_model
from shufflenet_core.complexity import complexity


def sample_configs(count: int, seed: int = 0) -> list[ShuffleNetConfig]:
    rng = random.Random(seed)
    return [
        ShuffleNetConfig.from_width(
            rng.choice([1, 2, 3, 4, 8]),
            rng.uniform(0.25, 2.0),
            stage_depths=tuple(rng.randint(2, 8) for _ in range(3)),
            bottleneck_ratio=rng.choice([0.25, 0.5]),
        )
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = sample_configs(args.configs)
    uncached = complexity.__wrapped__

    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        for config in configs:
            uncached(config)
    ours_s = (time.perf_counter() - start) / repeats / len(configs)

    thop.profile(build_model(configs[0]), inputs=(torch.zeros(1, 3, 224, 224),), verbose=False)  # warm-up
    thop_times, build_times = [], []
    for config in configs:
        start = time.perf_counter()
        model = build_model(config).eval()
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        thop.profile(model, inputs=(torch.zeros(1, 3, 224, 224),), verbose=False)
        thop_times.append(time.perf_counter() - start)
    thop_s = statistics.mean(thop_times)
    build_s = statistics.mean(build_times)
    print(f"configs: {len(configs)} (224x224, batch 1, 1 thread)")
    print(f"complexity():      {ours_s * 1e6:9.1f} us per config")
    print(f"build_model():     {build_s * 1e3:9.1f} ms per config")
    print(f"thop.profile():    {thop_s * 1e3:9.1f} ms per config (model already built)")
    print(f"ratio thop / complexity():                {thop_s / ours_s:9.0f}x")
    print(f"ratio (build + thop) / complexity():      {(thop_s + build_s) / ours_s:9.0f}x")


if __name__ == "__main__":
    main()
